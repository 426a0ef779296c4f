"""URLs and origins: where Watcher is, and whether a URL belongs to it."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from watcher_auth._exceptions import ConfigurationError

__all__ = ["V2_ROOT", "V3_ROOT", "is_absolute", "normalize_server_url", "origin_of", "path_only"]

V3_ROOT = "/watcher/client-api/v3/"
V2_ROOT = "/vsaas/api/v2/"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ABSOLUTE_URL = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")


def origin_of(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a URL, with the default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def default_port(scheme: str) -> int:
    """The port a URL of ``scheme`` means when it names none (0 if unknown)."""
    return _DEFAULT_PORTS.get(scheme, 0)


def is_absolute(path: str) -> bool:
    """Whether ``path`` starts with a scheme (``"streams?next=http://x"`` is relative)."""
    return "://" in path and _ABSOLUTE_URL.match(path) is not None


def path_only(url: str) -> str:
    """The path of ``url``: query strings may carry tokens a caller put there."""
    return urlsplit(url).path


def normalize_server_url(url: str) -> str:
    """``scheme://host[:port][/prefix]`` without a trailing slash or the API path.

    Raises:
        ConfigurationError: not an http(s) URL with a host, or it carries credentials.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("the Watcher URL is empty")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"the Watcher URL must be http:// or https:// with a host: {url!r}"
        )
    if parts.username or parts.password:
        raise ConfigurationError("the Watcher URL must not contain a username or password")
    if parts.query or parts.fragment:
        raise ConfigurationError("the Watcher URL must not have a query or fragment")
    path = parts.path.rstrip("/")
    for api_root in (V3_ROOT.rstrip("/"), V2_ROOT.rstrip("/")):
        if path.endswith(api_root):
            path = path[: -len(api_root)]
    return f"{parts.scheme}://{parts.netloc.lower()}{path}"
