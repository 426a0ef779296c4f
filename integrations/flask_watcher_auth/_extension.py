"""The extension object, its per-app state, ``current_watcher`` and ``watcher_required``,
their API v2 twins ``current_watcher_v2``, ``current_watcher_system`` and
``watcher_v2_required``, and the async views' ``current_watcher_async`` (and its v2 twins)."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlencode

import requests
from flask import (
    Flask,
    current_app,
    flash,
    g,
    has_app_context,
    has_request_context,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.globals import _cv_app, _cv_request
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response as BaseResponse

from flask_watcher_auth._csrf import SessionCsrf, WTFCsrf, choose_csrf
from flask_watcher_auth._settings import (
    CONFIG_DEFAULTS,
    SYSTEM_API_KEY_ENV,
    WatcherSettings,
    build_store,
    check_process_model,
    load_settings,
    probe_store,
)
from flask_watcher_auth.signals import SIGNALS
from watcher_auth import (
    ConfigurationError,
    NotConnected,
    SessionLoan,
    TokenManager,
    TokenStore,
    WatcherAuthError,
    WatcherEvent,
    WatcherSession,
    web,
)
from watcher_auth.otel import instrument
from watcher_auth.stores import resolve_async_store
from watcher_auth.v2 import WatcherV2Session
from watcher_auth.web import (
    ErrorAnswer,
    FailureLog,
    LastAnswer,
    error_answer,
    portal_key,
    report_answers,
    service_key,
)

if TYPE_CHECKING:
    import httpx
    from flask.ctx import AppContext, _AppCtxGlobals

    from watcher_auth import AsyncTokenManager, AsyncWatcherClient

__all__ = [
    "EXTENSION_KEY",
    "SERVICE_ACCOUNT_KEY",
    "WatcherAuth",
    "WatcherState",
    "answer_response",
    "current_watcher",
    "current_watcher_async",
    "current_watcher_system",
    "current_watcher_system_async",
    "current_watcher_v2",
    "current_watcher_v2_async",
    "get_state",
    "watcher_required",
    "watcher_v2_required",
]

EXTENSION_KEY = "watcher_auth"
#: The user key under which the service account's tokens are stored. No portal user's key
#: can be this (see :func:`watcher_auth.web.portal_key`).
SERVICE_ACCOUNT_KEY = service_key("watcher-service-account")

F = TypeVar("F", bound=Callable[..., Any])
UserKeyLoader = Callable[[], "str | int | None"]


class WatcherAuth:
    """Connects a Flask app's users to their Watcher accounts.

    ``WatcherAuth(app)``, or ``watcher_auth = WatcherAuth()`` then ``init_app(app)`` in an
    application factory. Everything per app lives in ``app.extensions["watcher_auth"]``
    (a :class:`WatcherState`), so one object serves several apps.

    Args:
        app: the app to set up now.
        store: a token store to use instead of the one ``WATCHER_STORE`` names.
    """

    def __init__(self, app: Flask | None = None, *, store: TokenStore | None = None) -> None:
        self._store = store
        self._user_key_loader: UserKeyLoader | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read and validate the ``WATCHER_*`` config, then register the blueprint, error
        handlers and CLI commands.

        Unknown ``WATCHER_*`` keys are logged with the closest known one; a ``"memory"`` store
        is logged as per-process, and refused when ``WATCHER_MULTIPROCESS`` is true (or, when
        it is ``None``, the environment variable ``WEB_CONCURRENCY`` is above 1). With
        ``WATCHER_CHECK_STORE_ON_START`` the store is read once here.

        Raises:
            ConfigurationError: a ``WATCHER_*`` key is missing or wrong (the message names it),
                or a per-process store in a multi-process app.
            StoreError: ``WATCHER_CHECK_STORE_ON_START`` is on and the store failed.
        """
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError("WatcherAuth is already set up on this app")
        settings = load_settings(app)
        store = self._store if self._store is not None else build_store(settings)
        check_process_model(settings, store)
        if settings.check_store_on_start:
            probe_store(settings, store)
        app.extensions[EXTENSION_KEY] = WatcherState(self, app, settings, store)

        from flask_watcher_auth._cli import watcher_cli
        from flask_watcher_auth._views import blueprint, refuse_framing

        app.register_blueprint(blueprint, url_prefix=settings.url_prefix or None)
        app.after_request(refuse_framing)
        app.register_error_handler(WatcherAuthError, _handle_watcher_error)
        app.register_error_handler(requests.RequestException, _handle_requests_error)
        try:
            import httpx
        except ImportError:  # no async views without it
            pass
        else:  # an async view's raise_for_status() on Watcher's answer
            app.register_error_handler(httpx.HTTPStatusError, _handle_requests_error)
        app.teardown_appcontext(_close_request_session)
        app.cli.add_command(watcher_cli)
        _close_async_clients_after(app)

    def user_key_loader(self, loader: UserKeyLoader) -> UserKeyLoader:
        """Register ``loader() -> str | None`` giving the signed-in portal user's key.

        It replaces Flask-Login's ``current_user.get_id()``; ``None`` means nobody is signed in.
        """
        self._user_key_loader = loader
        return loader

    @property
    def manager(self) -> TokenManager:
        """The current app's :class:`~watcher_auth.TokenManager`."""
        return get_state().manager

    def forget_user(self, user_id: str | int, *, app: Flask | None = None) -> bool:
        """Forget a portal user's Watcher records (API v3 and v2): call it when deleting them.

        ``user_id`` is what Flask-Login's ``get_id()`` (or the ``user_key_loader``) gives
        for that user. Records the current encryption keys cannot read are deleted too.
        Returns whether any record existed.

        Raises:
            StoreError: the store failed; nothing may have been deleted.
        """
        state = get_state(app)
        return web.forget(state.manager, portal_key(str(user_id)))

    def forget_deleted_users(self, model: type[Any], *, id_attribute: str = "id") -> None:
        """Forget the Watcher records of every ``model`` row deleted through the ORM.

        For SQLAlchemy (and Flask-SQLAlchemy) user models: the records go when the session
        that deleted the row commits, not if it rolls back. ``id_attribute`` holds the id
        Flask-Login's ``get_id()`` returns. Bulk ``DELETE`` statements bypass the ORM and
        this hook; call :meth:`forget_user` for those. Call it with the app's context
        active, once per model.
        """
        from sqlalchemy import event
        from sqlalchemy.orm import Session, object_session

        app = cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
        pending_key = f"watcher_auth_deleted_{id(self)}_{id(app)}"

        def remember(_mapper: Any, _connection: Any, target: Any) -> None:
            session = object_session(target)
            if session is not None:
                session.info.setdefault(pending_key, []).append(str(getattr(target, id_attribute)))

        def forget_all(session: Session) -> None:
            for user_id in session.info.pop(pending_key, []):
                with app.app_context():
                    try:
                        self.forget_user(user_id, app=app)
                    except WatcherAuthError as exc:
                        logging.getLogger("flask_watcher_auth").warning(
                            "the Watcher records of deleted portal user %r were kept: %s",
                            user_id,
                            exc,
                        )

        def drop(session: Session, *_args: Any) -> None:
            session.info.pop(pending_key, None)

        event.listen(model, "after_delete", remember)
        event.listen(Session, "after_commit", forget_all)
        event.listen(Session, "after_soft_rollback", drop)


# How many times this process's line has forked: a forked worker's state makes its own
# managers (compared on every request, where os.getpid() would be a system call).
_FORKS = [0]


def _forked() -> None:
    _FORKS[0] += 1


os.register_at_fork(after_in_child=_forked)


class WatcherState:
    """What the extension keeps for one app (``app.extensions["watcher_auth"]``).

    Attributes:
        settings: the validated ``WATCHER_*`` configuration.
        store: the token store.
        csrf: the CSRF protection of the blueprint's forms.
    """

    def __init__(
        self, extension: WatcherAuth, app: Flask, settings: WatcherSettings, store: TokenStore
    ) -> None:
        self.extension = extension
        self.app = app
        self.settings = settings
        self.store = store
        self.csrf: SessionCsrf | WTFCsrf = choose_csrf()
        #: Logs failures answered to visitors; repeats at most once a minute, with a count.
        self.failures = FailureLog(logging.getLogger("flask_watcher_auth"))
        self._manager: TokenManager | None = None
        self._manager_fork = -1
        self._async_manager: AsyncTokenManager | None = None
        self._async_manager_fork = -1
        self._guard = threading.Lock()
        self._make_manager()  # Now, so wrong settings fail at start-up.

    @property
    def manager(self) -> TokenManager:
        """This process's token manager (a forked worker gets its own)."""
        manager = self._manager
        if manager is None or self._manager_fork != _FORKS[0]:
            with self._guard:
                manager = self._manager
                if manager is None or self._manager_fork != _FORKS[0]:
                    manager = self._make_manager()
        return manager

    @property
    def async_manager(self) -> AsyncTokenManager:
        """This process's :class:`~watcher_auth.AsyncTokenManager`, for async views.

        It keeps its records in the same store as :attr:`manager` (run in worker threads,
        so any event loop can use it: Flask runs each async view on a new one) and keeps no
        per-process copies: each async request reads the store. Needs ``httpx``.
        """
        manager = self._async_manager
        if manager is None or self._async_manager_fork != _FORKS[0]:
            with self._guard:
                manager = self._async_manager
                if manager is None or self._async_manager_fork != _FORKS[0]:
                    manager = self._make_async_manager()
        return manager

    def _make_async_manager(self) -> AsyncTokenManager:
        from watcher_auth import AsyncTokenManager

        settings = self.settings
        options: dict[str, Any] = {}
        if settings.clock is not None:
            options["clock"] = settings.clock
        manager = AsyncTokenManager(
            settings.url,
            store=resolve_async_store(self.store),
            credentials=self._service_credentials if settings.has_service_account else None,
            timeout=settings.timeout,
            refresh_margin=settings.refresh_margin,
            lock_timeout=settings.lock_timeout,
            # A change channel would report to the event loop that opened it, and each async
            # view's loop is closed after it: no copies, so none can go stale unnoticed.
            local_cache_size=0,
            verify=settings.verify_tls,
            **options,
        )
        manager.add_listener(self._send_signal)
        self._async_manager, self._async_manager_fork = manager, _FORKS[0]
        return manager

    def _make_manager(self) -> TokenManager:
        settings = self.settings
        options: dict[str, Any] = {}
        if settings.clock is not None:
            options["clock"] = settings.clock
        manager = TokenManager(
            settings.url,
            store=self.store,
            credentials=self._service_credentials if settings.has_service_account else None,
            timeout=settings.timeout,
            refresh_margin=settings.refresh_margin,
            lock_timeout=settings.lock_timeout,
            deadline=settings.deadline,
            local_cache_size=settings.local_cache_size,
            verify=settings.verify_tls,
            **options,
        )
        manager.add_listener(self._send_signal)
        if settings.opentelemetry is not None:
            instrument(manager, user_key=settings.opentelemetry)
        self._manager, self._manager_fork = manager, _FORKS[0]
        return manager

    def user_key(self) -> str | None:
        """The signed-in portal user's key, or ``None`` for an anonymous visitor.

        It is :func:`watcher_auth.web.portal_key` of the user's id, which no service account
        key can equal.
        """
        return self._user_key(_cv_app.get(None))

    def _user_key(self, app_ctx: AppContext | None) -> str | None:
        loader = self.extension._user_key_loader
        key = loader() if loader is not None else _flask_login_user_key(app_ctx)
        if key is None or key == "":
            return None
        return portal_key(str(key))

    def watcher_key(self) -> str:
        """The key whose Watcher account serves this request.

        The user's own; or the service account's when one is configured and the user has
        connected none.

        Raises:
            NotConnected: nobody is signed in.
        """
        return self._serving_key("v3")

    def watcher_v2_key(self) -> str:
        """The key whose API v2 session or user key serves this request.

        The user's own; or the service account's when one is configured and the user has
        connected no API v2 account.

        Raises:
            NotConnected: nobody is signed in.
        """
        return self._serving_key("v2")

    def _serving_key(self, api: str, app_ctx: AppContext | None = None) -> str:
        key = self._user_key(app_ctx if app_ctx is not None else _cv_app.get(None))
        if key is None:
            raise NotConnected("", "nobody is signed in to the portal, so no Watcher account")
        if self.settings.has_service_account:
            manager = self.manager
            own = manager.v2_is_connected(key) if api == "v2" else manager.is_connected(key)
            if not own:
                return SERVICE_ACCOUNT_KEY
        return key

    def system_session(self) -> WatcherV2Session:
        """A new API v2 session with Watcher's system key (super-admin rights).

        Raises:
            ConfigurationError: ``WATCHER_SYSTEM_API_KEY`` is not set.
        """
        key = self.settings.system_api_key
        if key is None:
            raise ConfigurationError(
                "current_watcher_system needs Watcher's API v2 system key: set "
                f"WATCHER_SYSTEM_API_KEY in the app's config or the environment variable "
                f"{SYSTEM_API_KEY_ENV}"
            )
        return self.manager.v2_system_session(key)

    def connect_url(self, next_url: str | None = None, api: str = "v3") -> str:
        """The connect page's URL, with ``next`` when given.

        With ``api="v2"`` and the default ``WATCHER_CONNECT_VIEW``, the API v2 connect page.
        """
        target = self.settings.connect_view
        if api == "v2" and target == CONFIG_DEFAULTS["WATCHER_CONNECT_VIEW"]:
            target = "watcher_auth.connect_v2"
        if "/" in target:
            return f"{target}?{urlencode({'next': next_url})}" if next_url else target
        return url_for(target, next=next_url) if next_url else url_for(target)

    def _service_credentials(self, key: str) -> tuple[str, str] | None:
        settings = self.settings
        if key != SERVICE_ACCOUNT_KEY or not settings.service_username:
            return None
        return settings.service_username, settings.service_password or ""

    def _send_signal(self, event: WatcherEvent) -> None:
        signal = SIGNALS.get(event.type)
        if signal is None:
            return  # an operational event (lock waits, retries...) with no signal of its own
        signal.send(
            self.app,
            user_key=event.key,
            username=event.username,
            server=event.server,
            api=event.api,
        )

    def __repr__(self) -> str:
        return f"<WatcherState {self.settings.url} store={self.store!r}>"


def get_state(app: Flask | None = None) -> WatcherState:
    """The extension's state for ``app`` (by default the current app).

    Raises:
        ConfigurationError: WatcherAuth was not set up on the app.
    """
    target = app if app is not None else current_app
    state: WatcherState | None = target.extensions.get(EXTENSION_KEY)
    if state is None:
        raise ConfigurationError("WatcherAuth is not set up on this app: call init_app(app)")
    return state


class _RequestSession:
    """A request's API v2 or system session, made for it and closed at teardown."""

    __slots__ = ("key", "session")

    def __init__(self, key: str, session: WatcherSession) -> None:
        self.key = key
        self.session = session

    def end(self) -> None:
        self.session.close()


class _WatcherRequest(LastAnswer):
    """What the extension keeps on ``g`` for one request (``owner``): the key serving it,
    the manager's shared session for that key while the request uses only its calls, the
    session lent to it once it uses more, its API v2 and system sessions, its async clients,
    and whether it asked for its API v2 session. It is also where its sessions report
    Watcher's answers (:class:`~watcher_auth.web.LastAnswer`)."""

    __slots__ = (
        "async_clients",
        "key",
        "listening",
        "owner",
        "shared",
        "system",
        "v2",
        "v2_wanted",
        "v3",
    )

    def __init__(self, owner: object) -> None:
        super().__init__()
        self.owner = owner
        self.key: str | None = None
        self.shared: WatcherSession | None = None
        self.v3: SessionLoan | None = None
        self.v2: _RequestSession | None = None
        self.system: _RequestSession | None = None
        self.v2_wanted = False
        # Closed on their own event loop when the async view returned, not here.
        self.async_clients: dict[str, AsyncWatcherClient] | None = None
        self.listening = False

    def listen(self) -> None:
        """Hear Watcher's answers to the calls made on shared sessions in this context too
        (the views that answer a failed read of Watcher's answer need them: _run_view)."""
        if not self.listening:
            report_answers(self)
            self.listening = True

    def end(self) -> None:
        """Give back the lent API v3 session and close the others."""
        if self.listening:
            # now, while what the record holds is still in the caches, rather than when
            # another record takes its place
            report_answers(None)
            self.listening = False
        if self.v3 is not None:
            self.v3.end()
        if self.v2 is not None:
            self.v2.end()
        if self.system is not None:
            self.system.end()


# Where the request's record is kept on g.
_RECORD = "_watcher_request"


def _request_owner() -> object:
    return request._get_current_object() if has_request_context() else None  # type: ignore[attr-defined]


def _app_g() -> _AppCtxGlobals:
    """The app context's ``g`` itself, not its proxy."""
    return cast("_AppCtxGlobals", g._get_current_object())


def _request_record(ctx_g: _AppCtxGlobals, owner: object) -> _WatcherRequest:
    """The record of request ``owner`` on ``g`` (made on first use)."""
    values = vars(ctx_g)
    record: _WatcherRequest | None = values.get(_RECORD)
    if record is None or record.owner is not owner:
        # g outlives a request when the caller pushed an app context around several
        # requests (common in tests): what an earlier request held is not this one's.
        if record is not None:
            record.end()
        record = values[_RECORD] = _WatcherRequest(owner)
    return record


_PROXY_NAMES = {
    "v3": "current_watcher",
    "v2": "current_watcher_v2",
    "system": "current_watcher_system",
}


def _current_record(api: str) -> tuple[AppContext, _WatcherRequest]:
    """The app context and this request's record, for the proxy of ``api``."""
    # The contexts behind Flask's proxies, read once: each use of a proxy looks them up again.
    app_ctx = _cv_app.get(None)
    request_ctx = _cv_request.get(None)
    if api == "system" and app_ctx is None:
        raise RuntimeError(
            "current_watcher_system was used outside an application context: wrap the job in "
            "`with app.app_context():`, or call get_state(app).system_session()"
        )
    if api != "system" and request_ctx is None:
        raise RuntimeError(
            f"{_PROXY_NAMES[api]} was used outside a request: it belongs to the signed-in "
            "portal user. Outside a request use get_state(app).manager.session(user_key) "
            "(or .v2_session(user_key))"
        )
    assert app_ctx is not None  # a request context comes with its app's context
    owner = None if request_ctx is None else request_ctx.request
    record: _WatcherRequest | None = vars(app_ctx.g).get(_RECORD)
    if record is None or record.owner is not owner:
        record = _request_record(app_ctx.g, owner)
    return app_ctx, record


def _record_key(app_ctx: AppContext, record: _WatcherRequest) -> str:
    """The key serving the request's API v3 calls (looked up once per request)."""
    key = record.key
    if key is None:
        key = record.key = _app_state(app_ctx)._serving_key("v3", app_ctx)
    return key


def _request_session(api: str = "v3") -> _RequestSession | SessionLoan:
    """The request's own session for ``api`` (for API v3, lent by the manager)."""
    app_ctx, record = _current_record(api)
    if api == "v3":
        loan = record.v3
        if loan is None:
            key = _record_key(app_ctx, record)
            loan = record.v3 = _app_state(app_ctx).manager.lend(key, record, owner=record.owner)
        return loan
    held = record.system if api == "system" else record.v2
    if held is None:
        state = _app_state(app_ctx)
        session: WatcherSession
        if api == "system":
            key, session = "", state.system_session()
        else:
            record.v2_wanted = True
            key = state.watcher_v2_key()
            session = state.manager.v2_session(key)
        session.hooks["response"].append(record)
        held = _RequestSession(key, session)
        if api == "system":
            record.system = held
        else:
            record.v2 = held
    return held


def _app_state(app_ctx: AppContext) -> WatcherState:
    state: WatcherState | None = app_ctx.app.extensions.get(EXTENSION_KEY)
    if state is None:
        state = get_state(app_ctx.app)  # raises, saying so
    return state


def _answer_after_watcher(exc: Exception) -> BaseResponse | None:
    """The answer to a view's ``KeyError``, ``ValueError``... raised after Watcher failed.

    A view that reads Watcher's 5xx error page (or a non-JSON answer) as data fails with
    such an error: it is answered as Watcher's failure. ``None`` for anything else.
    """
    record: _WatcherRequest | None = g.get(_RECORD)
    if record is None or record.owner is not _request_owner():
        return None
    answer = error_answer(exc, last_status=record.status, last_was_json=record.was_json)
    return None if answer is None else answer_response(exc, answer)


_CALLS = SessionLoan.CALLS


class _SessionProxy(LocalProxy):  # type: ignore[type-arg]
    """A ``LocalProxy`` for a request's session whose attribute reads go straight to it (in
    one call, where ``LocalProxy``'s generic lookup makes several).

    For ``current_watcher`` a call (:attr:`~watcher_auth.SessionLoan.CALLS`) goes out on the
    manager's shared session for the key until the request uses anything else of it; from
    then on the request has a session of its own, lent by the manager.
    """

    __slots__ = ("_watcher_api",)

    def __init__(self, get: Callable[[], WatcherSession], api: str) -> None:
        super().__init__(get)
        object.__setattr__(self, "_watcher_api", api)

    def __getattr__(self, name: str) -> Any:
        api = self._watcher_api
        if api != "v3" or name not in _CALLS:
            return getattr(_request_session(api).session, name)
        # A call: on the request's lent session if it has one, else on the manager's shared
        # session for the key (what _current_record and _record_key do, in one step here,
        # which every call a view makes goes through).
        app_ctx = _cv_app.get(None)
        request_ctx = _cv_request.get(None)
        if app_ctx is None or request_ctx is None:
            return getattr(_request_session(api).session, name)  # raises, saying so
        owner = request_ctx.request
        values = vars(app_ctx.g)
        record: _WatcherRequest | None = values.get(_RECORD)
        if record is None:
            record = values[_RECORD] = _WatcherRequest(owner)
        elif record.owner is not owner:
            record = _request_record(app_ctx.g, owner)
        loan = record.v3
        if loan is not None:
            return getattr(loan.session, name)
        shared = record.shared
        if shared is None:
            state: WatcherState | None = app_ctx.app.extensions.get(EXTENSION_KEY)
            if state is None:
                state = get_state(app_ctx.app)  # raises, saying so
            key = record.key
            if key is None:
                key = record.key = state._serving_key("v3", app_ctx)
            shared = record.shared = state.manager.shared_session(key)
        return getattr(shared, name)


def _current_session() -> WatcherSession:
    # The session itself leaves through here (LocalProxy's _get_current_object, and every
    # operation but an attribute read): the request's own.
    return _request_session().session


def _current_v2_session() -> WatcherV2Session:
    return cast(WatcherV2Session, _request_session("v2").session)


def _current_system_session() -> WatcherV2Session:
    return cast(WatcherV2Session, _request_session("system").session)


#: The signed-in user's Watcher session (a ``requests.Session`` whose relative paths resolve
#: against the Watcher API): ``current_watcher.get("streams").json()``. Its calls go out on
#: the manager's shared session for the user's key
#: (:meth:`~watcher_auth.TokenManager.shared_session`); on any other use the request gets a
#: session of its own, lent by the manager (:meth:`~watcher_auth.TokenManager.lend`), kept on
#: ``g`` and given back at teardown: what a view changes on it stays in that request. Raises
#: :class:`~watcher_auth.NotConnected` for anonymous visitors; the extension's error
#: handler turns that into a redirect to the connect page.
#: Outside a request it raises a ``RuntimeError`` saying so.
current_watcher: WatcherSession = cast(WatcherSession, _SessionProxy(_current_session, "v3"))

#: The signed-in user's API v2 session (``/vsaas/api/v2``) with their stored API v2 session
#: or user key: ``current_watcher_v2.get("cameras").json()``. Made on first use in each
#: request; without a connected API v2 account it raises :class:`~watcher_auth.NotConnected`,
#: which the extension turns into a redirect to the API v2 connect page.
current_watcher_v2: WatcherV2Session = cast(
    WatcherV2Session, _SessionProxy(_current_v2_session, "v2")
)

#: An API v2 session with Watcher's system key (``WATCHER_SYSTEM_API_KEY``): super-admin
#: rights whoever is signed in, so use it only in views restricted to staff or in jobs.
#: Without a key configured it raises :class:`~watcher_auth.ConfigurationError`.
current_watcher_system: WatcherV2Session = cast(
    WatcherV2Session, _SessionProxy(_current_system_session, "system")
)


def _request_async_client(api: str) -> AsyncWatcherClient:
    if api != "system" and not has_request_context():
        raise RuntimeError(
            f"{_PROXY_NAMES[api]}_async was used outside a request: it belongs to the signed-in "
            "portal user. Outside a request use get_state(app).async_manager.session(user_key)"
        )
    if api == "system" and not has_app_context():
        raise RuntimeError("current_watcher_system_async was used outside an application context")
    owner = _request_owner()
    record = _request_record(_app_g(), owner)
    clients = record.async_clients
    if clients is None:
        clients = record.async_clients = {}
    client = clients.get(api)
    if client is not None and not client.is_closed:
        return client
    state = get_state()
    manager = state.async_manager
    if api == "system":
        system_key = state.settings.system_api_key
        if system_key is None:
            raise ConfigurationError(
                "current_watcher_system_async needs Watcher's API v2 system key: set "
                f"WATCHER_SYSTEM_API_KEY in the app's config or the environment variable "
                f"{SYSTEM_API_KEY_ENV}"
            )
        client = manager.v2_system_session(system_key)
    elif api == "v2":
        record.v2_wanted = True
        client = manager.v2_session(state.watcher_v2_key())
    else:
        client = manager.session(state.watcher_key())
    if owner is not None:
        last = record

        async def remember(response: httpx.Response) -> None:
            last.status = response.status_code
            last.was_json = "json" in response.headers.get("Content-Type", "").lower()

        client.event_hooks["response"].append(remember)
    clients[api] = client
    return client


async def close_async_clients() -> None:
    """Close the async clients made so far on this event loop, and the manager's connection
    pool for it. The extension does this when each async view (or hook) returns."""
    record: _WatcherRequest | None = g.get(_RECORD)
    clients = None if record is None else record.async_clients
    if clients:
        made = list(clients.values())
        clients.clear()
        for client in made:
            await client.aclose()
    state = get_state()
    if state._async_manager is not None:
        await state._async_manager.aclose()


def _close_async_clients_after(app: Flask) -> None:
    """Make ``app`` close this extension's async clients at the end of each async function.

    Flask runs every async view and hook on a new event loop, closed after it returns; the
    connections opened on that loop must be closed on it. Flask's documented way to change
    how it runs them is overriding ``async_to_sync``; this wraps the app's own.
    """
    run_on_new_loop = app.async_to_sync

    def async_to_sync(func: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        @functools.wraps(func)
        async def then_close(*args: Any, **kwargs: Any) -> Any:
            try:
                return await func(*args, **kwargs)
            finally:
                await close_async_clients()

        return run_on_new_loop(then_close)

    app.async_to_sync = async_to_sync  # type: ignore[method-assign]


def _current_async() -> AsyncWatcherClient:
    return _request_async_client("v3")


def _current_v2_async() -> AsyncWatcherClient:
    return _request_async_client("v2")


def _current_system_async() -> AsyncWatcherClient:
    return _request_async_client("system")


#: The signed-in user's Watcher client for ``async def`` views: an
#: :class:`~watcher_auth.AsyncWatcherClient` (``await current_watcher_async.get("streams")``,
#: ``async for s in current_watcher_async.paginate("streams")``) from
#: :attr:`WatcherState.async_manager`. Made on first use in each request and closed when the
#: view returns. The same errors as :data:`current_watcher`.
current_watcher_async: AsyncWatcherClient = cast("AsyncWatcherClient", LocalProxy(_current_async))

#: The signed-in user's API v2 client for ``async def`` views (see :data:`current_watcher_v2`).
current_watcher_v2_async: AsyncWatcherClient = cast(
    "AsyncWatcherClient", LocalProxy(_current_v2_async)
)

#: An API v2 client with Watcher's system key for ``async def`` views (staff-only views).
current_watcher_system_async: AsyncWatcherClient = cast(
    "AsyncWatcherClient", LocalProxy(_current_system_async)
)


def watcher_required(view: F) -> F:
    """Only run ``view`` for a user whose Watcher account is connected and usable.

    Otherwise the visitor is sent to the connect page (a 401 JSON answer for JSON requests).
    Tokens are refreshed first when they are due. Failures, here or in the view, are
    answered by the extension's error handlers (:func:`watcher_auth.web.error_answer`): a
    503 with ``Retry-After`` while Watcher or the store is down, and so on.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        app_ctx, record = _current_record("v3")
        _app_state(app_ctx).manager.current_tokens(_record_key(app_ctx, record))
        return _run_view(record, view, *args, **kwargs)

    return cast(F, wrapper)


def _run_view(record: _WatcherRequest, view: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    record.listen()  # what Watcher answered, should the view fail to read it
    try:
        return _cv_app.get().app.ensure_sync(view)(*args, **kwargs)
    except (LookupError, TypeError, ValueError) as exc:
        answer = _answer_after_watcher(exc)
        if answer is None:
            raise
        return answer


def watcher_v2_required(view: F) -> F:
    """Only run ``view`` for a user with a connected API v2 account (``current_watcher_v2``).

    Otherwise the visitor is sent to the API v2 connect page (a 401 JSON answer for JSON
    requests). A stored session or user key is enough: Watcher's verdict on it comes with
    the first call, and a dead one also sends the user to connect again.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        record = _current_record("v2")[1]
        key = _request_session("v2").key
        # A service account without a session yet logs in on its first call.
        if key != SERVICE_ACCOUNT_KEY and not get_state().manager.v2_is_connected(key):
            raise NotConnected(key)
        return _run_view(record, view, *args, **kwargs)

    return cast(F, wrapper)


def wants_json() -> bool:
    """Whether the request prefers JSON to HTML (``Accept`` or an XHR header)."""
    if request.headers.get("X-Requested-With", "").lower() == "xmlhttprequest":
        return True
    accept = request.accept_mimetypes
    best = accept.best_match(["text/html", "application/json"])
    return best == "application/json" and accept[best] > accept["text/html"]


def current_path() -> str:
    """The request's path and query, to come back to after connecting."""
    path = request.script_root + request.path
    query = request.query_string.decode("latin-1")
    return f"{path}?{query}" if query else path


def _failed_api(state: WatcherState) -> str:
    """``"v2"`` when this request used its API v2 session and that key has no v2 account."""
    record: _WatcherRequest | None = g.get(_RECORD)
    if record is None or record.owner is not _request_owner() or not record.v2_wanted:
        return "v3"
    held = record.v2
    if held is None:
        return "v2"  # nobody is signed in: after signing in, the API v2 page is wanted
    try:
        return "v3" if state.manager.v2_is_connected(held.key) else "v2"
    except WatcherAuthError:
        return "v2"  # its record cannot be read either: connecting API v2 again replaces it


def _handle_watcher_error(exc: WatcherAuthError) -> BaseResponse:
    answer = error_answer(exc)
    if answer is None:  # pragma: no cover - every WatcherAuthError has an answer
        raise exc
    return answer_response(exc, answer)


def _handle_requests_error(exc: Exception) -> BaseResponse:
    """A ``requests`` failure on a call to Watcher (a ``raise_for_status()`` included), or an
    ``httpx`` ``raise_for_status()`` one."""
    answer = error_answer(exc, watcher_origin=get_state().settings.url)
    if answer is None:
        raise exc  # not a call to Watcher: not ours to answer
    return answer_response(exc, answer)


def answer_response(exc: BaseException, answer: ErrorAnswer) -> BaseResponse:
    """The response for a failure answered by ``answer`` (see :mod:`watcher_auth.web`).

    Logs it once (repeats are counted); a failure needing a connection redirects to the
    connect page (JSON clients get 401 with ``connect_url``); others render
    ``watcher_auth/unavailable.html`` (503) or ``watcher_auth/error.html``, or JSON.
    """
    state = get_state()
    state.failures.log(exc, answer, where=request.path)
    if answer.connect:
        connect_url = state.connect_url(
            current_path() if request.method == "GET" else None, api=_failed_api(state)
        )
        if wants_json():
            response = jsonify(**answer.as_json(), connect_url=connect_url)
            response.status_code = answer.status
            return response
        if answer.reason != "not_connected" and current_app.secret_key:
            flash(answer.message)
        return redirect(connect_url)
    if wants_json():
        response = jsonify(**answer.as_json())
        response.status_code = answer.status
    else:
        template = "unavailable.html" if answer.status == 503 else "error.html"
        page = render_template(f"watcher_auth/{template}", error=answer)
        response = current_app.make_response((page, answer.status))
    if answer.retry_after is not None:
        response.headers["Retry-After"] = str(answer.retry_after)
    return response


def _close_request_session(exc: BaseException | None) -> None:
    app_ctx = _cv_app.get(None)
    if app_ctx is None:
        return
    record: _WatcherRequest | None = vars(app_ctx.g).pop(_RECORD, None)
    if record is not None:
        record.end()


@functools.cache
def _flask_login() -> Any:
    """Flask-Login, or ``None`` when it is not installed (looked up once)."""
    try:
        return importlib.import_module("flask_login")
    except ImportError:
        return None


def _flask_login_user_key(app_ctx: AppContext | None) -> str | None:
    if app_ctx is None or not hasattr(app_ctx.app, "login_manager"):
        return None
    flask_login = _flask_login()
    if flask_login is None:
        return None
    # The user Flask-Login loaded for this request (what ``current_user`` stands for);
    # loaded through the proxy the first time.
    user = vars(app_ctx.g).get("_login_user")
    if user is None:
        user = flask_login.current_user._get_current_object()
    if user is None or not user.is_authenticated:
        return None
    key = user.get_id()
    return None if key is None else str(key)
