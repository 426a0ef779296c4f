"""Any sync :class:`TokenStore` as an :class:`AsyncTokenStore`, its blocking calls off the loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar
from types import TracebackType
from typing import TypeVar

from watcher_auth._tokens import StoreKey, TokenPair
from watcher_auth.stores.base import AsyncTokenStore, ChangeListener, StoreWatch, TokenStore

__all__ = ["AsyncStoreAdapter"]

T = TypeVar("T")

# The locks the current task holds through adapters: (adapter id, key) -> the lock. A lock
# released by a task of its own (a shielded release runs in a copy of this context) leaves
# its entry here, no longer ``holding``.
_HELD: ContextVar[dict[tuple[int, StoreKey], _ThreadHeldLock] | None] = ContextVar(
    "watcher_auth_held_locks", default=None
)


class AsyncStoreAdapter(AsyncTokenStore):
    """Runs a sync store's calls in worker threads, so they never block the event loop.

    A lock is taken, held and released on one dedicated thread for its whole life, and the
    holder's ``load``/``save``/``delete`` of that key run on that thread too: database row
    locks and Django transactions belong to the thread (and connection) that opened them.
    ``shared``, ``staleness_bound`` and change channels are the sync store's; ``on_change``
    is called on the event loop that called :meth:`watch`.

    Args:
        store: the sync store to run.
        executor: where calls outside a lock run; the loop's default executor by default.
    """

    def __init__(
        self, store: TokenStore, *, executor: concurrent.futures.Executor | None = None
    ) -> None:
        self.store = store
        self.shared = store.shared
        self.staleness_bound = store.staleness_bound
        self._executor = executor

    async def load(self, key: StoreKey) -> TokenPair | None:
        return await self._call(key, lambda: self.store.load(key))

    async def save(self, key: StoreKey, pair: TokenPair) -> None:
        await self._call(key, lambda: self.store.save(key, pair))

    async def delete(self, key: StoreKey) -> None:
        await self._call(key, lambda: self.store.delete(key))

    def lock(self, key: StoreKey, *, timeout: float) -> _ThreadHeldLock:
        return _ThreadHeldLock(self, key, timeout)

    async def watch(self, on_change: ChangeListener) -> StoreWatch | None:
        loop = asyncio.get_running_loop()

        def relay(key: StoreKey | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(on_change, key)

        return await self._run(lambda: self.store.watch(relay))

    async def iter_keys(
        self, *, server: str | None = None, api: str | None = None
    ) -> AsyncIterator[StoreKey]:
        keys = await self._run(lambda: list(self.store.iter_keys(server=server, api=api)))
        for key in keys:
            yield key

    async def aclose(self) -> None:
        await self._run(self.store.close)

    # --- hooks for framework adapters ---------------------------------------------------------

    async def _run(self, call: Callable[[], T]) -> T:
        """Run ``call`` outside any lock; subclasses may pick the thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _lock_thread_ends(self) -> None:
        """Runs on a lock's thread after the lock is released, before the thread ends."""

    # --- helpers ------------------------------------------------------------------------------

    async def _call(self, key: StoreKey, call: Callable[[], T]) -> T:
        held = (_HELD.get() or {}).get((id(self), key))
        thread = held.thread if held is not None and held.holding else None
        if thread is None:
            return await self._run(call)
        return await asyncio.wrap_future(thread.submit(call))

    def __repr__(self) -> str:
        return f"AsyncStoreAdapter({self.store!r})"


class _ThreadHeldLock:
    """The sync lock entered and left on one thread of its own."""

    def __init__(self, adapter: AsyncStoreAdapter, key: StoreKey, timeout: float) -> None:
        self._adapter = adapter
        self._key = key
        self._timeout = timeout
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._held: AbstractContextManager[object] | None = None
        self._previous: dict[tuple[int, StoreKey], _ThreadHeldLock] | None = None
        #: Whether the lock is held (the holder's calls of its key run on its thread).
        self.holding = False

    @property
    def thread(self) -> concurrent.futures.ThreadPoolExecutor | None:
        return self._thread

    async def __aenter__(self) -> None:
        thread = self._thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="watcher-auth-lock"
        )
        entering = thread.submit(self._enter)
        try:
            await asyncio.wrap_future(entering)
        except asyncio.CancelledError:
            # The thread may still get the lock after we stop waiting: release it then.
            entering.add_done_callback(self._abandon)
            raise
        except BaseException:
            self._end_thread()
            raise
        self._previous = _HELD.get()
        self.holding = True
        _HELD.set({**(self._previous or {}), (id(self._adapter), self._key): self})

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.holding = False
        _HELD.set(self._previous)
        assert self._thread is not None
        leaving = self._thread.submit(self._leave, exc_type, exc, tb)
        try:
            # Shielded: a cancelled holder still releases the lock, on its thread.
            return await asyncio.shield(asyncio.wrap_future(leaving))
        finally:
            self._end_thread()

    def _enter(self) -> object:
        held = self._held = self._adapter.store.lock(self._key, timeout=self._timeout)
        return held.__enter__()

    def _leave(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._held is not None
        return self._held.__exit__(exc_type, exc, tb)

    def _abandon(self, entering: concurrent.futures.Future[object]) -> None:
        if not entering.cancelled() and entering.exception() is None and self._thread:
            self._thread.submit(self._leave, None, None, None)
        self._end_thread()

    def _end_thread(self) -> None:
        if self._thread is not None:
            self._thread.submit(self._adapter._lock_thread_ends)
            self._thread.shutdown(wait=False)
