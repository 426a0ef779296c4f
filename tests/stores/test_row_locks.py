"""PostgreSQL row locks (SQLAlchemyStore and its async twin): a waiter gives up at its timeout
(``lock_timeout``), and a holder that dies frees the lock with its connection."""

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

from watcher_auth import StoreKey, StoreLockTimeout
from watcher_auth.stores.sqlalchemy import AsyncSQLAlchemyStore, SQLAlchemyStore

from ._workers import KEYS, hold_lock

pytestmark = pytest.mark.postgres

KEY = StoreKey(server="https://watcher.test", user="row-lock-user")

Make = Callable[[], Any]


@pytest.fixture
def postgres_table(postgres_url: str) -> Iterator[str]:
    table = f"tokens_{uuid.uuid4().hex[:12]}"
    store = SQLAlchemyStore(postgres_url, table_name=table, encryption_keys=KEYS)
    store.create_table()
    yield table
    store.table.drop(store.engine, checkfirst=True)
    store.close()


@pytest.fixture(params=["sync", "async"])
def make_store(request: pytest.FixtureRequest, postgres_url: str, postgres_table: str) -> Make:
    if request.param == "sync":
        return lambda: SQLAlchemyStore(
            postgres_url, table_name=postgres_table, encryption_keys=KEYS
        )
    return lambda: AsyncSQLAlchemyStore(
        postgres_url, table_name=postgres_table, encryption_keys=KEYS
    )


def try_lock(make: Make, timeout: float, moments: list[float] | None = None) -> float:
    """Take and release ``KEY``'s lock with a new store; returns when it was taken.

    The store connects first; ``moments`` gets when the wait began and, if it timed out,
    when it gave up.
    """
    store = make()
    if isinstance(store, AsyncSQLAlchemyStore):

        async def take() -> float:
            try:
                await store.load(KEY)
                if moments is not None:
                    moments.append(time.monotonic())
                async with store.lock(KEY, timeout=timeout):
                    return time.monotonic()
            except StoreLockTimeout:
                if moments is not None:
                    moments.append(time.monotonic())
                raise
            finally:
                await store.aclose()

        return asyncio.run(take())
    try:
        store.load(KEY)
        if moments is not None:
            moments.append(time.monotonic())
        with store.lock(KEY, timeout=timeout):
            return time.monotonic()
    except StoreLockTimeout:
        if moments is not None:
            moments.append(time.monotonic())
        raise
    finally:
        store.close()


def _start_holder(make: Make) -> Any:
    ctx = multiprocessing.get_context("fork")
    ready, result = ctx.Event(), ctx.Queue()
    holder = ctx.Process(target=hold_lock, args=(make, str(KEY), 60, ready, result), daemon=True)
    holder.start()
    assert ready.wait(20), "the holder did not take the lock"
    return holder


@pytest.mark.multiprocess
def test_a_row_lock_waiter_gives_up_at_its_timeout_and_a_killed_holder_frees_the_lock(
    make_store: Make,
) -> None:
    holder = _start_holder(make_store)
    try:
        moments: list[float] = []
        with pytest.raises(StoreLockTimeout):
            try_lock(make_store, timeout=1.5, moments=moments)
        started, gave_up = moments
        assert abs(gave_up - started - 1.5) <= 0.3
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        holder.join(10)
    # PostgreSQL ends the transaction when the dead holder's socket closes.
    assert try_lock(make_store, timeout=10) - killed_at < 2
