"""Refresh storms through AsyncTokenManager: many tasks (and processes, and event loops) on one
key through several expiries make one password login and one refresh per expiry, and a slow
refresh of one key holds up no other key.

Each test prints its figures (``pytest -s`` shows them): the p99 of the calls that waited
for a refresh, and what the emulator counted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from watcher_auth import AsyncTokenManager, MemoryStore, TokenManager
from watcher_auth.testing import FakeClock, SharedClock, WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory
from watcher_auth.testing.storm import StormResult, run_async_storm

LIFETIME = 300.0
KEY = "storm"


def report(name: str, result: StormResult, emulator: WatcherEmulator) -> None:
    stats = emulator.stats
    print(
        f"\n{name}: calls={result.calls} password_logins={stats.password_logins} "
        f"refreshes={stats.refreshes} rejected={stats.rejected_refreshes} "
        f"unauthorized={stats.unauthorized} waited p50={result.percentile(0.5) * 1000:.1f} ms "
        f"p99={result.percentile(0.99) * 1000:.1f} ms (of {len(result.waited)})"
    )


async def log_in(manager: AsyncTokenManager, key: str = KEY) -> None:
    """The portal's one password login, before the storm."""
    await manager.login(key, username="alice", password="secret")
    await manager.aclose()
    await manager.store.aclose()


def test_two_hundred_tasks_on_one_key_make_one_login_and_one_refresh_per_expiry(
    watcher_emulator_factory: EmulatorFactory,
) -> None:
    clock = SharedClock()
    emulator = watcher_emulator_factory(clock=clock, access_lifetime=LIFETIME)
    # 199 tasks wait for the one refresh: more than the default bound of 100 waiters.
    manager = AsyncTokenManager(emulator.url, clock=clock, max_waiters=256)
    asyncio.run(manager.login(KEY, username="alice", password="secret"))

    result = run_async_storm(
        lambda: manager,
        clock=clock,
        lifetime=LIFETIME,
        processes=1,
        tasks=200,
        expiries=3,
        calls_per_phase=2,
    )

    report("200 tasks, 1 loop, memory store", result, emulator)
    stats = emulator.stats
    assert result.errors == [] and result.calls == 200 * 4 * 2
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 3, 0)
    assert stats.unauthorized == 0


@pytest.mark.multiprocess
@pytest.mark.parametrize(
    "store",
    [
        pytest.param("async_redis_store", marks=pytest.mark.redis, id="redis"),
        pytest.param("async_postgres_store", marks=pytest.mark.postgres, id="postgres"),
    ],
)
def test_four_processes_of_sixty_four_tasks_on_a_shared_store_refresh_once_per_expiry(
    watcher_emulator_factory: EmulatorFactory, request: pytest.FixtureRequest, store: str
) -> None:
    make_store = request.getfixturevalue(store)
    clock = SharedClock()
    emulator = watcher_emulator_factory(
        clock=clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True
    )
    asyncio.run(log_in(AsyncTokenManager(emulator.url, store=make_store(), clock=clock)))

    result = run_async_storm(
        lambda: AsyncTokenManager(emulator.url, store=make_store(), clock=clock),
        clock=clock,
        lifetime=LIFETIME,
        processes=4,
        tasks=64,
        expiries=3,
        calls_per_phase=2,
    )

    report(f"4 processes x 64 tasks, {store}", result, emulator)
    stats = emulator.stats
    assert result.errors == [] and result.calls == 4 * 64 * 4 * 2
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 3, 0)
    assert stats.unauthorized == 0


def test_a_slow_refresh_of_one_key_does_not_delay_the_other_keys(
    watcher_emulator_factory: EmulatorFactory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(clock=fake_clock, seed_users=False)
    users = [f"user{n}" for n in range(8)]
    for user in users:
        emulator.add_user(user, "pw", streams=1)
    refresh_latency = 5.0

    async def scenario() -> tuple[list[float], list[float], list[int]]:
        async with AsyncTokenManager(emulator.url, clock=fake_clock, timeout=10) as manager:
            for user in users:
                await manager.login(user, username=user, password="pw")
            # Only user0's token is stale; its refresh takes 5 s at the emulator.
            stale = await manager.tokens("user0")
            assert stale is not None
            await manager.store.save(
                manager.store_key("user0"), stale.replace(expires_at=fake_clock() - 1)
            )
            emulator.configure(refresh_latency=refresh_latency)
            started = time.monotonic()

            async def slow() -> float:
                assert (await manager.session("user0").get("profile")).status_code == 200
                return time.monotonic() - started

            async def fast(user: str) -> tuple[list[float], list[int], float]:
                session = manager.session(user)
                took, statuses = [], []
                for _ in range(3):
                    began = time.monotonic()
                    statuses.append((await session.get("profile")).status_code)
                    took.append(time.monotonic() - began)
                return took, statuses, time.monotonic() - started

            slow_calls = [asyncio.create_task(slow()) for _ in range(4)]
            await asyncio.sleep(0.2)  # user0's refresh is at the emulator now
            others = await asyncio.gather(*(fast(users[1 + n % 7]) for n in range(28)))
            slow_ended = await asyncio.gather(*slow_calls)
        return (
            slow_ended,
            [ended for _, _, ended in others],
            [s for _, statuses, _ in others for s in statuses],
        ), [t for took, _, _ in others for t in took]

    (slow_ended, fast_ended, statuses), took = asyncio.run(scenario())

    took.sort()
    print(
        f"\nslow key's calls ended after {min(slow_ended):.2f} s; the 7 other keys' 84 calls "
        f"ended by {max(fast_ended):.2f} s, p99={took[int(0.99 * len(took))] * 1000:.1f} ms "
        f"max={took[-1] * 1000:.1f} ms"
    )
    assert statuses == [200] * 28 * 3
    assert min(slow_ended) >= refresh_latency
    # Had they waited for user0's refresh, they would end after it.
    assert max(fast_ended) < min(slow_ended)
    assert emulator.stats.refreshes == 1


def test_a_sync_and_an_async_manager_in_one_process_refresh_a_key_once_per_expiry(
    watcher_emulator_factory: EmulatorFactory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(clock=fake_clock, access_lifetime=LIFETIME)
    store = MemoryStore()  # one store: the async manager runs it in worker threads
    sync = TokenManager(emulator.url, store=store, clock=fake_clock)
    aio = AsyncTokenManager(emulator.url, store=store, clock=fake_clock)
    sync.login(KEY, username="alice", password="secret")
    expiries, threads, tasks = 4, 16, 32
    statuses: list[int] = []
    lock = threading.Lock()

    def phase() -> None:
        start = threading.Barrier(threads + 1)

        def thread_caller() -> None:
            session = sync.session(KEY)
            start.wait()
            status = session.get("profile").status_code
            with lock:
                statuses.append(status)

        async def async_callers() -> list[int]:
            session = aio.session(KEY)
            await asyncio.to_thread(start.wait)
            replies = await asyncio.gather(*(session.get("profile") for _ in range(tasks)))
            await aio.aclose()
            return [reply.status_code for reply in replies]

        pool = [threading.Thread(target=thread_caller) for _ in range(threads)]
        for thread in pool:
            thread.start()
        answers = asyncio.run(async_callers())
        for thread in pool:
            thread.join()
        with lock:
            statuses.extend(answers)

    for _ in range(expiries):
        fake_clock.advance(LIFETIME)
        phase()

    stats = emulator.stats
    assert statuses == [200] * expiries * (threads + tasks)
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, expiries, 0)
    assert stats.unauthorized == 0
    sync.close()


@pytest.mark.parametrize("store", ["memory", "sync memory"])
def test_views_on_a_new_event_loop_per_request_in_two_threads_refresh_once_per_expiry(
    watcher_emulator_factory: EmulatorFactory, fake_clock: FakeClock, store: str
) -> None:
    # As Flask runs async views: every request on a new loop, requests in several threads,
    # one AsyncTokenManager for the process.
    emulator = watcher_emulator_factory(clock=fake_clock, access_lifetime=LIFETIME)
    options: dict[str, Any] = {} if store == "memory" else {"store": MemoryStore()}
    manager = AsyncTokenManager(emulator.url, clock=fake_clock, **options)
    asyncio.run(manager.login(KEY, username="alice", password="secret"))
    expiries, views, tasks = 4, 2, 16
    statuses: list[int] = []
    errors: list[BaseException] = []

    async def view() -> list[int]:
        session = manager.session(KEY)
        replies = await asyncio.gather(*(session.get("profile") for _ in range(tasks)))
        await manager.aclose()
        return [reply.status_code for reply in replies]

    def request(start: threading.Barrier) -> None:
        start.wait()
        try:
            statuses.extend(asyncio.run(view()))
        except BaseException as exc:
            errors.append(exc)

    for _ in range(expiries):
        fake_clock.advance(LIFETIME)
        start = threading.Barrier(views)
        pool = [threading.Thread(target=request, args=(start,)) for _ in range(views)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(30)

    stats = emulator.stats
    assert errors == []
    assert statuses == [200] * expiries * views * tasks
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, expiries, 0)
