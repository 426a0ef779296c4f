"""Authorization policy without I/O: what a response means, when a token is stale.

Everything here takes data and returns data (or raises), so it is tested by feeding it
responses. The transport in :mod:`watcher_auth._manager` only executes what this decides.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import jwt

from watcher_auth._exceptions import (
    InvalidCredentials,
    WatcherAuthError,
    WatcherPermissionDenied,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth._tokens import TokenPair

__all__ = [
    "DEFAULT_MARGIN_RATIO",
    "DEFAULT_MAX_MARGIN",
    "RefreshRejected",
    "decode_claims",
    "default_refresh_margin",
    "error_summary",
    "estimate_clock_offset",
    "login_failure",
    "needs_refresh",
    "parse_json_object",
    "parse_token_response",
]

DEFAULT_MARGIN_RATIO = 0.1
DEFAULT_MAX_MARGIN = 60.0
# Second-resolution timestamps (iat, Date) cannot measure a smaller skew; treat it as none.
_SKEW_RESOLUTION = 1.0
_MAX_SUMMARY = 200


class RefreshRejected(WatcherAuthError):
    """Watcher definitely refused the refresh token (internal: the manager decides what next)."""


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
    """
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
    return TokenPair(
        access_token=access,
        refresh_token=refresh,
        expires_at=float(claims["exp"]),
        issued_at=issued_at,
        clock_offset=offset,
        username=previous.username if previous is not None else username,
        connected_at=previous.connected_at if previous is not None else received_at,
        refreshed_at=received_at if previous is not None else None,
        scheme="jwt",
    )
