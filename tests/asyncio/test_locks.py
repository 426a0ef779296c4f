"""The refresh locks of AsyncTokenManager: each one is needed, none outlives a cancelled task,
and their bounds (``max_waiters``, ``lock_timeout``) hold, for tasks and for the sync
manager's threads.

Refresh latency at the emulator keeps a refresh in flight while the test acts on it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from watcher_auth import AsyncTokenManager, StoreLockTimeout, TokenManager
from watcher_auth.stores import AsyncMemoryStore, AsyncStoreAdapter, MemoryStore
from watcher_auth.testing import FakeClock, WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory

KEY = "portal-user-42"
LIFETIME = 300.0


class CountingStore(AsyncMemoryStore):
    """An async memory store that counts how often its lock is taken, and that says it is
    shared, so two managers on it behave like two processes on one database."""

    shared = True

    def __init__(self) -> None:
        super().__init__()
        self.locks_taken = 0

    @asynccontextmanager
    async def lock(self, key: Any, *, timeout: float) -> AsyncIterator[None]:
        async with super().lock(key, timeout=timeout):
            self.locks_taken += 1
            yield


@pytest.fixture
def emulator(watcher_emulator_factory: EmulatorFactory, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True
    )


async def gather_statuses(manager: AsyncTokenManager, count: int) -> list[int]:
    session = manager.session(KEY)
    replies = await asyncio.gather(*(session.get("profile") for _ in range(count)))
    return [reply.status_code for reply in replies]


# Each lock is needed.


def test_sixty_four_tasks_waiting_for_a_refresh_take_the_store_lock_once_per_expiry(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    # Without the per-key lock every task would take the store's lock in turn.
    store = CountingStore()

    async def scenario() -> list[int]:
        async with AsyncTokenManager(emulator.url, store=store, clock=fake_clock) as manager:
            await manager.login(KEY, username="alice", password="secret")
            statuses = []
            for _ in range(3):
                fake_clock.advance(LIFETIME)
                statuses += await gather_statuses(manager, 64)
            return statuses

    assert asyncio.run(scenario()) == [200] * 64 * 3
    # The login's save, then one refresh per expiry.
    assert store.locks_taken == 1 + 3
    assert (emulator.stats.refreshes, emulator.stats.rejected_refreshes) == (3, 0)


def test_two_managers_on_one_shared_store_refresh_once_per_expiry(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    # Two managers share no per-key lock: only the store's lock keeps them from refreshing
    # the same pair twice (and, with rotation, from one of them losing it).
    store = CountingStore()

    async def scenario() -> list[int]:
        first = AsyncTokenManager(emulator.url, store=store, clock=fake_clock)
        second = AsyncTokenManager(emulator.url, store=store, clock=fake_clock)
        await first.login(KEY, username="alice", password="secret")
        statuses = []
        for _ in range(3):
            fake_clock.advance(LIFETIME)
            both = await asyncio.gather(gather_statuses(first, 32), gather_statuses(second, 32))
            statuses += both[0] + both[1]
        await first.aclose()
        await second.aclose()
        return statuses

    assert asyncio.run(scenario()) == [200] * 64 * 3
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 3, 0)


# No lock outlives a cancelled task.


@pytest.fixture(
    params=[
        "memory",
        "adapter over MemoryStore",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        return AsyncMemoryStore()
    if request.param == "adapter over MemoryStore":
        return AsyncStoreAdapter(MemoryStore())
    return request.getfixturevalue(f"async_{request.param}_store")()


async def stale_manager(
    emulator: WatcherEmulator, fake_clock: FakeClock, store: Any, **options: Any
) -> AsyncTokenManager:
    """A manager whose pair for KEY is due for a refresh; refreshes then take 5 s."""
    manager = AsyncTokenManager(emulator.url, store=store, clock=fake_clock, **options)
    await manager.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    emulator.configure(refresh_latency=5.0)
    return manager


async def until_refresh_is_in_flight(emulator: WatcherEmulator) -> None:
    """Give the holder time to take the locks and send its refresh (answered 5 s later);
    it needs milliseconds, even on a loaded machine."""
    await asyncio.sleep(0.5)
    assert emulator.stats.refreshes == 0


async def call_soon_after(manager: AsyncTokenManager) -> float:
    """Seconds the next call takes once refreshes are quick again."""
    started = time.monotonic()
    assert (await manager.session(KEY).get("profile")).status_code == 200
    return time.monotonic() - started


def test_a_task_cancelled_while_holding_the_lock_during_a_refresh_leaves_no_lock(
    emulator: WatcherEmulator, fake_clock: FakeClock, store: Any
) -> None:
    async def scenario() -> float:
        manager = await stale_manager(emulator, fake_clock, store, lock_timeout=3.0)
        holder = asyncio.create_task(manager.session(KEY).get("profile"))
        await until_refresh_is_in_flight(emulator)
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        emulator.configure(refresh_latency=0.0)
        took = await call_soon_after(manager)
        await manager.aclose()
        await store.aclose()
        return took

    # A lock left held would make the next call wait 3 s and fail.
    assert asyncio.run(scenario()) < 1.5


def test_a_task_cancelled_while_waiting_for_the_lock_leaves_no_lock(
    emulator: WatcherEmulator, fake_clock: FakeClock, store: Any
) -> None:
    async def scenario() -> tuple[int, float]:
        manager = await stale_manager(emulator, fake_clock, store, lock_timeout=8.0)
        holder = asyncio.create_task(manager.session(KEY).get("profile"))
        await until_refresh_is_in_flight(emulator)
        waiters = [asyncio.create_task(manager.session(KEY).get("profile")) for _ in range(3)]
        await asyncio.sleep(0.1)
        for waiter in waiters:
            waiter.cancel()
        assert (await holder).status_code == 200
        emulator.configure(refresh_latency=0.0)
        fake_clock.advance(LIFETIME)
        took = await call_soon_after(manager)
        await manager.aclose()
        await store.aclose()
        return sum(waiter.cancelled() for waiter in waiters), took

    cancelled, took = asyncio.run(scenario())
    assert cancelled == 3
    assert took < 1.5
    assert emulator.stats.refreshes == 2


# The bounds.


def test_one_waiter_past_max_waiters_gets_store_lock_timeout_at_once(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    async def scenario() -> tuple[list[int], float, str]:
        manager = await stale_manager(emulator, fake_clock, AsyncMemoryStore(), max_waiters=4)
        session = manager.session(KEY)
        holder = asyncio.create_task(session.get("profile"))
        await until_refresh_is_in_flight(emulator)
        waiters = [asyncio.create_task(session.get("profile")) for _ in range(4)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(StoreLockTimeout) as caught:
            await session.get("profile")
        refused_after = time.monotonic() - started
        replies = await asyncio.gather(holder, *waiters)
        await manager.aclose()
        return [reply.status_code for reply in replies], refused_after, str(caught.value)

    statuses, refused_after, message = asyncio.run(scenario())
    assert statuses == [200] * 5
    assert refused_after < 0.5 and "too many callers waiting" in message
    assert emulator.stats.refreshes == 1


def test_a_waiter_gives_up_after_lock_timeout(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    async def scenario() -> tuple[float, int]:
        manager = await stale_manager(emulator, fake_clock, AsyncMemoryStore(), lock_timeout=1.0)
        session = manager.session(KEY)
        holder = asyncio.create_task(session.get("profile"))
        await until_refresh_is_in_flight(emulator)
        started = time.monotonic()
        with pytest.raises(StoreLockTimeout):
            await session.get("profile")
        waited = time.monotonic() - started
        status = (await holder).status_code
        await manager.aclose()
        return waited, status

    waited, status = asyncio.run(scenario())
    assert 0.9 <= waited < 3.0
    assert status == 200 and emulator.stats.refreshes == 1


# The same bounds for the sync manager's threads.


def stale_sync_manager(
    emulator: WatcherEmulator, fake_clock: FakeClock, **options: Any
) -> TokenManager:
    manager = TokenManager(emulator.url, clock=fake_clock, **options)
    manager.login(KEY, username="alice", password="secret")
    fake_clock.advance(LIFETIME)
    emulator.configure(refresh_latency=3.0)
    return manager


def in_thread(call: Callable[[], int]) -> tuple[threading.Thread, list[int]]:
    answers: list[int] = []
    thread = threading.Thread(target=lambda: answers.append(call()))
    thread.start()
    return thread, answers


def test_one_thread_past_max_waiters_gets_store_lock_timeout_at_once(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = stale_sync_manager(emulator, fake_clock, max_waiters=2)
    session = manager.session(KEY)
    running = [in_thread(lambda: session.get("profile").status_code)]
    time.sleep(0.5)  # the first thread's refresh is at the emulator
    running += [in_thread(lambda: session.get("profile").status_code) for _ in range(2)]
    time.sleep(0.3)
    started = time.monotonic()
    with pytest.raises(StoreLockTimeout) as caught:
        session.get("profile")
    refused_after = time.monotonic() - started
    for thread, _ in running:
        thread.join(10)
    assert [answers for _, answers in running] == [[200]] * 3
    assert refused_after < 0.5 and "too many callers waiting" in str(caught.value)
    assert emulator.stats.refreshes == 1


def test_a_waiting_thread_gives_up_after_lock_timeout(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = stale_sync_manager(emulator, fake_clock, lock_timeout=1.0)
    session = manager.session(KEY)
    holder, answers = in_thread(lambda: session.get("profile").status_code)
    time.sleep(0.5)
    started = time.monotonic()
    with pytest.raises(StoreLockTimeout):
        session.get("profile")
    waited = time.monotonic() - started
    holder.join(10)
    assert 0.9 <= waited < 2.5
    assert answers == [200] and emulator.stats.refreshes == 1
