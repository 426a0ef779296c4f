"""Per-key locks shared by threads and by asyncio tasks on any event loop of one process.

A thread waits on a plain lock; a task waits on a future of its own loop, woken with
``call_soon_threadsafe``. So a sync and an async manager in one process, or async views run
on a new loop per request (Flask), still queue behind one holder per key, and two different
keys never wait for each other.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

__all__ = ["KeyedLocks", "TooManyWaiters"]


class TooManyWaiters(Exception):
    """More callers already wait for this key than the lock admits."""


class _ThreadWaiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()

    def wake(self) -> bool:
        self.event.set()
        return True


class _TaskWaiter:
    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def wake(self) -> bool:
        if self.loop.is_closed():
            return False
        self.loop.call_soon_threadsafe(_resolve, self.future)
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Entry:
    __slots__ = ("held", "users", "waiters")

    def __init__(self) -> None:
        self.held = False
        self.users = 0
        self.waiters: deque[_ThreadWaiter | _TaskWaiter] = deque()


class KeyedLocks:
    """A lock per key, created on first use and dropped when nobody holds or waits for it.

    Args:
        max_waiters: how many callers may wait for one key at a time; one more raises
            :class:`TooManyWaiters` at once instead of tying up another thread or task.
    """

    def __init__(self, max_waiters: int | None = None) -> None:
        self._guard = threading.Lock()
        self._entries: dict[Hashable, _Entry] = {}
        self.max_waiters = max_waiters

    def _enter(self, key: Hashable) -> tuple[_Entry, bool]:
        """Register a user of ``key``'s entry; True when the lock was free and is now ours."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        if not entry.held:
            entry.held = True
            entry.users += 1
            return entry, True
        if self.max_waiters is not None and len(entry.waiters) >= self.max_waiters:
            raise TooManyWaiters(key)
        entry.users += 1
        return entry, False

    def _leave(self, key: Hashable, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0 and not entry.held:
            del self._entries[key]

    def acquire(self, key: Hashable, timeout: float = -1) -> bool:
        """Take ``key``'s lock, waiting at most ``timeout`` seconds (forever if negative)."""
        with self._guard:
            entry, free = self._enter(key)
            if free:
                return True
            waiter = _ThreadWaiter()
            entry.waiters.append(waiter)
        woken = waiter.event.wait(None if timeout < 0 else timeout)
        with self._guard:
            if not woken and waiter in entry.waiters:
                entry.waiters.remove(waiter)
                self._leave(key, entry)
                return False
        return True  # handed over by release()

    async def acquire_async(self, key: Hashable, timeout: float = -1) -> bool:
        """:meth:`acquire` for a task: waits without blocking its event loop."""
        with self._guard:
            entry, free = self._enter(key)
            if free:
                return True
            waiter = _TaskWaiter(asyncio.get_running_loop())
            entry.waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), None if timeout < 0 else timeout)
        except TimeoutError:
            with self._guard:
                if waiter in entry.waiters:
                    entry.waiters.remove(waiter)
                    self._leave(key, entry)
                    return False
            return True  # handed over just as the wait ran out
        except asyncio.CancelledError:
            with self._guard:
                handed = waiter not in entry.waiters
                if not handed:
                    entry.waiters.remove(waiter)
                    self._leave(key, entry)
            if handed:
                self.release(key)  # handed over as the task was cancelled: pass it on
            raise
        return True

    def release(self, key: Hashable) -> None:
        """Release ``key``'s lock, handing it to the longest waiter if there is one."""
        with self._guard:
            entry = self._entries[key]
            entry.users -= 1  # the holder leaves
            while entry.waiters:
                # The woken waiter becomes the holder; ``held`` stays set.
                if entry.waiters.popleft().wake():
                    return
                entry.users -= 1  # its loop is gone: it will never take the lock
            entry.held = False
            if entry.users == 0:
                del self._entries[key]

    @contextmanager
    def hold(self, key: Hashable, timeout: float = -1) -> Iterator[bool]:
        """Hold the key's lock; yields whether it was acquired within ``timeout`` seconds."""
        acquired = self.acquire(key, timeout)
        try:
            yield acquired
        finally:
            if acquired:
                self.release(key)

    def reset(self) -> None:
        """Forget every lock (in a child process after ``fork()``: no holder there exists)."""
        self._guard = threading.Lock()
        self._entries = {}

    def __len__(self) -> int:
        return len(self._entries)
