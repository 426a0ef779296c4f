"""The token decisions a user relies on, each tested so that breaking it fails a test.

These pin what the mutation run (``make mutate``) found unguarded: the per-process cache's
horizon and its "remember" step, the refresh margin option, the locks that login and logout
take, and the lock wait limits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from watcher_auth import (
    EventType,
    MemoryStore,
    NotConnected,
    ReauthenticationRequired,
    StoreKey,
    StoreLockTimeout,
    TokenManager,
    TokenPair,
    TokenStore,
    WatcherEvent,
    WatcherUnavailable,
)
from watcher_auth.testing import FakeClock, WatcherEmulator

KEY = "portal-user-7"
LIFETIME = 300.0


class CountingStore(TokenStore):
    """A shared-store stand-in over a :class:`MemoryStore` that counts what the manager asks
    of it: loads, lock entries, and lock entries that found the lock already held.

    A real shared store (Redis, PostgreSQL) cannot report whether a caller met a held lock,
    which is what tells the process lock from the store's lock; the records themselves are
    kept by a real MemoryStore. It has no change channel, so copies live for
    ``staleness_bound`` seconds.
    """

    shared = True

    def __init__(self, staleness_bound: float = 3600.0) -> None:
        self.inner = MemoryStore()
        self.staleness_bound = staleness_bound
        self.loads = 0
        self.locks = 0
        self.contended = 0
        self.held: set[StoreKey] = set()
        self._guard = threading.Lock()
        #: Runs once right after the next load has read its record (another process acting
        #: between this process's read and its next step).
        self.after_load: Callable[[], object] | None = None

    def load(self, key: StoreKey) -> TokenPair | None:
        self.loads += 1
        pair = self.inner.load(key)
        hook, self.after_load = self.after_load, None
        if hook is not None:
            hook()
        return pair

    def save(self, key: StoreKey, pair: TokenPair) -> None:
        self.inner.save(key, pair)

    def delete(self, key: StoreKey) -> None:
        self.inner.delete(key)

    @contextmanager
    def lock(self, key: StoreKey, *, timeout: float) -> Iterator[None]:
        with self._guard:
            self.locks += 1
            if key in self.held:
                self.contended += 1
        with self.inner.lock(key, timeout=timeout):
            with self._guard:
                self.held.add(key)
            try:
                yield
            finally:
                with self._guard:
                    self.held.discard(key)

    def iter_keys(self, *, server: str | None = None, api: str | None = None) -> Iterator[StoreKey]:
        return self.inner.iter_keys(server=server, api=api)


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(clock=fake_clock, access_lifetime=LIFETIME)


def _manager(emulator: WatcherEmulator, clock: FakeClock, **options: object) -> TokenManager:
    options.setdefault("timeout", 5.0)
    return TokenManager(emulator.url, clock=clock, **options)  # type: ignore[arg-type]


# --- the per-process cache -------------------------------------------------------------------


def test_a_steady_call_does_not_read_the_store_again(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = CountingStore()
    manager = _manager(emulator, fake_clock, store=store)
    manager.login(KEY, username="alice", password="secret")
    store.loads = 0
    session = manager.session(KEY)
    for _ in range(5):
        assert session.get("profile").status_code == 200
    assert store.loads == 0  # the login's pair was kept in this process


def test_a_pair_read_from_the_store_is_kept_for_the_next_calls(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = CountingStore()
    _manager(emulator, fake_clock, store=store).login(KEY, username="alice", password="secret")
    other = _manager(emulator, fake_clock, store=store)  # another process, as the store sees it
    store.loads = 0
    session = other.session(KEY)
    for _ in range(5):
        assert session.get("profile").status_code == 200
    assert store.loads == 1


def test_a_cached_pair_is_not_used_past_its_expiry_minus_the_margin(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = CountingStore()
    manager = _manager(emulator, fake_clock, store=store, refresh_margin=30)
    pair = manager.login(KEY, username="alice", password="secret")
    assert pair.local_expires_at is not None
    session = manager.session(KEY)
    fake_clock.set(pair.local_expires_at - 30 - 0.5)
    assert session.get("profile").status_code == 200
    assert emulator.stats.refreshes == 0
    fake_clock.set(pair.local_expires_at - 30 + 0.5)
    assert session.get("profile").status_code == 200
    stats = emulator.stats
    assert (stats.refreshes, stats.unauthorized) == (1, 0)


def test_a_cached_copy_is_read_again_from_the_store_after_the_staleness_bound(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = CountingStore(staleness_bound=5.0)
    manager = _manager(emulator, fake_clock, store=store)
    manager.login(KEY, username="alice", password="secret")
    session = manager.session(KEY)
    store.loads = 0
    fake_clock.advance(4.0)
    session.get("profile")
    assert store.loads == 0
    fake_clock.advance(2.0)
    session.get("profile")
    assert store.loads == 1


# --- the refresh margin ----------------------------------------------------------------------


@pytest.mark.parametrize("margin", [100, lambda lifetime: lifetime / 3], ids=["number", "function"])
def test_the_refresh_margin_option_sets_when_the_refresh_happens(
    emulator: WatcherEmulator, fake_clock: FakeClock, margin: object
) -> None:
    manager = _manager(emulator, fake_clock, refresh_margin=margin)
    pair = manager.login(KEY, username="alice", password="secret")
    assert pair.local_expires_at is not None
    session = manager.session(KEY)
    fake_clock.set(pair.local_expires_at - 100 - 1)
    session.get("profile")
    assert emulator.stats.refreshes == 0
    fake_clock.set(pair.local_expires_at - 100 + 1)  # the default margin (30 s) is not due yet
    session.get("profile")
    assert emulator.stats.refreshes == 1


def test_a_pair_is_due_for_a_refresh_from_expiry_minus_the_margin(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = _manager(emulator, fake_clock, refresh_margin=20)
    pair = manager.login(KEY, username="alice", password="secret")
    assert pair.local_expires_at is not None
    fake_clock.set(pair.local_expires_at - 20.5)
    assert manager.needs_refresh(pair) is False
    fake_clock.set(pair.local_expires_at - 20)
    assert manager.needs_refresh(pair) is True


# --- the locks of login and logout -----------------------------------------------------------


def test_login_and_logout_take_the_stores_lock(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = CountingStore()
    manager = _manager(emulator, fake_clock, store=store)
    manager.login(KEY, username="alice", password="secret")
    assert store.locks == 1 and store.held == set()
    assert manager.logout(KEY) is True
    assert store.locks == 2 and store.held == set()


def test_after_logout_this_process_no_longer_uses_its_copy_of_the_pair(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = _manager(emulator, fake_clock, store=CountingStore())
    manager.login(KEY, username="alice", password="secret")
    assert manager.session(KEY).get("profile").status_code == 200
    assert manager.logout(KEY) is True
    with pytest.raises(NotConnected):
        manager.session(KEY).get("profile")
    assert emulator.stats.calls == 1


def test_a_login_that_waited_for_the_lock_says_how_long(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=0.5
    )
    manager = _manager(emulator, fake_clock)
    manager.login(KEY, username="alice", password="secret")
    events: list[WatcherEvent] = []
    manager.add_listener(events.append)
    fake_clock.advance(LIFETIME)
    refreshing = threading.Thread(target=lambda: manager.session(KEY).get("profile"))
    refreshing.start()
    time.sleep(0.2)
    manager.login(KEY, username="alice", password="secret")
    refreshing.join(10)
    waits = [e.duration for e in events if e.type is EventType.LOCK_WAITED]
    assert len(waits) == 1 and waits[0] is not None and 0.1 < waits[0] < 2.0


def test_a_process_that_finds_the_pair_refreshed_elsewhere_uses_it_without_the_stores_lock(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = CountingStore()
    elsewhere = _manager(emulator, fake_clock, store=store)
    here = _manager(emulator, fake_clock, store=store)
    elsewhere.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    # This process reads the expired pair; just then another one refreshes it.
    store.after_load = lambda: elsewhere.refresh(KEY)
    locks = store.locks
    assert here.session(KEY).get("profile").status_code == 200
    assert emulator.stats.refreshes == 1
    assert store.locks == locks + 1  # the other process's refresh only
    store.loads = 0
    assert here.session(KEY).get("profile").status_code == 200
    assert store.loads == 0  # and keeps it


def test_a_process_that_waited_at_the_stores_lock_for_another_refresh_keeps_its_pair(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = CountingStore()
    elsewhere = _manager(emulator, fake_clock, store=store)
    here = _manager(emulator, fake_clock, store=store)
    elsewhere.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    # This process reads the expired pair, reads it again before taking the store's lock,
    # and only then does another process refresh it.
    store.after_load = lambda: setattr(store, "after_load", lambda: elsewhere.refresh(KEY))
    assert here.session(KEY).get("profile").status_code == 200
    assert emulator.stats.refreshes == 1
    store.loads = 0
    assert here.session(KEY).get("profile").status_code == 200
    assert store.loads == 0


def test_threads_of_one_process_queue_on_its_own_lock_before_the_stores(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    # The refresh is slow, so the logins and logouts below arrive while it holds the lock:
    # they wait in this process, and the store's lock never sees two of its callers at once.
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=0.4
    )
    store = CountingStore()
    manager = _manager(emulator, fake_clock, store=store)
    manager.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    errors: list[BaseException] = []

    def run(action: str) -> None:
        try:
            if action == "call":
                manager.session(KEY).get("profile")
            elif action == "login":
                manager.login(KEY, username="alice", password="secret")
            else:
                manager.logout(KEY)
        except BaseException as exc:
            errors.append(exc)

    refreshing = threading.Thread(target=run, args=("call",))
    refreshing.start()
    deadline = time.monotonic() + 5
    while emulator.stats.refreshes == 0 and store.locks < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    others = [threading.Thread(target=run, args=(a,)) for a in ("login", "logout", "login")]
    for thread in others:
        thread.start()
    for thread in [refreshing, *others]:
        thread.join(10)
    assert errors == []
    assert store.locks == 5 and store.contended == 0


def test_a_logout_during_a_slow_refresh_is_not_undone_by_it(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=0.4
    )
    manager = _manager(emulator, fake_clock)
    manager.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    refreshing = threading.Thread(target=lambda: manager.session(KEY).get("profile"))
    refreshing.start()
    time.sleep(0.2)  # the refresh is on its way to Watcher
    assert manager.logout(KEY) is True
    refreshing.join(10)
    assert manager.tokens(KEY) is None


def test_logging_in_again_and_out_repeatedly_never_waits_for_a_lock(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    # Every lock taken is given back: a left-over holder would time the next one out.
    manager = _manager(emulator, fake_clock, lock_timeout=0.5)
    for _ in range(3):
        manager.login(KEY, username="alice", password="secret")
        assert manager.logout(KEY) is True
    manager.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    assert manager.session(KEY).get("profile").status_code == 200


# --- lock waits that end -------------------------------------------------------------------


def test_a_caller_waiting_longer_than_lock_timeout_for_a_refresh_gets_store_lock_timeout(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=1.5
    )
    manager = _manager(emulator, fake_clock, lock_timeout=0.3)
    manager.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    slow = threading.Thread(target=lambda: manager.session(KEY).get("profile"))
    slow.start()
    time.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(StoreLockTimeout, match="held for over"):
        manager.session(KEY).get("profile")
    assert 0.2 < time.monotonic() - started < 1.4
    slow.join(10)
    assert emulator.stats.refreshes == 1


def test_one_caller_more_than_max_waiters_gets_store_lock_timeout_at_once(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=1.0
    )
    manager = _manager(emulator, fake_clock, max_waiters=1)
    manager.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    threads = [
        threading.Thread(target=lambda: manager.session(KEY).get("profile")) for _ in range(2)
    ]
    threads[0].start()
    time.sleep(0.2)
    threads[1].start()  # waits: the one waiter admitted
    time.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(StoreLockTimeout, match="too many callers"):
        manager.session(KEY).get("profile")
    assert time.monotonic() - started < 0.5
    for thread in threads:
        thread.join(10)
    assert emulator.stats.refreshes == 1


def test_callers_that_got_a_401_at_once_share_one_refresh_and_the_waiter_says_how_long(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=1.0
    )
    manager = _manager(emulator, fake_clock)
    manager.login(KEY, username="alice", password="secret")
    emulator.revoke_access_tokens("alice")
    events: list[WatcherEvent] = []
    both_refused = threading.Barrier(2, timeout=10)

    def listen(event: WatcherEvent) -> None:
        events.append(event)
        if event.type is EventType.UNAUTHORIZED_RETRY:
            both_refused.wait()  # both callers hold their 401 before either one refreshes

    manager.add_listener(listen)
    statuses: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: statuses.append(manager.session(KEY).get("profile").status_code)
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert statuses == [200, 200]
    assert (emulator.stats.unauthorized, emulator.stats.refreshes) == (2, 1)
    waits = [e.duration for e in events if e.type is EventType.LOCK_WAITED]
    assert len(waits) == 1 and waits[0] is not None and 0.05 < waits[0] < 5.0
    refreshed = [e for e in events if e.type is EventType.REFRESHED]
    assert len(refreshed) == 1 and refreshed[0].duration is not None
    assert 0 <= refreshed[0].duration < 5


def test_a_refresh_waits_for_its_answer_past_the_call_timeout_until_the_deadline(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    # Watcher may already have rotated the refresh token: giving up early would lose it.
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=1.0
    )
    manager = _manager(emulator, fake_clock, timeout=0.4, deadline=5.0)
    manager.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    assert manager.session(KEY).get("profile").status_code == 200
    assert emulator.stats.refreshes == 1


def test_a_refresh_whose_answer_was_lost_then_rejected_says_so(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True
    )
    manager = _manager(emulator, fake_clock)
    manager.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    emulator.fail_next("refresh", mode="process_then_drop")
    with pytest.raises(WatcherUnavailable):
        manager.session(KEY).get("profile")
    with pytest.raises(ReauthenticationRequired) as caught:
        manager.session(KEY).get("profile")
    assert caught.value.reason == "refresh_answer_lost"
    manager.login(KEY, username="alice", password="secret")
    emulator.revoke("alice")
    fake_clock.advance(LIFETIME)
    with pytest.raises(ReauthenticationRequired) as caught:
        manager.session(KEY).get("profile")
    assert caught.value.reason == "refresh_rejected"  # the lost answer was told once


def test_a_rejection_after_an_answered_refresh_is_a_plain_rejection(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True
    )
    manager = _manager(emulator, fake_clock)
    manager.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    emulator.fail_next("refresh", mode="process_then_drop")
    with pytest.raises(WatcherUnavailable):
        manager.session(KEY).get("profile")
    manager.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    assert manager.session(KEY).get("profile").status_code == 200  # answered this time
    emulator.revoke("alice")
    fake_clock.advance(LIFETIME)
    with pytest.raises(ReauthenticationRequired) as caught:
        manager.session(KEY).get("profile")
    assert caught.value.reason == "refresh_rejected"


def test_a_login_again_through_the_provider_reports_how_long_it_took(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = _manager(emulator, fake_clock, credentials=lambda key: ("alice", "secret"))
    events: list[WatcherEvent] = []
    manager.add_listener(events.append)
    assert manager.session(KEY).get("profile").status_code == 200
    connected = [e for e in events if e.type is EventType.CONNECTED]
    assert len(connected) == 1 and connected[0].duration is not None
    assert 0 <= connected[0].duration < 5


def test_at_exactly_expiry_minus_margin_the_cached_pair_is_refreshed(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = _manager(emulator, fake_clock, store=CountingStore(), refresh_margin=30)
    pair = manager.login(KEY, username="alice", password="secret")
    assert pair.local_expires_at is not None
    fake_clock.set(pair.local_expires_at - 30)
    assert manager.session(KEY).get("profile").status_code == 200
    assert emulator.stats.refreshes == 1


def test_at_exactly_the_staleness_bound_a_copy_is_read_again(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = CountingStore(staleness_bound=5.0)
    manager = _manager(emulator, fake_clock, store=store)
    manager.login(KEY, username="alice", password="secret")
    kept_at = fake_clock()
    store.loads = 0
    fake_clock.set(kept_at + 5.0)
    manager.session(KEY).get("profile")
    assert store.loads == 1


def test_a_url_on_watchers_origin_spelled_with_a_user_name_still_carries_the_token(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    # Whether a URL is Watcher's is a question of its origin (scheme, host, port), not of
    # how the caller spelled it.
    manager = _manager(emulator, fake_clock)
    manager.login(KEY, username="alice", password="secret")
    url = emulator.v3_url.replace("http://", "http://someone@", 1) + "/profile"
    assert manager.session(KEY).get(url).status_code == 200
    assert emulator.stats.calls_by_user == {"alice": 1}


@pytest.mark.parametrize("bad_key", ["", 42, None])
def test_a_user_key_must_be_a_non_empty_string(
    emulator: WatcherEmulator, fake_clock: FakeClock, bad_key: object
) -> None:
    from watcher_auth import ConfigurationError

    manager = _manager(emulator, fake_clock)
    with pytest.raises(ConfigurationError, match="non-empty string"):
        manager.login(bad_key, username="alice", password="secret")  # type: ignore[arg-type]
    assert emulator.stats.password_logins == 0


def test_a_login_that_waited_for_another_processs_refresh_says_how_long(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=0.6
    )
    store = CountingStore()
    elsewhere = _manager(emulator, fake_clock, store=store)  # another process, to the store
    here = _manager(emulator, fake_clock, store=store)
    elsewhere.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    events: list[WatcherEvent] = []
    here.add_listener(events.append)
    refreshing = threading.Thread(target=lambda: elsewhere.session(KEY).get("profile"))
    refreshing.start()
    deadline = time.monotonic() + 5
    while not store.held and time.monotonic() < deadline:
        time.sleep(0.01)
    here.login(KEY, username="alice", password="secret")
    refreshing.join(10)
    waits = [e.duration for e in events if e.type is EventType.LOCK_WAITED]
    assert len(waits) == 1 and waits[0] is not None and 0.1 < waits[0] < 5.0


@pytest.mark.parametrize("answer", [("alice", ""), ("alice",), ("alice", 5), ["alice", "secret"]])
def test_a_credentials_provider_answer_that_is_not_a_username_and_password_is_refused(
    emulator: WatcherEmulator, fake_clock: FakeClock, answer: object
) -> None:
    from watcher_auth import ConfigurationError

    manager = _manager(emulator, fake_clock, credentials=lambda key: answer)
    with pytest.raises(ConfigurationError, match="credentials provider"):
        manager.session(KEY).get("profile")
    assert emulator.stats.password_logins == 0


class FailingStore(CountingStore):
    """A store whose reads fail the way an unreachable database does."""

    def load(self, key: StoreKey) -> TokenPair | None:
        from watcher_auth import StoreError

        raise StoreError("the token store is unreachable")


def test_a_store_failure_reaches_the_caller_and_is_reported_as_an_event(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    from watcher_auth import StoreError

    manager = _manager(emulator, fake_clock, store=FailingStore())
    events: list[WatcherEvent] = []
    manager.add_listener(events.append)
    with pytest.raises(StoreError):
        manager.session(KEY).get("profile")
    assert [(e.type, e.error) for e in events] == [(EventType.STORE_ERROR, "StoreError")]


def test_a_lock_timeout_is_not_reported_as_a_store_failure(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=1.0
    )
    store = CountingStore()
    elsewhere = _manager(emulator, fake_clock, store=store)
    here = _manager(emulator, fake_clock, store=store, lock_timeout=0.2)
    elsewhere.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    events: list[WatcherEvent] = []
    here.add_listener(events.append)
    refreshing = threading.Thread(target=lambda: elsewhere.session(KEY).get("profile"))
    refreshing.start()
    deadline = time.monotonic() + 5
    while not store.held and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(StoreLockTimeout):
        here.login(KEY, username="alice", password="secret")
    refreshing.join(10)
    assert [e for e in events if e.type is EventType.STORE_ERROR] == []


def test_an_answer_larger_than_max_response_bytes_is_refused(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    from watcher_auth import ResponseTooLarge

    emulator = watcher_emulator_factory(clock=fake_clock, seed_users=False)
    emulator.add_user("carol", "pw", streams=40)
    manager = _manager(emulator, fake_clock, max_response_bytes=2048)
    manager.login(KEY, username="carol", password="pw")
    session = manager.session(KEY)
    assert session.get("profile").status_code == 200
    with pytest.raises(ResponseTooLarge):
        session.get("streams")
