"""The ``requests`` driver of the call flow: an auth object, and the per-key session."""

from __future__ import annotations

import datetime
import functools
import http.cookiejar
import logging
import operator
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, ClassVar

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.auth import AuthBase
from requests.cookies import RequestsCookieJar
from requests.hooks import dispatch_hook
from requests.models import CONTENT_CHUNK_SIZE, DEFAULT_REDIRECT_LIMIT
from requests.sessions import merge_hooks, merge_setting
from requests.structures import CaseInsensitiveDict
from requests.utils import default_headers

from watcher_auth._calls import CallScheme, KeyedCopy, answered, call_flow, replace_credentials
from watcher_auth._drivers import DEFAULT_MAX_RESPONSE_BYTES, SyncSteps, drive, read_limited
from watcher_auth._effects import Answer, Flow
from watcher_auth._exceptions import WatcherAuthError, WatcherConnectionError
from watcher_auth._policy import CursorPages, decode_answer
from watcher_auth._tokens import TokenPair
from watcher_auth._urls import is_absolute, origin_of, path_only

__all__ = [
    "FlowAuth",
    "NoCookies",
    "SessionLoan",
    "WatcherBearerAuth",
    "WatcherSession",
    "block_cookies",
    "origin_of",
    "report_answers",
]

logger = logging.getLogger("watcher_auth")


class NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Refuses every cookie, so nothing one user's answers set can ride on another's calls."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


# Stateless, so one serves every session.
_NO_COOKIES = NoCookies()


def block_cookies(session: requests.Session) -> None:
    """Make ``session`` ignore cookies from responses."""
    session.cookies.set_policy(_NO_COOKIES)


#: The response hook of the web request this context (thread, or asyncio task) serves: the
#: manager's shared sessions report Watcher's answers to it (report_answers()).
_ANSWERS: ContextVar[Callable[[requests.Response], object] | None] = ContextVar(
    "watcher_auth_answers", default=None
)


def report_answers(hook: Callable[[requests.Response], object] | None) -> None:
    """Hand Watcher's answers to the calls this context (thread, or asyncio task) makes
    through shared sessions (``TokenManager.shared_session``) to ``hook``, until set again
    (``None`` stops it). A web layer sets its request's
    :class:`~watcher_auth.web.LastAnswer` here when the request starts using Watcher."""
    _ANSWERS.set(hook)


class _SessionJar(RequestsCookieJar):
    """A session's jar: while it refuses every cookie, an answer's ``Set-Cookie`` headers
    are not even parsed (none would be kept)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        if self._policy is not _NO_COOKIES:  # type: ignore[attr-defined]
            super().extract_cookies(response, request)

    @classmethod
    def refusing(cls) -> _SessionJar:
        """An empty jar refusing every cookie: what ``cls(policy=NoCookies())`` makes, with
        the attributes ``CookieJar.__init__`` sets given directly (a session is made per web
        request)."""
        jar = cls.__new__(cls)
        jar._policy = _NO_COOKIES  # type: ignore[attr-defined]
        jar._cookies_lock = threading.RLock()  # type: ignore[attr-defined]
        jar._cookies = {}  # type: ignore[attr-defined]
        return jar


class _NoJar(RequestsCookieJar):
    """The jar of a request prepared with no cookie at all: it adds no ``Cookie`` header
    and keeps nothing (one serves every such request; a copy is an ordinary empty jar)."""

    def add_cookie_header(self, request: Any) -> None:
        return None

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie, *args: Any, **kwargs: Any) -> None:
        return None


_NO_JAR = _NoJar(policy=_NO_COOKIES)


class _Prepared(requests.PreparedRequest):
    """A prepared request that takes :data:`_NO_JAR` without building a cookie header."""

    def prepare_cookies(self, cookies: Any) -> None:
        if cookies is _NO_JAR:
            self._cookies = cookies
        else:
            super().prepare_cookies(cookies)


class _PreparedCall:
    """A ``requests.PreparedRequest`` as the call flow sees it; a retry goes out as a copy."""

    __slots__ = ("_names", "_position", "_sent", "replayable", "request")

    def __init__(
        self, request: requests.PreparedRequest, names: tuple[str, ...], position: int | None
    ) -> None:
        self.request = request
        self._names = names
        self._sent: requests.PreparedRequest | None = None
        body = request.body
        self._position = position
        self.replayable = body is None or position is not None or isinstance(body, (bytes, str))

    @property
    def url(self) -> str:
        return self.request.url or ""

    def sent(self, request: requests.PreparedRequest) -> None:
        self._sent = request

    def set_credentials(self, headers: Mapping[str, str]) -> None:
        if self._sent is not None:
            # A retry: a copy of what was sent, with its body rewound.
            self.request = self._sent.copy()
            self._sent = None
            if self._position is not None:
                self.request.body.seek(self._position)  # type: ignore[union-attr]
        replace_credentials(self.request.headers, self._names, headers)


def _body_position(body: object) -> int | None:
    tell = getattr(body, "tell", None)
    if tell is None:
        return None
    try:
        return int(tell())
    except OSError:
        return None


class _Pending:
    """A sent call's answer hook, with its state until Watcher answers: the copy attached
    without a flow, or the flow that attached credentials, and where the body stood.

    It holds no reference to the request (whose hooks hold it), so a finished call leaves
    no reference cycle; the first answer (not a later hop of a redirect) takes the state.
    """

    __slots__ = ("auth", "call", "flow", "pair", "position")

    def __init__(
        self,
        auth: FlowAuth,
        pair: TokenPair | None,
        position: int | None,
        flow: Flow[None] | None,
        call: _PreparedCall | None,
    ) -> None:
        self.auth: FlowAuth | None = auth
        self.pair = pair
        self.position = position
        self.flow = flow
        self.call = call

    def __call__(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        auth = self.auth
        if auth is None:  # a later hop of a redirect: the flow already decided
            return response
        self.auth = None
        scheme = auth._scheme
        if self.flow is None and response.status_code != scheme.challenge:
            # A fresh copy went to Watcher: all the flow does with this answer is note
            # Watcher's clock. (A flow's answer may come from another origin: the flow decides.)
            lifecycle = scheme.lifecycle
            lifecycle.server_clock.observe_date(response.headers.get("Date"), lifecycle.clock)
            return response
        flow, call, self.flow, self.call = self.flow, self.call, None, None
        return auth._answered(response, self.pair, self.position, flow, call, kwargs)


class FlowAuth(KeyedCopy, AuthBase):
    """``requests`` auth that runs the call flow for one user key and one scheme.

    The credentials go only to Watcher's origin; after Watcher's own challenge (401 for
    API v3, 403 for API v2) the credentials are settled and the request is sent once more.
    """

    def __init__(self, steps: SyncSteps, scheme: CallScheme, key: str) -> None:
        self._steps = steps
        self._keep_copies(scheme, key)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        scheme = self._scheme
        # Where a body stands now, for a retry to rewind to (before anything reads it).
        position = None if r.body is None else _body_position(r.body)
        # The common case: a call to Watcher's origin while this process holds a fresh
        # copy (by the cache's own rules, change notices included). Attaching it is the
        # flow's whole decision, so the flow starts at Watcher's answer.
        pair = self.fresh_copy() if str(r.url).startswith(scheme.prefix) else None
        if pair is not None:
            replace_credentials(r.headers, scheme.header_names, self.headers_for(pair))
            hook = _Pending(self, pair, position, None, None)
        else:
            call = _PreparedCall(r, scheme.header_names, position)
            flow = call_flow(scheme, self.key, call)
            wants_send, _ = drive(flow, self._steps)
            if not wants_send:
                return r
            hook = _Pending(self, None, position, flow, call)
        # What ``register_hook`` does, less its ``isinstance(hook, Callable)`` check.
        r.hooks["response"].append(hook)
        return r

    def _answered(
        self,
        response: requests.Response,
        pair: TokenPair | None,
        position: int | None,
        flow: Flow[None] | None,
        call: _PreparedCall | None,
        kwargs: dict[str, Any],
    ) -> requests.Response:
        """The rest of the flow after Watcher's answer: nothing, or a retry."""
        scheme, steps, key = self._scheme, self._steps, self.key
        sent = response.request
        status = response.status_code
        if call is None:
            call = _PreparedCall(sent, scheme.header_names, position)
        call.sent(sent)
        answer = Answer(
            status,
            sent.url or "",
            response.headers.get("Date"),
            # Only a challenge's body is read here; any other is read under the size limit.
            response.content if status == scheme.challenge else b"",
        )
        if flow is None:
            assert pair is not None
            flow = answered(scheme, key, call, pair, answer)
            retry, _ = drive(flow, steps)
        else:
            retry, _ = drive(flow, steps, answer)
        if not retry:
            return response
        logger.info("Watcher answered %s for key %r; retrying once", status, key)
        response.close()
        second: requests.Response = response.connection.send(call.request, **kwargs)
        second.history.append(response)
        second.request = call.request
        return second  # the flow ends with the retry: its answer is the caller's

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r})"


class WatcherBearerAuth(FlowAuth):
    """``requests`` auth that attaches a user key's fresh access token and retries once on 401.

    Usable with any ``requests`` call (``requests.get(url, auth=manager.auth(key))``). The
    token goes only to the manager's Watcher origin (same scheme, host and port), and only a
    401 from that origin makes it refresh and retry.
    """


@functools.cache
def _origin_and_prefixes(base_url: str) -> tuple[tuple[str, str, int], tuple[str, str]]:
    """``base_url``'s origin and the adapter prefixes that serve it, longest first; kept
    (one entry per Watcher URL the process talks to), since every session of a manager
    shares its base URL."""
    scheme, host, port = origin = origin_of(base_url)
    return origin, (f"{scheme}://{host}:{port}/", f"{scheme}://{host}/")


# What ``requests.utils.default_headers()`` returns, made once: each session gets a copy.
_DEFAULT_HEADERS = default_headers()


class WatcherSession(requests.Session):
    """A ``requests.Session`` bound to one user key of one Watcher server.

    Relative paths resolve against the API root (``session.get("streams")``), every request
    gets the manager's timeout unless one is given, answers are read up to
    ``max_response_bytes`` (after decompression), cookies are ignored, and the credentials
    are never sent to another origin, on an absolute URL or a redirect.
    """

    #: The credential headers removed from a request redirected to another origin.
    credential_headers: tuple[str, ...] = ("Authorization",)

    def __init__(
        self,
        *,
        base_url: str,
        auth: AuthBase,
        timeout: float | tuple[float, float] | None,
        adapter: HTTPAdapter | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        # What requests.Session.__init__ sets, less its two default adapters: sessions are
        # made per web request (or lent again, see SessionLoan), and most never call anywhere
        # but Watcher's origin, served by the manager's shared adapter. Other origins get the
        # defaults on first use.
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict.__new__(CaseInsensitiveDict)
        headers._store = _DEFAULT_HEADERS._store.copy()  # type: ignore[attr-defined]
        self.headers = headers  # type: ignore[assignment]
        self.proxies = {}
        self.hooks = {"response": []}  # what default_hooks() returns
        self.params = {}
        self.stream = False
        self.verify = True
        self.cert = None
        self.max_redirects = DEFAULT_REDIRECT_LIMIT
        self.trust_env = True
        self.cookies = _SessionJar.refusing()
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.auth = auth
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._origin, prefixes = _origin_and_prefixes(self.base_url)
        self._shared_adapter = adapter
        # Where a session shared between threads sends calls to other origins, so that no
        # call mounts an adapter on it (TokenManager.shared_session).
        self._foreign_adapter: BaseAdapter | None = None
        # Whether Watcher's answers go to the calling context's hook (report_answers()).
        self._reports_answers = False
        # What two ``mount`` calls leave: the origin with its port, and without it. Other
        # origins (all of them, with no shared adapter) get requests' defaults on first use.
        self.adapters = OrderedDict()
        if adapter is not None:
            for prefix in prefixes:
                self.adapters[prefix] = adapter

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        if request.cookies or self.cookies or (self.trust_env and not (request.auth or self.auth)):
            return super().prepare_request(request)
        # No cookie on either side (answers' cookies are refused): what requests does, less
        # building, merging and reading empty cookie jars.
        prepared = _Prepared()
        prepared.prepare(
            method=str(request.method).upper(),
            url=request.url,
            files=request.files,
            data=request.data,
            json=request.json,
            headers=merge_setting(  # type: ignore[no-untyped-call]
                request.headers, self.headers, dict_class=CaseInsensitiveDict
            ),
            params=merge_setting(request.params, self.params),  # type: ignore[no-untyped-call]
            auth=merge_setting(request.auth, self.auth),  # type: ignore[no-untyped-call]
            cookies=_NO_JAR,
            hooks=merge_hooks(request.hooks, self.hooks),  # type: ignore[no-untyped-call]
        )
        return prepared

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        cookies = self.cookies
        if (
            self.trust_env
            or type(cookies) is not _SessionJar
            or cookies._policy is not _NO_COOKIES  # type: ignore[attr-defined]
            or not isinstance(request, requests.PreparedRequest)
        ):
            response = super().send(request, **kwargs)
        else:
            # What requests does for a session that refuses every cookie and reads nothing
            # from the environment, less its work for either: no answer's cookies are handed
            # to the jar (it would keep none), and redirects are looked for only on a redirect.
            kwargs.setdefault("stream", self.stream)
            kwargs.setdefault("verify", self.verify)
            kwargs.setdefault("cert", self.cert)
            if "proxies" not in kwargs:  # what requests resolves when it reads no environment
                kwargs["proxies"] = dict(self.proxies)
            allow_redirects = kwargs.pop("allow_redirects", True)
            adapter = self.get_adapter(url=str(request.url))
            start = time.perf_counter()
            response = adapter.send(request, **kwargs)
            response.elapsed = datetime.timedelta(seconds=time.perf_counter() - start)
            response = dispatch_hook("response", request.hooks, response, **kwargs)  # type: ignore[no-untyped-call]
            if allow_redirects:
                if response.is_redirect:
                    history = list(self.resolve_redirects(response, request, **kwargs))
                    if history:
                        history.insert(0, response)
                        response = history.pop()
                        response.history = history
            elif response.is_redirect:
                response._next = next(
                    self.resolve_redirects(response, request, yield_requests=True, **kwargs),
                    None,
                )
            if not kwargs["stream"]:
                response.content  # noqa: B018 (read now, as requests does)
        if self._reports_answers:  # what a response hook would do, without one on every call
            hook = _ANSWERS.get()
            if hook is not None:
                hook(response)
        return response

    def get_adapter(self, url: str) -> BaseAdapter:
        # requests lowercases a prepared URL's scheme and host, as the prefixes are.
        for prefix, adapter in self.adapters.items():
            if url.startswith(prefix):
                return adapter
        lowered = url.lower()
        for prefix, adapter in self.adapters.items():
            if lowered.startswith(prefix.lower()):
                return adapter
        foreign = self._foreign_adapter
        if foreign is not None and lowered.startswith(("http://", "https://")):
            return foreign
        if "http://" not in self.adapters:
            self.mount("https://", HTTPAdapter())
            self.mount("http://", HTTPAdapter())
        return super().get_adapter(url)

    def url_for(self, path: str) -> str:
        """The absolute URL for ``path``; absolute URLs are returned unchanged."""
        if "://" in path and is_absolute(path):
            return path
        return self.base_url + path.lstrip("/")

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if isinstance(url, bytes):
            url = url.decode()
        if isinstance(method, bytes):
            method = method.decode()
        # requests' positional order after the URL: params, data, headers, cookies, files,
        # auth, timeout (7th), allow_redirects, proxies, hooks, stream (11th).
        if len(args) <= 6 and "timeout" not in kwargs:
            kwargs["timeout"] = self.timeout
        # Read here unless the caller streams (as asked, or as the session's ``stream`` says),
        # so the size limit applies to whatever requests would have read.
        if len(args) > 10:
            asked = args[10]
            args = (*args[:10], True, *args[11:])
        else:
            asked = kwargs.get("stream")
            kwargs["stream"] = True
        streamed = bool(self.stream if asked is None else asked)
        target = self.url_for(url)
        failure = ""
        try:
            response = super().request(method, target, *args, **kwargs)
            if not streamed:
                self._read(response)
        except requests.RequestException as exc:
            if isinstance(exc, WatcherAuthError):
                raise
            failure = type(exc).__name__
        if failure:
            # Raised here, outside the handler, so no exception chain carries the request
            # (and its credentials) into a crash reporter.
            raise WatcherConnectionError(
                f"Watcher call {method} {path_only(target)} failed ({failure})"
            )
        return response

    def _read(self, response: requests.Response) -> None:
        if response._content_consumed:  # type: ignore[attr-defined]
            return
        content = read_limited(response.iter_content(CONTENT_CHUNK_SIZE), self.max_response_bytes)
        response._content = content

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: Any) -> None:
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]
        if prepared_request.url is None or origin_of(prepared_request.url) != self._origin:
            for name in self.credential_headers:
                prepared_request.headers.pop(name, None)

    def json(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` and return its JSON, raising :class:`WatcherAPIError` on an error status."""
        return self._decode(self.get(path, **kwargs))

    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        item_key: str | None = None,
        limit: int | None = None,
        max_pages: int | None = None,
    ) -> Iterator[Any]:
        """Yield every item of a cursor-paginated list, following ``next`` until it is null.

        Args:
            path: the list's path, e.g. ``"streams"``.
            params: query parameters for every page (``q``, ``sort``...).
            item_key: the key of the items in each page; by default Watcher's key for the
                list (``users_list`` for ``users``), or the one list in the page.
            limit: the page size to ask for.
            max_pages: stop after this many pages.

        Raises:
            WatcherPaginationError: the server repeated a cursor.
        """
        pages = CursorPages(
            path, params=params, item_key=item_key, limit=limit, max_pages=max_pages
        )
        more = True
        while more:
            items, more = pages.take(self._decode(self.get(path, params=pages.query)))
            yield from items

    @staticmethod
    def _decode(response: requests.Response) -> Any:
        return decode_answer(
            response.status_code,
            response.content,
            method="GET",  # json() and paginate() only send GETs
            path=path_only(response.url),
        )

    def close(self) -> None:
        for prefix, adapter in list(self.adapters.items()):
            if adapter is not self._shared_adapter:
                adapter.close()
            del self.adapters[prefix]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url} auth={self.auth!r}>"


class _Made:
    """What a session lent by a manager was when made, to tell whether a request changed it."""

    __slots__ = ("adapters", "proxies", "values")

    def __init__(self, session: WatcherSession) -> None:
        self.values = tuple(vars(session).values())
        self.adapters = OrderedDict(session.adapters)
        self.proxies = dict(session.proxies)


class SessionLoan:
    """A manager's session lent to one web request (``TokenManager.lend``).

    :meth:`end` gives it back after the response; it is kept for the key's next request only
    if the request left it as it was made: the same attributes holding the same objects,
    ``requests``' default headers, no params, no cookie, no response hook but the loan's, no
    adapter or proxy added. Anything else (a header set, a cookie policy changed, another
    origin called, the session closed) and it is closed instead, so nothing one request did
    to its session reaches the next. Each loan ends once; in a ``with`` block it stands for
    its session and ends on leaving.
    """

    __slots__ = ("_made", "ended", "hook", "key", "manager", "owner", "session", "touched")

    #: What a web layer's proxy may hand out of a lent session without marking it touched:
    #: its calls, which leave the session as it was.
    CALLS: ClassVar[frozenset[str]] = frozenset(
        {"get", "post", "put", "patch", "delete", "head", "options", "request", "json", "paginate"}
    )

    def __init__(
        self,
        manager: Any,
        key: str,
        session: WatcherSession,
        made: _Made,
        hook: Any = None,
        owner: object = None,
    ) -> None:
        #: The ``TokenManager`` that lent the session.
        self.manager = manager
        self._made = made
        self.key = key
        self.session = session
        #: The response hook the holder gave the session for the loan.
        self.hook = hook
        #: Who holds the loan (a web layer's request object).
        self.owner = owner
        #: Whether the holder may have reached the session's state. A web layer that hands
        #: the session out through a proxy clears it and sets it again on any use but a
        #: call (see :attr:`CALLS`); only a touched session is compared with what it was.
        self.touched = True
        self.ended = False

    def end(self) -> None:
        """Give the session back (once): kept for the key's next request if the request left
        it unchanged (and no other is kept for the key), else closed."""
        if self.ended:
            return
        self.ended = True
        session, made, manager = self.session, self._made, self.manager
        adapters = session.adapters
        # Only called (CALLS): requests changes no session state on a call, and this session
        # refuses cookies; a call to another origin adds that origin's adapter. Anything
        # else is compared with what the session was when made.
        if (
            self.touched
            or len(adapters) != len(made.adapters)
            or session._shared_adapter is not manager.steps.adapter
        ) and self._changed():
            session.close()
            return
        session.hooks["response"].clear()
        manager._keep(self.key, session, made)

    def _changed(self) -> bool:
        session, made = self.session, self._made
        values = vars(session)
        hooks = session.hooks
        jar = session.cookies
        return bool(
            len(values) != len(made.values)
            or not all(map(operator.is_, values.values(), made.values))
            or len(hooks) != 1
            or hooks.get("response") != ([] if self.hook is None else [self.hook])
            or session.headers._store != _DEFAULT_HEADERS._store  # type: ignore[attr-defined]
            or session.params
            or session.adapters != made.adapters
            or session.proxies != made.proxies
            or jar._policy is not _NO_COOKIES  # type: ignore[attr-defined]
            or jar._cookies  # type: ignore[attr-defined]
            # another process's pool, after fork
            or session._shared_adapter is not self.manager.steps.adapter
        )

    def __enter__(self) -> WatcherSession:
        return self.session

    def __exit__(self, *args: object) -> None:
        self.end()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.session!r}>"
