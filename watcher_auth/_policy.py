"""Authorization policy without I/O: what a response means, when a token is stale.

Everything here takes data and returns data (or raises), so it is tested by feeding it
responses. The transport in :mod:`watcher_auth._manager` only executes what this decides.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import jwt

from watcher_auth._exceptions import (
    InvalidCredentials,
    WatcherAPIError,
    WatcherAuthError,
    WatcherPaginationError,
    WatcherPermissionDenied,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth._tokens import TokenPair

__all__ = [
    "DEFAULT_MARGIN_RATIO",
    "DEFAULT_MAX_LIFETIME",
    "DEFAULT_MAX_MARGIN",
    "LIST_KEYS",
    "CursorPages",
    "RefreshRejected",
    "basic_authorization",
    "bearer_authorization",
    "decode_answer",
    "decode_claims",
    "default_refresh_margin",
    "error_summary",
    "estimate_clock_offset",
    "list_items",
    "login_failure",
    "needs_refresh",
    "parse_json_object",
    "parse_token_response",
]

DEFAULT_MARGIN_RATIO = 0.1
DEFAULT_MAX_MARGIN = 60.0
#: The longest access-token lifetime believed, whatever ``exp`` says: the claims are not
#: verified, so a broken or hostile server must not pin a token in every cache for years.
DEFAULT_MAX_LIFETIME = 24 * 3600.0
#: The item list's key in Watcher's paginated v3 answers, by the list's last path segment.
LIST_KEYS = {"users": "users_list"}
# Second-resolution timestamps (iat, Date) cannot measure a smaller skew; treat it as none.
_SKEW_RESOLUTION = 1.0
_MAX_SUMMARY = 200


class RefreshRejected(WatcherAuthError):
    """Watcher definitely refused the refresh token (internal: the manager decides what next)."""


def basic_authorization(username: str, password: str) -> str:
    """An HTTP Basic ``Authorization`` value, encoded as UTF-8 (RFC 7617), so any password works."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def bearer_authorization(token: str) -> str:
    """A ``Bearer`` ``Authorization`` value."""
    return "Bearer " + token


def list_items(page: object, path: str, item_key: str | None = None) -> list[Any]:
    """The item list of one page of a paginated v3 answer.

    ``item_key`` names it; else Watcher's key for the path (``users`` answers ``users_list``),
    the path's last segment, or the one list the page holds.

    Raises:
        WatcherProtocolError: the page is not an object, or no list is found.
    """
    if not isinstance(page, dict):
        raise WatcherProtocolError(f"Watcher's {path!r} page is not a JSON object")
    if item_key is None:
        segment = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        for candidate in (LIST_KEYS.get(segment), segment):
            if candidate is not None and isinstance(page.get(candidate), list):
                return list(page[candidate])
        lists = [value for value in page.values() if isinstance(value, list)]
        if len(lists) == 1:
            return lists[0]
        item_key = LIST_KEYS.get(segment, segment)
    items = page.get(item_key)
    if not isinstance(items, list):
        raise WatcherProtocolError(f"Watcher's {path!r} page has no {item_key!r} list")
    return items


class CursorPages:
    """The paging of a v3 list: ask with ``cursor=<next>`` until ``next`` is empty.

    One page at a time: :attr:`query` is what to ask for, :meth:`take` reads an answer and
    says whether another page follows. A cursor seen before means the server is going in
    circles: :class:`WatcherPaginationError`, instead of yielding the same items forever.

    Args:
        path: the list's path (``"streams"``).
        params: query parameters for every page.
        item_key: the items' key in a page (see :func:`list_items`).
        limit: the page size to ask for.
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
        self.path = path
        self.item_key = item_key
        self.max_pages = max_pages
        self.query: dict[str, Any] = dict(params or {})
        if limit is not None:
            self.query["limit"] = limit
        self.pages = 0
        self._seen: set[str] = set()

    def take(self, page: object) -> tuple[list[Any], bool]:
        """The page's items, and whether to ask for another page."""
        items = list_items(page, self.path, self.item_key)
        assert isinstance(page, dict)
        self.pages += 1
        cursor = page.get("next")
        if not cursor or (self.max_pages is not None and self.pages >= self.max_pages):
            return items, False
        if not isinstance(cursor, str):
            raise WatcherProtocolError(f"Watcher's {self.path!r} page has a non-string cursor")
        if cursor in self._seen:
            raise WatcherPaginationError(
                f"Watcher repeated a cursor while paging {self.path!r} (page {self.pages})"
            )
        self._seen.add(cursor)
        self.query["cursor"] = cursor
        return items, True


def default_refresh_margin(lifetime: float | None) -> float:
    """How many seconds before expiry to refresh: 10% of the lifetime, at most 60 s.

    An hour-long token is refreshed a minute early, a 30 s token 3 s early, so short tokens
    are not refreshed on every call.
    """
    if lifetime is None:
        return DEFAULT_MAX_MARGIN
    return min(DEFAULT_MAX_MARGIN, max(0.0, lifetime) * DEFAULT_MARGIN_RATIO)


def needs_refresh(pair: TokenPair, now: float, margin: float | None = None) -> bool:
    """Whether ``pair``'s access token is expired or about to expire at local time ``now``."""
    expires = pair.local_expires_at
    if expires is None:
        return False
    if margin is None:
        margin = default_refresh_margin(pair.lifetime)
    return now >= expires - margin


def decode_claims(access_token: object) -> dict[str, Any]:
    """Read the claims of a Watcher access token without verifying its signature.

    The client has no key to verify Watcher's RS256 signature; the claims are read only to
    learn the expiry. Raises :class:`WatcherProtocolError` if the token is not a JWT or has no
    usable ``exp``.
    """
    if not isinstance(access_token, str) or not access_token:
        raise WatcherProtocolError("Watcher's access_token is not a string")
    try:
        claims = jwt.decode(
            access_token,
            options={"verify_signature": False, "verify_exp": False, "verify_iat": False},
        )
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise WatcherProtocolError(
            f"Watcher's access_token is not a decodable JWT ({type(exc).__name__})"
        ) from None
    if not isinstance(claims, dict):
        raise WatcherProtocolError("Watcher's access_token claims are not an object")
    exp = claims.get("exp")
    if not _is_timestamp(exp):
        raise WatcherProtocolError("Watcher's access_token has no numeric 'exp' claim")
    if "iat" in claims and not _is_timestamp(claims["iat"]):
        claims.pop("iat")
    return claims


def _is_timestamp(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value < 1e11
    )


def estimate_clock_offset(iat: float | None, date_header: str | None, received_at: float) -> float:
    """Server clock minus local clock, from the token's ``iat`` or else the ``Date`` header.

    Both have one-second resolution, so the midpoint of the second is taken and an offset
    within that resolution counts as none.
    """
    server_now: float | None = None
    if iat is not None:
        server_now = iat + 0.5 if float(iat).is_integer() else float(iat)
    elif date_header:
        try:
            server_now = parsedate_to_datetime(date_header).timestamp() + 0.5
        except (TypeError, ValueError, IndexError, OverflowError):
            server_now = None
    if server_now is None:
        return 0.0
    offset = server_now - received_at
    return 0.0 if abs(offset) <= _SKEW_RESOLUTION else offset


def parse_json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or ``None`` if it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def decode_answer(status: int, body: bytes, *, method: str, path: str) -> Any:
    """The JSON of an API answer, or the error it stands for.

    Raises:
        WatcherAPIError: an error status (``status_code`` tells which).
        WatcherProtocolError: the body is not JSON.
    """
    if status >= 400:
        raise WatcherAPIError(
            status, f"Watcher answered {error_summary(status, body)} for {method} {path}"
        )
    not_json = False
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        not_json = True
    if not_json:
        raise WatcherProtocolError(f"Watcher's answer to {method} {path} is not JSON")
    return data


def error_summary(status: int, body: bytes) -> str:
    """A short, secret-free description of an error response for exception messages."""
    data = parse_json_object(body)
    detail = ""
    if data is not None:
        errors = data.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else None
        if isinstance(first, dict):
            parts = [first.get("code"), first.get("title")]
            detail = ": ".join(str(p) for p in parts if isinstance(p, str) and p)
        elif isinstance(data.get("error"), str):
            detail = data["error"]
    detail = "".join(ch for ch in detail if ch.isprintable())[:_MAX_SUMMARY]
    return f"HTTP {status}" + (f" ({detail})" if detail else "")


def login_failure(status: int, body: bytes, *, refreshing: bool) -> WatcherAuthError:
    """The error a non-200 answer from ``/login`` stands for.

    A 401 is a definite rejection only when its body is JSON or empty (Watcher's own answer);
    a 401 page from something in front of Watcher is a protocol error, so nothing is deleted.
    """
    summary = error_summary(status, body)
    definite = not body.strip() or parse_json_object(body) is not None
    if status == 401 and definite:
        if refreshing:
            return RefreshRejected(f"Watcher rejected the refresh token: {summary}")
        return InvalidCredentials(f"Watcher rejected the username or password: {summary}")
    if status == 403 and definite:
        return WatcherPermissionDenied(f"Watcher denied the login: {summary}")
    if status >= 500 or status in (408, 425, 429):
        return WatcherUnavailable(f"Watcher is unavailable: {summary}")
    return WatcherProtocolError(f"unexpected answer from Watcher's login: {summary}")


def parse_token_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    received_at: float,
    previous: TokenPair | None = None,
    username: str | None = None,
    max_lifetime: float | None = None,
) -> TokenPair:
    """Turn an answer from ``/login`` into a :class:`TokenPair`, or raise what it means.

    Args:
        status: the HTTP status code.
        headers: the response headers (``Date`` is used for the clock offset).
        body: the raw body.
        received_at: local time when the answer arrived.
        previous: the pair being refreshed, if this is a refresh: its refresh token is kept
            when Watcher does not send a new one, and its history is carried over.
        username: the Watcher username, for a password login.
        max_lifetime: the longest lifetime believed: a later ``exp`` is cut to
            ``issued_at + max_lifetime`` (default :data:`DEFAULT_MAX_LIFETIME`).
    """
    if max_lifetime is None:
        max_lifetime = DEFAULT_MAX_LIFETIME
    if status != 200:
        raise login_failure(status, body, refreshing=previous is not None)
    data = parse_json_object(body)
    if data is None:
        raise WatcherProtocolError("Watcher's login answer is not a JSON object")
    access = data.get("access_token")
    claims = decode_claims(access)
    assert isinstance(access, str)  # decode_claims checked it
    refresh = data.get("refresh_token")
    if refresh is None and previous is not None:
        refresh = previous.refresh_token
    if not isinstance(refresh, str) or not refresh:
        raise WatcherProtocolError("Watcher's login answer has no refresh_token")
    iat = claims.get("iat")
    offset = estimate_clock_offset(iat, headers.get("Date"), received_at)
    issued_at = float(iat) if iat is not None else received_at + offset
    expires_at = min(float(claims["exp"]), max(issued_at, received_at + offset) + max_lifetime)
    return TokenPair(
        access_token=access,
        refresh_token=refresh,
        expires_at=expires_at,
        issued_at=issued_at,
        clock_offset=offset,
        username=previous.username if previous is not None else username,
        connected_at=previous.connected_at if previous is not None else received_at,
        refreshed_at=received_at if previous is not None else None,
        scheme="jwt",
    )
