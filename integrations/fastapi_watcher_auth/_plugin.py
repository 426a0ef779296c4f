"""The plugin object, its per-app state, the dependencies and the error handlers."""

# No ``from __future__ import annotations``: FastAPI reads the dependencies' signatures at
# run time, and the closures' ``Annotated[..., Depends(local)]`` must be evaluated here.

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import Lifespan

from fastapi_watcher_auth._settings import WatcherSettings, build_store, load_settings
from watcher_auth import (
    AsyncTokenManager,
    AsyncTokenStore,
    AsyncWatcherClient,
    ConfigurationError,
    Listener,
    NotConnected,
    TokenStore,
    WatcherAuthError,
    web,
)
from watcher_auth.v2 import SYSTEM_API_KEY_ENV
from watcher_auth.web import ErrorAnswer, FailureLog, error_answer

__all__ = ["STATE_NAME", "WatcherAuth", "WatcherState", "get_state"]

#: The attribute of ``app.state`` that holds the plugin's :class:`WatcherState`.
STATE_NAME = "watcher_auth"

logger = logging.getLogger("fastapi_watcher_auth")

UserKeyDependency = Callable[..., Any]


class WatcherState:
    """What the plugin keeps for one app (``app.state.watcher_auth``).

    Attributes:
        settings: the validated ``WATCHER_*`` settings.
        failures: logs failures answered to clients; repeats at most once a minute.
    """

    def __init__(self, plugin: "WatcherAuth", settings: WatcherSettings) -> None:
        self.plugin = plugin
        self.settings = settings
        self.failures = FailureLog(logger)
        self._manager: AsyncTokenManager | None = None

    @property
    def manager(self) -> AsyncTokenManager:
        """This worker's :class:`~watcher_auth.AsyncTokenManager`, made by the app's lifespan.

        Raises:
            ConfigurationError: the lifespan has not started (or has ended).
        """
        if self._manager is None:
            raise ConfigurationError(
                "WatcherAuth's token manager is made in the app's lifespan, which has not "
                "started: serve the app with lifespan events on, or wrap the code in "
                "`async with watcher_auth.lifespan(app):`"
            )
        return self._manager

    @property
    def store(self) -> AsyncTokenStore:
        """The token store of :attr:`manager`."""
        return self.manager.store

    def connect_url(self, request: Request, api: str = "v3") -> str | None:
        """Where a JSON client connects a Watcher account (``None`` without the router)."""
        prefix = self.settings.url_prefix
        if prefix is None:
            return None
        root = str(request.scope.get("root_path", ""))
        return f"{root}{prefix}/connect{'/v2' if api == 'v2' else ''}"

    def __repr__(self) -> str:
        return f"<WatcherState {self.settings.url}>"


def get_state(app: FastAPI) -> WatcherState:
    """The plugin's state for ``app``.

    Raises:
        ConfigurationError: WatcherAuth was not set up on the app.
    """
    state = getattr(app.state, STATE_NAME, None)
    if not isinstance(state, WatcherState):
        raise ConfigurationError("WatcherAuth is not set up on this app: call init_app(app)")
    return state


class WatcherAuth:
    """Connects a FastAPI (or Starlette) app's users to their Watcher accounts.

    ``WatcherAuth(app, user_key=current_user_id, settings={...})``, or without ``app`` and
    ``init_app(app)`` later. ``user_key`` is the app's own authentication dependency: it
    returns the signed-in portal user's id (a ``str`` or ``int``), or ``None`` for nobody.
    The dependencies :attr:`watcher`, :attr:`watcher_v2` and :attr:`watcher_system` give a
    view the user's :class:`~watcher_auth.AsyncWatcherClient`::

        watcher_auth = WatcherAuth(app, user_key=current_user_id, settings=settings)

        @app.get("/cameras")
        async def cameras(watcher: AsyncWatcherClient = Depends(watcher_auth.watcher)):
            return [s["name"] async for s in watcher.paginate("streams")]

    Args:
        app: the app to set up now.
        user_key: the app's dependency returning the portal user's id, or ``None``.
        settings: the ``WATCHER_*`` settings (:data:`~fastapi_watcher_auth.DEFAULTS`).
        store: a token store to use instead of the one ``WATCHER_STORE`` names (the app's
            lifespan does not close it).
    """

    def __init__(
        self,
        app: FastAPI | None = None,
        *,
        user_key: UserKeyDependency,
        settings: Mapping[str, Any] | None = None,
        store: AsyncTokenStore | TokenStore | None = None,
    ) -> None:
        if not callable(user_key):
            raise ConfigurationError("user_key must be a FastAPI dependency (a callable)")
        self._config = dict(settings or {})
        self._store = store
        self._listeners: list[Listener] = []
        self._make_dependencies(user_key)
        from fastapi_watcher_auth._router import build_router

        #: The ``APIRouter`` with ``connect``, ``connect/v2``, ``disconnect`` and ``status``;
        #: ``init_app`` includes it under ``WATCHER_URL_PREFIX``.
        self.router = build_router(self)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: FastAPI) -> None:
        """Validate the settings, then install the state, lifespan, handlers and router.

        The app's lifespan (any it already has runs inside) makes the token manager and
        store at start-up and closes them at shutdown.

        Raises:
            ConfigurationError: a setting is missing or wrong (the message names it), or the
                plugin is already set up on ``app``.
        """
        if isinstance(getattr(app.state, STATE_NAME, None), WatcherState):
            raise ConfigurationError("WatcherAuth is already set up on this app")
        settings = load_settings(self._config)
        if self._store is None and settings.store == "memory":
            logger.warning(
                "WATCHER_STORE is 'memory': tokens live in this process only and are lost on "
                "restart; with several worker processes use 'redis' or 'sqlalchemy'"
            )
        setattr(app.state, STATE_NAME, WatcherState(self, settings))
        app.add_exception_handler(WatcherAuthError, _answer_failure)
        app.add_exception_handler(httpx.HTTPStatusError, _answer_failure)
        if settings.url_prefix is not None:
            app.include_router(self.router, prefix=settings.url_prefix)
        app.router.lifespan_context = self._wrap_lifespan(app.router.lifespan_context)

    def add_listener(self, listener: Listener) -> Listener:
        """Call ``listener(event)`` for each :class:`~watcher_auth.WatcherEvent` of the app.

        Events: ``CONNECTED``, ``REFRESHED``, ``REFRESH_REJECTED``,
        ``REAUTHENTICATION_REQUIRED``, ``DISCONNECTED`` and the operational ones (see
        :class:`~watcher_auth.EventType`); none carries a secret. Listeners run inline on
        the event loop: keep them quick, and start a task for slow work. Register them before
        the app starts. Returns ``listener``, so it works as a decorator.
        """
        self._listeners.append(listener)
        return listener

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Make the token manager and store for ``app``, and close them on the way out.

        ``init_app`` runs it inside the app's lifespan; use it directly where no lifespan
        runs (``httpx.ASGITransport`` in tests). Nested use is a no-op.
        """
        state = get_state(app)
        if state._manager is not None:
            yield
            return
        settings = state.settings
        store = self._store if self._store is not None else build_store(settings)
        options: dict[str, Any] = {}
        if settings.clock is not None:
            options["clock"] = settings.clock
        manager = AsyncTokenManager(
            settings.url,
            store=store,
            timeout=settings.timeout,
            refresh_margin=settings.refresh_margin,
            lock_timeout=settings.lock_timeout,
            local_cache_size=settings.local_cache_size,
            verify=settings.verify_tls,
            **options,
        )
        for listener in self._listeners:
            manager.add_listener(listener)
        state._manager = manager
        try:
            yield
        finally:
            state._manager = None
            await manager.aclose()
            if self._store is None:
                await manager.store.aclose()

    def _wrap_lifespan(self, inner: Lifespan[Any]) -> Lifespan[Any]:
        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[Any]:
            async with self.lifespan(app), inner(app) as inner_state:
                yield inner_state

        return lifespan

    def _make_dependencies(self, user_key: UserKeyDependency) -> None:
        async def signed_in_key(user: Annotated[Any, Depends(user_key)]) -> str | None:
            if user is None or user == "":
                return None
            return web.portal_key(str(user))

        async def portal_key(key: Annotated[str | None, Depends(signed_in_key)]) -> str:
            if key is None:
                raise NotConnected("", "nobody is signed in to the portal, so no Watcher account")
            return key

        async def watcher(
            request: Request, key: Annotated[str, Depends(portal_key)]
        ) -> AsyncIterator[AsyncWatcherClient]:
            manager = get_state(request.app).manager
            # Refreshed (or found missing) before the view runs, as Flask's watcher_required.
            await manager.current_tokens(key)
            async with manager.session(key) as client:
                yield client

        async def watcher_v2(
            request: Request, key: Annotated[str, Depends(portal_key)]
        ) -> AsyncIterator[AsyncWatcherClient]:
            request.state.watcher_api = "v2"
            manager = get_state(request.app).manager
            if not await manager.v2_is_connected(key):
                raise NotConnected(key)
            async with manager.v2_session(key) as client:
                yield client

        async def watcher_system(request: Request) -> AsyncIterator[AsyncWatcherClient]:
            state = get_state(request.app)
            system_key = state.settings.system_api_key
            if system_key is None:
                raise ConfigurationError(
                    "watcher_system needs Watcher's API v2 system key: set "
                    f"WATCHER_SYSTEM_API_KEY or the environment variable {SYSTEM_API_KEY_ENV}"
                )
            async with state.manager.v2_system_session(system_key) as client:
                yield client

        #: Dependency: the signed-in user's store key, or ``None`` for nobody.
        self.signed_in_key = signed_in_key
        #: Dependency: the signed-in user's store key (:func:`watcher_auth.web.portal_key`
        #: of their id); nobody signed in answers 401 ``watcher_not_connected``.
        self.user_key = portal_key
        #: Dependency: the user's API v3 :class:`~watcher_auth.AsyncWatcherClient`, tokens
        #: refreshed first when due; 401 ``watcher_not_connected`` without an account.
        self.watcher = watcher
        #: Dependency: the user's API v2 client (their stored session or user key).
        self.watcher_v2 = watcher_v2
        #: Dependency: an API v2 client with Watcher's system key (super-admin rights: use it
        #: only in staff-only views).
        self.watcher_system = watcher_system


async def _answer_failure(request: Request, exc: Exception) -> JSONResponse:
    """The policy's JSON answer (:func:`watcher_auth.web.error_answer`) to a failure: the
    library's errors, and a view's ``raise_for_status()`` on Watcher's answer."""
    answer = error_answer(exc, watcher_origin=get_state(request.app).settings.url)
    if answer is None:
        raise exc  # another host's error: not ours to answer
    return answer_response(request, exc, answer)


def answer_response(request: Request, exc: BaseException, answer: ErrorAnswer) -> JSONResponse:
    """``answer`` as JSON (``error``, ``message``, ``connect_url``...) with ``Retry-After``."""
    state = get_state(request.app)
    state.failures.log(exc, answer, where=request.url.path)
    body = answer.as_json()
    if answer.connect:
        api = getattr(request.state, "watcher_api", "v3")
        url = state.connect_url(request, api)
        if url is not None:
            body["connect_url"] = url
    headers = {} if answer.retry_after is None else {"Retry-After": str(answer.retry_after)}
    return JSONResponse(body, status_code=answer.status, headers=headers)
