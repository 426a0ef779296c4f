"""API v2 sessions and user keys kept by the token manager, against the emulator.

Every test runs twice: through :class:`Driver` with ``requests`` sessions and through
:class:`AsyncDriver` (see tests/asyncio/drivers.py).
"""

from __future__ import annotations

import logging

import pytest

from tests.asyncio.drivers import Driver, Drivers, SharedAsyncMemoryStore, SharedMemoryStore
from tests.asyncio.servers import foreign_server
from watcher_auth import (
    EventType,
    InvalidCredentials,
    NotConnected,
    ReauthenticationRequired,
    StoreKey,
    TokenPair,
    WatcherAPIError,
    WatcherEvent,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth.testing import FakeClock, WatcherEmulator

KEY = "portal-user-42"
# What happened to the credentials (lock waits and retries vary with thread timing).
LIFECYCLE = {
    EventType.CONNECTED,
    EventType.REFRESHED,
    EventType.REFRESH_REJECTED,
    EventType.REAUTHENTICATION_REQUIRED,
    EventType.DISCONNECTED,
}


def whoami_calls(emulator: WatcherEmulator) -> int:
    """Answered whoami calls (403 answers are not in the call log; see v2_forbidden)."""
    return sum(r.path.endswith("/auth/whoami") for r in emulator.call_log)


@pytest.fixture
def manager(drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock) -> Driver:
    """A manager with a memory store on the emulator, without a credentials provider."""
    return drivers(emulator.url, store=drivers.memory_store(), clock=fake_clock, timeout=3.0)


@pytest.fixture
def connected(manager: Driver) -> Driver:
    manager.v2_login(KEY, username="alice", password="secret")
    return manager


@pytest.fixture
def with_provider(drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock) -> Driver:
    """A manager whose credentials provider knows alice's password for KEY only."""
    accounts = {KEY: ("alice", "secret")}
    return drivers(emulator.url, clock=fake_clock, credentials=accounts.get, timeout=3.0)


def events_of(manager: Driver) -> list[WatcherEvent]:
    events: list[WatcherEvent] = []
    manager.add_listener(events.append)
    return events


# Logging in and calling.


def test_login_then_cameras_as_the_issue_shows(
    manager: Driver, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    pair = manager.v2_login(KEY, username="alice", password="secret")
    cams = manager.v2_session(KEY).get("cameras").json()
    assert [c["name"] for c in cams] == ["alice-cam-0", "alice-cam-1", "alice-cam-2"]
    assert (pair.scheme, pair.username, pair.connected_at) == ("session", "alice", fake_clock())
    assert manager.v2_tokens(KEY) == pair and manager.v2_is_connected(KEY)
    assert [(r.username, r.scheme) for r in emulator.call_log] == [("alice", "session")]
    assert emulator.stats.v2_logins == 1


def test_the_v2_record_is_kept_apart_from_the_v3_pair(
    manager: Driver, emulator: WatcherEmulator
) -> None:
    manager.login(KEY, username="bob", password="hunter2")
    manager.v2_login(KEY, username="alice", password="secret")
    assert manager.session(KEY).get("profile").json()["name"] == "bob"
    assert manager.v2_whoami(KEY)["login"] == "alice"
    assert manager.v2_logout(KEY) is True
    assert manager.is_connected(KEY) and not manager.v2_is_connected(KEY)
    manager.v2_login(KEY, username="alice", password="secret")
    assert manager.logout(KEY) is True
    assert manager.v2_is_connected(KEY) and not manager.is_connected(KEY)
    assert len(manager.stored_keys(api="v2")) == 1


def test_a_wrong_password_raises_invalid_credentials_and_stores_nothing(
    manager: Driver, emulator: WatcherEmulator
) -> None:
    with pytest.raises(InvalidCredentials) as caught:
        manager.v2_login(KEY, username="alice", password="wrong-password")
    assert "wrong-password" not in str(caught.value)
    assert manager.v2_tokens(KEY) is None
    assert (emulator.stats.v2_failed_logins, emulator.stats.v2_logins) == (1, 0)


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("500", WatcherUnavailable),
        ("503", WatcherUnavailable),
        ("502_html", WatcherUnavailable),
        ("drop", WatcherUnavailable),
        ("hang", WatcherUnavailable),
        ("non_json", WatcherProtocolError),
    ],
)
def test_a_failed_login_stores_nothing_and_keeps_the_old_session(
    drivers: Drivers,
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    mode: str,
    error: type[Exception],
) -> None:
    manager = drivers(emulator.url, clock=fake_clock, timeout=0.5)
    emulator.configure(hang_seconds=1.0)
    old = manager.v2_login(KEY, username="alice", password="secret")
    emulator.fail_next("v2_login", mode=mode)
    with pytest.raises(error):
        manager.v2_login(KEY, username="alice", password="secret")
    assert manager.v2_tokens(KEY) == old
    assert manager.v2_session(KEY).get("cameras").status_code == 200


def test_a_key_without_a_v2_record_is_not_connected(
    manager: Driver, emulator: WatcherEmulator
) -> None:
    with pytest.raises(NotConnected) as caught:
        manager.v2_session("nobody").get("cameras")
    assert caught.value.key == "nobody"
    assert emulator.stats.v2_calls == 0


def test_a_credentials_provider_connects_a_key_on_its_first_call(
    with_provider: Driver, emulator: WatcherEmulator
) -> None:
    assert with_provider.v2_whoami(KEY)["login"] == "alice"
    assert with_provider.v2_whoami(KEY)["login"] == "alice"
    assert emulator.stats.v2_logins == 1
    with pytest.raises(NotConnected):
        with_provider.v2_whoami("someone-else")


def test_paginate_walks_every_camera_by_offset(manager: Driver, emulator: WatcherEmulator) -> None:
    emulator.add_user("dave", "pw", streams=25)
    manager.v2_login(KEY, username="dave", password="pw")
    names = [c["name"] for c in manager.v2_session(KEY).paginate("cameras", limit=10)]
    assert len(names) == len(set(names)) == 25
    assert [r.query for r in emulator.call_log] == [
        "limit=10&offset=0",
        "limit=10&offset=10",
        "limit=10&offset=20",
    ]


def test_the_system_session_sees_everything(
    manager: Driver, emulator: WatcherEmulator, system_key: str
) -> None:
    session = manager.v2_system_session(system_key)
    assert len(list(session.paginate("cameras", limit=2))) == 7
    assert session.json("auth/whoami")["is_admin"] is True
    assert emulator.stats.v2_system_calls == 5
    assert manager.stored_keys() == []


# User keys.


def test_a_user_key_is_checked_then_stored_and_used(
    manager: Driver, emulator: WatcherEmulator
) -> None:
    events = events_of(manager)
    api_key = emulator.user_api_key("bob")
    pair = manager.v2_connect_user_key(KEY, username="bob", api_key=api_key)
    cams = manager.v2_session(KEY).get("cameras").json()
    assert (pair.scheme, pair.username, pair.access_token) == ("user-key", "bob", api_key)
    assert len(cams) == 3
    assert [(r.path, r.scheme) for r in emulator.call_log] == [
        ("/vsaas/api/v2/auth/whoami", "user-key"),
        ("/vsaas/api/v2/cameras", "user-key"),
    ]
    assert [(e.type, e.api, e.username) for e in events] == [(EventType.CONNECTED, "v2", "bob")]


def test_a_bad_user_key_is_invalid_credentials_without_the_key(
    manager: Driver, emulator: WatcherEmulator
) -> None:
    bad_key = "0123456789abcdef-not-bobs"
    with pytest.raises(InvalidCredentials) as caught:
        manager.v2_connect_user_key(KEY, username="bob", api_key=bad_key)
    assert bad_key not in str(caught.value) and "bob" in str(caught.value)
    assert manager.v2_tokens(KEY) is None
    assert emulator.stats.v2_forbidden == 1


def test_a_dead_user_key_is_deleted_and_never_replaced_by_a_password_login(
    with_provider: Driver, emulator: WatcherEmulator
) -> None:
    events = events_of(with_provider)
    with_provider.v2_connect_user_key(KEY, username="alice", api_key=emulator.user_api_key("alice"))
    emulator.rotate_api_key("alice")
    with pytest.raises(ReauthenticationRequired) as caught:
        with_provider.v2_session(KEY).get("cameras")
    assert caught.value.key == KEY
    assert with_provider.v2_tokens(KEY) is None
    assert (emulator.stats.v2_logins, emulator.stats.v2_forbidden) == (0, 2)
    assert [e.type for e in events][-1] == EventType.REAUTHENTICATION_REQUIRED


def test_a_user_key_refused_after_another_process_disconnected_it_is_not_replaced_by_a_login(
    drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = drivers.memory_store(shared=True)
    accounts = {KEY: ("alice", "secret")}
    elsewhere = drivers(emulator.url, store=store, clock=fake_clock)
    here = drivers(emulator.url, store=store, clock=fake_clock, credentials=accounts.get)
    elsewhere.v2_connect_user_key(KEY, username="alice", api_key=emulator.user_api_key("alice"))
    assert here.v2_session(KEY).get("cameras").ok  # now in here's local cache
    assert elsewhere.v2_logout(KEY) is True
    emulator.rotate_api_key("alice")
    with pytest.raises(NotConnected):
        here.v2_session(KEY).get("cameras")  # sent with the cached key, refused
    assert emulator.stats.v2_logins == 0
    assert here.v2_tokens(KEY) is None


# 403: dead or denied.


def test_a_dead_session_without_a_provider_is_deleted_and_asks_to_connect_again(
    connected: Driver, emulator: WatcherEmulator
) -> None:
    events = events_of(connected)
    emulator.revoke("alice")
    with pytest.raises(ReauthenticationRequired) as caught:
        connected.v2_session(KEY).get("cameras")
    assert caught.value.key == KEY
    assert connected.v2_tokens(KEY) is None
    stats = emulator.stats
    assert (stats.v2_forbidden, stats.v2_logins) == (2, 1)  # the call and whoami
    assert [(e.type, e.key, e.api, e.username) for e in events] == [
        (EventType.UNAUTHORIZED_RETRY, KEY, "v2", "alice"),
        (EventType.REFRESH_REJECTED, KEY, "v2", "alice"),
        (EventType.REAUTHENTICATION_REQUIRED, KEY, "v2", "alice"),
    ]
    with pytest.raises(NotConnected):
        connected.v2_session(KEY).get("cameras")


def test_a_dead_session_with_a_provider_logs_in_again_once_and_retries(
    with_provider: Driver, emulator: WatcherEmulator
) -> None:
    events = events_of(with_provider)
    first = with_provider.v2_login(KEY, username="alice", password="secret")
    emulator.revoke("alice")
    response = with_provider.v2_session(KEY).get("cameras")
    assert response.status_code == 200 and len(response.json()) == 3
    assert response.history == [403]
    second = with_provider.v2_tokens(KEY)
    assert second is not None and second.access_token != first.access_token
    stats = emulator.stats
    assert (stats.v2_logins, stats.v2_forbidden, stats.v2_calls_by_user) == (2, 2, {"alice": 1})
    assert [e.type for e in events] == [
        EventType.CONNECTED,
        EventType.UNAUTHORIZED_RETRY,
        EventType.REFRESH_REJECTED,
        EventType.CONNECTED,
    ]


def test_a_403_from_whoami_itself_is_not_asked_twice(
    connected: Driver, emulator: WatcherEmulator
) -> None:
    emulator.revoke("alice")
    with pytest.raises(ReauthenticationRequired):
        connected.v2_whoami(KEY)
    assert emulator.stats.v2_forbidden == 1


def test_a_refusal_for_a_live_session_is_returned_and_keeps_the_session(
    with_provider: Driver, emulator: WatcherEmulator
) -> None:
    pair = with_provider.v2_login(KEY, username="alice", password="secret")
    session = with_provider.v2_session(KEY)
    response = session.get("users")
    assert response.status_code == 403
    assert with_provider.v2_tokens(KEY) == pair
    with pytest.raises(WatcherAPIError) as caught:
        session.json("users")
    assert caught.value.status_code == 403
    assert (emulator.stats.v2_logins, whoami_calls(emulator)) == (1, 2)  # one per refusal


def test_the_retry_after_a_new_login_happens_once(
    with_provider: Driver, emulator: WatcherEmulator
) -> None:
    with_provider.v2_login(KEY, username="alice", password="secret")
    emulator.revoke("alice")
    # Dead session: new login, retry; alice may not list users, so the retry gets 403 too.
    response = with_provider.v2_session(KEY).get("users")
    assert response.status_code == 403
    assert emulator.stats.v2_logins == 2
    assert whoami_calls(emulator) == 0


@pytest.mark.parametrize("mode", ["500", "503", "502_html", "drop"])
def test_a_transient_failure_while_checking_a_403_deletes_nothing(
    connected: Driver, emulator: WatcherEmulator, mode: str
) -> None:
    stored = connected.v2_tokens(KEY)
    emulator.fail_next("v2_call", mode="403")  # the call
    emulator.fail_next("v2_call", mode=mode)  # whoami, asked about it
    with pytest.raises(WatcherUnavailable):
        connected.v2_session(KEY).get("cameras")
    assert connected.v2_tokens(KEY) == stored
    assert connected.v2_session(KEY).get("cameras").status_code == 200
    assert emulator.stats.v2_logins == 1


@pytest.mark.parametrize("mode", ["500", "503", "drop"])
def test_a_transient_failure_of_a_call_reaches_the_caller_and_deletes_nothing(
    connected: Driver, emulator: WatcherEmulator, mode: str
) -> None:
    stored = connected.v2_tokens(KEY)
    emulator.fail_next("v2_call", mode=mode)
    if mode == "drop":
        with pytest.raises(WatcherUnavailable):
            connected.v2_session(KEY).get("cameras")
    else:
        assert connected.v2_session(KEY).get("cameras").status_code == int(mode)
    assert connected.v2_tokens(KEY) == stored
    assert whoami_calls(emulator) == 0 and emulator.stats.v2_forbidden == 0


def test_a_hanging_call_times_out_with_the_managers_timeout_and_keeps_the_session(
    drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = drivers(emulator.url, clock=fake_clock, timeout=0.3)
    stored = manager.v2_login(KEY, username="alice", password="secret")
    emulator.configure(hang_seconds=1.0)
    emulator.fail_next("v2_call", mode="hang")
    with pytest.raises(WatcherUnavailable):
        manager.v2_session(KEY).get("cameras")
    assert manager.v2_tokens(KEY) == stored
    assert manager.v2_session(KEY).get("cameras").status_code == 200


def test_a_session_replaced_by_another_process_is_used_without_a_new_login(
    drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = drivers.memory_store(shared=True)
    accounts = {KEY: ("alice", "secret")}
    first, second = (
        drivers(emulator.url, store=store, clock=fake_clock, credentials=accounts.get)
        for _ in range(2)
    )
    first.v2_login(KEY, username="alice", password="secret")
    assert second.v2_session(KEY).get("cameras").ok  # now in second's local cache
    emulator.revoke("alice")
    assert first.v2_session(KEY).get("cameras").ok  # whoami says dead: one new login
    assert second.v2_session(KEY).get("cameras").ok  # its cached session is stale
    stats = emulator.stats
    # first: the call and whoami; second: the call only, then the store's new session.
    assert (stats.v2_logins, stats.v2_forbidden) == (2, 3)


class CountingStore(SharedMemoryStore):
    """A shared memory store that counts the records read from it."""

    loads = 0

    def load(self, key: StoreKey) -> TokenPair | None:
        self.loads += 1
        return super().load(key)


class CountingAsyncStore(SharedAsyncMemoryStore):
    """:class:`CountingStore` for the async manager."""

    loads = 0

    async def load(self, key: StoreKey) -> TokenPair | None:
        self.loads += 1
        return await super().load(key)


def test_a_session_another_process_put_in_place_of_a_refused_one_is_kept_for_the_next_calls(
    drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = CountingAsyncStore() if drivers.kind == "async" else CountingStore()
    first, second = (drivers(emulator.url, store=store, clock=fake_clock) for _ in range(2))
    first.v2_login(KEY, username="alice", password="secret")
    assert second.v2_session(KEY).get("cameras").ok  # now in second's local cache
    emulator.revoke("alice")
    first.v2_login(KEY, username="alice", password="secret")
    assert second.v2_session(KEY).get("cameras").ok  # refused, then retried with the new one
    store.loads = 0
    assert second.v2_session(KEY).get("cameras").ok
    assert store.loads == 0
    assert emulator.stats.v2_logins == 2


def test_a_403_from_another_origin_is_returned_and_checks_deletes_and_retries_nothing(
    with_provider: Driver, emulator: WatcherEmulator
) -> None:
    stored = with_provider.v2_login(KEY, username="alice", password="secret")
    with foreign_server() as foreign:
        response = with_provider.v2_session(KEY).get(foreign.url + "/status/403")
    assert response.status_code == 403 and response.history == []
    assert [seen["path"] for seen in foreign.seen] == ["/status/403"]
    assert not any(name.lower().startswith("x-vsaas") for name in foreign.seen[0])
    assert with_provider.v2_tokens(KEY) == stored
    assert (emulator.stats.v2_logins, whoami_calls(emulator), emulator.stats.v2_calls) == (1, 0, 0)


# Concurrency.


def test_sixteen_concurrent_calls_on_a_dead_session_make_exactly_one_new_login(
    with_provider: Driver, emulator: WatcherEmulator
) -> None:
    with_provider.v2_login(KEY, username="alice", password="secret")
    emulator.revoke("alice")
    emulator.reset_stats()
    replies = with_provider.v2_session(KEY).many(16, "cameras")
    assert [getattr(reply, "status_code", reply) for reply in replies] == [200] * 16
    assert emulator.stats.v2_logins == 1
    assert emulator.stats.v2_calls_by_user == {"alice": 16}


def test_sixteen_concurrent_calls_on_a_dead_session_without_a_provider_all_learn_it_once(
    connected: Driver, emulator: WatcherEmulator
) -> None:
    events = events_of(connected)
    emulator.revoke("alice")
    results = connected.v2_session(KEY).many(16, "cameras")
    assert all(isinstance(r, NotConnected) for r in results)
    assert sum(isinstance(r, ReauthenticationRequired) for r in results) >= 1
    assert [e.type for e in events if e.type in LIFECYCLE] == [
        EventType.REFRESH_REJECTED,
        EventType.REAUTHENTICATION_REQUIRED,
    ]
    assert emulator.stats.v2_logins == 1


# Logout and events.


def test_logout_forgets_the_record(connected: Driver) -> None:
    events = events_of(connected)
    assert connected.v2_logout(KEY) is True
    assert connected.v2_logout(KEY) is False
    assert [(e.type, e.api) for e in events] == [(EventType.DISCONNECTED, "v2")]
    with pytest.raises(NotConnected):
        connected.v2_whoami(KEY)


# Secrets.


def test_nothing_secret_is_logged_through_every_v2_flow(
    drivers: Drivers,
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    system_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    accounts = {"svc": ("bob", "hunter2")}
    manager = drivers(emulator.url, clock=fake_clock, credentials=accounts.get)
    events = events_of(manager)
    records = [manager.v2_login(KEY, username="alice", password="secret")]
    session = manager.v2_session(KEY)
    session.get("cameras")
    list(session.paginate("cameras", limit=2))
    manager.v2_whoami(KEY)
    session.get("users")  # refused: whoami checks the session
    emulator.fail_next("v2_call", mode="403")
    emulator.fail_next("v2_call", mode="500")
    errors: list[BaseException] = []
    try:
        session.get("cameras")
    except WatcherUnavailable as exc:
        errors.append(exc)
    emulator.revoke("alice")
    try:
        session.get("cameras")
    except ReauthenticationRequired as exc:
        errors.append(exc)
    try:
        manager.v2_login(KEY, username="alice", password="wrong-password")
    except InvalidCredentials as exc:
        errors.append(exc)
    records.append(
        manager.v2_connect_user_key(KEY, username="alice", api_key=emulator.user_api_key("alice"))
    )
    try:
        manager.v2_connect_user_key(KEY, username="alice", api_key="bad-user-key-123456")
    except InvalidCredentials as exc:
        errors.append(exc)
    emulator.rotate_api_key("alice")
    try:
        manager.v2_whoami(KEY)
    except ReauthenticationRequired as exc:
        errors.append(exc)
    manager.v2_session("svc").get("cameras")  # provider login
    records.append(manager.v2_tokens("svc"))
    emulator.revoke("bob")
    manager.v2_session("svc").get("cameras")  # provider login again
    records.append(manager.v2_tokens("svc"))
    system = manager.v2_system_session(system_key)
    system.get("cameras")
    try:
        manager.v2_system_session("bad-system-key-7654321").json("cameras")
    except WatcherAPIError as exc:
        errors.append(exc)
    manager.v2_logout("svc")

    assert len(errors) == 6 and len([e for e in events if e.type in LIFECYCLE]) == 10
    assert all(e.__cause__ is None and e.__context__ is None for e in errors)
    text = "\n".join(
        [caplog.text, repr(manager.manager), repr(session.raw), repr(session.auth)]
        + [repr(system.raw), repr(system.auth)]
        + [repr(r) for r in records]
        + [str(e) for e in errors]
        + [repr(e) for e in errors]
        + [repr(e) for e in events]
    )
    secrets = ["secret", "hunter2", "wrong-password", "bad-user-key-123456"]
    secrets += [system_key, "bad-system-key-7654321", emulator.user_api_key("alice")]
    secrets += [r.access_token for r in records if r is not None]
    assert "v2" in caplog.text and "/vsaas/api/v2/cameras" in caplog.text
    leaked = [s for s in secrets if s in text]
    assert leaked == []
