from __future__ import annotations

import asyncio

import pytest

from watcher_auth import ConfigurationError, MemoryStore, StoreKey, resolve_store
from watcher_auth.stores import AsyncMemoryStore
from watcher_auth.testing.contract import TokenStoreContract, sample_pair


class TestMemoryStoreContract(TokenStoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()


def test_the_memory_store_drops_the_least_recently_used_pair_past_its_size() -> None:
    store = MemoryStore(maxsize=2)
    keys = [StoreKey(server="https://w.test", user=str(n)) for n in range(3)]
    store.save(keys[0], sample_pair(0))
    store.save(keys[1], sample_pair(1))
    store.load(keys[0])
    store.save(keys[2], sample_pair(2))
    assert store.load(keys[1]) is None
    assert store.load(keys[0]) is not None and store.load(keys[2]) is not None


def test_the_memory_store_lists_its_keys_by_server() -> None:
    store = MemoryStore()
    a = StoreKey(server="https://a.test", user="1")
    b = StoreKey(server="https://b.test", user="1")
    store.save(a, sample_pair(1))
    store.save(b, sample_pair(2))
    assert list(store.iter_keys(server="https://a.test")) == [a]


def test_the_memory_store_is_found_by_its_short_name() -> None:
    assert isinstance(resolve_store("memory", maxsize=5), MemoryStore)
    assert isinstance(resolve_store("watcher_auth.stores.memory:MemoryStore"), MemoryStore)


def test_saving_a_pair_again_counts_as_a_use() -> None:
    store = MemoryStore(maxsize=2)
    keys = [StoreKey(server="https://w.test", user=str(n)) for n in range(3)]
    store.save(keys[0], sample_pair(0))
    store.save(keys[1], sample_pair(1))
    store.save(keys[0], sample_pair(3))
    store.save(keys[2], sample_pair(2))
    assert store.load(keys[1]) is None
    assert store.load(keys[0]) == sample_pair(3)


@pytest.mark.parametrize("maxsize", [0, -1])
def test_a_memory_store_needs_room_for_one_record(maxsize: int) -> None:
    with pytest.raises(ConfigurationError, match="maxsize"):
        MemoryStore(maxsize=maxsize)
    with pytest.raises(ConfigurationError, match="maxsize"):
        AsyncMemoryStore(maxsize=maxsize)


def test_the_async_memory_store_drops_the_least_recently_used_pair_past_its_size() -> None:
    async def scenario() -> list[bool]:
        store = AsyncMemoryStore(maxsize=2)
        keys = [StoreKey(server="https://w.test", user=str(n)) for n in range(3)]
        await store.save(keys[0], sample_pair(0))
        await store.save(keys[1], sample_pair(1))
        await store.load(keys[0])
        await store.save(keys[2], sample_pair(2))
        return [await store.load(key) is not None for key in keys]

    assert asyncio.run(scenario()) == [True, False, True]
