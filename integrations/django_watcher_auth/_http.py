"""What the middleware, the decorators and the mixin share: ``request.watcher`` (and its API v2
twins ``request.watcher_v2`` and ``request.watcher_system``), their async twins
``await request.awatcher()`` (``awatcher_v2()``, ``awatcher_system()``), and error pages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import requests
from asgiref.sync import sync_to_async
from django.apps import apps
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils.functional import SimpleLazyObject, empty
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _

from django_watcher_auth.conf import (
    SERVICE_KEY_PREFIX,
    SYSTEM_API_KEY_ENV,
    connect_url,
    get_async_manager,
    get_manager,
    service_account,
    service_key,
    system_api_key,
    user_key,
    watcher_settings,
)
from watcher_auth import (
    ConfigurationError,
    NotConnected,
    SessionLoan,
    WatcherAuthError,
    WatcherSession,
)
from watcher_auth.v2 import WatcherV2Session
from watcher_auth.web import ErrorAnswer, FailureLog, LastAnswer, error_answer, report_answers

if TYPE_CHECKING:
    import httpx

    from watcher_auth import AsyncWatcherClient

__all__ = [
    "acheck_watcher_access",
    "aclose_watchers",
    "attach_watcher",
    "awatcher_error_response",
    "awatcher_key",
    "check_watcher_access",
    "error_page",
    "failures",
    "safe_next",
    "signed_in_user",
    "wants_json",
    "watcher_error_response",
    "watcher_key",
    "watcher_v2_key",
]

logger = logging.getLogger("django_watcher_auth")
#: One log line per failure; repeats of the same one at most once a minute, with a count.
failures = FailureLog(logger)

_KEY_ATTR = "_watcher_auth_key"
_V2_KEY_ATTR = "_watcher_auth_v2_key"
_V2_USED_ATTR = "_watcher_auth_v2_used"
_LAST_ANSWER_ATTR = "_watcher_auth_last_answer"
_ASYNC_CLIENTS_ATTR = "_watcher_auth_async_clients"


def watcher_key(request: HttpRequest) -> str:
    """The user key whose Watcher tokens serve this request.

    The signed-in user's own key, or the service account's when one is configured and the
    user has connected no account of their own.

    Raises:
        NotConnected: nobody is signed in to the portal.
    """
    return _serving_key(request, "v3")


def watcher_v2_key(request: HttpRequest) -> str:
    """The user key whose API v2 session or user key serves this request.

    The signed-in user's own; or the service account's when one is configured and the user
    has connected no API v2 account of their own.

    Raises:
        NotConnected: nobody is signed in to the portal.
    """
    return _serving_key(request, "v2")


def _serving_key(request: HttpRequest, api: str) -> str:
    attr = _V2_KEY_ATTR if api == "v2" else _KEY_ATTR
    cached = getattr(request, attr, None)
    if cached is not None:
        return str(cached)
    user = getattr(request, "user", None)
    if type(user) is SimpleLazyObject:
        # AuthenticationMiddleware's lazy user: once loaded, read the user itself rather
        # than through the proxy's Python-level attribute lookups.
        loaded = object.__getattribute__(user, "_wrapped")
        if loaded is not empty:
            user = loaded
    if user is None or not user.is_authenticated:
        raise NotConnected("", "nobody is signed in to the portal, so no Watcher account applies")
    key = user_key(user)
    service = service_account()
    if service is not None:
        manager = get_manager()
        own = manager.v2_is_connected(key) if api == "v2" else manager.is_connected(key)
        if not own:
            key = service_key(service[0])
    setattr(request, attr, key)
    return key


async def awatcher_key(request: HttpRequest, api: str = "v3") -> str:
    """:func:`watcher_key` (``api="v2"``: :func:`watcher_v2_key`) for async views.

    Reads the user with ``request.auser()`` and the store through the async manager.

    Raises:
        NotConnected: nobody is signed in to the portal.
    """
    attr = _V2_KEY_ATTR if api == "v2" else _KEY_ATTR
    cached = getattr(request, attr, None)
    if cached is not None:
        return str(cached)
    user = await signed_in_user(request)
    if user is None or not user.is_authenticated:
        raise NotConnected("", "nobody is signed in to the portal, so no Watcher account applies")
    key = user_key(user)
    service = service_account()
    if service is not None:
        manager = get_async_manager()
        own = await (manager.v2_is_connected(key) if api == "v2" else manager.is_connected(key))
        if not own:
            key = service_key(service[0])
    setattr(request, attr, key)
    return key


async def signed_in_user(request: HttpRequest) -> Any:
    """The signed-in user, read without touching the database on the event loop."""
    auser = getattr(request, "auser", None)
    if auser is not None:
        return await auser()

    def evaluate() -> Any:
        user = getattr(request, "user", None)
        if user is not None:
            _ = user.is_authenticated  # a lazy user is loaded here, on a worker thread
        return user

    return await sync_to_async(evaluate)()


def _request_key(request: HttpRequest) -> str:
    """The key serving ``request.watcher``: what watcher_key() found (by a decorator, say),
    read directly, or found now."""
    key = vars(request).get(_KEY_ATTR)
    return _serving_key(request, "v3") if key is None else str(key)


def _build(request: HttpRequest) -> SessionLoan:
    # Lent by the manager until the response (the middleware ends the loan).
    return get_manager().lend(_request_key(request), _last_answer(request), owner=request)


def _build_own(key: str) -> WatcherSession:
    """A session of its own for ``key`` (for ``request.watcher`` used after the response)."""
    return get_manager().session(key)


def _build_v2(request: HttpRequest) -> WatcherV2Session:
    setattr(request, _V2_USED_ATTR, True)
    return _watched(request, get_manager().v2_session(watcher_v2_key(request)))


def _build_system(request: HttpRequest) -> WatcherV2Session:
    key = system_api_key()
    if key is None:
        raise ConfigurationError(
            "request.watcher_system needs Watcher's API v2 system key: set "
            f"WATCHER_AUTH['SYSTEM_API_KEY'] or the environment variable {SYSTEM_API_KEY_ENV}"
        )
    return _watched(request, get_manager().v2_system_session(key))


_CALLS = SessionLoan.CALLS


class _OnFirstUse:
    """What ``request.watcher_v2`` and ``request.watcher_system`` are: the request's session,
    made on first use of any of its attributes (a view that never uses it reads no store),
    then used directly.

    It stands for the session as Django's ``SimpleLazyObject`` would (``isinstance``,
    ``with``, attribute reads and writes) at one Python call per attribute read; a failed
    build raises to the caller and is tried again on the next use.
    """

    __slots__ = ("_build", "_loan", "_request", "_session")

    def __init__(self, build: Callable[[HttpRequest], Any], request: HttpRequest) -> None:
        object.__setattr__(self, "_build", build)
        object.__setattr__(self, "_request", request)
        object.__setattr__(self, "_session", None)
        object.__setattr__(self, "_loan", None)

    def _made(self) -> Any:
        session = self._session
        if session is None:
            made = self._build(self._request)
            if type(made) is SessionLoan:
                object.__setattr__(self, "_loan", made)
                session = made.session
            else:
                session = made
            object.__setattr__(self, "_session", session)
            object.__setattr__(self, "_request", None)  # no cycle through the request
        return session

    def __getattr__(self, name: str) -> Any:
        session = self._session
        if session is None:
            session = self._made()
        return getattr(session, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._made(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._made(), name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(request.watcher, WatcherSession)
        return type(self._made())

    def __enter__(self) -> Any:
        return self._made().__enter__()

    def __exit__(self, *args: object) -> None:
        self._made().__exit__(*args)

    def __dir__(self) -> list[str]:
        return dir(self._made())

    def __repr__(self) -> str:
        session = self._session
        return "<request's Watcher session, not made yet>" if session is None else repr(session)


class _Watcher(_OnFirstUse):
    """What ``request.watcher`` is: while the view uses nothing but its calls
    (:attr:`~watcher_auth.SessionLoan.CALLS`) they go out on the manager's shared session
    for the key (:meth:`~watcher_auth.TokenManager.shared_session`); on any other use the
    request is lent a session of its own (:class:`~watcher_auth.SessionLoan`), which
    :func:`end_watcher_loan` gives back after the response.
    """

    __slots__ = ("_shared",)

    def __init__(self, build: Callable[[HttpRequest], Any], request: HttpRequest) -> None:
        super().__init__(build, request)
        object.__setattr__(self, "_shared", None)

    def __getattr__(self, name: str) -> Any:
        session = self._session
        if session is None:
            if name in _CALLS:
                shared = self._shared
                if shared is None:
                    shared = self._share()
                return getattr(shared, name)
            session = self._made()
        return getattr(session, name)

    def _share(self) -> WatcherSession:
        request = self._request
        shared = get_manager().shared_session(_request_key(request))
        report_answers(_last_answer(request))  # Watcher's answers to this request's calls
        object.__setattr__(self, "_shared", shared)
        return shared

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return WatcherSession  # what the shared and the lent session are, without lending


def end_watcher_loan(request: HttpRequest, response: HttpResponse) -> None:
    """Give ``request.watcher``'s session back to the manager after ``response``; a later
    use of ``request.watcher`` gets a session of its own.

    A streaming response's body may still use it, so its loan is left to end with it.
    """
    proxy = vars(request).get("watcher")
    if type(proxy) is not _Watcher or response.streaming:
        return
    if proxy._shared is not None:
        # now, while the answer record is still in the caches, rather than when the next
        # request's takes its place
        report_answers(None)
    loan = proxy._loan
    if loan is None:
        return
    set_slot = object.__setattr__
    set_slot(proxy, "_loan", None)
    set_slot(proxy, "_session", None)
    set_slot(proxy, "_build", _build_own)
    set_slot(proxy, "_request", loan.key)  # what _build_own is given
    set_slot(proxy, "_shared", loan.manager.shared_session(loan.key))
    loan.end()


def attach_watcher(request: HttpRequest) -> None:
    """Give ``request`` lazy ``watcher``, ``watcher_v2`` and ``watcher_system`` attributes,
    and the async accessors ``awatcher()``, ``awatcher_v2()`` and ``awatcher_system()``.

    Nothing is read until one is used.
    """

    async def awatcher() -> AsyncWatcherClient:
        return _async_client(request, "v3", await awatcher_key(request))

    async def awatcher_v2() -> AsyncWatcherClient:
        setattr(request, _V2_USED_ATTR, True)
        return _async_client(request, "v2", await awatcher_key(request, "v2"))

    async def awatcher_system() -> AsyncWatcherClient:
        key = system_api_key()
        if key is None:
            raise ConfigurationError(
                "request.awatcher_system() needs Watcher's API v2 system key: set "
                f"WATCHER_AUTH['SYSTEM_API_KEY'] or the environment variable {SYSTEM_API_KEY_ENV}"
            )
        return _async_client(request, "system", key)

    values = vars(request)
    values["watcher"] = _Watcher(_build, request)
    values["watcher_v2"] = _OnFirstUse(_build_v2, request)
    values["watcher_system"] = _OnFirstUse(_build_system, request)
    values["awatcher"] = awatcher
    values["awatcher_v2"] = awatcher_v2
    values["awatcher_system"] = awatcher_system


def _async_client(request: HttpRequest, api: str, key: str) -> AsyncWatcherClient:
    """This request's async client for ``api``, made on first use and kept until
    :func:`aclose_watchers`."""
    clients: dict[str, AsyncWatcherClient] | None = getattr(request, _ASYNC_CLIENTS_ATTR, None)
    if clients is None:
        clients = {}
        setattr(request, _ASYNC_CLIENTS_ATTR, clients)
    client = clients.get(api)
    if client is None or client.is_closed:
        manager = get_async_manager()
        if api == "system":
            client = manager.v2_system_session(key)
        elif api == "v2":
            client = manager.v2_session(key)
        else:
            client = manager.session(key)
        last = _last_answer(request)

        async def remember(response: httpx.Response) -> None:
            last.status = response.status_code
            last.was_json = "json" in response.headers.get("Content-Type", "").lower()

        client.event_hooks["response"].append(remember)
        clients[api] = client
    return client


async def aclose_watchers(request: HttpRequest) -> None:
    """Close the async clients this request made (the middleware does it after the view)."""
    clients: dict[str, AsyncWatcherClient] | None = getattr(request, _ASYNC_CLIENTS_ATTR, None)
    if clients:
        setattr(request, _ASYNC_CLIENTS_ATTR, {})
        for client in clients.values():
            await client.aclose()


async def acheck_watcher_access(request: HttpRequest, api: str = "v3") -> HttpResponse | None:
    """:func:`check_watcher_access` for async views: the same answers, never blocking."""
    if not hasattr(request, "awatcher"):
        attach_watcher(request)
    user = await signed_in_user(request)
    if user is None or not user.is_authenticated:
        if wants_json(request):
            return JsonResponse({"error": "login_required"}, status=401)
        return redirect_to_login(request.get_full_path())
    try:
        manager = get_async_manager()
        if api == "v2":
            setattr(request, _V2_USED_ATTR, True)
            key = await awatcher_key(request, "v2")
            # A service account without a session yet logs in on its first call.
            if not key.startswith(SERVICE_KEY_PREFIX) and not await manager.v2_is_connected(key):
                raise NotConnected(key)
        else:
            await manager.current_tokens(await awatcher_key(request))
    except WatcherAuthError as exc:
        response = await awatcher_error_response(request, exc)
        if response is None:
            raise
        return response
    return None


async def awatcher_error_response(request: HttpRequest, exc: BaseException) -> HttpResponse | None:
    """:func:`watcher_error_response` for async views (it runs on a worker thread: pages
    are rendered and messages stored there)."""
    response: HttpResponse | None = await sync_to_async(watcher_error_response)(request, exc)
    return response


def check_watcher_access(request: HttpRequest, api: str = "v3") -> HttpResponse | None:
    """``None`` when the signed-in user has working Watcher credentials, else the response.

    Anonymous users go to the login page (or get a 401 JSON answer); users without
    credentials go to the connect page. For API v3 a stale token is refreshed here, before
    the view runs; for API v2 (``api="v2"``) a stored session or user key is enough (it has
    no expiry to check; Watcher's verdict comes with the first call).
    """
    if not hasattr(request, "watcher"):
        attach_watcher(request)
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        if wants_json(request):
            return JsonResponse({"error": "login_required"}, status=401)
        return redirect_to_login(request.get_full_path())
    try:
        if api == "v2":
            setattr(request, _V2_USED_ATTR, True)
            key = watcher_v2_key(request)
            # A service account without a session yet logs in on its first call.
            if not key.startswith(SERVICE_KEY_PREFIX) and not get_manager().v2_is_connected(key):
                raise NotConnected(key)
        else:
            get_manager().current_tokens(watcher_key(request))
    except WatcherAuthError as exc:
        response = watcher_error_response(request, exc)
        if response is None:
            raise
        return response
    return None


def watcher_error_response(request: HttpRequest, exc: BaseException) -> HttpResponse | None:
    """The page or JSON answer for a Watcher error raised in a view, or ``None`` for others.

    Every :class:`~watcher_auth.WatcherAuthError` is answered by the policy of
    :func:`watcher_auth.web.error_answer` (so none becomes a 500); so are ``requests``
    connection errors, timeouts and ``raise_for_status()`` errors on calls to Watcher.
    Failures that need a (new) connection send people to the connect page (JSON clients get
    401 with ``connect_url``); after ``request.watcher_v2`` found no API v2 account, to the
    API v2 connect page. The rest answer an error page, or JSON ``{"error": code, ...}``,
    with ``Retry-After`` when trying again later can help.
    """
    last: LastAnswer | None = getattr(request, _LAST_ANSWER_ATTR, None)
    answer = error_answer(
        exc,
        watcher_origin=_watcher_origin(),
        last_status=last.status if last is not None else None,
        last_was_json=last.was_json if last is not None else True,
    )
    if answer is None:
        return None
    failures.log(exc, answer, where=request.path)
    if answer.connect:
        return _reconnect(request, answer, _failed_api(request))
    return error_page(request, answer)


def error_page(request: HttpRequest, answer: ErrorAnswer) -> HttpResponse:
    """``answer`` as JSON or as the ``unavailable.html`` (503) or ``error.html`` page."""
    response: HttpResponse
    if wants_json(request):
        response = JsonResponse(answer.as_json(), status=answer.status)
    else:
        template = "unavailable.html" if answer.status == 503 else "error.html"
        response = render(
            request, f"django_watcher_auth/{template}", {"error": answer}, status=answer.status
        )
    if answer.retry_after is not None:
        response["Retry-After"] = str(answer.retry_after)
    return response


def wants_json(request: HttpRequest) -> bool:
    """Whether to answer JSON: per ``WATCHER_AUTH['JSON_ERRORS']``, else what the client asks."""
    setting = watcher_settings.JSON_ERRORS
    if setting is not None:
        return bool(setting)
    if request.headers.get("x-requested-with") == "XMLHttpRequest":
        return True
    accepted = _accept_qualities(request.headers.get("accept", ""))
    json_q = max(accepted.get("application/json", 0.0), accepted.get("application/*", 0.0))
    html_q = max(accepted.get("text/html", 0.0), accepted.get("text/*", 0.0))
    return json_q > html_q


def safe_next(request: HttpRequest, url: str | None) -> str | None:
    """``url`` if it stays on this site (and on HTTPS when the request is), else ``None``."""
    if not url:
        return None
    if url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return None


def _accept_qualities(header: str) -> dict[str, float]:
    qualities: dict[str, float] = {}
    for item in header.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if not media:
            continue
        quality = 1.0
        for param in params:
            name, _sep, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities[media.lower()] = max(quality, qualities.get(media.lower(), 0.0))
    return qualities


def _failed_api(request: HttpRequest) -> str:
    """``"v2"`` when the request used its API v2 session and that user has no v2 account."""
    if not getattr(request, _V2_USED_ATTR, False):
        return "v3"
    key = getattr(request, _V2_KEY_ATTR, None)
    if key is None:
        return "v2"  # nobody is signed in: after signing in, the API v2 page is wanted
    try:
        return "v3" if get_manager().v2_is_connected(str(key)) else "v2"
    except WatcherAuthError:
        return "v2"  # its record cannot be read either: connecting API v2 again replaces it


def _reconnect(request: HttpRequest, answer: ErrorAnswer, api: str = "v3") -> HttpResponse:
    url = connect_url(api)
    if wants_json(request):
        body = {**answer.as_json(), "connect_url": url}
        return JsonResponse(body, status=answer.status)
    if apps.is_installed("django.contrib.messages"):
        messages.warning(request, _(answer.message), fail_silently=True)
    back = request.get_full_path() if request.method in ("GET", "HEAD") else None
    back = back or safe_next(request, request.headers.get("referer"))
    if back:
        url = f"{url}{'&' if '?' in url else '?'}{urlencode({'next': back})}"
    return HttpResponseRedirect(url)


SessionT = TypeVar("SessionT", bound=requests.Session)


def _last_answer(request: HttpRequest) -> LastAnswer:
    last: LastAnswer | None = getattr(request, _LAST_ANSWER_ATTR, None)
    if last is None:
        last = LastAnswer()
        setattr(request, _LAST_ANSWER_ATTR, last)
    return last


def _watched(request: HttpRequest, session: SessionT) -> SessionT:
    """``session``, remembering Watcher's last answer on ``request`` (for error answers)."""
    session.hooks["response"].append(_last_answer(request))
    return session


def _watcher_origin() -> str | None:
    try:
        return get_manager().server
    except WatcherAuthError:
        return None
