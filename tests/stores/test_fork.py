"""Stores used before ``os.fork()`` keep working in the forked children: each child gets its
own connections (never an answer meant for another process) and its own change watch."""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from watcher_auth import StoreKey
from watcher_auth.stores.redis import RedisStore
from watcher_auth.stores.sqlalchemy import SQLAlchemyStore
from watcher_auth.testing.contract import sample_pair

from ._workers import KEYS, make_async, make_sync, read_many, read_many_async, watch_in_child

CHILDREN = 3
ROUNDS = 40
USERS = [f"user-{n}" for n in range(20)]


@pytest.fixture
def postgres_table(postgres_url: str) -> Iterator[str]:
    table = f"tokens_{uuid.uuid4().hex[:12]}"
    store = SQLAlchemyStore(postgres_url, table_name=table, encryption_keys=KEYS)
    store.create_table()
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
    if request.param == "redis":
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        return ("redis", url, prefix)
    return (
        "postgres",
        request.getfixturevalue("postgres_url"),
        request.getfixturevalue("postgres_table"),
    )


def _keys(server: str = "https://watcher.test") -> list[StoreKey]:
    return [StoreKey(server=server, user=user) for user in USERS]


def _collect(result: Any, processes: list[Any]) -> list[tuple[int, int, int]]:
    answers = [result.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    return answers


@pytest.mark.multiprocess
def test_a_store_used_before_fork_gives_every_child_its_own_answers(
    backend: tuple[str, str, str],
) -> None:
    store = make_sync(*backend)
    keys = _keys()
    for key in keys:
        store.save(key, sample_pair(username=key.user))
    assert store.load(keys[0]) is not None  # a pooled connection is open when we fork

    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    texts = [str(key) for key in keys]
    children = [
        ctx.Process(target=read_many, args=(store, texts, ROUNDS, result), daemon=True)
        for _ in range(CHILDREN)
    ]
    for child in children:
        child.start()
    # The parent keeps using its connections while the children use theirs.
    read_many(store, texts, ROUNDS, result)
    answers = [*_collect(result, children), result.get(timeout=5)]
    store.close()
    assert [(crossed, errors) for _, crossed, errors in answers] == [(0, 0)] * (CHILDREN + 1)


@pytest.mark.multiprocess
def test_an_async_store_used_before_fork_serves_each_childs_event_loop(
    backend: tuple[str, str, str],
) -> None:
    store = make_async(*backend)
    keys = _keys("https://async.watcher.test")

    async def prepare() -> None:
        for key in keys:
            await store.save(key, sample_pair(username=key.user))

    # The parent's loop (and the connections it opened) is gone when the children start,
    # as in a server that prepares its app, then forks workers that each run a loop.
    asyncio.run(prepare())
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    texts = [str(key) for key in keys]
    children = [
        ctx.Process(target=read_many_async, args=(store, texts, ROUNDS, result), daemon=True)
        for _ in range(CHILDREN)
    ]
    for child in children:
        child.start()
    answers = _collect(result, children)
    assert [(crossed, errors) for _, crossed, errors in answers] == [(0, 0)] * CHILDREN


@pytest.mark.redis
@pytest.mark.multiprocess
def test_a_forked_child_drops_the_inherited_watch_and_starts_its_own(
    redis_url: str, redis_prefix: str
) -> None:
    store = RedisStore(url=redis_url, prefix=redis_prefix, encryption_keys=KEYS)
    seen: queue.Queue[StoreKey | None] = queue.Queue()
    watch = store.watch(seen.put)
    assert watch.healthy

    ctx = multiprocessing.get_context("fork")
    ready, result = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=watch_in_child, args=(store, watch, ready, result), daemon=True)
    child.start()
    assert ready.wait(20)
    key = StoreKey(server="https://watcher.test", user="after-fork")
    store.save(key, sample_pair())
    reports = dict(result.get(timeout=20) for _ in range(3))
    child.join(20)
    assert child.exitcode == 0
    assert reports == {"inherited healthy": False, "own healthy": True, "seen": str(key)}
    assert watch.healthy and seen.get(timeout=1) == key
    store.close()
