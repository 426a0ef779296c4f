"""One behaviour suite, several drivers: the tests in tests/core and tests/v2 say what a user
sees once, and run it through every way a user can call Watcher with this library.

- ``requests``: :class:`~watcher_auth.TokenManager` and its ``requests`` sessions;
- ``httpx``: the same manager's ``httpx.Client`` (:meth:`TokenManager.httpx_client`, API v3
  only: the sync manager has no httpx client for API v2);
- ``async``: :class:`~watcher_auth.AsyncTokenManager` and its ``httpx.AsyncClient`` sessions,
  every call awaited on the driver's own event loop.

A :class:`Driver` offers the manager's methods as plain calls and a :class:`Calls` offers a
session's; their answers are :class:`Reply` objects, so one test body reads the same whatever
the driver. Concurrency is a driver's own: :meth:`Calls.many` runs threads for the sync
drivers and tasks on one loop for the async one.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import requests

from watcher_auth import (
    AsyncTokenManager,
    Listener,
    MemoryStore,
    StoreKey,
    TokenManager,
    TokenPair,
)
from watcher_auth.stores import AsyncMemoryStore

__all__ = [
    "ALL_KINDS",
    "V2_KINDS",
    "AsyncDriver",
    "Calls",
    "Driver",
    "Drivers",
    "Reply",
    "SyncDriver",
    "drivers_fixture",
]

T = TypeVar("T")

ALL_KINDS = ("requests", "httpx", "async")
V2_KINDS = ("requests", "async")


@dataclass
class Reply:
    """A response as a test sees it, whichever HTTP library carried it."""

    status_code: int
    content: bytes
    #: Statuses of the answers before this one (a challenged first try, a redirect).
    history: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    def json(self) -> Any:
        return json.loads(self.content)

    @classmethod
    def of(cls, response: requests.Response | httpx.Response) -> Reply:
        return cls(
            response.status_code, response.content, [r.status_code for r in response.history]
        )


class SharedMemoryStore(MemoryStore):
    """A memory store that says it is shared, so managers put their local cache in front.

    Two managers on one such store behave like two worker processes on one database.
    """

    shared = True


class SharedAsyncMemoryStore(AsyncMemoryStore):
    """:class:`SharedMemoryStore` for the async manager."""

    shared = True


class Calls:
    """A session of one driver: ``get``, ``put``, ``json``, ``paginate`` and ``many``."""

    def __init__(self, raw: Any) -> None:
        #: The library's own session or client (for reprs).
        self.raw = raw

    @property
    def auth(self) -> Any:
        return self.raw.auth

    def get(self, path: str, **params: Any) -> Reply:
        raise NotImplementedError

    def put(self, path: str, payload: Any) -> Reply:
        """PUT ``payload`` as JSON."""
        raise NotImplementedError

    def put_stream(self, path: str, body: bytes) -> Reply:
        """PUT ``body`` as a one-shot stream (a file, a generator) of JSON."""
        raise NotImplementedError

    def json(self, path: str) -> Any:
        raise NotImplementedError

    def paginate(self, path: str, **options: Any) -> list[Any]:
        raise NotImplementedError

    def many(self, count: int, path: str) -> list[Reply | Exception]:
        """``count`` concurrent GETs of ``path``: each answer, or the error it raised."""
        raise NotImplementedError


class Driver:
    """A manager's methods as plain calls; see the module docstring."""

    kind: str
    manager: TokenManager | AsyncTokenManager

    def add_listener(self, listener: Listener) -> None:
        self.manager.add_listener(listener)

    def store_key(self, key: str, api: str = "v3") -> StoreKey:
        return self.manager.store_key(key, api)

    # Each of these is the manager method of the same name.
    def login(self, key: str, *, username: str, password: str) -> TokenPair:
        raise NotImplementedError

    def logout(self, key: str) -> bool:
        raise NotImplementedError

    def tokens(self, key: str) -> TokenPair | None:
        raise NotImplementedError

    def is_connected(self, key: str) -> bool:
        raise NotImplementedError

    def current_tokens(self, key: str) -> TokenPair:
        raise NotImplementedError

    def refresh(self, key: str) -> TokenPair:
        raise NotImplementedError

    def v2_login(self, key: str, *, username: str, password: str) -> TokenPair:
        raise NotImplementedError

    def v2_connect_user_key(self, key: str, *, username: str, api_key: str) -> TokenPair:
        raise NotImplementedError

    def v2_logout(self, key: str) -> bool:
        raise NotImplementedError

    def v2_tokens(self, key: str) -> TokenPair | None:
        raise NotImplementedError

    def v2_is_connected(self, key: str) -> bool:
        raise NotImplementedError

    def v2_whoami(self, key: str) -> dict[str, Any]:
        raise NotImplementedError

    def session(self, key: str) -> Calls:
        raise NotImplementedError

    def v2_session(self, key: str) -> Calls:
        raise NotImplementedError

    def v2_system_session(self, system_key: str) -> Calls:
        raise NotImplementedError

    # The store, directly.
    def save(self, key: str, pair: TokenPair) -> None:
        raise NotImplementedError

    def stored_keys(self, api: str | None = None) -> list[StoreKey]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# --- the sync drivers -------------------------------------------------------------------


def _in_threads(count: int, work: Callable[[], T]) -> list[T | Exception]:
    barrier = threading.Barrier(count)
    results: list[T | Exception] = [RuntimeError("not run")] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class RequestsCalls(Calls):
    def get(self, path: str, **params: Any) -> Reply:
        return Reply.of(self.raw.get(path, params=params or None))

    def put(self, path: str, payload: Any) -> Reply:
        return Reply.of(self.raw.put(path, json=payload))

    def put_stream(self, path: str, body: bytes) -> Reply:
        headers = {"Content-Type": "application/json"}
        return Reply.of(self.raw.put(path, data=io.BytesIO(body), headers=headers))

    def json(self, path: str) -> Any:
        return self.raw.json(path)

    def paginate(self, path: str, **options: Any) -> list[Any]:
        return list(self.raw.paginate(path, **options))

    def many(self, count: int, path: str) -> list[Reply | Exception]:
        return _in_threads(count, lambda: self.get(path))


class HttpxCalls(RequestsCalls):
    def get(self, path: str, **params: Any) -> Reply:
        return Reply.of(self.raw.get(path, params=params or None, follow_redirects=True))

    def put_stream(self, path: str, body: bytes) -> Reply:
        def chunks() -> Iterator[bytes]:
            yield body

        headers = {"Content-Type": "application/json"}
        return Reply.of(self.raw.put(path, content=chunks(), headers=headers))


class SyncDriver(Driver):
    """:class:`TokenManager`, with ``requests`` sessions or its ``httpx.Client``."""

    def __init__(self, kind: str, url: str, **options: Any) -> None:
        self.kind = kind
        self.manager = self.sync = TokenManager(url, **options)
        self._clients: list[httpx.Client] = []

    def login(self, key: str, *, username: str, password: str) -> TokenPair:
        return self.sync.login(key, username=username, password=password)

    def logout(self, key: str) -> bool:
        return self.sync.logout(key)

    def tokens(self, key: str) -> TokenPair | None:
        return self.sync.tokens(key)

    def is_connected(self, key: str) -> bool:
        return self.sync.is_connected(key)

    def current_tokens(self, key: str) -> TokenPair:
        return self.sync.current_tokens(key)

    def refresh(self, key: str) -> TokenPair:
        return self.sync.refresh(key)

    def v2_login(self, key: str, *, username: str, password: str) -> TokenPair:
        return self.sync.v2_login(key, username=username, password=password)

    def v2_connect_user_key(self, key: str, *, username: str, api_key: str) -> TokenPair:
        return self.sync.v2_connect_user_key(key, username=username, api_key=api_key)

    def v2_logout(self, key: str) -> bool:
        return self.sync.v2_logout(key)

    def v2_tokens(self, key: str) -> TokenPair | None:
        return self.sync.v2_tokens(key)

    def v2_is_connected(self, key: str) -> bool:
        return self.sync.v2_is_connected(key)

    def v2_whoami(self, key: str) -> dict[str, Any]:
        return self.sync.v2_whoami(key)

    def session(self, key: str) -> Calls:
        if self.kind == "httpx":
            client = self.sync.httpx_client(key)
            self._clients.append(client)
            return HttpxCalls(client)
        return RequestsCalls(self.sync.session(key))

    def v2_session(self, key: str) -> Calls:
        return RequestsCalls(self.sync.v2_session(key))

    def v2_system_session(self, system_key: str) -> Calls:
        return RequestsCalls(self.sync.v2_system_session(system_key))

    def save(self, key: str, pair: TokenPair) -> None:
        self.sync.store.save(self.store_key(key), pair)

    def stored_keys(self, api: str | None = None) -> list[StoreKey]:
        return list(self.sync.store.iter_keys(api=api))

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.sync.close()


# --- the async driver -------------------------------------------------------------------


class AsyncCalls(Calls):
    def __init__(self, raw: Any, driver: AsyncDriver) -> None:
        super().__init__(raw)
        self._run = driver.run

    def get(self, path: str, **params: Any) -> Reply:
        return self._run(self._get(path, params))

    async def _get(self, path: str, params: dict[str, Any]) -> Reply:
        return Reply.of(await self.raw.get(path, params=params or None, follow_redirects=True))

    def put(self, path: str, payload: Any) -> Reply:
        return Reply.of(self._run(self.raw.put(path, json=payload)))

    def put_stream(self, path: str, body: bytes) -> Reply:
        async def chunks() -> AsyncIterator[bytes]:
            yield body

        headers = {"Content-Type": "application/json"}
        return Reply.of(self._run(self.raw.put(path, content=chunks(), headers=headers)))

    def json(self, path: str) -> Any:
        return self._run(self.raw.json(path))

    def paginate(self, path: str, **options: Any) -> list[Any]:
        async def collect() -> list[Any]:
            return [item async for item in self.raw.paginate(path, **options)]

        return self._run(collect())

    def many(self, count: int, path: str) -> list[Reply | Exception]:
        async def all_at_once() -> list[Reply | Exception]:
            calls = [self._get(path, {}) for _ in range(count)]
            return list(await asyncio.gather(*calls, return_exceptions=True))

        return self._run(all_at_once())


class AsyncDriver(Driver):
    """:class:`AsyncTokenManager` and its ``httpx.AsyncClient`` sessions, on one event loop."""

    kind = "async"

    def __init__(self, url: str, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.manager = self.aio = AsyncTokenManager(url, **options)
        self._clients: list[httpx.AsyncClient] = []

    def run(self, pending: Awaitable[T]) -> T:
        """Await ``pending`` on the driver's loop, as an async caller would."""

        async def wait() -> T:
            return await pending

        return self.loop.run_until_complete(wait())

    def login(self, key: str, *, username: str, password: str) -> TokenPair:
        return self.run(self.aio.login(key, username=username, password=password))

    def logout(self, key: str) -> bool:
        return self.run(self.aio.logout(key))

    def tokens(self, key: str) -> TokenPair | None:
        return self.run(self.aio.tokens(key))

    def is_connected(self, key: str) -> bool:
        return self.run(self.aio.is_connected(key))

    def current_tokens(self, key: str) -> TokenPair:
        return self.run(self.aio.current_tokens(key))

    def refresh(self, key: str) -> TokenPair:
        return self.run(self.aio.refresh(key))

    def v2_login(self, key: str, *, username: str, password: str) -> TokenPair:
        return self.run(self.aio.v2_login(key, username=username, password=password))

    def v2_connect_user_key(self, key: str, *, username: str, api_key: str) -> TokenPair:
        return self.run(self.aio.v2_connect_user_key(key, username=username, api_key=api_key))

    def v2_logout(self, key: str) -> bool:
        return self.run(self.aio.v2_logout(key))

    def v2_tokens(self, key: str) -> TokenPair | None:
        return self.run(self.aio.v2_tokens(key))

    def v2_is_connected(self, key: str) -> bool:
        return self.run(self.aio.v2_is_connected(key))

    def v2_whoami(self, key: str) -> dict[str, Any]:
        return self.run(self.aio.v2_whoami(key))

    def _calls(self, make: Callable[[], httpx.AsyncClient]) -> Calls:
        # A client takes the connection pool of the running loop: made inside it, as an
        # async caller would.
        async def inside() -> httpx.AsyncClient:
            return make()

        client = self.run(inside())
        self._clients.append(client)
        return AsyncCalls(client, self)

    def session(self, key: str) -> Calls:
        return self._calls(lambda: self.aio.session(key))

    def v2_session(self, key: str) -> Calls:
        return self._calls(lambda: self.aio.v2_session(key))

    def v2_system_session(self, system_key: str) -> Calls:
        return self._calls(lambda: self.aio.v2_system_session(system_key))

    def save(self, key: str, pair: TokenPair) -> None:
        self.run(self.aio.store.save(self.store_key(key), pair))

    def stored_keys(self, api: str | None = None) -> list[StoreKey]:
        async def collect() -> list[StoreKey]:
            return [key async for key in self.aio.store.iter_keys(api=api)]

        return self.run(collect())

    def close(self) -> None:
        if self.loop.is_closed():
            return
        for client in self._clients:
            self.run(client.aclose())
        self.run(self.aio.aclose())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


class Drivers:
    """Makes drivers of one kind; every one made is closed by :meth:`close_all`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._made: list[Driver] = []

    def __call__(self, url: str, **options: Any) -> Driver:
        """A driver on a manager for ``url`` made with the manager's ``options``."""
        driver: Driver
        if self.kind == "async":
            driver = AsyncDriver(url, **options)
        else:
            driver = SyncDriver(self.kind, url, **options)
        self._made.append(driver)
        return driver

    def memory_store(self, *, shared: bool = False) -> Any:
        """A new memory store of the kind this driver's manager takes; ``shared`` says it is
        shared, so managers on it keep a local cache in front (like worker processes)."""
        if self.kind == "async":
            return SharedAsyncMemoryStore() if shared else AsyncMemoryStore()
        return SharedMemoryStore() if shared else MemoryStore()

    def close_all(self) -> None:
        for driver in self._made:
            driver.close()


def drivers_fixture(kinds: tuple[str, ...]) -> Any:
    """A ``drivers`` fixture run once per driver kind in ``kinds`` (assign it in a conftest)."""
    import pytest

    @pytest.fixture(params=kinds)
    def drivers(request: Any) -> Iterator[Drivers]:
        made = Drivers(request.param)
        yield made
        made.close_all()

    return drivers
