"""The ``httpx`` drivers of the call flow: an auth object and clients, sync and async.

Needs the ``httpx`` package (extra ``async``).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from typing import Any

import httpx

from watcher_auth._calls import CallScheme, KeyedCopy, answered, call_flow, replace_credentials
from watcher_auth._drivers import (
    DEFAULT_MAX_RESPONSE_BYTES,
    AsyncSteps,
    SyncSteps,
    drive,
    drive_async,
    read_limited,
    read_limited_async,
)
from watcher_auth._effects import Answer
from watcher_auth._exceptions import ConfigurationError, WatcherConnectionError
from watcher_auth._policy import CursorPages, decode_answer
from watcher_auth._session import NoCookies
from watcher_auth._tokens import TokenPair
from watcher_auth._urls import default_port, is_absolute, origin_of, path_only
from watcher_auth.v2._policy import OffsetPages

__all__ = ["AsyncWatcherClient", "FlowHttpxAuth", "WatcherClient", "httpx_proxy", "httpx_verify"]

logger = logging.getLogger("watcher_auth")


def httpx_verify(verify: bool | str) -> bool | ssl.SSLContext:
    """``verify`` as httpx takes it: a CA bundle path (file or directory) becomes an SSL
    context, since httpx deprecates paths."""
    if isinstance(verify, bool):
        return verify
    if os.path.isdir(verify):
        return ssl.create_default_context(capath=verify)
    return ssl.create_default_context(cafile=verify)


def httpx_proxy(proxies: Mapping[str, str], server: str) -> str | None:
    """The proxy for ``server`` from ``requests``' reading of the environment
    (``HTTP(S)_PROXY``, ``ALL_PROXY``, already empty when ``NO_PROXY`` names the host)."""
    scheme = server.split("://", 1)[0]
    return proxies.get(scheme) or proxies.get("all") or None


class _HttpxCall:
    """An ``httpx.Request`` as the call flow sees it (httpx sends the same object again)."""

    __slots__ = ("_names", "replayable", "request")

    def __init__(self, request: httpx.Request, names: tuple[str, ...]) -> None:
        self.request = request
        self._names = names
        # The auth flows read the body first, so it can be sent again.
        self.replayable = True

    @property
    def url(self) -> str:
        return str(self.request.url)

    def set_credentials(self, headers: Mapping[str, str]) -> None:
        replace_credentials(self.request.headers, self._names, headers)


class FlowHttpxAuth(KeyedCopy, httpx.Auth):
    """``httpx`` auth that runs the call flow for one user key and one scheme.

    Made by :meth:`TokenManager.httpx_auth` (works with ``httpx.Client``) and
    :meth:`AsyncTokenManager.auth` (works with ``httpx.AsyncClient``).
    """

    requires_request_body = True

    def __init__(
        self,
        scheme: CallScheme,
        key: str,
        *,
        sync_steps: SyncSteps | None = None,
        async_steps: AsyncSteps | None = None,
    ) -> None:
        self._sync = sync_steps
        self._async = async_steps
        self._keep_copies(scheme, key)

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        steps = self._sync
        if steps is None:
            raise ConfigurationError(
                "this auth belongs to an AsyncTokenManager: use it with httpx.Client"
            )
        # httpx's own auth_flow wrappers read the body for requires_request_body; these
        # replace them, so they read it: a one-shot stream can then be sent again.
        request.read()
        call = _HttpxCall(request, self._scheme.header_names)
        pair = self._copy(call)
        if pair is not None:
            response = yield call.request
            if not self._challenged(response):
                return
            response.read()
            flow = answered(self._scheme, self.key, call, pair, self._answer(response))
            wants_send, _ = drive(flow, steps)
        else:
            flow = call_flow(self._scheme, self.key, call)
            wants_send, _ = drive(flow, steps)
        while wants_send:
            response = yield call.request
            if response.status_code == self._scheme.challenge:
                response.read()
            wants_send, _ = drive(flow, steps, self._answer(response))

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        steps = self._async
        if steps is None:
            raise ConfigurationError(
                "this auth belongs to a TokenManager: use it with httpx.Client, or make an "
                "AsyncTokenManager for httpx.AsyncClient"
            )
        await request.aread()
        call = _HttpxCall(request, self._scheme.header_names)
        pair = self._copy(call)
        if pair is not None:
            response = yield call.request
            if not self._challenged(response):
                return
            await response.aread()
            flow = answered(self._scheme, self.key, call, pair, self._answer(response))
            wants_send, _ = await drive_async(flow, steps)
        else:
            flow = call_flow(self._scheme, self.key, call)
            wants_send, _ = await drive_async(flow, steps)
        while wants_send:
            response = yield call.request
            if response.status_code == self._scheme.challenge:
                await response.aread()
            wants_send, _ = await drive_async(flow, steps, self._answer(response))

    def _copy(self, call: _HttpxCall) -> TokenPair | None:
        """The common case: a call to Watcher's origin while this process holds a fresh copy
        (by the cache's rules, change notices included), attached with no step at all; the
        flow then starts at Watcher's answer (see :func:`answered`)."""
        if not call.url.startswith(self._scheme.prefix):
            return None
        pair = self.fresh_copy()
        if pair is not None:
            call.set_credentials(self.headers_for(pair))
        return pair

    def _challenged(self, response: httpx.Response) -> bool:
        """Whether the answer to a fresh copy needs the rest of the flow; if not, only
        Watcher's clock is noted (all the flow would do)."""
        if response.status_code == self._scheme.challenge:
            return True
        date = response.headers.get("Date")
        lifecycle = self._scheme.lifecycle
        lifecycle.server_clock.observe_date(date, lifecycle.clock)
        return False

    def _answer(self, response: httpx.Response) -> Answer:
        challenged = response.status_code == self._scheme.challenge
        return Answer(
            response.status_code,
            str(response.url),
            response.headers.get("Date"),
            response.content if challenged else b"",
        )

    def __repr__(self) -> str:
        return f"FlowHttpxAuth(key={self.key!r})"


def _strip_foreign(origin: tuple[str, str, int], names: tuple[str, ...]) -> Any:
    scheme, host, port = origin

    def strip(request: httpx.Request) -> None:
        # httpx keeps Authorization on an http -> https redirect to the same host; the
        # credentials belong to Watcher's exact origin only.
        url = request.url
        if url.host == host and url.scheme == scheme and (url.port or default_port(scheme)) == port:
            return  # Watcher's origin, read off the parsed URL
        if origin_of(str(url)) != origin:
            for name in names:
                request.headers.pop(name, None)

    return strip


def _absolute(base_url: str, url: Any) -> Any:
    """A relative path as the absolute URL httpx would make of it against ``base_url``,
    built as text (httpx otherwise parses the URL twice)."""
    if isinstance(url, str) and not is_absolute(url):
        return base_url + url.lstrip("/")
    return url


def _client_options(
    base_url: str, auth: FlowHttpxAuth | httpx.Auth, options: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    names = getattr(getattr(auth, "_scheme", None), "header_names", ("Authorization",))
    strip = _strip_foreign(origin_of(base_url), (*names, "x-vsaas-api-key", "x-vsaas-user"))
    options.setdefault("trust_env", False)
    cookies = httpx.Cookies()
    cookies.jar.set_policy(NoCookies())
    return {"base_url": base_url, "auth": auth, "cookies": cookies, **options}, strip


class WatcherClient(httpx.Client):
    """An ``httpx.Client`` bound to one user key of one Watcher server.

    Relative paths resolve against the API root (``client.get("streams")``); answers are read
    up to ``max_response_bytes`` after decompression; cookies are not kept; credentials go
    only to Watcher's origin, on an absolute URL or a redirect.
    """

    def __init__(
        self,
        *,
        base_url: str,
        auth: httpx.Auth,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        v2: bool = False,
        **options: Any,
    ) -> None:
        kwargs, strip = _client_options(base_url, auth, options)
        super().__init__(**kwargs)
        self.event_hooks["request"].append(strip)
        self.max_response_bytes = max_response_bytes
        self._v2 = v2
        self._root = str(self.base_url)

    def request(self, method: str, url: Any, **kwargs: Any) -> httpx.Response:
        return super().request(method, _absolute(self._root, url), **kwargs)

    def send(
        self, request: httpx.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        failure = ""
        try:
            response = super().send(request, stream=True, **kwargs)
            if not stream:
                try:
                    body = read_limited(response.iter_bytes(), self.max_response_bytes)
                finally:
                    response.close()
                response._content = body
        except httpx.HTTPError as exc:
            failure = type(exc).__name__
        if failure:
            raise WatcherConnectionError(
                f"Watcher call {request.method} {path_only(str(request.url))} failed ({failure})"
            )
        return response

    def json(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` and return its JSON, raising :class:`WatcherAPIError` on an error status."""
        return _decode(self.get(path, **kwargs))

    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        item_key: str | None = None,
        limit: int | None = None,
        max_pages: int | None = None,
    ) -> Iterator[Any]:
        """Every item of a paginated list (see :meth:`WatcherSession.paginate`)."""
        pager = OffsetPages if self._v2 else CursorPages
        pages = pager(path, params=params, item_key=item_key, limit=limit, max_pages=max_pages)
        more = True
        while more:
            items, more = pages.take(_decode(self.get(path, params=pages.query)))
            yield from items


class AsyncWatcherClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` bound to one user key of one Watcher server.

    Made by :meth:`AsyncTokenManager.client`; the same promises as :class:`WatcherClient`,
    and no call blocks the event loop.
    """

    def __init__(
        self,
        *,
        base_url: str,
        auth: httpx.Auth,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        v2: bool = False,
        **options: Any,
    ) -> None:
        kwargs, strip = _client_options(base_url, auth, options)
        super().__init__(**kwargs)

        async def strip_foreign(request: httpx.Request) -> None:
            strip(request)

        self.event_hooks["request"].append(strip_foreign)
        self.max_response_bytes = max_response_bytes
        self._v2 = v2
        self._root = str(self.base_url)

    async def request(self, method: str, url: Any, **kwargs: Any) -> httpx.Response:
        return await super().request(method, _absolute(self._root, url), **kwargs)

    async def send(
        self, request: httpx.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        failure = ""
        try:
            response = await super().send(request, stream=True, **kwargs)
            if not stream:
                try:
                    body = await read_limited_async(response.aiter_bytes(), self.max_response_bytes)
                finally:
                    await response.aclose()
                response._content = body
        except httpx.HTTPError as exc:
            failure = type(exc).__name__
        if failure:
            raise WatcherConnectionError(
                f"Watcher call {request.method} {path_only(str(request.url))} failed ({failure})"
            )
        return response

    async def json(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` and return its JSON, raising :class:`WatcherAPIError` on an error status."""
        return _decode(await self.get(path, **kwargs))

    async def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        item_key: str | None = None,
        limit: int | None = None,
        max_pages: int | None = None,
    ) -> AsyncIterator[Any]:
        """Every item of a paginated list: ``async for stream in client.paginate("streams")``."""
        pager = OffsetPages if self._v2 else CursorPages
        pages = pager(path, params=params, item_key=item_key, limit=limit, max_pages=max_pages)
        more = True
        while more:
            items, more = pages.take(_decode(await self.get(path, params=pages.query)))
            for item in items:
                yield item


def _decode(response: httpx.Response) -> Any:
    return decode_answer(
        response.status_code,
        response.content,
        method=response.request.method,
        path=path_only(str(response.url)),
    )
