"""Lock leases in Redis (RedisStore, AsyncRedisStore, Django's cache store): a live holder keeps
its lock however long it works, a killed one frees it within one lease, and waiters back off
instead of spinning, giving up at their timeout."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from watcher_auth import StoreKey, StoreLockTimeout
from watcher_auth.stores.redis import AsyncRedisStore, RedisStore
from watcher_auth.testing.services import require_redis

from ._workers import KEYS, hold_lock
from .conftest import PrivateRedis

LEASE = 5.0
KEY = StoreKey(server="https://watcher.test", user="lease-user")

Make = Callable[[], Any]


def _django_cache_store(prefix: str, alias: str = "redis") -> Any:
    from django_watcher_auth.stores import DjangoCacheStore

    return DjangoCacheStore(alias=alias, key_prefix=prefix, lease=LEASE)


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("async_redis", marks=pytest.mark.redis),
        pytest.param("django_cache", marks=pytest.mark.redis),
    ]
)
def make_leased(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> Make:
    """A factory of new store clients (each process, each event loop makes its own)."""
    if request.param == "redis":
        return lambda: RedisStore(url=redis_url, prefix=redis_prefix, encryption_keys=KEYS)
    if request.param == "async_redis":
        return lambda: AsyncRedisStore(url=redis_url, prefix=redis_prefix, encryption_keys=KEYS)
    require_redis(14)  # the "redis" alias of tests/django/settings.py
    return lambda: _django_cache_store(redis_prefix)


def try_lock(make: Make, timeout: float, moments: list[float] | None = None) -> float:
    """Take and release ``KEY``'s lock with a new client; returns when it was taken.

    The client connects first; ``moments`` gets when the wait began and, if it timed out,
    when it gave up.
    """
    store = make()

    def began() -> None:
        if moments is not None:
            moments.append(time.monotonic())

    if isinstance(store, AsyncRedisStore):

        async def take() -> float:
            try:
                await store.load(KEY)
                began()
                async with store.lock(KEY, timeout=timeout):
                    return time.monotonic()
            except StoreLockTimeout:
                began()
                raise
            finally:
                await store.aclose()

        return asyncio.run(take())
    try:
        store.load(KEY)
        began()
        with store.lock(KEY, timeout=timeout):
            return time.monotonic()
    except StoreLockTimeout:
        began()
        raise
    finally:
        store.close()


def _start_holder(make: Make, seconds: float) -> tuple[Any, Any]:
    ctx = multiprocessing.get_context("fork")
    ready, result = ctx.Event(), ctx.Queue()
    holder = ctx.Process(
        target=hold_lock, args=(make, str(KEY), seconds, ready, result), daemon=True
    )
    holder.start()
    assert ready.wait(20), "the holder did not take the lock"
    return holder, result


@pytest.mark.multiprocess
def test_a_killed_holder_frees_the_lock_within_one_lease(make_leased: Make) -> None:
    holder, _ = _start_holder(make_leased, seconds=60)
    try:
        time.sleep(LEASE / 2)  # past the first renewal
        with pytest.raises(StoreLockTimeout):
            try_lock(make_leased, timeout=0.2)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        holder.join(10)
    assert holder.exitcode == -signal.SIGKILL
    acquired_at = try_lock(make_leased, timeout=LEASE + 5)
    assert acquired_at - killed_at <= LEASE + 1


@pytest.mark.multiprocess
def test_a_live_holder_working_longer_than_its_lease_is_never_overtaken(
    make_leased: Make,
) -> None:
    holder, result = _start_holder(make_leased, seconds=12)
    try:
        started = time.monotonic()
        with pytest.raises(StoreLockTimeout):
            try_lock(make_leased, timeout=10.5)
        assert time.monotonic() - started >= 10.2
        acquired_at = try_lock(make_leased, timeout=10)
        action, released_at = result.get(timeout=10)
    finally:
        holder.join(10)
    assert action == "released" and acquired_at >= released_at
    assert holder.exitcode == 0


# --- waiters back off ----------------------------------------------------------------------


def _set_calls(server: PrivateRedis) -> int:
    client = server.client()
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_set", {}).get("calls", 0))


@pytest.fixture
def private_cache(private_redis: PrivateRedis, settings: Any) -> Iterator[str]:
    """A Django cache alias on the private Redis server."""
    settings.CACHES = {
        **settings.CACHES,
        "private": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": private_redis.url,
        },
    }
    yield "private"


@pytest.mark.parametrize(
    ("kind", "most_attempts"),
    [
        # Pauses double from 2 ms to 50 ms, each at least half its step: at most ~6 attempts
        # while ramping, then one per 25-50 ms. A busy spin makes thousands; a backoff that
        # shrinks instead of growing makes hundreds.
        ("redis", 90),
        ("async_redis", 90),
        # Pauses double from 5 ms to 100 ms: ~5 attempts ramping, then one per 50-100 ms.
        ("django_cache", 50),
    ],
)
def test_a_waiter_backs_off_between_attempts_and_gives_up_at_its_timeout(
    private_redis: PrivateRedis, private_cache: str, kind: str, most_attempts: int
) -> None:
    prefix = f"backoff-{uuid.uuid4().hex[:8]}:"
    if kind == "django_cache":

        def make() -> Any:
            return _django_cache_store(prefix, alias=private_cache)
    elif kind == "redis":

        def make() -> Any:
            return RedisStore(url=private_redis.url, prefix=prefix, encryption_keys=KEYS)
    else:

        def make() -> Any:
            return AsyncRedisStore(url=private_redis.url, prefix=prefix, encryption_keys=KEYS)

    holder = RedisStore(url=private_redis.url, prefix=prefix, encryption_keys=KEYS)
    if kind == "django_cache":
        holder = make()
    with holder.lock(KEY, timeout=1):
        before = _set_calls(private_redis)
        moments: list[float] = []
        with pytest.raises(StoreLockTimeout):
            try_lock(make, timeout=2.0, moments=moments)
        attempts = _set_calls(private_redis) - before
    started, gave_up = moments
    waited = gave_up - started
    holder.close()
    assert abs(waited - 2.0) <= 0.3, waited
    assert 10 <= attempts <= most_attempts, attempts


def test_a_lock_taken_over_after_an_expired_lease_is_not_extended_by_the_old_holder(
    redis_url: str, redis_prefix: str
) -> None:
    store = RedisStore(url=redis_url, prefix=redis_prefix, encryption_keys=KEYS, lock_lease=0.6)
    raw = redis.Redis.from_url(redis_url)
    name = f"{redis_prefix}lock:{KEY}"
    with store.lock(KEY, timeout=1):
        raw.set(name, "someone else", px=10_000)  # as if our lease had run out meanwhile
        time.sleep(0.5)  # past a renewal (every 0.2 s)
        assert 5_000 < raw.pttl(name) <= 10_000
    assert raw.get(name) == b"someone else"
    raw.close()
    store.close()
