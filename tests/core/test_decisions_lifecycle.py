"""How a process reads Watcher's clock from its answers and judges its kept copies by it,
when its cache lets a copy go, and what it reports about lock waits.

A host whose clock differs from Watcher's judges expiry by an estimate of the difference. The
estimate comes from the ``Date`` header of the answers this process sees and from the ``iat``
of the tokens it obtains (both of one-second resolution), so the tests below put the clocks at
whole seconds and move them by hand: which estimate an answer leads to is then exact.
"""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc

import pytest

from tests.core.test_decisions import CountingStore
from tests.core.test_decisions_cache import ChannelStore
from watcher_auth import (
    AsyncTokenManager,
    EventType,
    MemoryStore,
    NotConnected,
    ReauthenticationRequired,
    StoreError,
    StoreKey,
    TokenManager,
    TokenPair,
    TokenStore,
    WatcherEvent,
)
from watcher_auth.testing import FakeClock, WatcherEmulator

KEY = "portal-user-9"
LIFETIME = 300.0
START = 1_800_000_000.0  # a whole second, so a Date header is the exact server time


class ShiftedClock:
    """This host's clock: Watcher's minus ``behind`` seconds (changed by the test)."""

    def __init__(self, server: FakeClock, behind: float) -> None:
        self.server = server
        self.behind = behind

    def __call__(self) -> float:
        return self.server() - self.behind


@pytest.fixture
def server_clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def emulator(watcher_emulator_factory, server_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(clock=server_clock, access_lifetime=LIFETIME)


def _host(
    emulator: WatcherEmulator, server_clock: FakeClock, behind: float, store: TokenStore
) -> tuple[TokenManager, ShiftedClock]:
    """A host ``behind`` seconds behind Watcher, sharing ``store``."""
    clock = ShiftedClock(server_clock, behind)
    manager = TokenManager(emulator.url, store=store, clock=clock, timeout=5.0, refresh_margin=30)
    return manager, clock


def _connected_store(
    emulator: WatcherEmulator, server_clock: FakeClock, store: TokenStore | None = None
) -> TokenStore:
    """``store`` (a new MemoryStore by default) with ``KEY``'s pair, obtained by a host whose
    clock agrees with Watcher's."""
    store = MemoryStore() if store is None else store
    synced, _ = _host(emulator, server_clock, 0.0, store)
    synced.login(KEY, username="alice", password="secret")
    return store


def _call(manager: TokenManager, key: str = KEY) -> None:
    assert manager.session(key).get("profile").status_code == 200


# --- the Date header ------------------------------------------------------------------------


def test_the_offset_read_from_a_date_header_is_taken_at_the_middle_of_its_second(
    emulator: WatcherEmulator, server_clock: FakeClock
) -> None:
    manager, _ = _host(emulator, server_clock, 10.0, _connected_store(emulator, server_clock))
    assert manager.clock_offset is None
    _call(manager)
    # Watcher's second began 10 s ahead of this host; on average it is half over.
    assert manager.clock_offset == 10.5


@pytest.mark.parametrize(
    ("behind", "estimate"),
    [(0.5, 0.0), (1.0, 1.5), (1.5, 2.0)],
    ids=["one-second-is-noise", "just-over-one-second", "two-seconds"],
)
def test_a_date_header_counts_as_an_offset_only_past_one_second(
    emulator: WatcherEmulator, server_clock: FakeClock, behind: float, estimate: float
) -> None:
    manager, _ = _host(emulator, server_clock, behind, _connected_store(emulator, server_clock))
    _call(manager)
    assert manager.clock_offset == estimate


def test_a_known_offset_is_replaced_only_by_one_a_second_or_more_away(
    emulator: WatcherEmulator, server_clock: FakeClock
) -> None:
    manager, clock = _host(emulator, server_clock, 10.0, _connected_store(emulator, server_clock))
    _call(manager)
    assert manager.clock_offset == 10.5
    server_clock.advance(1)  # a new Date header
    clock.behind = 10.5  # measured 11.0: within the header's resolution of the estimate
    _call(manager)
    assert manager.clock_offset == 10.5
    server_clock.advance(1)
    clock.behind = 11.0  # measured 11.5: a second away
    _call(manager)
    assert manager.clock_offset == 11.5
    server_clock.advance(1)
    clock.behind = 9.0  # measured 9.5: two seconds the other way
    _call(manager)
    assert manager.clock_offset == 9.5


def test_a_host_two_seconds_behind_watcher_judges_expiry_by_watchers_clock(
    emulator: WatcherEmulator, server_clock: FakeClock
) -> None:
    store = _connected_store(emulator, server_clock)
    synced = TokenManager(emulator.url, store=store, clock=server_clock, timeout=5.0)
    pair = synced.tokens(KEY)
    assert pair is not None and pair.expires_at is not None
    manager, _ = _host(emulator, server_clock, 1.5, store)
    _call(manager)  # Watcher's Date header: this host is 2 s behind, as far as it can tell
    # Due from expiry minus the margin on Watcher's clock, give or take the half second the
    # header cannot resolve.
    server_clock.set(pair.expires_at - 30 - 0.75)
    assert manager.needs_refresh(pair) is False
    server_clock.set(pair.expires_at - 30 - 0.25)
    assert manager.needs_refresh(pair) is True


# --- copies kept while the estimate changes ---------------------------------------------------


@pytest.mark.parametrize(
    ("here_behind", "loads"),
    [(10.0, 0), (10.5, 0), (11.0, 1), (12.0, 1)],
    ids=["same-offset", "half-a-second-apart", "one-second-apart", "two-seconds-apart"],
)
def test_a_copy_kept_before_the_offset_was_known_goes_if_the_offset_is_a_second_off(
    emulator: WatcherEmulator, server_clock: FakeClock, here_behind: float, loads: int
) -> None:
    store = CountingStore()
    elsewhere, _ = _host(emulator, server_clock, 10.0, store)
    elsewhere.login(KEY, username="alice", password="secret")  # judged with an offset of 10.5
    here, _ = _host(emulator, server_clock, here_behind, store)
    _call(here)  # keeps a copy, then learns its own offset from the answer
    store.loads = 0
    _call(here)
    assert store.loads == loads


def test_when_this_hosts_clock_is_set_back_its_copies_are_judged_again(
    emulator: WatcherEmulator, server_clock: FakeClock
) -> None:
    store = _connected_store(emulator, server_clock, CountingStore())
    here, clock = _host(emulator, server_clock, 0.0, store)
    _call(here)  # a copy, fresh until expiry minus the margin on this host's clock
    clock.behind = 100.0
    server_clock.advance(1)
    _call(here)  # Watcher's Date header says this host is now 100 s behind
    server_clock.set(START + LIFETIME + 5)  # on this host's clock: 95 s before expiry
    _call(here)
    stats = emulator.stats
    assert (stats.unauthorized, stats.refreshes) == (0, 1)


# --- when the cache lets a copy go --------------------------------------------------------------


def test_a_record_read_while_the_clock_was_learned_and_a_change_announced_is_not_kept(
    emulator: WatcherEmulator, server_clock: FakeClock
) -> None:
    store = ChannelStore()
    _connected_store(emulator, server_clock, store)
    here, _ = _host(emulator, server_clock, 0.0, store)
    skey = here.store_key(KEY)

    def meanwhile() -> None:
        # Another thread's login: this process's first word with Watcher. Then another
        # process changes the record being read.
        here.login("another-key", username="alice", password="secret")
        store.channel.notify(skey)

    store.after_load = meanwhile
    _call(here)
    store.loads = 0
    _call(here)
    assert store.loads == 1


def test_an_echo_that_comes_exactly_the_echo_wait_after_the_write_still_keeps_the_copy(
    emulator: WatcherEmulator, server_clock: FakeClock
) -> None:
    store = ChannelStore()
    store.echo = False
    here, _ = _host(emulator, server_clock, 0.0, store)
    here.login(KEY, username="alice", password="secret")
    server_clock.advance(5.0)
    store.channel.notify(here.store_key(KEY))  # this login's echo, five seconds late
    store.loads = 0
    _call(here)
    assert store.loads == 0


def test_a_copy_no_longer_trusted_leaves_the_cache_and_makes_room_for_a_fresh_one(
    emulator: WatcherEmulator, server_clock: FakeClock
) -> None:
    store = CountingStore(staleness_bound=5.0)
    elsewhere, _ = _host(emulator, server_clock, 0.0, store)
    for key in ("a", "b", "c"):
        elsewhere.login(key, username="alice", password="secret")
    here = TokenManager(
        emulator.url, store=store, clock=server_clock, timeout=5.0, local_cache_size=2
    )
    _call(here, "a")
    server_clock.advance(3)
    _call(here, "b")
    server_clock.advance(3)  # a's copy is past the staleness bound, b's is not
    elsewhere.logout("a")
    with pytest.raises(NotConnected):
        here.session("a").get("profile")
    _call(here, "c")  # the cache holds two copies: b's and c's
    store.loads = 0
    _call(here, "b")
    assert store.loads == 0


# --- a refresh whose new pair could not be stored ---------------------------------------------


class SaveFailingStore(CountingStore):
    """A shared store whose writes fail while ``failing`` is set and whose reads keep working,
    as a database gone read-only does. (A real store cannot be made to fail exactly between
    Watcher's answer to a refresh and the write of the new pair.)"""

    failing = False

    def save(self, key: StoreKey, pair: TokenPair) -> None:
        if self.failing:
            raise StoreError("the token store refused the write")
        super().save(key, pair)


def test_a_refresh_whose_new_pair_was_not_stored_is_not_reported_and_explains_the_rejection(
    watcher_emulator_factory, server_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=server_clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True
    )
    store = SaveFailingStore()
    manager = TokenManager(emulator.url, store=store, clock=server_clock, timeout=5.0)
    manager.login(KEY, username="alice", password="secret")
    events: list[WatcherEvent] = []
    manager.add_listener(events.append)
    server_clock.advance(LIFETIME)
    store.failing = True
    with pytest.raises(StoreError):
        manager.session(KEY).get("profile")
    assert emulator.stats.refreshes == 1  # Watcher rotated the refresh token
    assert EventType.REFRESHED not in [e.type for e in events]
    store.failing = False
    with pytest.raises(ReauthenticationRequired) as caught:
        manager.session(KEY).get("profile")
    assert caught.value.reason == "refresh_answer_lost"


# --- the first login through the provider ------------------------------------------------------


def test_a_thread_that_found_no_pair_uses_another_threads_provider_login_without_the_stores_lock(
    emulator: WatcherEmulator, server_clock: FakeClock
) -> None:
    store = CountingStore()
    logging_in = threading.Event()
    other_read_nothing = threading.Event()

    def provider(key: str) -> tuple[str, str]:
        logging_in.set()
        other_read_nothing.wait(10)
        return ("alice", "secret")

    manager = TokenManager(
        emulator.url, store=store, clock=server_clock, timeout=5.0, credentials=provider
    )
    statuses: list[int] = []

    def call() -> None:
        statuses.append(manager.session(KEY).get("profile").status_code)

    first = threading.Thread(target=call)
    first.start()
    assert logging_in.wait(10)  # the first thread holds the locks and asks the provider
    store.after_load = other_read_nothing.set  # once the second thread has found no pair
    second = threading.Thread(target=call)
    second.start()
    for thread in (first, second):
        thread.join(10)
    assert statuses == [200, 200]
    assert emulator.stats.password_logins == 1
    assert store.locks == 1


# --- what a login reports ------------------------------------------------------------------------


def test_a_login_reports_how_long_it_took(watcher_emulator_factory) -> None:
    emulator = watcher_emulator_factory(latency=0.2)  # on the wall clock, like the manager
    manager = TokenManager(emulator.url, timeout=5.0)
    events: list[WatcherEvent] = []
    manager.add_listener(events.append)
    manager.login(KEY, username="alice", password="secret")
    durations = [e.duration for e in events if e.type is EventType.CONNECTED]
    assert len(durations) == 1 and durations[0] is not None and 0.2 <= durations[0] < 5.0


# --- user keys ---------------------------------------------------------------------------------


def test_making_store_keys_for_ever_new_user_keys_keeps_memory_bounded() -> None:
    manager = TokenManager("https://watcher.test", timeout=5.0)
    tracemalloc.start()
    try:
        for n in range(10_000):
            manager.store_key(f"user-{n}")
        after_ten_thousand = tracemalloc.get_traced_memory()[0]
        for n in range(10_000, 25_000):
            manager.store_key(f"user-{n}")
        after_more = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after_more < after_ten_thousand


# --- lock waits -----------------------------------------------------------------------------


def test_a_call_that_waited_at_the_stores_lock_for_another_processs_refresh_says_how_long(
    watcher_emulator_factory, server_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=server_clock, access_lifetime=LIFETIME, refresh_latency=1.0
    )
    store = CountingStore()
    elsewhere = TokenManager(emulator.url, store=store, clock=server_clock, timeout=5.0)
    here = TokenManager(emulator.url, store=store, clock=server_clock, timeout=5.0)
    elsewhere.login(KEY, username="alice", password="secret")
    server_clock.advance(LIFETIME)
    events: list[WatcherEvent] = []
    here.add_listener(events.append)
    refreshing = threading.Thread(target=lambda: elsewhere.session(KEY).get("profile"))
    refreshing.start()
    deadline = time.monotonic() + 5
    while not store.held and time.monotonic() < deadline:
        time.sleep(0.01)
    _call(here)  # finds the pair stale, and waits at the store's lock for the refresh
    refreshing.join(10)
    assert emulator.stats.refreshes == 1
    waits = [e.duration for e in events if e.type is EventType.LOCK_WAITED]
    assert len(waits) == 1 and waits[0] is not None and 0.1 < waits[0] < 5.0


def test_an_async_manager_over_a_sync_store_gives_the_stores_lock_back_after_each_step(
    emulator: WatcherEmulator, server_clock: FakeClock
) -> None:
    # The sync store runs behind an adapter that holds its lock on a thread of its own:
    # only leaving the lock on that thread gives it back.
    async def main() -> None:
        async with AsyncTokenManager(
            emulator.url, store=MemoryStore(), clock=server_clock, timeout=5.0, lock_timeout=0.5
        ) as manager:
            await manager.login(KEY, username="alice", password="secret")
            assert await manager.logout(KEY) is True
            await manager.login(KEY, username="alice", password="secret")
            await manager.refresh(KEY)
            assert await manager.logout(KEY) is True

    asyncio.run(main())
