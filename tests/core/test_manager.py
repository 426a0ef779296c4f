"""The token manager against the Watcher emulator over loopback.

Every test that takes ``drivers`` runs three times: through :class:`TokenManager` with
``requests`` sessions, through its ``httpx.Client``, and through :class:`AsyncTokenManager`
(see tests/asyncio/drivers.py). The sync and async managers share one lifecycle; these tests
are what keeps what a user sees from either the same.
"""

from __future__ import annotations

import logging
import threading
import time

import jwt
import pytest

from tests.asyncio.drivers import Driver, Drivers
from tests.asyncio.servers import foreign_server
from watcher_auth import (
    EventType,
    InvalidCredentials,
    NotConnected,
    ReauthenticationRequired,
    TokenManager,
    TokenPair,
    WatcherEvent,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth.testing import FakeClock, SharedClock
from watcher_auth.testing.emulator import WatcherEmulator
from watcher_auth.testing.storm import run_storm

KEY = "portal-user-42"
LIFETIME = 300.0
HMAC_KEY = "a-32-byte-long-hmac-key-for-tests"


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(clock=fake_clock, access_lifetime=LIFETIME)


@pytest.fixture
def manager(drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock) -> Driver:
    return drivers(
        emulator.url, store=drivers.memory_store(), clock=fake_clock, timeout=2.0, deadline=2.0
    )


@pytest.fixture
def connected(manager: Driver) -> Driver:
    manager.login(KEY, username="alice", password="secret")
    return manager


def hand_made_pair(clock: FakeClock) -> TokenPair:
    """A pair for a server that only records what it receives (it checks no signature)."""
    token = jwt.encode({"exp": clock() + 300}, HMAC_KEY, "HS256")
    return TokenPair(token, "r", clock() + 300)


def test_login_stores_a_pair_read_from_the_jwt(
    manager: Driver, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    pair = manager.login(KEY, username="alice", password="secret")
    claims = jwt.decode(pair.access_token, options={"verify_signature": False})
    assert pair.expires_at == claims["exp"] and pair.username == "alice"
    assert pair.local_expires_at == pytest.approx(fake_clock() + LIFETIME, abs=1)
    assert manager.tokens(KEY) == pair
    assert manager.is_connected(KEY)
    assert emulator.stats.password_logins == 1


def test_a_wrong_password_raises_invalid_credentials_and_stores_nothing(
    manager: Driver, emulator: WatcherEmulator
) -> None:
    with pytest.raises(InvalidCredentials):
        manager.login(KEY, username="alice", password="wrong")
    assert manager.tokens(KEY) is None
    assert emulator.stats.failed_logins == 1


def test_a_call_carries_the_bearer_token_to_the_v3_root(
    connected: Driver, emulator: WatcherEmulator
) -> None:
    response = connected.session(KEY).get("streams")
    assert response.status_code == 200
    assert [s["name"] for s in response.json()["streams"]] == [
        "alice-cam-0",
        "alice-cam-1",
        "alice-cam-2",
    ]
    assert emulator.stats.calls_by_user == {"alice": 1}


def test_paginate_follows_the_cursor_to_the_end(
    drivers: Drivers, watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(clock=fake_clock, seed_users=False)
    emulator.add_user("carol", "pw", streams=25)
    manager = drivers(emulator.url, clock=fake_clock)
    manager.login(KEY, username="carol", password="pw")
    names = [s["name"] for s in manager.session(KEY).paginate("streams", limit=10)]
    assert len(names) == 25 and len(set(names)) == 25
    assert emulator.stats.calls == 3


def test_a_key_without_tokens_is_not_connected(manager: Driver, emulator: WatcherEmulator) -> None:
    with pytest.raises(NotConnected) as caught:
        manager.session("nobody").get("streams")
    assert caught.value.key == "nobody"
    assert not manager.is_connected("nobody")
    assert emulator.stats.calls == 0


def test_no_refresh_while_the_token_is_fresh(
    connected: Driver, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    session = connected.session(KEY)
    for _ in range(5):
        fake_clock.advance(50)
        assert session.get("profile").status_code == 200
    assert emulator.stats.refreshes == 0


def test_the_token_is_refreshed_just_before_it_expires(
    connected: Driver, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    before = connected.tokens(KEY)
    fake_clock.advance(LIFETIME - 10)
    assert connected.session(KEY).get("profile").status_code == 200
    after = connected.tokens(KEY)
    stats = emulator.stats
    assert (stats.refreshes, stats.unauthorized, stats.password_logins) == (1, 0, 1)
    assert before is not None and after is not None
    assert after.access_token != before.access_token and after.refreshed_at == fake_clock()


def test_current_tokens_refreshes_a_stale_pair_and_refresh_forces_one(
    connected: Driver, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    first = connected.current_tokens(KEY)
    fake_clock.advance(LIFETIME)
    second = connected.current_tokens(KEY)
    third = connected.refresh(KEY)
    assert len({first.access_token, second.access_token, third.access_token}) == 3
    assert connected.tokens(KEY) == third
    assert emulator.stats.refreshes == 2


@pytest.mark.parametrize("skew", [-600.0, 600.0])
def test_a_skewed_server_clock_neither_refreshes_every_call_nor_401s(
    drivers: Drivers, watcher_emulator_factory, fake_clock: FakeClock, skew: float
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, server_clock_offset=skew
    )
    manager = drivers(emulator.url, clock=fake_clock)
    manager.login(KEY, username="alice", password="secret")
    session = manager.session(KEY)
    for _ in range(3 * 30):  # 3 lifetimes in steps of 10 s
        assert session.get("profile").status_code == 200
        fake_clock.advance(10)
    stats = emulator.stats
    assert stats.unauthorized == 0
    assert stats.refreshes == 3


def test_a_401_refreshes_and_retries_once(connected: Driver, emulator: WatcherEmulator) -> None:
    emulator.revoke_access_tokens("alice")
    response = connected.session(KEY).get("profile")
    assert response.status_code == 200 and response.json()["name"] == "alice"
    assert response.history == [401]
    stats = emulator.stats
    assert (stats.unauthorized, stats.refreshes, stats.password_logins) == (1, 1, 1)


def test_a_second_401_is_returned_to_the_caller_without_a_loop(
    connected: Driver, emulator: WatcherEmulator
) -> None:
    emulator.fail_next("call", count=2, mode="401")
    response = connected.session(KEY).get("profile")
    assert response.status_code == 401
    stats = emulator.stats
    assert (stats.unauthorized, stats.refreshes) == (2, 1)


def test_a_put_body_is_sent_again_on_the_retry(
    connected: Driver, emulator: WatcherEmulator
) -> None:
    emulator.revoke_access_tokens("alice")
    session = connected.session(KEY)
    response = session.put("streams/alice-cam-1", {"title": "Front door"})
    assert response.status_code == 200
    assert session.get("streams/alice-cam-1").json()["title"] == "Front door"
    emulator.revoke_access_tokens("alice")
    response = session.put_stream("streams/alice-cam-1", b'{"title": "Back door"}')
    assert response.status_code == 200 and response.json()["title"] == "Back door"
    assert emulator.stats.refreshes == 2


def test_revocation_makes_the_refresh_fail_and_asks_for_a_new_login(
    connected: Driver, emulator: WatcherEmulator
) -> None:
    events: list[WatcherEvent] = []
    connected.add_listener(events.append)
    emulator.revoke("alice")
    with pytest.raises(ReauthenticationRequired) as caught:
        connected.session(KEY).get("profile")
    assert caught.value.key == KEY and caught.value.reason == "refresh_rejected"
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert connected.tokens(KEY) is None
    assert emulator.stats.rejected_refreshes == 1
    assert [e.type for e in events] == [
        EventType.UNAUTHORIZED_RETRY,
        EventType.REFRESH_REJECTED,
        EventType.REAUTHENTICATION_REQUIRED,
    ]


def test_a_credentials_provider_logs_in_again_once_instead(
    drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    asked: list[str] = []

    def provider(key: str) -> tuple[str, str] | None:
        asked.append(key)
        return ("alice", "secret") if key == "service" else None

    manager = drivers(emulator.url, clock=fake_clock, credentials=provider)
    assert manager.session("service").get("profile").status_code == 200
    emulator.revoke("alice")
    assert manager.session("service").get("profile").status_code == 200
    stats = emulator.stats
    assert (stats.password_logins, stats.rejected_refreshes) == (2, 1)
    assert asked == ["service", "service"]
    with pytest.raises(NotConnected):
        manager.session("someone-else").get("profile")


def test_an_async_credentials_provider_is_awaited(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    from tests.asyncio.drivers import AsyncDriver

    emulator = watcher_emulator_factory(clock=fake_clock)

    async def provider(key: str) -> tuple[str, str] | None:
        return ("alice", "secret") if key == "service" else None

    manager = AsyncDriver(emulator.url, clock=fake_clock, credentials=provider)
    try:
        assert manager.session("service").json("profile")["name"] == "alice"
        with pytest.raises(NotConnected):
            manager.session("someone-else").get("profile")
    finally:
        manager.close()
    assert emulator.stats.password_logins == 1


@pytest.mark.parametrize("mode", ["500", "502_html", "503", "drop", "hang", "reset_mid_body"])
def test_a_transient_failure_during_refresh_keeps_the_pair_and_recovers(
    connected: Driver, emulator: WatcherEmulator, fake_clock: FakeClock, mode: str
) -> None:
    # A refresh waits for its answer until the deadline (the fixture's 2 s), not the call
    # timeout; only an answer later than that is a failure.
    emulator.configure(hang_seconds=3.0)
    stored = connected.tokens(KEY)
    fake_clock.advance(LIFETIME + 1)
    emulator.fail_next("refresh", mode=mode)
    with pytest.raises(WatcherUnavailable) as caught:
        connected.session(KEY).get("profile")
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert connected.tokens(KEY) == stored
    assert connected.session(KEY).get("profile").status_code == 200
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 1, 0)


@pytest.mark.parametrize("mode", ["non_json", "bad_jwt"])
def test_a_malformed_refresh_answer_is_a_protocol_error_that_keeps_the_pair(
    connected: Driver, emulator: WatcherEmulator, fake_clock: FakeClock, mode: str
) -> None:
    stored = connected.tokens(KEY)
    fake_clock.advance(LIFETIME + 1)
    emulator.fail_next("refresh", mode=mode)
    with pytest.raises(WatcherProtocolError):
        connected.session(KEY).get("profile")
    assert connected.tokens(KEY) == stored
    assert connected.session(KEY).get("profile").status_code == 200


@pytest.mark.parametrize("mode", ["500", "drop", "non_json"])
def test_a_failed_login_stores_nothing(
    manager: Driver, emulator: WatcherEmulator, mode: str
) -> None:
    emulator.fail_next("login", mode=mode)
    with pytest.raises((WatcherUnavailable, WatcherProtocolError)):
        manager.login(KEY, username="alice", password="secret")
    assert manager.tokens(KEY) is None


@pytest.mark.parametrize("rotate", [True, False])
def test_rotation_on_or_off_keeps_working_across_many_refreshes(
    drivers: Drivers, watcher_emulator_factory, fake_clock: FakeClock, rotate: bool
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, rotate_refresh_tokens=rotate
    )
    manager = drivers(emulator.url, clock=fake_clock)
    first = manager.login(KEY, username="alice", password="secret")
    for _ in range(4):
        fake_clock.advance(LIFETIME)
        assert manager.session(KEY).get("profile").status_code == 200
    last = manager.tokens(KEY)
    assert last is not None
    assert (last.refresh_token != first.refresh_token) is rotate
    stats = emulator.stats
    assert (stats.refreshes, stats.rejected_refreshes, stats.password_logins) == (4, 0, 1)


# Origins: credentials go to Watcher's origin only, and only Watcher's answers count.


def test_the_bearer_token_never_goes_to_another_origin(
    connected: Driver, emulator: WatcherEmulator, recording_server
) -> None:
    session = connected.session(KEY)
    session.get(recording_server.url + "/elsewhere")
    session.get(f"http://localhost:{emulator.port}/watcher/client-api/v3/profile")
    assert recording_server.seen and "Authorization" not in recording_server.seen[0]
    assert emulator.stats.calls_by_user == {}


def test_a_redirect_to_another_origin_drops_the_bearer_token(
    drivers: Drivers, recording_server, second_recording_server, fake_clock: FakeClock
) -> None:
    # The emulator never redirects, so a recording server plays Watcher here with a
    # hand-made token: what is checked is only which headers reach the redirect target.
    manager = drivers(recording_server.url, clock=fake_clock)
    pair = hand_made_pair(fake_clock)
    manager.save(KEY, pair)
    target = second_recording_server.url + "/landing"
    response = manager.session(KEY).get(f"{recording_server.url}/redirect?to={target}")
    assert response.status_code == 200 and response.history == [302]
    assert recording_server.seen[0]["Authorization"] == f"Bearer {pair.access_token}"
    assert "Authorization" not in second_recording_server.seen[0]


def test_a_401_from_another_origin_is_returned_as_it_came(
    connected: Driver, emulator: WatcherEmulator
) -> None:
    stored = connected.tokens(KEY)
    with foreign_server() as foreign:
        response = connected.session(KEY).get(foreign.url + "/status/401")
    assert response.status_code == 401 and response.history == []
    assert [seen["path"] for seen in foreign.seen] == ["/status/401"]
    assert "Authorization" not in foreign.seen[0]
    assert connected.tokens(KEY) == stored
    stats = emulator.stats
    assert (stats.refreshes, stats.password_logins, stats.calls) == (0, 1, 0)


def test_a_401_after_a_redirect_to_another_origin_refreshes_nothing_and_logs_in_nobody(
    drivers: Drivers, fake_clock: FakeClock
) -> None:
    asked: list[str] = []

    def provider(key: str) -> tuple[str, str]:
        asked.append(key)
        return ("alice", "secret")

    with foreign_server() as watcher, foreign_server() as elsewhere:
        manager = drivers(watcher.url, clock=fake_clock, credentials=provider)
        pair = hand_made_pair(fake_clock)
        manager.save(KEY, pair)
        target = elsewhere.url + "/status/401"
        response = manager.session(KEY).get(f"{watcher.url}/redirect?to={target}")
        assert response.status_code == 401 and response.history == [302]
        # One GET each: no retry, no refresh or login POST to "Watcher".
        assert [(s["method"], s["path"]) for s in watcher.seen] == [
            ("GET", f"/redirect?to={target}")
        ]
        assert [s["path"] for s in elsewhere.seen] == ["/status/401"]
        assert "Authorization" not in elsewhere.seen[0]
        assert manager.tokens(KEY) == pair and asked == []


def test_a_redirect_to_the_same_host_on_another_port_or_scheme_drops_the_token() -> None:
    # requests' own redirect hook, fed by hand: an https Watcher cannot be served here.
    from requests import PreparedRequest, Response

    manager = TokenManager("https://watcher.test")
    session = manager.session(KEY)
    for target in ["http://watcher.test/x", "https://watcher.test:8443/x", "https://evil.test/x"]:
        prepared = PreparedRequest()
        prepared.prepare(method="GET", url=target, headers={"Authorization": "Bearer t"})
        original = Response()
        original.request = PreparedRequest()
        original.request.prepare(method="GET", url="https://watcher.test/watcher/client-api/v3/x")
        session.rebuild_auth(prepared, original)
        assert "Authorization" not in prepared.headers, target


def test_logout_forgets_the_tokens(connected: Driver) -> None:
    events: list[WatcherEvent] = []
    connected.add_listener(events.append)
    assert connected.logout(KEY) is True
    assert connected.tokens(KEY) is None and connected.logout(KEY) is False
    assert not connected.is_connected(KEY)
    assert [e.type for e in events] == [EventType.DISCONNECTED]
    with pytest.raises(NotConnected):
        connected.session(KEY).get("profile")


def test_events_report_connect_and_refresh_without_secrets(
    manager: Driver, fake_clock: FakeClock
) -> None:
    events: list[WatcherEvent] = []
    manager.add_listener(events.append)
    manager.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    manager.session(KEY).get("profile")
    # A lock taken on a busy machine may report a wait of a millisecond or more: not asked here.
    assert [(e.type, e.key, e.username) for e in events if e.type != EventType.LOCK_WAITED] == [
        (EventType.CONNECTED, KEY, "alice"),
        (EventType.REFRESHED, KEY, "alice"),
    ]


def test_one_store_serves_several_watcher_servers(
    drivers: Drivers, watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    first = watcher_emulator_factory(clock=fake_clock)
    second = watcher_emulator_factory(clock=fake_clock)
    store = drivers.memory_store()
    a = drivers(first.url, store=store, clock=fake_clock)
    b = drivers(second.url, store=store, clock=fake_clock)
    a.login(KEY, username="alice", password="secret")
    b.login(KEY, username="bob", password="hunter2")
    assert a.session(KEY).get("profile").json()["name"] == "alice"
    assert b.session(KEY).get("profile").json()["name"] == "bob"
    assert len(store) == 2


def test_nothing_secret_is_logged_through_a_whole_flow(
    drivers: Drivers,
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    manager = drivers(emulator.url, clock=fake_clock)
    issued = [manager.login(KEY, username="alice", password="secret")]
    session = manager.session(KEY)
    session.get("streams")
    fake_clock.advance(LIFETIME)
    session.get("profile")
    issued.append(manager.tokens(KEY))
    emulator.revoke_access_tokens("alice")
    session.get("profile")
    issued.append(manager.tokens(KEY))
    emulator.fail_next("refresh", mode="500")
    fake_clock.advance(LIFETIME)
    with pytest.raises(WatcherUnavailable) as unavailable:
        session.get("profile")
    emulator.revoke("alice")
    with pytest.raises(ReauthenticationRequired) as reauth:
        session.get("profile")
    with pytest.raises(InvalidCredentials) as invalid:
        manager.login(KEY, username="alice", password="wrong-password")
    errors = (unavailable, reauth, invalid)
    text = "\n".join(
        [caplog.text, repr(manager.manager), repr(session.raw), repr(session.auth)]
        + [repr(p) for p in issued]
        + [str(e.value) for e in errors]
        + [repr(e.value) for e in errors]
    )
    secrets = ["secret", "wrong-password"]
    for pair in issued:
        assert pair is not None and pair.refresh_token is not None
        secrets += [pair.access_token, pair.refresh_token, pair.access_token.split(".")[2]]
    assert "login" in caplog.text and "refresh" in caplog.text
    leaked = [s for s in secrets if s in text]
    assert leaked == []
    # No traceback of the flow or chained exception carries them to a crash reporter either.
    assert all(e.value.__cause__ is None and e.value.__context__ is None for e in errors)


# Sync-only: threads and the environment.


def test_thirty_two_threads_on_one_key_make_one_refresh_per_expiry(
    watcher_emulator_factory,
) -> None:
    clock = SharedClock()
    emulator = watcher_emulator_factory(clock=clock, access_lifetime=LIFETIME)
    manager = TokenManager(emulator.url, clock=clock)
    manager.login(KEY, username="alice", password="secret")
    result = run_storm(
        lambda: manager,
        clock=clock,
        lifetime=LIFETIME,
        processes=1,
        threads=32,
        expiries=5,
        key=KEY,
    )
    stats = emulator.stats
    assert result.errors == [] and result.calls == 32 * 6 * 3
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 5, 0)
    assert stats.unauthorized == 0


def test_a_slow_refresh_of_one_key_does_not_hold_up_other_keys(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(clock=fake_clock, seed_users=False)
    users = [f"user{n}" for n in range(8)]
    for user in users:
        emulator.add_user(user, "pw", streams=1)
    manager = TokenManager(emulator.url, clock=fake_clock, timeout=10)
    for user in users:
        manager.login(user, username=user, password="pw")
    # Only user0's token is stale; its refresh will take 2 s at the emulator.
    stale = manager.tokens("user0")
    assert stale is not None
    manager.store.save(manager.store_key("user0"), stale.replace(expires_at=fake_clock() - 1))
    emulator.configure(refresh_latency=2.0)
    slow_done = threading.Event()
    others_done_first: list[bool] = []

    def slow_caller() -> None:
        manager.session("user0").get("profile")
        slow_done.set()

    def fast_caller(user: str) -> None:
        session = manager.session(user)
        for _ in range(5):
            assert session.get("profile").status_code == 200
        others_done_first.append(not slow_done.is_set())

    slow = [threading.Thread(target=slow_caller) for _ in range(4)]
    for thread in slow:
        thread.start()
    time.sleep(0.2)  # let user0's refresh reach the emulator before the others start
    fast = [threading.Thread(target=fast_caller, args=(users[1 + n % 7],)) for n in range(28)]
    for thread in fast:
        thread.start()
    for thread in fast + slow:
        thread.join(30)
    assert others_done_first == [True] * 28
    assert emulator.stats.refreshes == 1


def test_proxies_from_the_environment_are_read_once_and_used(
    recording_server, monkeypatch: pytest.MonkeyPatch, fake_clock: FakeClock
) -> None:
    monkeypatch.setenv("HTTP_PROXY", recording_server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    manager = TokenManager("http://watcher.invalid", clock=fake_clock)
    monkeypatch.delenv("HTTP_PROXY")
    manager.store.save(manager.store_key(KEY), hand_made_pair(fake_clock))
    assert manager.session(KEY).get("streams").status_code == 200
    assert (
        recording_server.seen[0]["path"] == "http://watcher.invalid/watcher/client-api/v3/streams"
    )
