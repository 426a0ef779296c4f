"""Waiting for a held lock: bounded exponential backoff with jitter, ending at a deadline;
and per-key locks of one process that threads and event loops can share."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager

__all__ = ["Backoff", "ProcessKeyLocks"]


class Backoff:
    """The pauses of one waiter between attempts to take a lock held by someone else.

    Pauses double from ``first`` up to ``cap`` and each is drawn from the upper half of its
    range, so many waiters released at once spread out instead of retrying in step. The
    last pause ends exactly at the deadline, where the waiter makes one final attempt and
    then gives up.
    """

    __slots__ = ("_clock", "_next", "cap", "deadline")

    def __init__(
        self,
        timeout: float,
        *,
        first: float = 0.002,
        cap: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.deadline = clock() + max(0.0, timeout)
        self.cap = max(first, cap)
        self._next = first

    def pause(self) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when the deadline has passed."""
        remaining = self.deadline - self._clock()
        if remaining <= 0:
            return None
        pause = random.uniform(self._next / 2, self._next)
        self._next = min(self._next * 2, self.cap)
        return min(pause, remaining)

    @property
    def remaining(self) -> float:
        """Seconds left until the deadline (never negative)."""
        return max(0.0, self.deadline - self._clock())


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class ProcessKeyLocks:
    """A thread lock per key, made on first use and dropped when nobody holds or wants it.

    Threads wait on it directly; coroutines poll it with :class:`Backoff`, so the locks of
    one process exclude sync and async users alike whatever their event loop.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._entries: dict[Hashable, _Entry] = {}

    @contextmanager
    def hold(self, key: Hashable, timeout: float) -> Iterator[bool]:
        """Hold ``key``'s lock; yields whether it was taken within ``timeout`` seconds."""
        lock = self._join(key)
        acquired = lock.acquire(timeout=max(0.0, timeout))
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()
            self._leave(key)

    @asynccontextmanager
    async def hold_async(self, key: Hashable, timeout: float) -> AsyncIterator[bool]:
        """Like :meth:`hold`, waiting on the event loop instead of blocking it."""
        lock = self._join(key)
        wait = Backoff(timeout)
        try:
            acquired = lock.acquire(blocking=False)
            while not acquired:
                pause = wait.pause()
                if pause is None:
                    break
                await asyncio.sleep(pause)
                acquired = lock.acquire(blocking=False)
            try:
                yield acquired
            finally:
                if acquired:
                    lock.release()
        finally:
            self._leave(key)

    def _join(self, key: Hashable) -> threading.Lock:
        with self._guard:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            entry.users += 1
            return entry.lock

    def _leave(self, key: Hashable) -> None:
        with self._guard:
            entry = self._entries[key]
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
