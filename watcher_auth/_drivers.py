"""Carrying out the lifecycle's steps: blocking (``requests``) or on an event loop (``httpx``).

:func:`drive` and :func:`drive_async` are the same loop: send the flow the last result (or
throw it the last error), carry out the step it yields, until it returns or yields
:data:`~watcher_auth._effects.SEND`, the caller's own request. :class:`SyncSteps` and
:class:`AsyncSteps` carry out one step each. Library errors leave the loop with no traceback
of the flow and no chained exception: those frames and chains hold tokens, passwords and
requests with credentials, and crash reporters capture every frame's locals.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

from watcher_auth._effects import (
    SEND,
    Delete,
    Flow,
    HttpRequest,
    HttpResponse,
    Load,
    Lock,
    LockHandle,
    Provide,
    Save,
    Send,
    Unlock,
)
from watcher_auth._events import EventType
from watcher_auth._exceptions import (
    ConfigurationError,
    ResponseTooLarge,
    StoreError,
    StoreLockTimeout,
    WatcherAuthError,
    WatcherUnavailable,
)
from watcher_auth._locks import KeyedLocks, TooManyWaiters
from watcher_auth._tokens import Secret, StoreKey
from watcher_auth.stores.base import AsyncTokenStore, TokenStore

if TYPE_CHECKING:
    import httpx

    from watcher_auth._lifecycle import Lifecycle

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AsyncSteps",
    "SyncSteps",
    "Timeout",
    "drive",
    "drive_async",
    "read_limited",
    "scrub",
]

logger = logging.getLogger("watcher_auth")

T = TypeVar("T")
Timeout = float | tuple[float, float]
#: The largest answer read from Watcher, counted after decompression.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_CHUNK = 64 * 1024


def scrub(exc: BaseException) -> BaseException:
    """``exc`` without its traceback and chained exceptions (see the module docstring)."""
    exc.__cause__ = None
    exc.__context__ = None
    exc.__suppress_context__ = True
    return exc.with_traceback(None)


def drive(flow: Flow[T], perform: Callable[[Any], Any], value: Any = None) -> tuple[bool, T]:
    """Run ``flow`` with blocking steps until it returns ``(False, result)`` or wants the
    caller's request sent, ``(True, None)``; then call again with the answer as ``value``."""
    error: BaseException | None = None
    while True:
        failure: WatcherAuthError | None = None
        try:
            effect = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            return False, stop.value
        except WatcherAuthError as exc:
            failure = exc
        if failure is not None:
            raise scrub(failure)
        if effect is SEND:
            return True, None  # type: ignore[return-value]
        error = None
        try:
            value = perform(effect)
        except BaseException as exc:  # thrown into the flow, which releases its locks
            value, error = None, exc


async def drive_async(
    flow: Flow[T], perform: Callable[[Any], Awaitable[Any]], value: Any = None
) -> tuple[bool, T]:
    """:func:`drive` for a coroutine ``perform``."""
    error: BaseException | None = None
    while True:
        failure: WatcherAuthError | None = None
        try:
            effect = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            return False, stop.value
        except WatcherAuthError as exc:
            failure = exc
        if failure is not None:
            raise scrub(failure)
        if effect is SEND:
            return True, None  # type: ignore[return-value]
        error = None
        try:
            value = await perform(effect)
        except BaseException as exc:
            value, error = None, exc


def read_limited(chunks: Iterable[bytes], limit: int, deadline: float | None = None) -> bytes:
    """Join ``chunks`` (decompressed), stopping past ``limit`` bytes or the ``deadline``
    (a ``time.monotonic()`` value).

    Raises:
        ResponseTooLarge: the answer is longer than ``limit``.
        TimeoutError: the deadline passed while reading.
    """
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"Watcher's answer is larger than {limit} bytes")
        parts.append(chunk)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError
    return b"".join(parts)


def split_timeout(timeout: Timeout, deadline: float, patient: bool) -> tuple[float, float]:
    """``(connect, read)`` seconds for one of the lifecycle's requests."""
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    return min(connect, deadline), deadline if patient else min(read, deadline)


def _provided(user: str, answer: object) -> tuple[str, Secret] | None:
    if answer is None:
        return None
    if (
        not isinstance(answer, tuple)
        or len(answer) != 2
        or not all(isinstance(part, str) and part for part in answer)
    ):
        raise ConfigurationError(
            f"the credentials provider must return (username, password) or None for {user!r}"
        )
    return answer[0], Secret(answer[1])


class _Steps:
    """What both drivers share: the store and lock settings, and failure reporting."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        locks: KeyedLocks,
        lock_timeout: float,
        credentials: Callable[[str], Any] | None,
        timeout: Timeout,
        deadline: float,
        max_response_bytes: int,
    ) -> None:
        self.lifecycle = lifecycle
        self.locks = locks
        self.lock_timeout = lock_timeout
        self.credentials = credentials
        self.timeout = timeout
        self.deadline = deadline
        self.max_response_bytes = max_response_bytes

    def _store_failed(self, key: StoreKey, exc: BaseException) -> None:
        if isinstance(exc, StoreError) and not isinstance(exc, StoreLockTimeout):
            self.lifecycle.emit(EventType.STORE_ERROR, key, error=type(exc).__name__)

    def _lock_timeout(self, key: StoreKey, why: str) -> StoreLockTimeout:
        return StoreLockTimeout(
            f"the refresh lock of user key {key.user!r} {why}; try again in a moment"
        )

    def _unavailable(self, request: HttpRequest, why: str) -> WatcherUnavailable:
        return WatcherUnavailable(
            f"Watcher at {self.lifecycle.server} did not answer {request.what} ({why})"
        )


class SyncSteps(_Steps):
    """Carries out steps with blocking calls: a :class:`TokenStore` and ``requests``."""

    def __init__(self, lifecycle: Lifecycle, store: TokenStore, **options: Any) -> None:
        self.pool_maxsize: int = options.pop("pool_maxsize", 32)
        self.verify: bool | str = options.pop("verify", True)
        self.proxies: dict[str, str] = options.pop("proxies", {})
        super().__init__(lifecycle, **options)
        self.store = store
        self._pid = os.getpid()
        self.adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self.pool_maxsize)
        self.http = self._new_http()

    def _new_http(self) -> requests.Session:
        http = requests.Session()
        http.trust_env = False
        http.proxies.update(self.proxies)
        http.verify = self.verify
        http.mount(self.lifecycle.server.split("://")[0] + "://", self.adapter)
        return http

    def after_fork(self) -> None:
        """In a child process: new connection pools, so no socket is shared with the parent."""
        self.adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self.pool_maxsize)
        self.http = self._new_http()

    def __call__(self, effect: Any) -> Any:
        kind = type(effect)
        if kind is Load:
            return self._store(effect.key, self.store.load, effect.key)
        if kind is Save:
            return self._store(effect.key, self.store.save, effect.key, effect.pair)
        if kind is Delete:
            return self._store(effect.key, self.store.delete, effect.key)
        if kind is Lock:
            return self._lock(effect.key, effect.shared)
        if kind is Unlock:
            effect.handle.release()
            return None
        if kind is Provide:
            assert self.credentials is not None
            return _provided(effect.user, self.credentials(effect.user))
        if kind is Send:
            return self.send(effect.request)
        raise TypeError(f"unknown step {effect!r}")

    def run(self, flow: Flow[T]) -> T:
        """Run a flow that never sends a caller's request."""
        return drive(flow, self)[1]

    def _store(self, key: StoreKey, method: Callable[..., T], *args: Any) -> T:
        try:
            return method(*args)
        except Exception as exc:
            self._store_failed(key, exc)
            raise

    def _lock(self, key: StoreKey, shared: bool) -> LockHandle:
        started = time.monotonic()
        if not shared:
            try:
                acquired = self.locks.acquire(key, self.lock_timeout)
            except TooManyWaiters:
                raise self._lock_timeout(key, "has too many callers waiting") from None
            if not acquired:
                raise self._lock_timeout(key, f"was held for over {self.lock_timeout}s")
            return LockHandle(
                key, time.monotonic() - started, release=lambda: self.locks.release(key)
            )
        held: AbstractContextManager[object] = self.store.lock(key, timeout=self.lock_timeout)
        self._store(key, held.__enter__)
        return LockHandle(
            key, time.monotonic() - started, release=lambda: held.__exit__(None, None, None)
        )

    def send(self, request: HttpRequest) -> HttpResponse:
        """Send one of the lifecycle's own requests within the deadline and the size limit."""
        deadline = time.monotonic() + self.deadline
        failure = ""
        try:
            with self.http.request(
                request.method,
                request.url,
                headers=request.headers,
                json=request.json,
                timeout=split_timeout(self.timeout, self.deadline, request.patient),
                allow_redirects=False,
                stream=True,
            ) as response:
                body = read_limited(
                    response.iter_content(_CHUNK), self.max_response_bytes, deadline
                )
                status, headers = response.status_code, response.headers
        except requests.RequestException as exc:
            failure = type(exc).__name__
        except TimeoutError:
            failure = f"no complete answer within {self.deadline}s"
        if failure:
            raise self._unavailable(request, failure)
        return HttpResponse(status, headers, body, self.lifecycle.clock())


class AsyncSteps(_Steps):
    """Carries out steps on an event loop: an :class:`AsyncTokenStore` and ``httpx``."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        store: AsyncTokenStore,
        *,
        client: Callable[[], httpx.AsyncClient],
        **options: Any,
    ) -> None:
        super().__init__(lifecycle, **options)
        self.store = store
        self._client = client

    async def __call__(self, effect: Any) -> Any:
        kind = type(effect)
        if kind is Load:
            return await self._store(effect.key, self.store.load(effect.key))
        if kind is Save:
            return await self._store(effect.key, self.store.save(effect.key, effect.pair))
        if kind is Delete:
            return await self._store(effect.key, self.store.delete(effect.key))
        if kind is Lock:
            return await self._lock(effect.key, effect.shared)
        if kind is Unlock:
            released = effect.handle.release()
            if inspect.isawaitable(released):
                # Released even if the task is being cancelled: a lock must never leak.
                await asyncio.shield(released)
            return None
        if kind is Provide:
            assert self.credentials is not None
            answer = self.credentials(effect.user)
            if inspect.isawaitable(answer):
                answer = await answer
            return _provided(effect.user, answer)
        if kind is Send:
            return await self.send(effect.request)
        raise TypeError(f"unknown step {effect!r}")

    async def run(self, flow: Flow[T]) -> T:
        """Run a flow that never sends a caller's request."""
        return (await drive_async(flow, self))[1]

    async def _store(self, key: StoreKey, pending: Awaitable[T]) -> T:
        try:
            return await pending
        except Exception as exc:
            self._store_failed(key, exc)
            raise

    async def _lock(self, key: StoreKey, shared: bool) -> LockHandle:
        started = time.monotonic()
        if not shared:
            try:
                acquired = await self.locks.acquire_async(key, self.lock_timeout)
            except TooManyWaiters:
                raise self._lock_timeout(key, "has too many callers waiting") from None
            if not acquired:
                raise self._lock_timeout(key, f"was held for over {self.lock_timeout}s")
            return LockHandle(
                key, time.monotonic() - started, release=lambda: self.locks.release(key)
            )
        held: AbstractAsyncContextManager[object] = self.store.lock(key, timeout=self.lock_timeout)
        await self._store(key, held.__aenter__())
        return LockHandle(
            key, time.monotonic() - started, release=lambda: held.__aexit__(None, None, None)
        )

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send one of the lifecycle's own requests within the deadline and the size limit."""
        import httpx

        failure = ""
        connect, read = split_timeout(self.timeout, self.deadline, request.patient)
        try:
            async with asyncio.timeout(self.deadline):
                async with self._client().stream(
                    request.method,
                    request.url,
                    headers=request.headers,
                    json=request.json,
                    follow_redirects=False,
                    timeout=httpx.Timeout(read, connect=connect),
                ) as response:
                    body = await read_limited_async(response.aiter_bytes(), self.max_response_bytes)
                    status, headers = response.status_code, response.headers
        except httpx.HTTPError as exc:
            failure = type(exc).__name__
        except TimeoutError:
            failure = f"no complete answer within {self.deadline}s"
        if failure:
            raise self._unavailable(request, failure)
        return HttpResponse(status, headers, body, self.lifecycle.clock())


async def read_limited_async(chunks: Any, limit: int) -> bytes:
    """:func:`read_limited` for an async iterator of chunks."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"Watcher's answer is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
