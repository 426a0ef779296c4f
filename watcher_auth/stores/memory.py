"""Bounded, process-local stores: thread-safe and asyncio flavours."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from watcher_auth._exceptions import ConfigurationError, StoreLockTimeout
from watcher_auth._locks import KeyedLocks
from watcher_auth._lru import LRU
from watcher_auth._tokens import StoreKey, TokenPair
from watcher_auth.stores.base import AsyncTokenStore, TokenStore

__all__ = ["AsyncMemoryStore", "MemoryStore", "local_reader"]


def _records(maxsize: int) -> LRU[StoreKey, TokenPair]:
    if not isinstance(maxsize, int) or maxsize < 1:
        raise ConfigurationError("a memory store's maxsize must be a positive number of records")
    return LRU(maxsize)


class MemoryStore(TokenStore):
    """Keeps records in this process's memory, least recently used dropped past ``maxsize``.

    Right for scripts, tests and single-process servers. Records vanish with the process and
    are not shared between worker processes: use a database or cache store there.
    """

    shared = False

    def __init__(self, maxsize: int = 100_000) -> None:
        self._data: LRU[StoreKey, TokenPair] = _records(maxsize)
        self._mutex = threading.Lock()
        self._locks = KeyedLocks()

    def load(self, key: StoreKey) -> TokenPair | None:
        with self._mutex:
            return self._data.lookup(key)

    def save(self, key: StoreKey, pair: TokenPair) -> None:
        with self._mutex:
            self._data[key] = pair

    def delete(self, key: StoreKey) -> None:
        with self._mutex:
            self._data.pop(key, None)

    @contextmanager
    def lock(self, key: StoreKey, *, timeout: float) -> Iterator[None]:
        with self._locks.hold(key, timeout) as acquired:
            if not acquired:
                raise StoreLockTimeout(f"lock for user key {key.user!r} not acquired in {timeout}s")
            yield

    def iter_keys(self, *, server: str | None = None, api: str | None = None) -> Iterator[StoreKey]:
        with self._mutex:
            keys = list(self._data.keys())
        return (
            k
            for k in keys
            if (server is None or k.server == server) and (api is None or k.api == api)
        )

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryStore(records={len(self._data)}, maxsize={self._data.maxsize})"


class AsyncMemoryStore(AsyncTokenStore):
    """The async twin of :class:`MemoryStore`: records in this process, per-key asyncio locks.

    Use it from one event loop (its locks belong to the loop that first waits on them);
    records are not shared with other processes.
    """

    shared = False

    def __init__(self, maxsize: int = 100_000) -> None:
        self._data: LRU[StoreKey, TokenPair] = _records(maxsize)
        # key -> (lock, number of holders and waiters); dropped when nobody uses it.
        self._locks: dict[StoreKey, tuple[asyncio.Lock, int]] = {}

    async def load(self, key: StoreKey) -> TokenPair | None:
        return self._data.lookup(key)

    def peek(self, key: StoreKey) -> TokenPair | None:
        """:meth:`load` without awaiting: the record is in this process's memory."""
        return self._data.lookup(key)

    async def save(self, key: StoreKey, pair: TokenPair) -> None:
        self._data[key] = pair

    async def delete(self, key: StoreKey) -> None:
        self._data.pop(key, None)

    @asynccontextmanager
    async def lock(self, key: StoreKey, *, timeout: float) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            if lock.locked():
                try:
                    await asyncio.wait_for(lock.acquire(), max(0.0, timeout))
                except asyncio.TimeoutError:
                    raise StoreLockTimeout(
                        f"lock for user key {key.user!r} not acquired in {timeout}s"
                    ) from None
            else:
                await lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def iter_keys(
        self, *, server: str | None = None, api: str | None = None
    ) -> AsyncIterator[StoreKey]:
        for k in list(self._data.keys()):
            if (server is None or k.server == server) and (api is None or k.api == api):
                yield k

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"AsyncMemoryStore(records={len(self._data)}, maxsize={self._data.maxsize})"


def local_reader(store: object) -> Callable[[StoreKey], TokenPair | None] | None:
    """How to read ``store`` with no I/O and no await, when it is a memory store kept by this
    process alone (its records are this process's own truth); ``None`` for any other store,
    including a memory store subclass that says it is shared or changes how it loads."""
    # The records themselves (reads need no lock); a subclass that changes loading is read
    # through the flow, which accounts for its failures.
    if isinstance(store, MemoryStore) and not store.shared:
        return store._data.lookup if type(store).load is MemoryStore.load else None
    if isinstance(store, AsyncMemoryStore) and not store.shared:
        loads = (type(store).load, type(store).peek)
        return (
            store._data.lookup if loads == (AsyncMemoryStore.load, AsyncMemoryStore.peek) else None
        )
    return None
