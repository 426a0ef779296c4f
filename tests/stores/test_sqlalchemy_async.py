"""AsyncSQLAlchemyStore on SQLite (aiosqlite) and on a real PostgreSQL server (psycopg 3)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from watcher_auth import StoreKey, StoreLockTimeout
from watcher_auth.stores.sqlalchemy import AsyncSQLAlchemyStore, SQLAlchemyStore
from watcher_auth.testing.contract import AsyncTokenStoreContract, RunCoroutine, sample_pair

from .conftest import KEYS

MakeStore = Callable[..., AsyncSQLAlchemyStore]


@pytest.fixture
def table_name() -> str:
    return f"tokens_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def arun() -> Iterator[RunCoroutine[object]]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


def _factory(url: str, table_name: str, arun: RunCoroutine[object]) -> Iterator[MakeStore]:
    stores: list[AsyncSQLAlchemyStore] = []

    def make(**options: object) -> AsyncSQLAlchemyStore:
        options.setdefault("encryption_keys", KEYS)
        store = AsyncSQLAlchemyStore(url, table_name=table_name, **options)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    if stores:

        async def drop() -> None:
            async with stores[0].engine.begin() as conn:
                await conn.run_sync(stores[0].table.drop, checkfirst=True)

        arun(drop())
    for store in stores:
        arun(store.aclose())


@pytest.fixture
def make_sqlite_store(
    tmp_path: Path, table_name: str, arun: RunCoroutine[object]
) -> Iterator[MakeStore]:
    yield from _factory(f"sqlite:///{tmp_path / 'tokens.sqlite3'}", table_name, arun)


@pytest.fixture
def make_postgres_store(
    postgres_url: str, table_name: str, arun: RunCoroutine[object]
) -> Iterator[MakeStore]:
    yield from _factory(postgres_url, table_name, arun)


class TestAsyncSQLiteStoreContract(AsyncTokenStoreContract):
    @pytest.fixture
    def store(self, make_sqlite_store: MakeStore) -> AsyncSQLAlchemyStore:
        return make_sqlite_store()

    @pytest.fixture
    def other_store(self, make_sqlite_store: MakeStore) -> AsyncSQLAlchemyStore:
        return make_sqlite_store()


@pytest.mark.postgres
class TestAsyncPostgresStoreContract(AsyncTokenStoreContract):
    @pytest.fixture
    def store(self, make_postgres_store: MakeStore) -> AsyncSQLAlchemyStore:
        return make_postgres_store()

    @pytest.fixture
    def other_store(self, make_postgres_store: MakeStore) -> AsyncSQLAlchemyStore:
        return make_postgres_store()


@pytest.mark.postgres
def test_sync_and_async_stores_share_the_table_and_the_row_lock(
    make_postgres_store: MakeStore, postgres_url: str, table_name: str, arun: RunCoroutine[object]
) -> None:
    key = StoreKey(server="https://watcher.test", user="7")
    async_store = make_postgres_store()
    sync = SQLAlchemyStore(postgres_url, table_name=table_name, encryption_keys=KEYS)
    sync.save(key, sample_pair(1))
    assert arun(async_store.load(key)) == sample_pair(1)

    def sync_lock_times_out() -> None:
        with pytest.raises(StoreLockTimeout), sync.lock(key, timeout=0.2):
            pass

    async def held_by_async() -> None:
        async with async_store.lock(key, timeout=1):
            await async_store.save(key, sample_pair(2))
            await asyncio.to_thread(sync_lock_times_out)

    arun(held_by_async())
    with sync.lock(key, timeout=1):
        assert sync.load(key) == sample_pair(2)
    sync.close()


def test_an_in_memory_sqlite_url_is_one_database_that_lists_its_keys(
    arun: RunCoroutine[object],
) -> None:
    store = AsyncSQLAlchemyStore("sqlite://", encryption_keys=KEYS)
    a = StoreKey(server="https://a.test", user="1")
    b = StoreKey(server="https://b.test", user="1", api="v2")

    async def scenario() -> list[StoreKey]:
        await store.save(a, sample_pair(1))
        await store.save(b, sample_pair(2))
        async with store.lock(StoreKey(server="https://a.test", user="no record"), timeout=1):
            pass
        return [key async for key in store.iter_keys(server="https://a.test")]

    assert arun(scenario()) == [a]
    assert arun(store.load(b)) == sample_pair(2)
    arun(store.aclose())
