"""The storage contracts every token store implements: sync, async, or both."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Protocol

from watcher_auth._tokens import StoreKey, TokenPair

__all__ = ["AsyncTokenStore", "ChangeListener", "StoreWatch", "TokenStore"]

#: Called with the key whose record another process (or this one) changed, or with ``None``
#: when anything may have changed (the channel was lost and is back, or its messages were
#: dropped): the listener then forgets every copy it holds.
ChangeListener = Callable[[StoreKey | None], None]


class StoreWatch(Protocol):
    """A running subscription to a store's change channel (see :meth:`TokenStore.watch`)."""

    @property
    def healthy(self) -> bool:
        """Whether the channel is connected now; while it is not, copies are trusted only for
        the store's ``staleness_bound``."""

    def close(self) -> None:
        """Stop listening."""


class TokenStore(ABC):
    """Where a :class:`~watcher_auth.TokenManager` keeps credentials, one record per key.

    A backend implements four methods. The manager calls :meth:`lock` around every refresh
    and re-reads the record inside it, so a pair another process has just refreshed is used
    rather than refreshed again: with Watcher rotating refresh tokens, that is what keeps
    many workers from logging each other out. Run
    :class:`watcher_auth.testing.TokenStoreContract` against a new backend.

    Every method may raise :class:`~watcher_auth.StoreError` when the backend fails; none may
    delete or change a record except :meth:`save` and :meth:`delete`.
    """

    #: Whether other processes see this store's records. A shared store gets a small
    #: per-process cache in front of it; a process-local one (memory) does not need it.
    shared: bool = True

    #: Seconds a per-process copy of a record may be used without asking the store again
    #: when no change channel tells of changes (see :meth:`watch`): the longest time another
    #: process may act on a record this one has replaced or deleted.
    staleness_bound: float = 1.0

    @abstractmethod
    def load(self, key: StoreKey) -> TokenPair | None:
        """The record stored under ``key``, or ``None``."""

    @abstractmethod
    def save(self, key: StoreKey, pair: TokenPair) -> None:
        """Store ``pair`` under ``key``, replacing any record there."""

    @abstractmethod
    def delete(self, key: StoreKey) -> None:
        """Forget the record under ``key``; no error if there is none."""

    @abstractmethod
    def lock(self, key: StoreKey, *, timeout: float) -> AbstractContextManager[object]:
        """A context manager holding an exclusive lock on ``key`` across every user of the store.

        Waits at most ``timeout`` seconds, then raises
        :class:`~watcher_auth.StoreLockTimeout`. A lock whose holder died must become free
        again after a bounded time (a lease, a transaction ending with its connection...).
        """

    def watch(self, on_change: ChangeListener) -> StoreWatch | None:
        """Tell ``on_change`` of every record changed by any process, or ``None`` if this store
        has no change channel (copies are then trusted for :attr:`staleness_bound` only).

        ``on_change`` runs on the watch's own thread: keep it short. A change reaches it well
        under a second after the write commits; after the channel was lost it hears ``None``.
        :meth:`close` stops every watch of the store; a process forked from this one does not
        inherit them (it starts its own).
        """
        return None

    def iter_keys(self, *, server: str | None = None, api: str | None = None) -> Iterator[StoreKey]:
        """Every stored key, optionally only those of one server and API.

        Backends that cannot enumerate their keys yield nothing; status commands then show
        only what they can.
        """
        return iter(())

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections held by the store."""


class AsyncTokenStore(ABC):
    """The async twin of :class:`TokenStore`, for :class:`~watcher_auth.AsyncTokenManager`.

    The same promises, with every I/O method a coroutine that never blocks the event loop;
    :meth:`lock` is an async context manager. A backend may implement both contracts.
    """

    shared: bool = True
    staleness_bound: float = 1.0

    @abstractmethod
    async def load(self, key: StoreKey) -> TokenPair | None:
        """The record stored under ``key``, or ``None``."""

    @abstractmethod
    async def save(self, key: StoreKey, pair: TokenPair) -> None:
        """Store ``pair`` under ``key``, replacing any record there."""

    @abstractmethod
    async def delete(self, key: StoreKey) -> None:
        """Forget the record under ``key``; no error if there is none."""

    @abstractmethod
    def lock(self, key: StoreKey, *, timeout: float) -> AbstractAsyncContextManager[object]:
        """An async context manager holding ``key``'s lock (see :meth:`TokenStore.lock`)."""

    async def watch(self, on_change: ChangeListener) -> StoreWatch | None:
        """See :meth:`TokenStore.watch`; ``on_change`` is called from the event loop."""
        return None

    async def iter_keys(
        self, *, server: str | None = None, api: str | None = None
    ) -> AsyncIterator[StoreKey]:
        """See :meth:`TokenStore.iter_keys`."""
        for _ in ():
            yield _

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections held by the store."""
