"""API v2 pieces of the emulator that need no state: credentials from headers, camera lists.

Plain data in, plain data out; :mod:`._emulator_state` holds users and sessions and calls these.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

__all__ = [
    "API_V2_BASE",
    "DEFAULT_CAMERA_LIMIT",
    "CameraPage",
    "V2Credentials",
    "camera",
    "credentials_from_headers",
    "page_of_cameras",
    "parse_login_body",
]

API_V2_BASE = "/vsaas/api/v2"
DEFAULT_CAMERA_LIMIT = 100
MAX_CAMERA_LIMIT = 1000
# Both spellings appear in Flussonic's documentation.
_API_KEY_HEADERS = ("x-vsaas-api-key", "x-vsaas-apikey")


class V2Credentials(NamedTuple):
    """What an API v2 request presents; all ``None`` when it presents nothing."""

    session: str | None
    api_key: str | None
    user: str | None


def credentials_from_headers(headers: Mapping[str, str]) -> V2Credentials:
    """The v2 credentials in ``headers``, whose names must already be lower-case."""

    def header(name: str) -> str | None:
        value = headers.get(name, "").strip()
        return value or None

    api_key = next((v for v in map(header, _API_KEY_HEADERS) if v is not None), None)
    return V2Credentials(header("x-vsaas-session"), api_key, header("x-vsaas-user"))


def parse_login_body(body: bytes) -> tuple[str, str]:
    """``(login, password)`` from a ``POST /auth/login`` body.

    Raises:
        ValueError: the body is not a JSON object with string ``login`` and ``password``.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("Request body is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("Request body must be a JSON object")
    login, password = data.get("login"), data.get("password")
    if not isinstance(login, str) or not isinstance(password, str):
        raise ValueError("login and password must be strings")
    return login, password


def camera(stream: Mapping[str, Any]) -> dict[str, Any]:
    """How API v2 shows a stream: as a camera, with ``stream_status`` and ``playback_config``."""
    stats = stream.get("stats")
    if not isinstance(stats, Mapping):
        stats = {}
    alive = bool(stats.get("alive"))
    return {
        "name": stream.get("name"),
        "title": stream.get("title"),
        "organization_id": stream.get("organization_id"),
        "folder_id": stream.get("folder_id"),
        "enabled": True,
        "stream_status": {"alive": alive, "status": stats.get("status", "")},
        "playback_config": {
            "token": stats.get("playback_token", ""),
            "server": stats.get("streaming_endpoint", ""),
        },
    }


class CameraPage(NamedTuple):
    """One page of ``GET /cameras`` and the paging it was cut with."""

    cameras: list[dict[str, Any]]
    limit: int
    offset: int


def page_of_cameras(
    streams: Iterable[Mapping[str, Any]], query: str, headers: Mapping[str, str]
) -> CameraPage:
    """Cut a page out of ``streams`` by ``limit``, ``offset`` and ``search``.

    ``limit`` and ``offset`` come from the query, or else from the ``X-Page-Limit`` and
    ``X-Page-Offset`` request headers (lower-case names in ``headers``).

    Raises:
        ValueError: ``limit`` or ``offset`` is not a valid integer.
    """
    params = dict(parse_qsl(query, keep_blank_values=True))
    limit = _integer(
        params.get("limit", headers.get("x-page-limit", DEFAULT_CAMERA_LIMIT)), "limit", 1
    )
    offset = _integer(params.get("offset", headers.get("x-page-offset", 0)), "offset", 0)
    limit = min(limit, MAX_CAMERA_LIMIT)
    needle = params.get("search", "").lower()
    found = sorted(
        (
            camera(s)
            for s in streams
            if needle in str(s.get("name", "")).lower() or needle in str(s.get("title", "")).lower()
        ),
        key=lambda c: str(c["name"]),
    )
    return CameraPage(found[offset : offset + limit], limit, offset)


def _integer(value: object, name: str, minimum: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}")
    return number
