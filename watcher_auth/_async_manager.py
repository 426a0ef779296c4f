"""The async token manager: the same lifecycle as :class:`~watcher_auth.TokenManager`, on
``httpx`` and an :class:`~watcher_auth.AsyncTokenStore`, never blocking the event loop.

Needs the ``httpx`` package (extra ``async``).
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx
import requests

from watcher_auth._base import CredentialsProvider, ManagerBase
from watcher_auth._calls import BearerScheme
from watcher_auth._drivers import DEFAULT_MAX_RESPONSE_BYTES, AsyncSteps, Timeout
from watcher_auth._exceptions import WatcherProtocolError
from watcher_auth._httpx import AsyncWatcherClient, FlowHttpxAuth, httpx_proxy, httpx_verify
from watcher_auth._lifecycle import Margin
from watcher_auth._tokens import Secret, TokenPair
from watcher_auth.stores import AsyncMemoryStore, AsyncTokenStore, TokenStore, resolve_async_store
from watcher_auth.stores.memory import local_reader
from watcher_auth.v2._auth import SystemApiKeyAuth
from watcher_auth.v2._lifecycle import V2Scheme
from watcher_auth.v2._policy import check_secret

__all__ = ["AsyncTokenManager"]


class _SharedTransport(httpx.AsyncBaseTransport):
    """One loop's connection pool, lent to every client of the manager (closing a client
    leaves it open; the manager closes it)."""

    def __init__(self, inner: httpx.AsyncHTTPTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        pass


def _as_async_store(store: AsyncTokenStore | TokenStore | str | None) -> AsyncTokenStore:
    # A blocking store (or a name that leads to one) runs off the event loop, its lock held
    # on one thread; see AsyncStoreAdapter.
    return AsyncMemoryStore() if store is None else resolve_async_store(store)


class AsyncTokenManager(ManagerBase):
    """Keeps Watcher credentials for many user keys of one server, for asyncio code.

    The same vocabulary and guarantees as :class:`~watcher_auth.TokenManager`: one refresh
    per key at a time across tasks (and threads: the per-key locks work across event loops),
    across processes (the store's lock), refresh before expiry and after a 401 with one retry,
    credentials only to Watcher's origin, typed errors. Calls go through ``httpx``; a
    blocking :class:`~watcher_auth.TokenStore` is run in a worker thread.

    ``async with AsyncTokenManager(url, store=...) as manager:`` closes its connection pools
    at the end (or call :meth:`aclose`). Takes the arguments of
    :class:`~watcher_auth.TokenManager`; ``credentials`` may also be a coroutine function,
    ``limits`` sets the ``httpx.Limits`` of each event loop's connection pool, and
    ``max_waiters`` defaults to 1000 (a waiting task costs far less than a waiting thread).
    """

    def __init__(
        self,
        base_url: str,
        *,
        store: AsyncTokenStore | TokenStore | str | None = None,
        credentials: CredentialsProvider | None = None,
        timeout: Timeout = 10.0,
        clock: Callable[[], float] = time.time,
        refresh_margin: float | Margin | None = None,
        lock_timeout: float = 30.0,
        local_cache_size: int = 10_000,
        verify: bool | str = True,
        limits: httpx.Limits | None = None,
        max_lifetime: float | None = None,
        deadline: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_waiters: int | None = 1000,
    ) -> None:
        self.store: AsyncTokenStore = _as_async_store(store)
        super().__init__(
            base_url,
            shared_store=self.store.shared,
            staleness_bound=self.store.staleness_bound,
            credentials=credentials,
            timeout=timeout,
            clock=clock,
            refresh_margin=refresh_margin,
            lock_timeout=lock_timeout,
            local_cache_size=local_cache_size,
            max_lifetime=max_lifetime,
            deadline=deadline,
            max_response_bytes=max_response_bytes,
            max_waiters=max_waiters,
        )
        bundle = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
        self._verify = httpx_verify(bundle if verify is True and bundle else verify)
        # Read once, as TokenManager does: httpx clients here never read the environment.
        self._proxy = httpx_proxy(requests.utils.get_environ_proxies(self.server), self.server)
        self._limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=32)
        # httpx pools belong to one event loop; a portal may run several (Flask async views
        # run each request on a new loop), so each loop gets its own.
        self._transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SharedTransport] = (
            weakref.WeakKeyDictionary()
        )
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self.steps = AsyncSteps(
            self.lifecycle, self.store, client=self._login_client, **self._step_options()
        )
        self._bearer = BearerScheme(
            self.lifecycle,
            self.api_root,
            local_read=local_reader(self.store),
        )
        self._v2_scheme = V2Scheme(self.v2)

    # --- per-loop resources -------------------------------------------------------------

    def _transport(self) -> _SharedTransport:
        loop = asyncio.get_running_loop()
        transport = self._transports.get(loop)
        if transport is None:
            inner = httpx.AsyncHTTPTransport(
                verify=self._verify, limits=self._limits, proxy=self._proxy
            )
            transport = self._transports[loop] = _SharedTransport(inner)
        return transport

    def _login_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            connect = self.timeout[0] if isinstance(self.timeout, tuple) else self.timeout
            client = self._clients[loop] = httpx.AsyncClient(
                transport=self._transport(),
                trust_env=False,
                timeout=httpx.Timeout(self.deadline, connect=min(connect, self.deadline)),
            )
        return client

    def _after_fork(self) -> None:
        super()._after_fork()
        self._transports = weakref.WeakKeyDictionary()
        self._clients = weakref.WeakKeyDictionary()

    async def _run(self, flow: Any) -> Any:
        if not self._watching:
            self._watching = True
            if self._cache is not None:
                self._cache.watch = await self.store.watch(self._cache.on_change)
        return await self.steps.run(flow)

    async def aclose(self) -> None:
        """Close this event loop's connection pool and the store's change channel."""
        loop = asyncio.get_running_loop()
        self._clients.pop(loop, None)
        transport = self._transports.pop(loop, None)
        if transport is not None:
            await transport.inner.aclose()
        if self._cache is not None and self._cache.watch is not None:
            self._cache.watch.close()
            self._cache.watch = None
        self._watching = False

    async def __aenter__(self) -> AsyncTokenManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- API v3 -----------------------------------------------------------------------

    async def login(self, key: str, *, username: str, password: str) -> TokenPair:
        """See :meth:`TokenManager.login`."""
        flow = self.lifecycle.login(key, username, Secret(password))
        del password  # only the flow holds it now: crash reporters capture frame locals
        result: TokenPair = await self._run(flow)
        return result

    async def logout(self, key: str) -> bool:
        """See :meth:`TokenManager.logout`."""
        result: bool = await self._run(self.lifecycle.logout(self.store_key(key)))
        return result

    async def tokens(self, key: str) -> TokenPair | None:
        """See :meth:`TokenManager.tokens`."""
        return await self.store.load(self.store_key(key))

    async def is_connected(self, key: str) -> bool:
        """See :meth:`TokenManager.is_connected`."""
        skey = self.store_key(key)
        return self.lifecycle.cached(skey) is not None or await self.store.load(skey) is not None

    async def current_tokens(self, key: str) -> TokenPair:
        """See :meth:`TokenManager.current_tokens`."""
        result: TokenPair = await self._run(self.lifecycle.current(key))
        return result

    async def access_token(self, key: str) -> str:
        """See :meth:`TokenManager.access_token`."""
        return (await self.current_tokens(key)).access_token

    async def refresh(self, key: str) -> TokenPair:
        """See :meth:`TokenManager.refresh`."""
        skey = self.store_key(key)
        seen = await self.store.load(skey)
        result: TokenPair = await self._run(self.lifecycle.refresh(skey, seen=seen, force=True))
        return result

    async def refresh_after_unauthorized(self, key: str, sent: TokenPair) -> TokenPair:
        """See :meth:`TokenManager.refresh_after_unauthorized`."""
        result: TokenPair = await self._run(self.lifecycle.refresh_after_unauthorized(key, sent))
        return result

    def auth(self, key: str) -> FlowHttpxAuth:
        """``httpx`` auth for ``key``, for an ``httpx.AsyncClient`` of your own."""
        return FlowHttpxAuth(self._bearer, key, async_steps=self.steps)

    def session(self, key: str, **options: Any) -> AsyncWatcherClient:
        """An ``httpx.AsyncClient`` for ``key`` whose relative paths resolve against API v3.

        ``await manager.session(key).get("streams")``. It shares the manager's connection
        pool (closing it is cheap and optional); creating one does no I/O.
        """
        return self._client(self.auth(key), self.api_root, v2=False, options=options)

    def _client(
        self, auth: httpx.Auth, base_url: str, *, v2: bool, options: dict[str, Any]
    ) -> AsyncWatcherClient:
        options.setdefault("timeout", self.timeout)
        if "transport" not in options and "verify" not in options:
            options["transport"] = self._transport()
        elif "transport" not in options and "mounts" not in options:
            options.setdefault("proxy", self._proxy)
        return AsyncWatcherClient(
            base_url=base_url,
            auth=auth,
            max_response_bytes=self.max_response_bytes,
            v2=v2,
            **options,
        )

    def __repr__(self) -> str:
        return f"AsyncTokenManager({self.server!r}, store={self.store!r})"

    # --- API v2 -----------------------------------------------------------------------

    async def v2_login(self, key: str, *, username: str, password: str) -> TokenPair:
        """See :meth:`TokenManager.v2_login`."""
        flow = self.v2.login(key, username, Secret(password))
        del password
        result: TokenPair = await self._run(flow)
        return result

    async def v2_connect_user_key(self, key: str, *, username: str, api_key: str) -> TokenPair:
        """See :meth:`TokenManager.v2_connect_user_key`."""
        check_secret(username, "Watcher login")
        flow = self.v2.connect_user_key(
            key, username, Secret(check_secret(api_key, "user API key"))
        )
        del api_key
        result: TokenPair = await self._run(flow)
        return result

    async def v2_logout(self, key: str) -> bool:
        """See :meth:`TokenManager.v2_logout`."""
        result: bool = await self._run(self.v2.logout(key))
        return result

    async def v2_tokens(self, key: str) -> TokenPair | None:
        """See :meth:`TokenManager.v2_tokens`."""
        return await self.store.load(self.v2.store_key(key))

    async def v2_is_connected(self, key: str) -> bool:
        """See :meth:`TokenManager.v2_is_connected`."""
        if self.lifecycle.cached(self.v2.store_key(key)) is not None:
            return True
        return await self.v2_tokens(key) is not None

    async def v2_whoami(self, key: str) -> dict[str, Any]:
        """See :meth:`TokenManager.v2_whoami`."""
        data = await self.v2_session(key).json("auth/whoami")
        if not isinstance(data, dict):
            raise WatcherProtocolError("Watcher's whoami answer is not a JSON object")
        return data

    def v2_auth(self, key: str) -> FlowHttpxAuth:
        """``httpx`` auth with ``key``'s API v2 record (see :class:`WatcherV2Auth`)."""
        return FlowHttpxAuth(self._v2_scheme, key, async_steps=self.steps)

    def v2_session(self, key: str, **options: Any) -> AsyncWatcherClient:
        """An ``httpx.AsyncClient`` for ``key`` on API v2 (``await s.get("cameras")``)."""
        return self._client(self.v2_auth(key), self.v2.api_root, v2=True, options=options)

    def v2_system_session(self, system_key: str, **options: Any) -> AsyncWatcherClient:
        """An ``httpx.AsyncClient`` for API v2 with Watcher's system key (not stored)."""
        return self._client(
            _SystemKeyAuth(system_key, self.server), self.v2.api_root, v2=True, options=options
        )


class _SystemKeyAuth(httpx.Auth):
    """Watcher's system key as an ``httpx`` auth, sent only to Watcher's origin."""

    def __init__(self, system_key: str, origin: str) -> None:
        self._key = SystemApiKeyAuth(system_key, origin=origin)

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers.update(self._key.headers_for(str(request.url)))
        yield request

    def __repr__(self) -> str:
        return "SystemKeyAuth(api_key='***')"
