"""A pytest plugin for ``scripts/mutate.py``: which lines of the mutated modules each test runs.

Loaded with ``-p _mutate_trace``; ``MUTATE_TRACE_FILES`` names the source files to watch
(``os.pathsep``-separated) and ``MUTATE_TRACE_OUT`` the JSON file written at the end:
``{test id: {"seconds": s, "passed": bool, "lines": {file: [line, ...]}}}``. Only this
process's threads are traced; lines run only by worker processes are not seen.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Generator
from types import FrameType
from typing import Any

import pytest

_FILES = {
    os.path.realpath(p) for p in os.environ.get("MUTATE_TRACE_FILES", "").split(os.pathsep) if p
}
_current: dict[str, set[int]] = {}
_results: dict[str, dict[str, Any]] = {}


def _local(frame: FrameType, event: str, arg: object) -> Any:
    if event == "line":
        _current.setdefault(frame.f_code.co_filename, set()).add(frame.f_lineno)
    return _local


def _global(frame: FrameType, event: str, arg: object) -> Any:
    if event == "call" and frame.f_code.co_filename in _FILES:
        _current.setdefault(frame.f_code.co_filename, set()).add(frame.f_lineno)
        return _local
    return None


_ok: dict[str, bool] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: object) -> Generator[None, Any, None]:
    _current.clear()
    sys.settrace(_global)
    threading.settrace(_global)
    started = time.monotonic()
    yield
    sys.settrace(None)
    threading.settrace(None)  # type: ignore[arg-type]
    _results[item.nodeid] = {
        "seconds": time.monotonic() - started,
        "passed": _ok.get(item.nodeid, False),
        "lines": {path: sorted(lines) for path, lines in _current.items()},
    }


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # A test is usable only if it ran and no phase failed (a skipped test proves nothing).
    ok = _ok.setdefault(report.nodeid, True)
    if report.failed or report.skipped:
        ok = False
    _ok[report.nodeid] = ok


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = os.environ.get("MUTATE_TRACE_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(_results, f)
