"""The README's code blocks, for the tests that run them.

A fenced ``python`` block is named by an HTML comment on the line before it
(``<!-- readme-test: core -->``); :func:`readme_block` returns its code with the example
Watcher address replaced by a running emulator's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
EXAMPLE_URL = "https://watcher.example.com"

_FENCE = re.compile(
    r"(?:<!-- readme-test: (?P<name>[\w-]+) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)^```$",
    re.DOTALL | re.MULTILINE,
)


@dataclass(frozen=True)
class Block:
    """One fenced block of the README."""

    name: str | None
    lang: str
    code: str
    line: int


def readme_blocks() -> list[Block]:
    """Every fenced block of the README, in order."""
    text = README.read_text()
    return [
        Block(
            name=match["name"],
            lang=match["lang"],
            code=match["code"],
            line=text.count("\n", 0, match.start("code")) + 1,
        )
        for match in _FENCE.finditer(text)
    ]


@pytest.fixture
def readme() -> list[Block]:
    """Every fenced block of the README, in order."""
    return readme_blocks()


@pytest.fixture
def readme_block(readme: list[Block]) -> Callable[..., str]:
    """``readme_block(name, url=None)``: a named python block, pointed at ``url`` if given."""
    blocks = {block.name: block for block in readme if block.name}

    def get(name: str, url: str | None = None) -> str:
        code = blocks[name].code
        return code.replace(EXAMPLE_URL, url) if url is not None else code

    return get
