"""The pure policy functions: what an answer from /login means, when a token is stale."""

from __future__ import annotations

import json

import jwt
import pytest

from watcher_auth import (
    InvalidCredentials,
    TokenPair,
    WatcherPermissionDenied,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth._policy import (
    RefreshRejected,
    default_refresh_margin,
    estimate_clock_offset,
    needs_refresh,
    parse_token_response,
)

NOW = 1_800_000_000.0


def unsigned_jwt(**claims: object) -> str:
    return jwt.encode(claims, "not-the-server-key-but-claims-are-read-unverified", "HS256")


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_a_login_answer_becomes_a_pair_with_expiry_from_the_jwt() -> None:
    access = unsigned_jwt(exp=NOW + 300, iat=NOW, session="s1")
    pair = parse_token_response(
        200, {}, body(access_token=access, refresh_token="r1"), received_at=NOW, username="alice"
    )
    assert pair.access_token == access and pair.refresh_token == "r1"
    assert pair.expires_at == NOW + 300 and pair.lifetime == 300
    assert pair.username == "alice" and pair.connected_at == NOW and pair.refreshed_at is None


def test_a_refresh_answer_without_a_refresh_token_keeps_the_old_one() -> None:
    previous = TokenPair("old", "r-old", NOW, NOW - 300, username="alice", connected_at=1.0)
    access = unsigned_jwt(exp=NOW + 600, iat=NOW + 300)
    pair = parse_token_response(
        200, {}, body(access_token=access), received_at=NOW + 300, previous=previous
    )
    assert pair.refresh_token == "r-old"
    assert pair.username == "alice" and pair.connected_at == 1.0 and pair.refreshed_at == NOW + 300


def test_a_rotated_refresh_token_replaces_the_old_one() -> None:
    previous = TokenPair("old", "r-old", NOW, NOW - 300)
    access = unsigned_jwt(exp=NOW + 600)
    pair = parse_token_response(
        200,
        {},
        body(access_token=access, refresh_token="r-new"),
        received_at=NOW,
        previous=previous,
    )
    assert pair.refresh_token == "r-new"


@pytest.mark.parametrize(
    "raw",
    [
        b"<html><body>Bad Gateway</body></html>",
        b"",
        b"[1, 2]",
        body(refresh_token="r"),
        body(access_token="not-a-jwt", refresh_token="r"),
        body(access_token=unsigned_jwt(iat=NOW), refresh_token="r"),
        body(access_token=unsigned_jwt(exp="tomorrow"), refresh_token="r"),
        body(access_token=unsigned_jwt(exp=NOW + 5)),
        body(access_token=12, refresh_token="r"),
    ],
)
def test_a_malformed_200_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(WatcherProtocolError):
        parse_token_response(200, {}, raw, received_at=NOW)


@pytest.mark.parametrize(
    ("status", "raw", "refreshing", "error"),
    [
        (401, body(errors=[{"status": "401", "title": "bad"}]), False, InvalidCredentials),
        (401, b"", True, RefreshRejected),
        (401, body(error="expired"), True, RefreshRejected),
        (401, b"<html>401 from a proxy</html>", True, WatcherProtocolError),
        (403, body(errors=[]), False, WatcherPermissionDenied),
        (500, b"", True, WatcherUnavailable),
        (502, b"<html>Bad Gateway</html>", True, WatcherUnavailable),
        (503, body(errors=[]), False, WatcherUnavailable),
        (429, b"", True, WatcherUnavailable),
        (404, b"not here", False, WatcherProtocolError),
        (302, b"", True, WatcherProtocolError),
    ],
)
def test_error_statuses_map_to_typed_errors(
    status: int, raw: bytes, refreshing: bool, error: type[Exception]
) -> None:
    previous = TokenPair("a", "r") if refreshing else None
    with pytest.raises(error):
        parse_token_response(status, {}, raw, received_at=NOW, previous=previous)


def test_error_messages_show_watchers_code_and_title() -> None:
    raw = body(errors=[{"status": "401", "code": "invalid_credentials", "title": "Bad login"}])
    with pytest.raises(InvalidCredentials, match="invalid_credentials: Bad login"):
        parse_token_response(401, {}, raw, received_at=NOW)


def test_the_margin_suits_both_hour_long_and_few_second_tokens() -> None:
    assert default_refresh_margin(3600) == 60
    assert default_refresh_margin(30) == 3
    assert default_refresh_margin(2) == pytest.approx(0.2)
    assert default_refresh_margin(None) == 60


def test_a_token_is_stale_only_within_the_margin_of_its_local_expiry() -> None:
    pair = TokenPair("a", "r", expires_at=NOW + 30, issued_at=NOW, clock_offset=0)
    assert not needs_refresh(pair, NOW + 26.9)
    assert needs_refresh(pair, NOW + 27.0)


def test_server_clock_skew_is_measured_from_iat_or_the_date_header() -> None:
    assert estimate_clock_offset(NOW + 600, None, NOW) == pytest.approx(600.5)
    assert estimate_clock_offset(NOW - 600, None, NOW) == pytest.approx(-599.5)
    date_ten_minutes_ahead = "Fri, 15 Jan 2027 08:10:00 GMT"  # NOW + 600
    assert estimate_clock_offset(None, date_ten_minutes_ahead, NOW) == pytest.approx(600.5)
    assert estimate_clock_offset(NOW, None, NOW + 0.4) == 0.0
    assert estimate_clock_offset(None, "garbage", NOW) == 0.0
    assert estimate_clock_offset(None, None, NOW) == 0.0


def test_a_skewed_server_clock_moves_the_local_expiry() -> None:
    access = unsigned_jwt(exp=NOW + 600 + 300, iat=NOW + 600)
    pair = parse_token_response(
        200, {}, body(access_token=access, refresh_token="r"), received_at=NOW
    )
    assert pair.local_expires_at == pytest.approx(NOW + 300 - 0.5)
    assert not needs_refresh(pair, NOW + 200)
    assert needs_refresh(pair, NOW + 275)


def test_the_repr_of_a_pair_hides_its_tokens() -> None:
    pair = TokenPair("secret-access", "secret-refresh", username="alice")
    assert "secret" not in repr(pair) and "secret" not in str(pair)
    assert "alice" in repr(pair)
