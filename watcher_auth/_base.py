"""What the sync and the async manager share: settings, the lifecycle, the per-process
cache, events, and what happens to all of them in a child process after ``fork()``."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

from watcher_auth._events import EventHub, Listener
from watcher_auth._exceptions import ConfigurationError
from watcher_auth._lifecycle import Lifecycle, LocalCache, Margin
from watcher_auth._locks import KeyedLocks
from watcher_auth._policy import DEFAULT_MAX_LIFETIME
from watcher_auth._tokens import StoreKey, TokenPair
from watcher_auth._urls import normalize_server_url, origin_of
from watcher_auth.v2._lifecycle import V2Lifecycle

__all__ = ["CredentialsProvider", "ManagerBase"]

#: Returns ``(username, password)`` for a user key, or ``None`` when it has none (an async
#: manager also accepts a coroutine function).
CredentialsProvider = Callable[[str], Any]

_live: weakref.WeakSet[ManagerBase] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for manager in list(_live):
        manager._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ManagerBase:
    """Settings and per-process state of a manager; no I/O (see the subclasses)."""

    def __init__(
        self,
        base_url: str,
        *,
        shared_store: bool,
        staleness_bound: float,
        credentials: CredentialsProvider | None,
        timeout: float | tuple[float, float],
        clock: Callable[[], float],
        refresh_margin: float | Margin | None,
        lock_timeout: float,
        local_cache_size: int,
        max_lifetime: float | None,
        deadline: float | None,
        max_response_bytes: int,
        max_waiters: int | None,
    ) -> None:
        self.server = normalize_server_url(base_url)
        if lock_timeout <= 0:
            raise ConfigurationError("lock_timeout must be a positive number of seconds")
        if max_response_bytes < 1024:
            raise ConfigurationError("max_response_bytes must be at least 1024")
        self.origin = origin_of(self.server)
        self.timeout = timeout
        self._lock_timeout = lock_timeout
        self.max_response_bytes = max_response_bytes
        read = timeout[1] if isinstance(timeout, tuple) else timeout
        #: Seconds a login or refresh may take in all, its answer read to the end.
        self.deadline = float(deadline) if deadline is not None else max(30.0, 2 * read)
        self._credentials = credentials
        self._clock = clock
        self._events = EventHub()
        self._locks = KeyedLocks(max_waiters=max_waiters)
        self._cache: LocalCache | None = None
        if shared_store and local_cache_size > 0:
            self._cache = LocalCache(local_cache_size, clock, staleness_bound)
        self.lifecycle = Lifecycle(
            self.server,
            clock=clock,
            has_credentials=credentials is not None,
            refresh_margin=refresh_margin,
            cache=self._cache,
            events=self._events,
            max_lifetime=DEFAULT_MAX_LIFETIME if max_lifetime is None else max_lifetime,
        )
        self.v2 = V2Lifecycle(self.lifecycle)
        self.api_root = self.lifecycle.api_root
        self.login_url = self.lifecycle.login_url
        self._watching = False
        _live.add(self)

    def _step_options(self) -> dict[str, Any]:
        return {
            "locks": self._locks,
            "lock_timeout": self._lock_timeout,
            "credentials": self._credentials,
            "timeout": self.timeout,
            "deadline": self.deadline,
            "max_response_bytes": self.max_response_bytes,
        }

    @property
    def lock_timeout(self) -> float:
        """At most this many seconds waiting for another refresh of the same key."""
        return self._lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, seconds: float) -> None:
        self._lock_timeout = seconds
        steps = getattr(self, "steps", None)
        if steps is not None:
            steps.lock_timeout = seconds

    def _after_fork(self) -> None:
        """In a child process: no lock holder, no cached record and no channel of the
        parent's survives; connection pools are replaced by the subclass."""
        self._locks.reset()
        if self._cache is not None:
            self._cache.reset()
        self._watching = False

    # --- public, without I/O -----------------------------------------------------------

    def store_key(self, key: str, api: str = "v3") -> StoreKey:
        """The store key under which ``key``'s records for ``api`` live."""
        return self.lifecycle.store_key(key, api)

    def needs_refresh(self, pair: TokenPair) -> bool:
        """Whether ``pair`` is due for a refresh now (expired, or within the margin)."""
        return self.lifecycle.is_stale(pair)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every :class:`~watcher_auth.WatcherEvent`."""
        self._events.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._events.remove(listener)

    @property
    def clock_offset(self) -> float | None:
        """This process's estimate of Watcher's clock minus its own, once it has one."""
        return self.lifecycle.server_clock.offset

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(f"a {type(self).__name__} cannot be pickled; create one in each process")
