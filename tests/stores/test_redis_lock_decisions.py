"""What a Redis lock does for its holder, on either store: its watchdog renews the lease a third
of a lease at a time and stops when the lock is given back or lost, a lost lease and a failed
release are warnings that name the key and no token, a process whose stuck thread holds a lock
still exits, and waiters cancelled while asking for the lock leave nothing behind.

Redis's own command statistics (``INFO commandstats`` of a private server) count the renewals
and releases, so the checks count commands instead of timing them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis

from watcher_auth import StoreKey
from watcher_auth.stores.redis import AsyncRedisStore, RedisStore

from .conftest import KEYS, PrivateRedis

pytestmark = pytest.mark.redis

KEY = StoreKey(server="https://watcher.test", user="lock-holder-7")
KINDS = ["sync", "async"]


class Holder:
    """A store of either kind, driven from a coroutine.

    ``pause`` lets the store's watchdog run meanwhile: the sync store's watchdog is a thread,
    so a blocking sleep will do; the async store's is a task on this loop.
    """

    def __init__(self, kind: str, url: str, prefix: str, lease: float | None = None) -> None:
        self.sync: RedisStore | None = None
        self.aio: AsyncRedisStore | None = None
        if kind == "sync":
            self.sync = RedisStore(url=url, prefix=prefix, encryption_keys=KEYS, lock_lease=lease)
        else:
            self.aio = AsyncRedisStore(
                url=url, prefix=prefix, encryption_keys=KEYS, lock_lease=lease
            )

    @asynccontextmanager
    async def lock(self) -> AsyncIterator[None]:
        if self.sync is not None:
            with self.sync.lock(KEY, timeout=5):
                yield
        else:
            assert self.aio is not None
            async with self.aio.lock(KEY, timeout=5):
                yield

    async def pause(self, seconds: float) -> None:
        if self.sync is not None:
            time.sleep(seconds)
        else:
            await asyncio.sleep(seconds)

    async def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        if self.aio is not None:
            await self.aio.aclose()


def _calls(server: PrivateRedis, *commands: str) -> int:
    """How many of ``commands`` the server has run (those run by scripts included)."""
    client = server.client()
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in commands)


def _renewals(server: PrivateRedis) -> int:
    return _calls(server, "pexpire")


def _script_runs(server: PrivateRedis) -> int:
    return _calls(server, "evalsha", "eval")


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and text in record.getMessage()
    ]


LOST = "expired while held"
RELEASE_FAILED = "could not release"


@pytest.fixture
def prefix() -> str:
    return f"lock-decisions-{uuid.uuid4().hex[:8]}:"


@pytest.fixture(autouse=True)
def _warnings_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="watcher_auth")


def _lock_name(prefix: str) -> str:
    return f"{prefix}lock:{KEY}"


def _owner(raw: redis.Redis, prefix: str) -> str:
    """The owner token the lock's key holds."""
    value = raw.get(_lock_name(prefix))
    assert isinstance(value, bytes)
    return value.decode()


@pytest.mark.parametrize("kind", KINDS)
def test_a_held_lock_is_renewed_once_per_third_of_its_lease_and_stays_held(
    private_redis: PrivateRedis, prefix: str, kind: str
) -> None:
    lease = 0.6
    raw = private_redis.client()

    async def scenario() -> tuple[float, bool]:
        holder = Holder(kind, private_redis.url, prefix, lease)
        started = time.monotonic()
        async with holder.lock():
            await holder.pause(5 * lease)
            still_held = raw.exists(_lock_name(prefix)) == 1
        held_for = time.monotonic() - started
        await holder.close()
        return held_for, still_held

    before = _renewals(private_redis)
    held_for, still_held = asyncio.run(scenario())
    renewals = _renewals(private_redis) - before
    raw.close()
    assert still_held
    # Each renewal waits a full third of the lease after the one before: a busy machine
    # makes fewer, never more.
    assert 2 <= renewals <= held_for / (lease / 3) + 0.5, (renewals, held_for)


@pytest.mark.parametrize("kind", KINDS)
def test_a_released_lock_sends_no_more_renewals_and_reports_no_lost_lease(
    private_redis: PrivateRedis, prefix: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    lease = 3.0

    async def scenario() -> tuple[int, int]:
        holder = Holder(kind, private_redis.url, prefix, lease)
        async with holder.lock():
            pass
        released = _script_runs(private_redis)
        await holder.pause(2 * lease / 3)  # past the first renewal the holder would have made
        later = _script_runs(private_redis)
        await holder.close()
        return released, later

    released, later = asyncio.run(scenario())
    assert later == released
    assert _warnings(caplog, "") == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_lost_lease_is_logged_once_naming_the_key_and_no_token_and_renewing_stops(
    private_redis: PrivateRedis, prefix: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    lease = 0.6
    raw = private_redis.client()

    async def scenario() -> tuple[str, int, int]:
        holder = Holder(kind, private_redis.url, prefix, lease)
        async with holder.lock():
            owner = _owner(raw, prefix)
            raw.delete(_lock_name(prefix))  # as if a pause had outlasted the lease
            deadline = time.monotonic() + 10 * lease
            while not _warnings(caplog, LOST) and time.monotonic() < deadline:
                await holder.pause(0.05)
            reported = _script_runs(private_redis)
            await holder.pause(lease)  # three more renewal periods
            later = _script_runs(private_redis)
        await holder.close()
        return owner, reported, later

    owner, reported, later = asyncio.run(scenario())
    raw.close()
    lost = _warnings(caplog, LOST)
    assert len(lost) == 1, lost
    assert repr(KEY.user) in lost[0]
    assert owner not in caplog.text
    assert later == reported  # the watchdog gave up: nothing more to renew


@pytest.mark.parametrize("kind", KINDS)
def test_a_lock_whose_release_fails_lets_the_work_finish_and_logs_a_warning_naming_the_key(
    private_redis: PrivateRedis, prefix: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw = private_redis.client()

    async def scenario() -> str:
        holder = Holder(kind, private_redis.url, prefix)
        async with holder.lock():
            owner = _owner(raw, prefix)
            raw.close()
            private_redis.stop()  # Redis goes away before the work is done
        await holder.close()
        return owner

    owner = asyncio.run(scenario())
    failed = _warnings(caplog, RELEASE_FAILED)
    assert len(failed) == 1, failed
    assert repr(KEY.user) in failed[0]
    assert owner not in caplog.text


@pytest.mark.parametrize("kind", KINDS)
def test_by_default_a_lock_outlives_a_holder_that_stopped_renewing_by_five_seconds_at_most(
    private_redis: PrivateRedis, prefix: str, kind: str
) -> None:
    raw = private_redis.client()

    async def scenario() -> int:
        holder = Holder(kind, private_redis.url, prefix)
        async with holder.lock():
            left = int(raw.pttl(_lock_name(prefix)))
        await holder.close()
        return left

    left = asyncio.run(scenario())
    raw.close()
    assert 4000 < left <= 5000


_STUCK_HOLDER = textwrap.dedent(
    """
    import sys
    import threading

    from watcher_auth import StoreKey
    from watcher_auth.stores.redis import RedisStore

    url, prefix, server, user = sys.argv[1:]
    store = RedisStore(url=url, prefix=prefix, encryption_keys=["a key"], lock_lease=1.0)
    taken = threading.Event()

    def stuck() -> None:
        with store.lock(StoreKey(server=server, user=user), timeout=5):
            taken.set()
            threading.Event().wait()  # a request that never returns

    threading.Thread(target=stuck, daemon=True).start()
    assert taken.wait(20)
    print("holding", flush=True)
    """
)


@pytest.mark.multiprocess
def test_a_process_whose_stuck_thread_holds_a_lock_still_exits_and_the_lock_frees_itself(
    private_redis: PrivateRedis, prefix: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _STUCK_HOLDER, private_redis.url, prefix, KEY.server, KEY.user],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "holding"
        exitcode = child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert exitcode == 0
    store = RedisStore(url=private_redis.url, prefix=prefix, encryption_keys=KEYS)
    with store.lock(KEY, timeout=10):  # ten of the child's leases
        pass
    store.close()


def _tasks_alive() -> int:
    gc.collect()
    # type(), not isinstance(): some objects (Django's lazy ones) evaluate themselves when
    # asked for their __class__.
    return sum(issubclass(type(thing), asyncio.Task) for thing in gc.get_objects())


def test_waiters_cancelled_while_asking_for_the_lock_leave_no_lock_and_no_task_behind(
    private_redis: PrivateRedis, prefix: str
) -> None:
    waiters = 20

    async def scenario() -> None:
        store = AsyncRedisStore(url=private_redis.url, prefix=prefix, encryption_keys=KEYS)
        await store.load(KEY)  # connected

        async def take() -> None:
            async with store.lock(KEY, timeout=5):
                await asyncio.sleep(60)

        for _ in range(waiters):
            waiter = asyncio.ensure_future(take())
            await asyncio.sleep(0)  # it has sent its SET and waits for the answer
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        deadline = time.monotonic() + 30
        while len(asyncio.all_tasks()) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the clean-ups run in the background
        await store.aclose()

    before = _tasks_alive()
    asyncio.run(scenario())
    left = _tasks_alive() - before
    raw = private_redis.client()
    assert raw.exists(_lock_name(prefix)) == 0
    raw.close()
    assert left < waiters // 4, left
