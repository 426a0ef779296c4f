"""The process-local async stores: AsyncMemoryStore, and the adapter running a sync store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from watcher_auth import ConfigurationError, MemoryStore, StoreKey
from watcher_auth.stores import (
    AsyncMemoryStore,
    AsyncStoreAdapter,
    async_store_names,
    resolve_async_store,
)
from watcher_auth.testing.contract import AsyncTokenStoreContract, RunCoroutine, sample_pair


class TestAsyncMemoryStoreContract(AsyncTokenStoreContract):
    @pytest.fixture
    def store(self) -> AsyncMemoryStore:
        return AsyncMemoryStore()


class TestAsyncStoreAdapterOverMemoryContract(AsyncTokenStoreContract):
    @pytest.fixture
    def store(self, arun: RunCoroutine[None]) -> Iterator[AsyncStoreAdapter]:
        adapter = AsyncStoreAdapter(MemoryStore())
        yield adapter
        arun(adapter.aclose())


def test_the_adapter_holds_a_lock_and_its_writes_on_one_thread() -> None:
    seen: list[str] = []

    class ThreadRecordingStore(MemoryStore):
        def save(self, key: StoreKey, pair: object) -> None:
            seen.append(f"save on {threading.get_ident()}")
            super().save(key, pair)  # type: ignore[arg-type]

        def lock(self, key: StoreKey, *, timeout: float):  # type: ignore[no-untyped-def]
            seen.append(f"lock on {threading.get_ident()}")
            return super().lock(key, timeout=timeout)

    adapter = AsyncStoreAdapter(ThreadRecordingStore())
    key = StoreKey(server="https://watcher.test", user="1")

    async def scenario() -> None:
        async with adapter.lock(key, timeout=1):
            await adapter.save(key, sample_pair())

    asyncio.run(scenario())
    lock_thread, save_thread = (entry.split(" on ")[1] for entry in seen)
    assert seen[0].startswith("lock") and lock_thread == save_thread
    assert lock_thread != str(threading.get_ident())


def test_the_adapter_passes_on_what_the_sync_store_says_of_itself() -> None:
    adapter = AsyncStoreAdapter(MemoryStore())
    assert adapter.shared is False
    assert adapter.staleness_bound == MemoryStore.staleness_bound
    assert asyncio.run(adapter.watch(lambda key: None)) is None


def test_async_stores_are_found_by_short_name_and_sync_ones_are_adapted() -> None:
    assert isinstance(resolve_async_store("memory", maxsize=5), AsyncMemoryStore)
    assert "redis" in async_store_names() and "sqlalchemy" in async_store_names()
    adapted = resolve_async_store("watcher_auth.stores.memory:MemoryStore")
    assert isinstance(adapted, AsyncStoreAdapter) and isinstance(adapted.store, MemoryStore)
    sync = MemoryStore()
    assert resolve_async_store(sync).store is sync  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="unknown token store 'nope'"):
        resolve_async_store("nope")
