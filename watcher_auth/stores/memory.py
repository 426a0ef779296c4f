"""A bounded, thread-safe, process-local store on cachetools."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from cachetools import LRUCache

from watcher_auth._exceptions import StoreLockTimeout
from watcher_auth._locks import KeyedLocks
from watcher_auth._tokens import StoreKey, TokenPair
from watcher_auth.stores.base import TokenStore

__all__ = ["MemoryStore"]


class MemoryStore(TokenStore):
    """Keeps records in this process's memory, least recently used dropped past ``maxsize``.

    Right for scripts, tests and single-process servers. Records vanish with the process and
    are not shared between worker processes: use a database or cache store there.
    """

    shared = False

    def __init__(self, maxsize: int = 100_000) -> None:
        self._data: LRUCache[StoreKey, TokenPair] = LRUCache(maxsize=maxsize)
        self._mutex = threading.Lock()
        self._locks = KeyedLocks()

    def load(self, key: StoreKey) -> TokenPair | None:
        with self._mutex:
            return self._data.get(key)

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
