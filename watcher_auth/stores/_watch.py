"""Change-channel listeners: one loop that connects, delivers and reconnects, two drivers.

A listener (a thread for sync stores, a task for async ones) holds one dedicated connection
to the store's channel (Redis pub/sub, PostgreSQL ``LISTEN``). While it is disconnected its
``healthy`` is False and it reconnects with bounded, jittered backoff; once back it tells its
listener ``None``, since any record may have changed meanwhile. Listeners and connections
inherited through ``fork()`` are dead in the child: they are marked closed there and their
connections are left untouched (they belong to the parent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from watcher_auth._tokens import StoreKey
from watcher_auth.stores._waiting import Backoff
from watcher_auth.stores.base import ChangeListener

__all__ = [
    "AsyncChannelListener",
    "ChannelListener",
    "WatchHandle",
    "after_fork_in_child",
    "keep_from_finalizing",
    "parse_key",
]

logger = logging.getLogger("watcher_auth")

FIRST_RETRY = 0.05
LONGEST_RETRY = 2.0
RECEIVE_SLICE = 0.5  # how often a quiet listener looks whether it was closed

# Objects a forked child must never use nor let the garbage collector finalize: their
# sockets are the parent's.
_INHERITED: list[object] = []

_FORK_HOOKS: weakref.WeakKeyDictionary[Any, list[Callable[[Any], None]]] = (
    weakref.WeakKeyDictionary()
)


def after_fork_in_child(owner: object, hook: Callable[[Any], None]) -> None:
    """Run ``hook(owner)`` in every child forked while ``owner`` lives (held weakly).

    Stores use it to drop pools and watches whose sockets belong to the parent.
    """
    _FORK_HOOKS.setdefault(owner, []).append(hook)


def _run_fork_hooks() -> None:
    for owner, hooks in list(_FORK_HOOKS.items()):
        for hook in hooks:
            try:
                hook(owner)
            except Exception:
                logger.exception("resetting %r after fork failed", owner)


os.register_at_fork(after_in_child=_run_fork_hooks)


def keep_from_finalizing(*objects: object) -> None:
    """Keep objects inherited from the parent alive in a child, unused and unclosed."""
    _INHERITED.extend(o for o in objects if o is not None)


def parse_key(payload: str | bytes) -> StoreKey | None:
    """The key a change message names, or ``None`` (everything) if it names none."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    try:
        return StoreKey.parse(text)
    except ValueError:
        return None


def _reconnect_backoff() -> Backoff:
    return Backoff(math.inf, first=FIRST_RETRY, cap=LONGEST_RETRY)


class WatchHandle:
    """What a store's ``watch()`` returns: the listener's health, and its end.

    The listener stops when the handle is closed or when nobody holds the handle any more,
    so a watch its owner forgot to close does not keep a connection open for ever.
    """

    __slots__ = ("__weakref__", "_finalizer", "_listener")

    def __init__(self, listener: _ListenerState, stop: Callable[[], None]) -> None:
        self._listener = listener
        self._finalizer = weakref.finalize(self, stop)

    @property
    def healthy(self) -> bool:
        """Whether the channel is connected now."""
        return self._listener.healthy

    def close(self) -> None:
        """Stop listening."""
        self._finalizer()

    def forget_after_fork(self) -> None:
        """In a forked child: the listener is the parent's; leave it alone."""
        self._finalizer.detach()
        forget = getattr(self._listener, "forget_after_fork", None)
        if forget is not None:
            forget()

    def __repr__(self) -> str:
        return repr(self._listener)


class _ListenerState:
    """What both drivers share: health, the first-connection handshake, delivery."""

    def __init__(self, on_change: ChangeListener, description: str) -> None:
        self._on_change = on_change
        self._description = description
        self._guard = threading.Lock()
        self._healthy = False
        self._returned = False  # watch() has returned to its caller
        self._closed = False

    @property
    def healthy(self) -> bool:
        """Whether the channel is connected now."""
        return self._healthy and not self._closed

    def _connected(self) -> bool:
        """Mark the channel up; whether the listener must now hear ``None``."""
        with self._guard:
            self._healthy = True
            return self._returned

    def _returning(self, connected_in_time: bool) -> bool:
        """watch() returns; whether the channel came up too late for the caller to know."""
        with self._guard:
            self._returned = True
            return not connected_in_time and self._healthy

    def _lost(self, exc: BaseException) -> None:
        if self._healthy:
            logger.warning(
                "lost the change channel of %s (%s); reconnecting",
                self._description,
                type(exc).__name__,
            )
        self._healthy = False

    def _deliver(self, key: StoreKey | None) -> None:
        try:
            self._on_change(key)
        except Exception:
            logger.exception("a change listener of %s failed", self._description)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "healthy" if self._healthy else "reconnecting"
        return f"<{type(self).__name__} {self._description} {state}>"


class ChannelListener(_ListenerState, ABC):
    """A thread listening on one connection; subclasses say how to connect and receive."""

    def __init__(self, on_change: ChangeListener, description: str) -> None:
        super().__init__(on_change, description)
        self._stop = threading.Event()
        self._up = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"watcher-auth-watch {description}", daemon=True
        )

    def start(self, wait: float) -> WatchHandle:
        """Start listening; waits up to ``wait`` seconds for the channel to be up."""
        self._thread.start()
        if self._returning(self._up.wait(wait)):
            self._deliver(None)
        return WatchHandle(self, self.close)

    def close(self) -> None:
        """Stop listening and close the connection."""
        self._closed = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(RECEIVE_SLICE + 2)

    def forget_after_fork(self) -> None:
        """In a forked child: the thread is gone and the connection is the parent's."""
        self._closed = True
        self._healthy = False
        self._stop.set()
        keep_from_finalizing(self._connection())

    @abstractmethod
    def _connect(self) -> None:
        """Open the connection and subscribe; raises on failure."""

    @abstractmethod
    def _receive(self, timeout: float) -> Iterator[str | bytes]:
        """Payloads arriving within about ``timeout`` seconds; raises when the link fails."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Close the connection, quietly."""

    @abstractmethod
    def _connection(self) -> object:
        """The connection object now held, if any."""

    def _run(self) -> None:
        retry = _reconnect_backoff()
        while not self._stop.is_set():
            try:
                self._connect()
            except Exception as exc:
                self._lost(exc)
                self._disconnect()
                self._stop.wait(retry.pause() or 0)
                continue
            retry = _reconnect_backoff()
            announce = self._connected()
            self._up.set()
            if announce:
                self._deliver(None)
            try:
                while not self._stop.is_set():
                    for payload in self._receive(RECEIVE_SLICE):
                        self._deliver(parse_key(payload))
            except Exception as exc:
                self._lost(exc)
            finally:
                self._disconnect()
        self._healthy = False


class AsyncChannelListener(_ListenerState, ABC):
    """A task listening on one connection; ``on_change`` is called from the event loop."""

    def __init__(self, on_change: ChangeListener, description: str) -> None:
        super().__init__(on_change, description)
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait: float) -> WatchHandle:
        """Start listening; waits up to ``wait`` seconds for the channel to be up."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())
        try:
            await asyncio.wait_for(self._up.wait(), wait)
            up = True
        except asyncio.TimeoutError:
            up = False
        if self._returning(up):
            self._deliver(None)
        return WatchHandle(self, lambda: self._close_from_any_thread(loop))

    def _close_from_any_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        # A handle may be collected on any thread; the task is cancelled on its own loop.
        self._closed = True
        self._healthy = False
        with contextlib.suppress(RuntimeError):  # the loop is closed: the task is gone
            loop.call_soon_threadsafe(self.close)

    def close(self) -> None:
        """Stop listening; the task closes its connection as it ends."""
        self._closed = True
        self._healthy = False
        if self._task is not None and not self._task.done():
            with contextlib.suppress(RuntimeError):  # its loop is already closed
                self._task.cancel()

    async def aclose(self) -> None:
        """Stop listening and wait until the connection is closed."""
        self.close()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def forget_after_fork(self) -> None:
        """In a forked child: the task's loop and connection are the parent's."""
        self._closed = True
        self._healthy = False
        keep_from_finalizing(self._task, self._connection())
        self._task = None

    @abstractmethod
    async def _connect(self) -> None:
        """Open the connection and subscribe; raises on failure."""

    @abstractmethod
    def _receive(self, timeout: float) -> AsyncIterator[str | bytes]:
        """Payloads arriving within about ``timeout`` seconds; raises when the link fails."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Close the connection, quietly."""

    @abstractmethod
    def _connection(self) -> object:
        """The connection object now held, if any."""

    async def _run(self) -> None:
        retry = _reconnect_backoff()
        try:
            while not self._closed:
                try:
                    await self._connect()
                except Exception as exc:
                    self._lost(exc)
                    await self._disconnect()
                    await asyncio.sleep(retry.pause() or 0)
                    continue
                retry = _reconnect_backoff()
                announce = self._connected()
                self._up.set()
                if announce:
                    self._deliver(None)
                try:
                    while not self._closed:
                        async for payload in self._receive(RECEIVE_SLICE):
                            self._deliver(parse_key(payload))
                except Exception as exc:
                    self._lost(exc)
                finally:
                    await self._disconnect()
        finally:
            self._healthy = False
