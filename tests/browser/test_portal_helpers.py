"""The example portals' small helpers: playback links, API v2 rows and offsets, the token
expiry text.

Both portals carry their own copy (each is meant to be copied on its own), so each test runs
against both.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "example_projects"


def load(name: str, path: Path) -> Any:
    """Import an example module by file path, as its portal would import it."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


@pytest.fixture(scope="module", params=["django", "flask"])
def portal(request: pytest.FixtureRequest) -> Any:
    if request.param == "django":
        return load("example_django_views", EXAMPLES / "django_portal" / "portal" / "views.py")
    return load("example_flask_app", EXAMPLES / "flask_portal" / "app.py")


def stream(**stats: Any) -> dict[str, Any]:
    return {"name": "front door/1", "title": "Front door", "stats": stats}


def test_a_playback_link_carries_only_the_playback_token(portal: Any) -> None:
    link = portal.playback_url(
        stream(playback_token="pb+tok/en", streaming_endpoint="https://edge.example.com/")
    )
    assert link == "https://edge.example.com/front%20door%2F1/embed.html?token=pb%2Btok%2Fen"


def test_an_endpoint_without_a_scheme_is_https(portal: Any) -> None:
    link = portal.playback_url(stream(playback_token="t", streaming_endpoint="edge.example.com"))
    assert link == "https://edge.example.com/front%20door%2F1/embed.html?token=t"


@pytest.mark.parametrize(
    "stats", [{}, {"playback_token": "t"}, {"streaming_endpoint": "https://edge.example.com"}]
)
def test_no_playback_link_without_a_token_and_an_endpoint(
    portal: Any, stats: dict[str, Any]
) -> None:
    assert portal.playback_url(stream(**stats)) is None


def test_a_camera_row_falls_back_to_the_name_and_reads_alive(portal: Any) -> None:
    row = portal.camera_row({"name": "cam-7", "stats": {"alive": False}})
    assert row == {"name": "cam-7", "title": "cam-7", "alive": False, "playback_url": None}


def test_an_api_v2_camera_row_falls_back_to_the_name_and_reads_alive(portal: Any) -> None:
    assert portal.v2_camera_row({"name": "cam-7", "stream_status": {"alive": True}}) == {
        "name": "cam-7",
        "title": "cam-7",
        "alive": True,
    }
    assert portal.v2_camera_row({"name": "cam-8", "title": "Gate"})["alive"] is False


@pytest.mark.parametrize(
    ("value", "offset"),
    [(None, 0), ("", 0), ("8", 8), ("-4", 0), ("4.5", 0), ("abc", 0), ("²", 0), ("9" * 12, 0)],
)
def test_a_page_offset_is_a_count_or_the_first_page(
    portal: Any, value: str | None, offset: int
) -> None:
    assert portal.offset_of(value) == offset


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "never"),
        (-5, "expired; renewed on the next Watcher call"),
        (0, "expired; renewed on the next Watcher call"),
        (42, "42 s"),
        (125, "2 min 5 s"),
    ],
)
def test_the_expiry_reads_as_minutes_and_seconds(seconds: int | None, text: str) -> None:
    django = load(
        "example_django_context", EXAMPLES / "django_portal" / "portal" / "context_processors.py"
    )
    flask = load("example_flask_app", EXAMPLES / "flask_portal" / "app.py")
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    moment = None if seconds is None else now + timedelta(seconds=seconds)
    assert django.expires_in(moment, now) == text
    at = None if moment is None else moment.timestamp()
    assert flask.expires_in(at, now.timestamp()) == text
