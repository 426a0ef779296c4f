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


def test_a_page_lists_its_items_under_watchers_key_the_paths_name_or_its_one_list() -> None:
    from watcher_auth._policy import list_items

    assert list_items({"users_list": [1], "users": "x"}, "users") == [1]
    assert list_items({"streams": [1, 2], "other": [3]}, "streams?limit=2") == [1, 2]
    assert list_items({"items": [4], "next": None}, "folders/7/cameras") == [4]
    assert list_items({"a": [1], "b": [2]}, "x", item_key="b") == [2]
    with pytest.raises(WatcherProtocolError, match="no 'x' list"):
        list_items({"a": [1], "b": [2]}, "x")
    with pytest.raises(WatcherProtocolError, match="no 'users_list' list"):
        list_items({"next": None}, "users")
    with pytest.raises(WatcherProtocolError, match="not a JSON object"):
        list_items([1], "x")
    # Without Watcher's own key, the list named like the path still wins over other lists.
    assert list_items({"users": [1], "groups": [2]}, "users") == [1]


def test_paging_stops_after_max_pages_and_refuses_a_repeated_or_odd_cursor() -> None:
    from watcher_auth import WatcherPaginationError
    from watcher_auth._policy import CursorPages

    pages = CursorPages("streams", limit=2, max_pages=2)
    assert pages.query == {"limit": 2}
    assert pages.take({"streams": [1], "next": "c1"}) == ([1], True)
    assert pages.query == {"limit": 2, "cursor": "c1"}
    assert pages.take({"streams": [2], "next": "c2"}) == ([2], False)  # the second page ends it
    circling = CursorPages("streams")
    assert circling.take({"streams": [1], "next": "c1"}) == ([1], True)
    assert circling.take({"streams": [2], "next": "c2"}) == ([2], True)
    with pytest.raises(WatcherPaginationError):
        circling.take({"streams": [3], "next": "c1"})
    with pytest.raises(WatcherProtocolError, match="non-string cursor"):
        CursorPages("streams").take({"streams": [], "next": 5})
    assert CursorPages("streams").take({"streams": [9], "next": ""}) == ([9], False)


@pytest.mark.parametrize("exp", [0, -5, 1e11, True])
def test_an_access_token_without_a_plausible_exp_is_refused(exp: object) -> None:
    with pytest.raises(WatcherProtocolError, match="exp"):
        parse_token_response(200, {}, _answer({"exp": exp}), received_at=NOW)


@pytest.mark.parametrize("token", ["", 42])
def test_an_access_token_that_is_not_a_non_empty_string_is_refused(token: object) -> None:
    body = json.dumps({"access_token": token, "refresh_token": "r"}).encode()
    with pytest.raises(WatcherProtocolError, match="not a string"):
        parse_token_response(200, {}, body, received_at=NOW)


def test_an_implausible_iat_is_ignored_and_the_date_header_used_instead() -> None:
    date = formatdate(NOW + 600, usegmt=True)
    body = _answer({"iat": "yesterday", "exp": NOW + 900})
    pair = parse_token_response(200, {"Date": date}, body, received_at=NOW)
    assert pair.clock_offset == pytest.approx(600.5)
    assert pair.issued_at == pytest.approx(NOW + 600.5)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (408, "WatcherUnavailable"),
        (425, "WatcherUnavailable"),
        (429, "WatcherUnavailable"),
        (500, "WatcherUnavailable"),
        (409, "WatcherProtocolError"),
        (426, "WatcherProtocolError"),
    ],
)
def test_a_login_answered_with_a_retryable_status_means_watcher_is_unavailable(
    status: int, kind: str
) -> None:
    from watcher_auth._policy import login_failure

    assert type(login_failure(status, b"", refreshing=False)).__name__ == kind


def test_a_successful_answer_that_is_not_json_is_a_protocol_error() -> None:
    from watcher_auth._policy import decode_answer

    with pytest.raises(WatcherProtocolError, match="not JSON"):
        decode_answer(200, b"<html>", method="GET", path="/watcher/client-api/v3/streams")
    assert decode_answer(200, b'{"a": 1}', method="GET", path="/x") == {"a": 1}


def test_the_lifetime_cap_counts_from_the_servers_clock_when_it_is_behind() -> None:
    iat = NOW - 600  # Watcher's clock is ten minutes behind this host's
    body = _answer({"iat": iat, "exp": iat + 10 * 86400})
    pair = parse_token_response(200, {}, body, received_at=NOW, max_lifetime=3600)
    assert pair.expires_at == pytest.approx(iat + 0.5 + 3600, abs=0.01)
    assert pair.local_expires_at == pytest.approx(NOW + 3600, abs=0.01)


def test_the_v2_system_key_comes_from_the_setting_else_the_environment_and_is_checked() -> None:
    from watcher_auth import ConfigurationError
    from watcher_auth.v2._policy import SYSTEM_API_KEY_ENV, system_api_key_setting

    env = {SYSTEM_API_KEY_ENV: "from-env"}
    assert system_api_key_setting("from-setting", setting="S", environ=env) == "from-setting"
    assert system_api_key_setting(None, setting="S", environ=env) == "from-env"
    assert system_api_key_setting(None, setting="S", environ={}) is None
    with pytest.raises(ConfigurationError, match="S must be a string"):
        system_api_key_setting(42, setting="S", environ={})
    with pytest.raises(ConfigurationError, match="set but empty"):
        system_api_key_setting(None, setting="S", environ={SYSTEM_API_KEY_ENV: "  "})
    with pytest.raises(ConfigurationError, match=SYSTEM_API_KEY_ENV):
        system_api_key_setting(None, setting="S", environ={SYSTEM_API_KEY_ENV: "a b\n"})


def test_a_v2_user_key_record_needs_its_user_and_an_unknown_kind_is_refused() -> None:
    from watcher_auth.v2._policy import credential_headers

    key = TokenPair("the-key", None, None, username="alice", scheme="user-key")
    assert credential_headers(key) == {"x-vsaas-api-key": "the-key", "x-vsaas-user": "alice"}
    with pytest.raises(WatcherProtocolError):
        credential_headers(TokenPair("the-key", None, None, username=None, scheme="user-key"))
    with pytest.raises(WatcherProtocolError):
        credential_headers(TokenPair("x", None, None, username="alice", scheme="jwt"))


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (408, b"", "WatcherUnavailable"),
        (425, b"", "WatcherUnavailable"),
        (409, b"", "WatcherProtocolError"),
        (426, b"", "WatcherProtocolError"),
    ],
)
def test_a_v2_answer_with_a_retryable_status_means_watcher_is_unavailable(
    status: int, body: bytes, kind: str
) -> None:
    from watcher_auth.v2._policy import unexpected_answer

    assert type(unexpected_answer(status, body, "whoami")).__name__ == kind


def test_a_v2_login_refusal_is_definite_only_when_watcher_itself_answered() -> None:
    from watcher_auth import InvalidCredentials
    from watcher_auth.v2._policy import login_failure

    assert isinstance(login_failure(403, b'{"error": "bad"}'), InvalidCredentials)
    assert isinstance(login_failure(403, b""), InvalidCredentials)
    for page in (b"<!doctype html><p>denied", b"  <p>proxy</p>", b"Denied <html>x"):
        assert not isinstance(login_failure(403, page), InvalidCredentials), page


def test_v2_offset_paging_asks_page_after_page_until_a_short_one_or_max_pages() -> None:
    from watcher_auth.v2._policy import OffsetPages

    with pytest.raises(ValueError, match="at least 1"):
        OffsetPages("cameras", limit=0)
    assert OffsetPages("cameras", limit=1).query == {"limit": 1, "offset": 0}
    pages = OffsetPages("cameras", limit=2, max_pages=2)
    assert pages.take([1, 2]) == ([1, 2], True) and pages.query["offset"] == 2
    assert pages.take([3, 4]) == ([3, 4], False)  # the second page ends it
    boxed = OffsetPages("users", item_key="users", limit=2)
    assert boxed.take({"users": [1]}) == ([1], False)
    with pytest.raises(WatcherProtocolError, match="JSON array"):
        OffsetPages("cameras").take({"cameras": []})


def test_a_v2_login_answer_names_the_user_watcher_knows_or_the_one_who_logged_in() -> None:
    from watcher_auth.v2._policy import parse_login_response

    pair = parse_login_response(
        200, b'{"session": "s1", "login": "Alice"}', username="alice", received_at=NOW
    )
    assert (pair.access_token, pair.username) == ("s1", "Alice")
    for login in (b'""', b"5", b"null"):
        body = b'{"session": "s1", "login": ' + login + b"}"
        assert parse_login_response(200, body, username="alice", received_at=NOW).username == (
            "alice"
        )


@pytest.mark.parametrize(
    "body",
    [b'{"is_logged_in": false, "login": "alice"}', b'{"login": ""}', b'{"login": 5}', b"{}"],
)
def test_a_whoami_answer_describing_a_guest_means_the_record_is_dead(body: bytes) -> None:
    from watcher_auth.v2._policy import whoami_answer

    assert whoami_answer(200, body) is None
    assert whoami_answer(200, b'{"is_logged_in": true, "login": "alice"}') is not None


def test_a_token_without_a_positive_lifetime_is_refreshed_only_when_it_expires() -> None:
    pair = TokenPair("a", "r", expires_at=NOW, issued_at=NOW + 5)
    assert needs_refresh(pair, NOW - 0.05) is False
    assert needs_refresh(pair, NOW) is True


def test_an_error_message_shows_watchers_text_code_and_title_cut_to_200_characters() -> None:
    from watcher_auth._policy import error_summary

    raw = json.dumps({"errors": [{"code": {"id": 7}, "title": "Bad login"}]}).encode()
    assert error_summary(401, raw) == "HTTP 401 (Bad login)"
    raw = json.dumps({"errors": [{"code": "", "title": "Bad login"}]}).encode()
    assert error_summary(401, raw) == "HTTP 401 (Bad login)"
    long = json.dumps({"error": "x" * 500}).encode()
    assert error_summary(500, long) == "HTTP 500 (" + "x" * 200 + ")"


def test_v2_lists_are_asked_for_a_hundred_at_a_time_unless_told() -> None:
    from watcher_auth.v2._policy import OffsetPages

    assert OffsetPages("cameras").query == {"limit": 100, "offset": 0}
    assert OffsetPages("cameras", params={"q": "x"}, limit=5).query == {
        "q": "x",
        "limit": 5,
        "offset": 0,
    }


def test_a_v2_page_that_is_a_bare_array_is_read_even_when_an_item_key_is_named() -> None:
    from watcher_auth.v2._policy import OffsetPages

    pages = OffsetPages("users", item_key="users", limit=2)
    assert pages.take([1, 2]) == ([1, 2], True)
    assert pages.take({"users": [3]}) == ([3], False)
