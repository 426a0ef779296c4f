"""The storage contract every token store implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager

from watcher_auth._tokens import StoreKey, TokenPair

__all__ = ["TokenStore"]


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

    def iter_keys(self, *, server: str | None = None, api: str | None = None) -> Iterator[StoreKey]:
        """Every stored key, optionally only those of one server and API.

        Backends that cannot enumerate their keys yield nothing; status commands then show
        only what they can.
        """
        return iter(())

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections held by the store."""
