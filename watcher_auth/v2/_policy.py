"""API v2 authorization policy without I/O: what an answer means, which headers to send.

Everything here takes data and returns data (or raises), so it is tested by feeding it
answers; :mod:`watcher_auth.v2._accounts` only executes what this decides.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from watcher_auth._exceptions import (
    ConfigurationError,
    InvalidCredentials,
    WatcherAuthError,
    WatcherPaginationError,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth._policy import error_summary, parse_json_object
from watcher_auth._tokens import Secret, TokenPair

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_PAGE_SIZE",
    "SCHEME_SESSION",
    "SCHEME_USER_KEY",
    "SESSION_HEADER",
    "USER_HEADER",
    "V2_ROOT",
    "OffsetPages",
    "check_secret",
    "credential_headers",
    "login_failure",
    "parse_login_response",
    "strip_credential_headers",
    "unexpected_answer",
    "user_key_pair",
    "whoami_answer",
]

V2_ROOT = "/vsaas/api/v2/"
DEFAULT_PAGE_SIZE = 100
SESSION_HEADER = "x-vsaas-session"
API_KEY_HEADER = "x-vsaas-api-key"
USER_HEADER = "x-vsaas-user"
SCHEME_SESSION = "session"
SCHEME_USER_KEY = "user-key"
# Every header that carries v2 credentials starts with this, whatever its spelling.
_CREDENTIAL_PREFIX = "x-vsaas-"
_TRANSIENT = frozenset({408, 425, 429})


def check_secret(value: object, what: str) -> str:
    """``value`` if it can travel in a header, else :class:`ConfigurationError` naming ``what``.

    ``requests`` would refuse a value with a line break or surrounding spaces, and its error
    message would show the value, so it is refused here without showing it.
    """
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"the {what} must be a non-empty string")
    if value != value.strip() or not value.isprintable() or not value.isascii():
        raise ConfigurationError(
            f"the {what} has spaces around it or characters a header cannot carry"
        )
    return value


SYSTEM_API_KEY_ENV = "WATCHER_SYSTEM_API_KEY"


def system_api_key_setting(
    configured: object, *, setting: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """The system key from a framework setting, else from ``WATCHER_SYSTEM_API_KEY``.

    ``None`` when neither is set. A key that is set but empty, or not a string, raises
    :class:`ConfigurationError` naming where it came from (never showing it), so a portal
    fails at start-up rather than on first use.
    """
    environ = os.environ if environ is None else environ
    if configured is not None:
        name, value = setting, configured
    elif SYSTEM_API_KEY_ENV in environ:
        name, value = f"the environment variable {SYSTEM_API_KEY_ENV}", environ[SYSTEM_API_KEY_ENV]
    else:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string")
    if not value.strip():
        raise ConfigurationError(
            f"{name} is set but empty: give Watcher's system API key or unset it"
        )
    try:
        return check_secret(value, "system API key")
    except ConfigurationError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None


def credential_headers(pair: TokenPair) -> dict[str, str]:
    """The headers that present a stored v2 record: its session, or its user key and login."""
    if pair.scheme == SCHEME_SESSION:
        return {SESSION_HEADER: Secret(pair.access_token)}
    if pair.scheme == SCHEME_USER_KEY and pair.username:
        return {API_KEY_HEADER: Secret(pair.access_token), USER_HEADER: pair.username}
    raise WatcherProtocolError(f"the stored API v2 record has an unknown scheme {pair.scheme!r}")


def strip_credential_headers(headers: MutableMapping[str, str]) -> None:
    """Remove every ``x-vsaas-*`` header, whatever its case or spelling."""
    for name in [n for n in headers if n.lower().startswith(_CREDENTIAL_PREFIX)]:
        del headers[name]


def _definite(body: bytes) -> bool:
    # Watcher's own answers are JSON, plain text or empty (its v2 error bodies are not
    # published); an HTML page comes from something in front of it.
    text = body.lstrip()[:64].lower()
    return not (text.startswith(b"<") or b"<html" in text)


def unexpected_answer(status: int, body: bytes, what: str) -> WatcherAuthError:
    """The error for an answer that is neither success nor a definite rejection."""
    summary = error_summary(status, body)
    if status >= 500 or status in _TRANSIENT:
        return WatcherUnavailable(f"Watcher is unavailable: {summary} for {what}")
    return WatcherProtocolError(f"unexpected answer from Watcher to {what}: {summary}")


def login_failure(status: int, body: bytes) -> WatcherAuthError:
    """The error a non-200 answer from ``POST /auth/login`` stands for.

    API v2 refuses a wrong login or password with 403 (some servers may send 401).
    """
    if status in (401, 403) and _definite(body):
        return InvalidCredentials(
            f"Watcher rejected the username or password: {error_summary(status, body)}"
        )
    return unexpected_answer(status, body, "the API v2 login")


def parse_login_response(
    status: int, body: bytes, *, username: str, received_at: float
) -> TokenPair:
    """Turn an answer from ``POST /auth/login`` into a session record, or raise what it means."""
    if status != 200:
        raise login_failure(status, body)
    data = parse_json_object(body)
    if data is None:
        raise WatcherProtocolError("Watcher's API v2 login answer is not a JSON object")
    session = data.get("session")
    if not isinstance(session, str) or not session:
        raise WatcherProtocolError("Watcher's API v2 login answer has no session")
    login = data.get("login")
    return TokenPair(
        access_token=session,
        username=login if isinstance(login, str) and login else username,
        connected_at=received_at,
        scheme=SCHEME_SESSION,
    )


def user_key_pair(username: str, api_key: str, *, received_at: float) -> TokenPair:
    """The record that keeps a user API key (checked with whoami before it is stored)."""
    return TokenPair(
        access_token=api_key, username=username, connected_at=received_at, scheme=SCHEME_USER_KEY
    )


def whoami_answer(status: int, body: bytes) -> dict[str, Any] | None:
    """What ``GET /auth/whoami`` answered: the user, or ``None`` if the credentials are dead.

    Dead is a definite 403 (Watcher's own JSON, text or empty answer, not an HTML page), or
    a 200 that describes a guest: ``is_logged_in`` false or no ``login`` (whoami's session
    header is optional, so a dead session may be answered as a visitor). Anything else that
    is not a 200 raises, so nothing is deleted on a proxy's error page or an outage.

    Raises:
        WatcherUnavailable: a server error or timeout-like status.
        WatcherProtocolError: any other unexpected answer.
    """
    if status == 200:
        data = parse_json_object(body)
        if data is None:
            raise WatcherProtocolError("Watcher's whoami answer is not a JSON object")
        login = data.get("login")
        if data.get("is_logged_in") is False or not isinstance(login, str) or not login:
            return None
        return data
    if status == 403 and _definite(body):
        return None
    raise unexpected_answer(status, body, "whoami")


class OffsetPages:
    """The paging of a v2 list such as ``/cameras``: ``limit`` and a growing ``offset``
    until a page comes back shorter than ``limit``.

    The page length decides (the ``X-Page-*`` headers are not relied on). A page equal to
    the one before means the server ignores the offset: :class:`WatcherPaginationError`
    instead of the first page forever.

    Args:
        path: the list's path.
        params: query parameters for every page.
        item_key: when pages are JSON objects, the key of their item list; by default a page
            is a bare JSON array.
        limit: the page size (default 100).
        max_pages: stop quietly after this many pages.
    """

    def __init__(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        item_key: str | None = None,
        limit: int | None = None,
        max_pages: int | None = None,
    ) -> None:
        self.size = DEFAULT_PAGE_SIZE if limit is None else limit
        if self.size < 1:
            raise ValueError("limit must be at least 1")
        self.path = path
        self.item_key = item_key
        self.max_pages = max_pages
        self.query: dict[str, Any] = {**(params or {}), "limit": self.size, "offset": 0}
        self.pages = 0
        self._previous: list[Any] | None = None

    def take(self, page: object) -> tuple[list[Any], bool]:
        """The page's items, and whether to ask for another page."""
        key = self.item_key
        items = page.get(key) if key and isinstance(page, dict) else page
        if not isinstance(items, list):
            what = f"a {key!r} list" if key else "a JSON array"
            raise WatcherProtocolError(f"Watcher's {self.path!r} page is not {what}")
        if items and items == self._previous:
            raise WatcherPaginationError(
                f"Watcher answered the same page again while paging {self.path!r} by offset"
            )
        self._previous = items
        self.pages += 1
        if len(items) < self.size or (self.max_pages is not None and self.pages >= self.max_pages):
            return items, False
        self.query["offset"] += len(items)
        return items, True
