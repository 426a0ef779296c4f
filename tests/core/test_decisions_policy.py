"""How a login answer becomes a pair and when that pair is due, at the edges that matter:
clock offsets without ``iat``, the one-second resolution, the lifetime cap, the margin."""

from __future__ import annotations

import json
from email.utils import formatdate

import jwt
import pytest

from watcher_auth import TokenManager, TokenPair, WatcherProtocolError
from watcher_auth._policy import (
    estimate_clock_offset,
    needs_refresh,
    parse_token_response,
)
from watcher_auth.testing import FakeClock
from watcher_auth.testing.pytest_plugin import EmulatorFactory

KEY = "portal-user-3"
NOW = 1_800_000_000.0
SIGNING_KEY = "a-32-byte-long-hmac-key-for-tests"


def _answer(claims: dict[str, object], refresh_token: object = "r-1") -> bytes:
    token = jwt.encode(claims, SIGNING_KEY, "HS256")
    return json.dumps({"access_token": token, "refresh_token": refresh_token}).encode()


@pytest.mark.parametrize("skew", [-600, 600])
def test_without_iat_the_date_header_gives_the_servers_clock_offset_with_its_sign(
    skew: int,
) -> None:
    date = formatdate(NOW + skew, usegmt=True)
    pair = parse_token_response(
        200, {"Date": date}, _answer({"exp": NOW + skew + 300}), received_at=NOW
    )
    assert pair.clock_offset == pytest.approx(skew + 0.5)
    assert pair.local_expires_at == pytest.approx(NOW + 300 - 0.5)


@pytest.mark.parametrize("skew", [-600.0, 600.0])
def test_a_skewed_server_without_iat_neither_refreshes_every_call_nor_401s(
    watcher_emulator_factory: EmulatorFactory, fake_clock: FakeClock, skew: float
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=300, server_clock_offset=skew, include_iat=False
    )
    manager = TokenManager(emulator.url, clock=fake_clock, timeout=5.0)
    manager.login(KEY, username="alice", password="secret")
    session = manager.session(KEY)
    for _ in range(2 * 30):  # two lifetimes in steps of 10 s
        assert session.get("profile").status_code == 200
        fake_clock.advance(10)
    stats = emulator.stats
    assert (stats.unauthorized, stats.refreshes) == (0, 2)


def test_an_offset_within_one_second_counts_as_none_and_beyond_it_counts() -> None:
    iat = 1_800_000_000  # a whole second: the server's time is taken as its midpoint
    assert estimate_clock_offset(iat, None, received_at=iat + 0.5 - 1.0) == 0.0
    assert estimate_clock_offset(iat, None, received_at=iat + 0.5 + 1.0) == 0.0
    assert estimate_clock_offset(iat, None, received_at=iat + 0.5 - 1.25) == pytest.approx(1.25)
    assert estimate_clock_offset(iat, None, received_at=iat + 0.5 + 1.25) == pytest.approx(-1.25)
    assert estimate_clock_offset(iat + 0.25, None, received_at=iat - 2) == pytest.approx(2.25)


def test_a_token_claiming_a_longer_life_than_max_lifetime_is_believed_only_that_long() -> None:
    body = _answer({"iat": NOW, "exp": NOW + 10 * 86400})
    pair = parse_token_response(200, {}, body, received_at=NOW, max_lifetime=3600)
    assert pair.expires_at == NOW + 3600
    pair = parse_token_response(200, {}, body, received_at=NOW)
    assert pair.expires_at == NOW + 86400  # the default cap: one day
    short = parse_token_response(
        200, {}, _answer({"iat": NOW, "exp": NOW + 300}), received_at=NOW, max_lifetime=3600
    )
    assert short.expires_at == NOW + 300


@pytest.mark.parametrize("refresh_token", ["", 42, ["r"]])
def test_a_login_answer_without_a_usable_refresh_token_is_refused(refresh_token: object) -> None:
    body = _answer({"iat": NOW, "exp": NOW + 300}, refresh_token)
    with pytest.raises(WatcherProtocolError, match="refresh_token"):
        parse_token_response(200, {}, body, received_at=NOW)


def test_a_refresh_answer_without_a_refresh_token_keeps_the_previous_one() -> None:
    previous = TokenPair("old-access", "the-refresh-token", NOW + 10, username="alice")
    body = json.dumps(
        {"access_token": jwt.encode({"iat": NOW, "exp": NOW + 300}, SIGNING_KEY, "HS256")}
    ).encode()
    pair = parse_token_response(200, {}, body, received_at=NOW, previous=previous)
    assert pair.refresh_token == "the-refresh-token" and pair.username == "alice"


def test_an_explicit_margin_is_honoured_and_the_default_applies_without_one() -> None:
    pair = TokenPair("a", "r", NOW + 300, issued_at=NOW)  # default margin: 30 s
    assert needs_refresh(pair, NOW + 300 - 100, margin=100) is True
    assert needs_refresh(pair, NOW + 300 - 101, margin=100) is False
    assert needs_refresh(pair, NOW + 300 - 100) is False
    assert needs_refresh(pair, NOW + 300 - 30) is True
    assert needs_refresh(TokenPair("a", "r", None), NOW + 10**6) is False
