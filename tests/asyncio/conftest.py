"""Fixtures for the async tests: the shared Redis and PostgreSQL servers under names of this
folder's own, and async stores on them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from watcher_auth.testing.services import create_postgres_database, require_redis

REDIS_DB = 10
KEYS = ["asyncio suite key"]
POSTGRES_DATABASE = "watcher_auth_asyncio_test"

MakeStore = Callable[[], Any]


@pytest.fixture
def redis_url() -> str:
    return require_redis(REDIS_DB)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the test's own; its keys are removed afterwards."""
    import redis

    prefix = f"watcher_auth_asyncio:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for name in client.scan_iter(match=prefix + "*"):
        client.delete(name)
    client.close()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return create_postgres_database(POSTGRES_DATABASE).replace(
        "postgresql://", "postgresql+psycopg://", 1
    )


@pytest.fixture
def table_name() -> Iterator[str]:
    name = f"tokens_{uuid.uuid4().hex[:12]}"
    yield name


@pytest.fixture
def async_redis_store(redis_url: str, redis_prefix: str) -> MakeStore:
    """``make()``: a new AsyncRedisStore on the test's prefix (one per event loop)."""
    from watcher_auth.stores.redis import AsyncRedisStore

    return lambda: AsyncRedisStore(url=redis_url, prefix=redis_prefix, encryption_keys=KEYS)


def _sqlalchemy_store(url: str, table_name: str) -> Iterator[MakeStore]:
    from watcher_auth.stores.sqlalchemy import AsyncSQLAlchemyStore

    def make() -> AsyncSQLAlchemyStore:
        # Small pools: storms start one store per process, and the PostgreSQL server is
        # shared (100 connections in all); tasks queue for a connection instead.
        return AsyncSQLAlchemyStore(
            url,
            table_name=table_name,
            encryption_keys=KEYS,
            engine_options={"pool_size": 4, "max_overflow": 2},
        )

    async def create() -> None:
        store = make()
        await store.create_table()
        await store.aclose()

    # Created once up front, so worker processes do not race to create it.
    asyncio.run(create())
    yield make

    async def drop() -> None:
        store = make()
        async with store.engine.begin() as conn:
            await conn.run_sync(store.table.drop, checkfirst=True)
        await store.aclose()

    asyncio.run(drop())


@pytest.fixture
def async_postgres_store(postgres_url: str, table_name: str) -> Iterator[MakeStore]:
    """``make()``: a new AsyncSQLAlchemyStore on PostgreSQL, on the test's own table."""
    yield from _sqlalchemy_store(postgres_url, table_name)


@pytest.fixture
def async_sqlite_store(tmp_path: Path, table_name: str) -> Iterator[MakeStore]:
    """``make()``: a new AsyncSQLAlchemyStore on a SQLite file of the test's own."""
    yield from _sqlalchemy_store(f"sqlite:///{tmp_path / 'tokens.sqlite3'}", table_name)
