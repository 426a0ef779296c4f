"""Change channels: a save or delete in one process reaches every other process's watcher
within a second; a lost channel says so (``healthy`` False) and, once back, reports that
anything may have changed (``None``)."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from watcher_auth import StoreKey
from watcher_auth.stores import StoreWatch
from watcher_auth.stores.redis import AsyncRedisStore, RedisStore
from watcher_auth.stores.sqlalchemy import AsyncSQLAlchemyStore, SQLAlchemyStore
from watcher_auth.testing.contract import sample_pair
from watcher_auth.testing.services import require_postgres

from ._workers import KEYS, make_async, make_sync, write_then_delete
from .conftest import PrivateRedis

DELIVERY_BOUND = 1.0
KEY = StoreKey(server="https://watcher.test", user="channel-user")

Arrival = tuple[float, StoreKey | None]


@pytest.fixture
def postgres_table(postgres_url: str) -> Iterator[str]:
    table = f"tokens_{uuid.uuid4().hex[:12]}"
    store = SQLAlchemyStore(postgres_url, table_name=table, encryption_keys=KEYS)
    store.create_table()  # before any worker, so no two processes create it at once
    yield table
    store.table.drop(store.engine, checkfirst=True)
    store.close()


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """(kind, URL, prefix or table) of a shared backend with a change channel."""
    if request.param == "redis":
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        return ("redis", url, prefix)
    return (
        "postgres",
        request.getfixturevalue("postgres_url"),
        request.getfixturevalue("postgres_table"),
    )


def _start_writer(backend: tuple[str, str, str], use_async: bool) -> tuple[Any, Any, Any]:
    ctx = multiprocessing.get_context("spawn")
    go, written = ctx.Event(), ctx.Queue()
    writer = ctx.Process(
        target=write_then_delete, args=(*backend, str(KEY), go, written, use_async), daemon=True
    )
    writer.start()
    return writer, go, written


@pytest.mark.multiprocess
def test_a_change_in_another_process_reaches_a_sync_watcher_within_a_second(
    backend: tuple[str, str, str],
) -> None:
    store = make_sync(*backend)
    arrivals: queue.Queue[Arrival] = queue.Queue()
    watch = store.watch(lambda key: arrivals.put((time.monotonic(), key)))
    assert watch is not None and watch.healthy
    writer, go, written = _start_writer(backend, use_async=False)
    delays = []
    try:
        for expected in ("save", "delete"):
            go.set()
            action, started = written.get(timeout=60)
            arrived, key = arrivals.get(timeout=5)
            assert (action, key) == (expected, KEY)
            delays.append(arrived - started)
    finally:
        writer.join(30)
        watch.close()
        store.close()
    assert writer.exitcode == 0
    assert max(delays) < DELIVERY_BOUND, delays
    assert arrivals.empty()


@pytest.mark.multiprocess
def test_a_change_in_another_process_reaches_an_async_watcher_within_a_second(
    backend: tuple[str, str, str],
) -> None:
    async def scenario() -> list[float]:
        store = make_async(*backend)
        arrivals: asyncio.Queue[Arrival] = asyncio.Queue()
        watch = await store.watch(lambda key: arrivals.put_nowait((time.monotonic(), key)))
        assert watch is not None and watch.healthy
        writer, go, written = _start_writer(backend, use_async=True)
        delays = []
        try:
            for expected in ("save", "delete"):
                go.set()
                action, started = await asyncio.to_thread(written.get, True, 60)
                arrived, key = await asyncio.wait_for(arrivals.get(), 5)
                assert (action, key) == (expected, KEY)
                delays.append(arrived - started)
        finally:
            await asyncio.to_thread(writer.join, 30)
            watch.close()
            await store.aclose()
        assert writer.exitcode == 0
        assert arrivals.empty()
        return delays

    delays = asyncio.run(scenario())
    assert max(delays) < DELIVERY_BOUND, delays


def test_stores_without_a_channel_say_so_and_keep_their_staleness_bound(tmp_path: Any) -> None:
    sqlite = SQLAlchemyStore(
        f"sqlite:///{tmp_path / 't.sqlite3'}", encryption_keys=KEYS, staleness_bound=2.5
    )
    assert sqlite.watch(lambda key: None) is None
    assert sqlite.staleness_bound == 2.5
    sqlite.close()
    async_sqlite = AsyncSQLAlchemyStore("sqlite://", encryption_keys=KEYS)
    assert asyncio.run(async_sqlite.watch(lambda key: None)) is None
    assert async_sqlite.staleness_bound == 1.0


# --- a lost channel ------------------------------------------------------------------------


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _await_none(arrivals: queue.Queue[Arrival], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            _, key = arrivals.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            return False
        if key is None:
            return True
    return False


def test_a_redis_restart_makes_the_watch_unhealthy_then_reports_that_anything_changed(
    private_redis: PrivateRedis,
) -> None:
    store = RedisStore(url=private_redis.url, prefix="restart:", encryption_keys=KEYS)
    arrivals: queue.Queue[Arrival] = queue.Queue()
    watch = store.watch(lambda key: arrivals.put((time.monotonic(), key)))
    assert watch.healthy

    private_redis.stop()
    assert _wait_for(lambda: not watch.healthy, 3)
    assert arrivals.empty()

    private_redis.start()
    assert _await_none(arrivals, 5)
    assert watch.healthy
    other = RedisStore(url=private_redis.url, prefix="restart:", encryption_keys=KEYS)
    other.save(KEY, sample_pair())
    assert arrivals.get(timeout=DELIVERY_BOUND)[1] == KEY
    watch.close()
    assert not watch.healthy
    other.close()
    store.close()


def test_a_redis_restart_makes_the_async_watch_unhealthy_then_reports_that_anything_changed(
    private_redis: PrivateRedis,
) -> None:
    async def scenario() -> None:
        store = AsyncRedisStore(url=private_redis.url, prefix="restart:", encryption_keys=KEYS)
        arrivals: asyncio.Queue[StoreKey | None] = asyncio.Queue()
        watch = await store.watch(arrivals.put_nowait)
        assert watch.healthy

        await asyncio.to_thread(private_redis.stop)
        for _ in range(150):
            if not watch.healthy:
                break
            await asyncio.sleep(0.02)
        assert not watch.healthy
        assert arrivals.empty()

        await asyncio.to_thread(private_redis.start)
        assert await asyncio.wait_for(arrivals.get(), 5) is None
        assert watch.healthy
        other = AsyncRedisStore(url=private_redis.url, prefix="restart:", encryption_keys=KEYS)
        await other.save(KEY, sample_pair())
        assert await asyncio.wait_for(arrivals.get(), DELIVERY_BOUND) == KEY
        watch.close()
        await other.aclose()
        await store.aclose()

    asyncio.run(scenario())


def _terminate_listener(application_name: str) -> int:
    with psycopg.connect(require_postgres(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND query LIKE 'LISTEN%%'",
            (application_name,),
        ).fetchall()
    return len(rows)


@pytest.mark.postgres
def test_a_terminated_listen_connection_reconnects_and_reports_that_anything_changed(
    postgres_url: str, postgres_table: str
) -> None:
    name = f"watcher-stores-{uuid.uuid4().hex[:10]}"
    store = SQLAlchemyStore(
        postgres_url,
        table_name=postgres_table,
        encryption_keys=KEYS,
        engine_options={"connect_args": {"application_name": name}},
    )
    arrivals: queue.Queue[Arrival] = queue.Queue()
    watch = store.watch(lambda key: arrivals.put((time.monotonic(), key)))
    assert watch is not None and watch.healthy

    assert _terminate_listener(name) == 1
    assert _await_none(arrivals, 5)
    assert watch.healthy
    store.save(KEY, sample_pair())
    assert arrivals.get(timeout=DELIVERY_BOUND)[1] == KEY
    store.close()
    assert not watch.healthy


@pytest.mark.postgres
def test_a_terminated_async_listen_connection_reconnects_and_reports_that_anything_changed(
    postgres_url: str, postgres_table: str
) -> None:
    name = f"watcher-stores-{uuid.uuid4().hex[:10]}"

    async def scenario() -> None:
        store = AsyncSQLAlchemyStore(
            postgres_url,
            table_name=postgres_table,
            encryption_keys=KEYS,
            engine_options={"connect_args": {"application_name": name}},
        )
        arrivals: asyncio.Queue[StoreKey | None] = asyncio.Queue()
        watch: StoreWatch | None = await store.watch(arrivals.put_nowait)
        assert watch is not None and watch.healthy

        assert await asyncio.to_thread(_terminate_listener, name) == 1
        assert await asyncio.wait_for(arrivals.get(), 5) is None
        assert watch.healthy
        await store.save(KEY, sample_pair())
        assert await asyncio.wait_for(arrivals.get(), DELIVERY_BOUND) == KEY
        await store.aclose()
        assert not watch.healthy

    asyncio.run(scenario())


# --- what a change message says --------------------------------------------------------------


def _assert_only_the_key(payload: bytes | str) -> None:
    text = payload.decode() if isinstance(payload, bytes) else payload
    pair = sample_pair()
    assert text == str(KEY) == "v3|https://watcher.test|channel-user"
    assert pair.access_token not in text and str(pair.refresh_token) not in text


@pytest.mark.redis
def test_a_redis_change_message_carries_the_key_and_never_a_token(
    redis_url: str, redis_prefix: str
) -> None:
    store = RedisStore(url=redis_url, prefix=redis_prefix, encryption_keys=KEYS)
    listener = store.client.pubsub()
    listener.subscribe(store.channel)
    assert listener.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    store.save(KEY, sample_pair())
    message = listener.get_message(timeout=2)
    assert message is not None and message["channel"] == f"{redis_prefix}changes".encode()
    _assert_only_the_key(message["data"])
    listener.close()
    store.close()


@pytest.mark.postgres
def test_a_postgres_change_message_carries_the_key_and_never_a_token(
    postgres_url: str, postgres_table: str
) -> None:
    store = SQLAlchemyStore(postgres_url, table_name=postgres_table, encryption_keys=KEYS)
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f'LISTEN "watcher_auth:{postgres_table}"')
        store.save(KEY, sample_pair())
        notices = list(listener.notifies(timeout=2, stop_after=1))
    assert len(notices) == 1
    _assert_only_the_key(notices[0].payload)
    store.close()


@pytest.mark.redis
def test_a_watch_nobody_holds_any_more_stops_listening(redis_url: str, redis_prefix: str) -> None:
    store = RedisStore(url=redis_url, prefix=redis_prefix, encryption_keys=KEYS)

    def subscribers() -> int:
        return int(dict(store.client.pubsub_numsub(store.channel))[store.channel])

    watch: StoreWatch | None = store.watch(lambda key: None)
    assert watch is not None and watch.healthy and subscribers() == 1
    del watch
    gc.collect()
    assert _wait_for(lambda: subscribers() == 0, 3)
    store.close()
