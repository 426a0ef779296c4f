"""Worker processes sharing one Redis store: what one refreshes, the others use."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from watcher_auth import TokenManager
from watcher_auth.stores.redis import RedisStore
from watcher_auth.testing import SharedClock
from watcher_auth.testing.pytest_plugin import EmulatorFactory
from watcher_auth.testing.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.multiprocess]

KEY = "shared-user"
KEYS = ["a secret key for the workers"]
REDIS_DB = 13
WORKERS = 3


@pytest.fixture
def redis_url() -> str:
    return require_redis(REDIS_DB)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    prefix = f"watcher_auth_decisions:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for name in client.scan_iter(match=prefix + "*"):
        client.delete(name)
    client.close()


def _worker(
    url: str,
    redis_url: str,
    prefix: str,
    clock: SharedClock,
    warmed: Any,
    go: Any,
    results: Any,
) -> None:
    try:
        store = RedisStore(url=redis_url, prefix=prefix, encryption_keys=KEYS)
        manager = TokenManager(url, store=store, clock=clock, timeout=10.0)
        session = manager.session(KEY)
        first = session.get("profile").status_code
        warmed.wait(30)
        go.wait(30)
        results.put((first, session.get("profile").status_code))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def test_workers_that_get_a_401_at_once_for_one_key_refresh_it_once(
    redis_url: str, prefix: str, watcher_emulator_factory: EmulatorFactory
) -> None:
    clock = SharedClock()
    # The refresh is slow, so every worker's 401 arrives before the first refresh is done.
    emulator = watcher_emulator_factory(clock=clock, access_lifetime=300, refresh_latency=0.5)
    parent = TokenManager(
        emulator.url,
        store=RedisStore(url=redis_url, prefix=prefix, encryption_keys=KEYS),
        clock=clock,
    )
    parent.login(KEY, username="alice", password="secret")
    parent.store.close()

    ctx = multiprocessing.get_context("fork")
    warmed, go = ctx.Barrier(WORKERS + 1), ctx.Barrier(WORKERS + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_worker,
            args=(emulator.url, redis_url, prefix, clock, warmed, go, results),
        )
        for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    warmed.wait(30)  # every worker holds the access token in its cache
    emulator.revoke_access_tokens("alice")
    emulator.reset_stats()
    go.wait(30)
    answers = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)

    assert answers == [(200, 200)] * WORKERS
    stats = emulator.stats
    assert (stats.unauthorized, stats.refreshes, stats.password_logins) == (WORKERS, 1, 0)


def _stale_worker(
    url: str, redis_url: str, prefix: str, clock: SharedClock, go: Any, results: Any
) -> None:
    try:
        store = RedisStore(url=redis_url, prefix=prefix, encryption_keys=KEYS)
        manager = TokenManager(url, store=store, clock=clock, timeout=10.0)
        go.wait(30)
        results.put(manager.session(KEY).get("profile").status_code)
    except BaseException as exc:
        results.put(repr(exc))


def test_workers_that_find_the_token_expired_at_once_refresh_it_once(
    redis_url: str, prefix: str, watcher_emulator_factory: EmulatorFactory
) -> None:
    clock = SharedClock()
    emulator = watcher_emulator_factory(clock=clock, access_lifetime=300, refresh_latency=0.3)
    parent = TokenManager(
        emulator.url,
        store=RedisStore(url=redis_url, prefix=prefix, encryption_keys=KEYS),
        clock=clock,
    )
    parent.login(KEY, username="alice", password="secret")
    parent.store.close()
    clock.advance(300)

    ctx = multiprocessing.get_context("fork")
    go = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_stale_worker, args=(emulator.url, redis_url, prefix, clock, go, results)
        )
        for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    answers = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)

    assert answers == [200] * WORKERS
    stats = emulator.stats
    assert (stats.refreshes, stats.unauthorized, stats.password_logins) == (1, 0, 1)


def _child_calls(manager: TokenManager, results: Any) -> None:
    try:
        store = manager.store
        before = store.loads  # type: ignore[attr-defined]
        manager.session(KEY).get("profile")
        results.put(store.loads - before)  # type: ignore[attr-defined]
    except BaseException as exc:
        results.put(repr(exc))


def test_a_child_process_after_fork_reads_the_store_instead_of_its_parents_copies(
    watcher_emulator_factory: EmulatorFactory,
) -> None:
    from tests.core.test_decisions import CountingStore

    emulator = watcher_emulator_factory(access_lifetime=300)
    manager = TokenManager(emulator.url, store=CountingStore(), timeout=10.0)
    manager.login(KEY, username="alice", password="secret")
    manager.session(KEY).get("profile")  # the parent keeps a copy
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_child_calls, args=(manager, results))
    child.start()
    loads = results.get(timeout=60)
    child.join(30)
    assert loads == 1


def test_a_redis_lock_held_past_its_lease_stays_held_while_its_holder_lives(
    redis_url: str, prefix: str
) -> None:
    import time

    from watcher_auth import StoreKey, StoreLockTimeout

    key = StoreKey(server="https://watcher.test", user="lease")
    holder = RedisStore(url=redis_url, prefix=prefix, encryption_keys=KEYS, lock_lease=0.6)
    other = RedisStore(url=redis_url, prefix=prefix, encryption_keys=KEYS)
    with holder.lock(key, timeout=1):
        for _ in range(3):  # 1.5 s in all: past two leases
            time.sleep(0.5)
            with pytest.raises(StoreLockTimeout), other.lock(key, timeout=0.05):
                pass
    with other.lock(key, timeout=1):  # released at once when its holder is done
        pass
    holder.close()
    other.close()


def test_an_async_redis_lock_held_past_its_lease_stays_held_while_its_holder_lives(
    redis_url: str, prefix: str
) -> None:
    import asyncio

    from watcher_auth import StoreKey, StoreLockTimeout
    from watcher_auth.stores.redis import AsyncRedisStore

    key = StoreKey(server="https://watcher.test", user="async-lease")

    async def main() -> None:
        holder = AsyncRedisStore(url=redis_url, prefix=prefix, encryption_keys=KEYS, lock_lease=0.6)
        other = AsyncRedisStore(url=redis_url, prefix=prefix, encryption_keys=KEYS)
        async with holder.lock(key, timeout=1):
            for _ in range(3):  # 1.5 s in all: past two leases
                await asyncio.sleep(0.5)
                with pytest.raises(StoreLockTimeout):
                    async with other.lock(key, timeout=0.05):
                        pass
        async with other.lock(key, timeout=1):
            pass
        await holder.aclose()
        await other.aclose()

    asyncio.run(main())
