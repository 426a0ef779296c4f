"""AsyncRedisStore against a real Redis server: the async contract, and one layout with the
sync store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from watcher_auth import StoreKey
from watcher_auth.stores import AsyncStoreAdapter
from watcher_auth.stores.redis import AsyncRedisStore, RedisStore
from watcher_auth.testing.contract import AsyncTokenStoreContract, RunCoroutine, sample_pair

from .conftest import KEYS

pytestmark = pytest.mark.redis

MakeAsync = Callable[..., AsyncRedisStore]


@pytest.fixture
def make_async_store(
    redis_url: str, redis_prefix: str, arun: RunCoroutine[None]
) -> Iterator[MakeAsync]:
    stores: list[AsyncRedisStore] = []

    def make(**options: object) -> AsyncRedisStore:
        options.setdefault("encryption_keys", KEYS)
        store = AsyncRedisStore(url=redis_url, prefix=redis_prefix, **options)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    for store in stores:
        arun(store.aclose())


@pytest.fixture
def arun() -> Iterator[RunCoroutine[object]]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


class TestAsyncRedisStoreContract(AsyncTokenStoreContract):
    @pytest.fixture
    def store(self, make_async_store: MakeAsync) -> AsyncRedisStore:
        return make_async_store()

    @pytest.fixture
    def other_store(self, make_async_store: MakeAsync) -> AsyncRedisStore:
        return make_async_store()


def test_sync_and_async_stores_read_each_others_records_and_locks(
    make_async_store: MakeAsync, redis_url: str, redis_prefix: str, arun: RunCoroutine[object]
) -> None:
    key = StoreKey(server="https://watcher.test", user="7")
    sync = RedisStore(url=redis_url, prefix=redis_prefix, encryption_keys=KEYS)
    async_store = make_async_store()
    sync.save(key, sample_pair(1))
    assert arun(async_store.load(key)) == sample_pair(1)
    arun(async_store.save(key, sample_pair(2)))
    assert sync.load(key) == sample_pair(2)

    async def held_by_async() -> None:
        async with async_store.lock(key, timeout=1):
            await asyncio.to_thread(sync_lock_times_out)

    def sync_lock_times_out() -> None:
        from watcher_auth import StoreLockTimeout

        with pytest.raises(StoreLockTimeout), sync.lock(key, timeout=0.2):
            pass

    arun(held_by_async())
    with sync.lock(key, timeout=1):
        pass
    sync.close()


class TestAsyncStoreAdapterOverRedisContract(AsyncTokenStoreContract):
    """The adapter relays the sync store's lock, lease watchdog and change channel."""

    @pytest.fixture
    def store(
        self, redis_url: str, redis_prefix: str, arun: RunCoroutine[None]
    ) -> Iterator[AsyncStoreAdapter]:
        adapter = AsyncStoreAdapter(
            RedisStore(url=redis_url, prefix=redis_prefix, encryption_keys=KEYS)
        )
        yield adapter
        arun(adapter.aclose())
