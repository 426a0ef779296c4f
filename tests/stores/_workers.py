"""What the worker processes of the store tests run (module-level, so ``spawn`` can import it)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from watcher_auth import StoreKey, TokenStore
from watcher_auth.stores import AsyncTokenStore
from watcher_auth.testing.contract import sample_pair

KEYS = ["stores suite key", "an older stores suite key"]


def make_sync(kind: str, location: str, name: str) -> TokenStore:
    """A sync store of ``kind`` at ``location`` (URL) under ``name`` (prefix or table)."""
    if kind == "redis":
        from watcher_auth.stores.redis import RedisStore

        return RedisStore(url=location, prefix=name, encryption_keys=KEYS)
    if kind == "postgres":
        from watcher_auth.stores.sqlalchemy import SQLAlchemyStore

        return SQLAlchemyStore(location, table_name=name, encryption_keys=KEYS)
    raise ValueError(kind)


def make_async(kind: str, location: str, name: str) -> AsyncTokenStore:
    """The async twin of :func:`make_sync`."""
    if kind == "redis":
        from watcher_auth.stores.redis import AsyncRedisStore

        return AsyncRedisStore(url=location, prefix=name, encryption_keys=KEYS)
    if kind == "postgres":
        from watcher_auth.stores.sqlalchemy import AsyncSQLAlchemyStore

        return AsyncSQLAlchemyStore(location, table_name=name, encryption_keys=KEYS)
    raise ValueError(kind)


def write_then_delete(
    kind: str, location: str, name: str, key_text: str, go: Any, written: Any, use_async: bool
) -> None:
    """Save and then delete ``key``, each when ``go`` is set, reporting the time before each."""
    key = StoreKey.parse(key_text)
    if use_async:

        async def run() -> None:
            store = make_async(kind, location, name)
            await store.load(key)  # connected before the clock starts
            for action in ("save", "delete"):
                go.wait(30)
                go.clear()
                written.put((action, time.monotonic()))
                if action == "save":
                    await store.save(key, sample_pair())
                else:
                    await store.delete(key)
            await store.aclose()

        asyncio.run(run())
        return
    store = make_sync(kind, location, name)
    store.load(key)
    for action in ("save", "delete"):
        go.wait(30)
        go.clear()
        written.put((action, time.monotonic()))
        if action == "save":
            store.save(key, sample_pair())
        else:
            store.delete(key)
    store.close()


def hold_lock(make: Any, key_text: str, seconds: float, ready: Any, result: Any) -> None:
    """Take ``key``'s lock, say so, hold it ``seconds`` (or until killed), then release it."""
    key = StoreKey.parse(key_text)
    store = make()
    if isinstance(store, AsyncTokenStore):

        async def run() -> None:
            async with store.lock(key, timeout=5):
                ready.set()
                await asyncio.sleep(seconds)
                result.put(("released", time.monotonic()))

        asyncio.run(run())
        return
    with store.lock(key, timeout=5):
        ready.set()
        time.sleep(seconds)
        result.put(("released", time.monotonic()))


def read_many(store: Any, keys: list[str], rounds: int, result: Any) -> None:
    """In a forked child: read every key ``rounds`` times and count answers for another key."""
    crossed = errors = 0
    for _ in range(rounds):
        for text in keys:
            try:
                pair = store.load(StoreKey.parse(text))
            except Exception:
                errors += 1
                continue
            if pair is None or pair.username != text.rsplit("|", 1)[1]:
                crossed += 1
    result.put((os.getpid(), crossed, errors))


def read_many_async(store: Any, keys: list[str], rounds: int, result: Any) -> None:
    """:func:`read_many` for an async store, on the child's own event loop."""

    async def run() -> tuple[int, int]:
        crossed = errors = 0
        for _ in range(rounds):
            for text in keys:
                try:
                    pair = await store.load(StoreKey.parse(text))
                except Exception:
                    errors += 1
                    continue
                if pair is None or pair.username != text.rsplit("|", 1)[1]:
                    crossed += 1
        return crossed, errors

    crossed, errors = asyncio.run(run())
    result.put((os.getpid(), crossed, errors))


def watch_in_child(store: Any, inherited: Any, ready: Any, result: Any) -> None:
    """In a forked child: report the inherited watch's health, then a change seen by a new one."""
    import queue

    seen: queue.Queue[object] = queue.Queue()
    own = store.watch(seen.put)
    result.put(("inherited healthy", inherited.healthy))
    result.put(("own healthy", own.healthy))
    ready.set()
    result.put(("seen", str(seen.get(timeout=10))))
    own.close()
