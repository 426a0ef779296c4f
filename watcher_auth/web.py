"""What a web page or API answers when watcher-auth fails: one policy for every framework.

:func:`error_answer` maps an exception to an :class:`ErrorAnswer` (status, stable error code,
``Retry-After``, a message safe to show, whether the person should connect their Watcher
account); :class:`FailureLog` writes one line per failure, and repeats of the same failure at
most once per interval with a count. The Django app and the Flask extension both use them;
other frameworks can too. The policy is plain data in, data out.

Also shared by the web layers: :func:`portal_key` and :func:`service_key` (portal users and
service accounts in disjoint key namespaces), :func:`forget` (disconnect, even a record no
current key can read), :func:`unreadable_keys` (what a key rotation left unreadable),
:class:`LastAnswer` and :func:`report_answers` (Watcher's last answer to a request).

============================================  ======  =====================================  =====
Failure                                       Status  ``error`` code                         Retry
============================================  ======  =====================================  =====
``WatcherUnavailable`` (connection, timeout)  503     ``watcher_unavailable``                30
``WatcherAPIError``, status 500 or more       503     ``watcher_unavailable``                30
``WatcherProtocolError`` (HTML, not JSON)     503     ``watcher_bad_answer``                 30
``StoreLockTimeout``                          503     ``watcher_busy``                       5
``StoreError``                                503     ``watcher_store_unavailable``          30
``TokenDecryptionError``                      401*    ``watcher_reconnect_required``         -
``ReauthenticationRequired``,                 401*    ``watcher_reauthentication_required``  -
``InvalidCredentials``
``NotConnected``                              401*    ``watcher_not_connected``              -
``WatcherPermissionDenied``, API error 403    403     ``watcher_permission_denied``          -
``WatcherAPIError`` 404                       404     ``watcher_not_found``                  -
``WatcherAPIError``, other 4xx                502     ``watcher_request_rejected``           -
``ConfigurationError``                        503     ``watcher_misconfigured``              -
any other ``WatcherAuthError``                502     ``watcher_error``                      -
============================================  ======  =====================================  =====

``*``: a page sends the person to the connect page instead; API clients get the 401.
``Retry`` is the ``Retry-After`` header in seconds.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from watcher_auth import (
    ConfigurationError,
    InvalidCredentials,
    NotConnected,
    ReauthenticationRequired,
    StoreError,
    StoreKey,
    StoreLockTimeout,
    TokenDecryptionError,
    TokenStore,
    WatcherAPIError,
    WatcherAuthError,
    WatcherPermissionDenied,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth._session import report_answers

if TYPE_CHECKING:
    from watcher_auth import TokenManager

_logger = logging.getLogger("watcher_auth")

__all__ = [
    "PORTAL_KEY_PREFIX",
    "RETRY_AFTER_BUSY",
    "RETRY_AFTER_UNAVAILABLE",
    "SERVICE_KEY_PREFIX",
    "ErrorAnswer",
    "FailureLog",
    "LastAnswer",
    "error_answer",
    "failure_cause",
    "forget",
    "portal_id",
    "portal_key",
    "report_answers",
    "service_key",
    "unreadable_keys",
]

#: ``Retry-After`` seconds while Watcher or the token store is down.
RETRY_AFTER_UNAVAILABLE = 30
_DEFAULT_PORTS = {"http": 80, "https": 443}

#: ``Retry-After`` seconds after waiting too long for another worker's refresh.
RETRY_AFTER_BUSY = 5


@dataclass(frozen=True)
class ErrorAnswer:
    """The answer to a failure. Carries no secret and no text taken from the exception.

    Attributes:
        status: the HTTP status to answer with.
        code: a stable error code (``"watcher_unavailable"``...), the JSON ``error`` field.
        message: a sentence to show the person.
        retry_after: seconds for a ``Retry-After`` header, or ``None`` for none.
        connect: the person should (re)connect their Watcher account: pages redirect to the
            connect page; API clients get :attr:`status` (401).
        reason: why connecting is needed (``"not_connected"``, ``"reauthentication_required"``
            or ``"reconnect_required"``), ``None`` when :attr:`connect` is false.
        upstream_status: the status Watcher answered with, for a ``WatcherAPIError``.
    """

    status: int
    code: str
    message: str
    retry_after: int | None = None
    connect: bool = False
    reason: str | None = None
    upstream_status: int | None = None

    def as_json(self) -> dict[str, object]:
        """The JSON body of the answer (``error``, ``message`` and the optional fields)."""
        body: dict[str, object] = {"error": self.code, "message": self.message}
        if self.reason is not None:
            body["reason"] = self.reason
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        if self.upstream_status is not None:
            body["watcher_status"] = self.upstream_status
        return body

    @property
    def log_level(self) -> int:
        """How loud a log line about it should be: warnings for outages, info for the rest."""
        if self.status >= 500:
            return logging.ERROR if self.code == "watcher_misconfigured" else logging.WARNING
        return logging.INFO


_UNAVAILABLE = ErrorAnswer(
    503,
    "watcher_unavailable",
    "Watcher cannot be reached right now. Your account stays connected; try again in a minute.",
    retry_after=RETRY_AFTER_UNAVAILABLE,
)
_BAD_ANSWER = ErrorAnswer(
    503,
    "watcher_bad_answer",
    "Watcher answered in a way this site does not understand. Try again in a minute.",
    retry_after=RETRY_AFTER_UNAVAILABLE,
)
_BUSY = ErrorAnswer(
    503,
    "watcher_busy",
    "Your Watcher sign-in is being renewed by another request. Try again in a few seconds.",
    retry_after=RETRY_AFTER_BUSY,
)
_STORE = ErrorAnswer(
    503,
    "watcher_store_unavailable",
    "This site cannot read its saved Watcher sign-ins right now. Try again in a minute.",
    retry_after=RETRY_AFTER_UNAVAILABLE,
)
_RECONNECT = ErrorAnswer(
    401,
    "watcher_reconnect_required",
    "Your saved Watcher sign-in can no longer be read. Connect your Watcher account again.",
    connect=True,
    reason="reconnect_required",
)
_REAUTHENTICATE = ErrorAnswer(
    401,
    "watcher_reauthentication_required",
    "Watcher no longer accepts your saved sign-in. Connect your Watcher account again.",
    connect=True,
    reason="reauthentication_required",
)
_NOT_CONNECTED = ErrorAnswer(
    401,
    "watcher_not_connected",
    "Connect your Watcher account to continue.",
    connect=True,
    reason="not_connected",
)
_PERMISSION_DENIED = ErrorAnswer(
    403, "watcher_permission_denied", "Your Watcher account is not allowed to see this."
)
_MISCONFIGURED = ErrorAnswer(
    503, "watcher_misconfigured", "This site's connection to Watcher is not set up correctly."
)
_OTHER = ErrorAnswer(502, "watcher_error", "Watcher could not complete this request.")


def error_answer(
    exc: BaseException,
    *,
    watcher_origin: str | None = None,
    last_status: int | None = None,
    last_was_json: bool = True,
) -> ErrorAnswer | None:
    """The answer to ``exc``, or ``None`` when it is not a failure of watcher-auth.

    Args:
        exc: the exception a view raised.
        watcher_origin: Watcher's address (any URL on it); with it, a ``requests`` connection
            error or timeout, and an ``HTTPError`` from ``raise_for_status()`` (``requests``
            or ``httpx``), on a call to that origin are answered like the library's own
            errors. Without it they are not ours (``None``).
        last_status: the status of the last answer Watcher gave while serving this request,
            if any. A ``KeyError``, ``IndexError``, ``TypeError`` or ``ValueError`` (a
            ``.json()`` that failed) raised after Watcher answered 5xx is answered as Watcher
            being unavailable: it came from reading Watcher's error page as data.
        last_was_json: whether that answer was JSON; after one that was not, a
            ``ValueError`` (``response.json()`` failing) is Watcher's bad answer.
    """
    if isinstance(exc, WatcherAuthError):
        return _library_answer(exc)
    if watcher_origin is not None and isinstance(exc, requests.RequestException):
        answer = _requests_answer(exc, watcher_origin)
        if answer is not None:
            return answer
    if watcher_origin is not None and _is_httpx_status_error(exc):
        failed: Any = exc
        if _origin(str(failed.request.url)) == _origin(watcher_origin):
            return _status_answer(int(failed.response.status_code))
    if last_status is not None and isinstance(exc, (LookupError, TypeError, ValueError)):
        if last_status >= 500:
            return replace(_UNAVAILABLE, upstream_status=last_status)
        if not last_was_json and isinstance(exc, ValueError):
            return replace(_BAD_ANSWER, upstream_status=last_status)
    return None


class LastAnswer:
    """A ``requests`` response hook that remembers Watcher's last answer on a session.

    Web layers add one to the session they hand a view (``session.hooks["response"]``), then
    pass :attr:`status` and :attr:`was_json` to :func:`error_answer`. It keeps the answer's
    status and headers, no body.
    """

    __slots__ = ("_headers", "_was_json", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self._was_json = True
        self._headers: Mapping[str, str] | None = None

    def __call__(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        # Read on every answer, looked into only after a failure.
        self.status = response.status_code
        self._headers = response.headers

    @property
    def was_json(self) -> bool:
        """Whether the last answer said its body is JSON (``True`` before any answer)."""
        headers = self._headers
        if headers is None:
            return self._was_json
        return "json" in headers.get("Content-Type", "").lower()

    @was_json.setter
    def was_json(self, value: bool) -> None:
        self._was_json, self._headers = value, None


def _library_answer(exc: WatcherAuthError) -> ErrorAnswer:
    # Subclasses first: TokenDecryptionError and StoreLockTimeout are StoreErrors,
    # ReauthenticationRequired is a NotConnected, WatcherConnectionError a WatcherUnavailable.
    if isinstance(exc, TokenDecryptionError):
        return _RECONNECT
    if isinstance(exc, StoreLockTimeout):
        return _BUSY
    if isinstance(exc, StoreError):
        return _STORE
    if isinstance(exc, (ReauthenticationRequired, InvalidCredentials)):
        return _REAUTHENTICATE
    if isinstance(exc, NotConnected):
        return _NOT_CONNECTED
    if isinstance(exc, WatcherUnavailable):
        return _UNAVAILABLE
    if isinstance(exc, WatcherProtocolError):
        return _BAD_ANSWER
    if isinstance(exc, WatcherPermissionDenied):
        return _PERMISSION_DENIED
    if isinstance(exc, WatcherAPIError):
        return _status_answer(exc.status_code)
    if isinstance(exc, ConfigurationError):
        return _MISCONFIGURED
    return _OTHER


def _status_answer(status: int) -> ErrorAnswer:
    """The answer to Watcher having answered ``status`` to a call the portal made."""
    if status >= 500:
        return replace(_UNAVAILABLE, upstream_status=status)
    if status == 403:
        return replace(_PERMISSION_DENIED, upstream_status=status)
    if status == 404:
        return ErrorAnswer(
            404, "watcher_not_found", "Watcher has no such item.", upstream_status=status
        )
    # Any other refusal is about the request the portal built, not the visitor's: from the
    # visitor's side that is a bad gateway.
    return ErrorAnswer(
        502,
        "watcher_request_rejected",
        "Watcher refused a request this site made.",
        upstream_status=status,
    )


def _requests_answer(exc: requests.RequestException, origin: str) -> ErrorAnswer | None:
    sent = getattr(exc, "request", None)
    url = getattr(sent, "url", None)
    if not isinstance(url, str) or _origin(url) != _origin(origin):
        return None
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return _status_answer(exc.response.status_code)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return _UNAVAILABLE
    return None


def _is_httpx_status_error(exc: BaseException) -> bool:
    """An ``httpx`` ``raise_for_status()`` error (httpx is optional: loaded if anyone uses it)."""
    httpx = sys.modules.get("httpx")
    return httpx is not None and isinstance(exc, httpx.HTTPStatusError)


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, lower-cased, with the default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = -1
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


def failure_cause(exc: BaseException) -> str:
    """One line naming ``exc`` and the exceptions it came from, without a traceback.

    Library messages carry no secret; those of other exceptions in the chain (a database
    driver's, ``requests``') could, so only their type names are shown.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        name = type(current).__name__
        parts.append(f"{name}: {current}" if isinstance(current, WatcherAuthError) else name)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return " <- ".join(parts)


class FailureLog:
    """Logs failures one line each; the same failure again within ``interval`` is counted.

    Repeats (same error code, exception type and message) are not logged until
    ``interval`` seconds after the last line about them; the next line then says how many
    were left out. Safe to share between threads.

    Args:
        logger: where the lines go.
        interval: seconds between two lines about the same failure.
        clock: monotonic seconds; tests pass a fake one.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        # failure -> (when it was last logged, repeats left out since)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def log(self, exc: BaseException, answer: ErrorAnswer, *, where: str = "") -> bool:
        """Log ``exc`` (answered with ``answer``) unless it is a recent repeat.

        Args:
            exc: the failure.
            answer: how it is answered.
            where: what was being served (a path), added to the line.

        Returns:
            Whether a line was written.
        """
        cause = failure_cause(exc)
        identity = (answer.code, cause)
        now = self.clock()
        with self._lock:
            last = self._seen.get(identity)
            if last is not None and now - last[0] < self.interval:
                self._seen[identity] = (last[0], last[1] + 1)
                return False
            skipped = last[1] if last is not None else 0
            self._seen[identity] = (now, 0)
            if len(self._seen) > 1000:  # a bounded memory of failure kinds
                self._prune(now)
        repeats = f" (and {skipped} more like it in the last {now - last[0]:.0f}s)" if last else ""
        self.logger.log(
            answer.log_level,
            "Watcher request failed%s: answered %d %s; cause: %s%s",
            f" on {where}" if where else "",
            answer.status,
            answer.code,
            cause,
            repeats if skipped else "",
        )
        return True

    def clear(self) -> None:
        """Forget the failures seen so far: the next of each kind is logged again."""
        with self._lock:
            self._seen.clear()

    def _prune(self, now: float) -> None:
        for identity, (when, _count) in list(self._seen.items()):
            if now - when >= self.interval:
                del self._seen[identity]


#: Store keys of service accounts start with this; :func:`portal_key` never makes one.
SERVICE_KEY_PREFIX = "service:"
#: Added in front of a portal id that would otherwise look reserved.
PORTAL_KEY_PREFIX = "user:"
# The service account's key in earlier versions of the Flask extension.
_LEGACY_SERVICE_KEY = "watcher-service-account"


def portal_key(portal_id: str) -> str:
    """The store key of a portal user: their id, unless it could pass for a reserved key.

    An id starting with ``"service:"`` or ``"user:"`` (or equal to the Flask extension's
    old service key ``"watcher-service-account"``) becomes ``"user:" + id``; every other id
    is its own key, so existing records stay where they are. No portal id maps to a
    :func:`service_key`, and no two ids map to the same key.
    """
    if (
        portal_id.startswith((SERVICE_KEY_PREFIX, PORTAL_KEY_PREFIX))
        or portal_id == _LEGACY_SERVICE_KEY
    ):
        return PORTAL_KEY_PREFIX + portal_id
    return portal_id


def portal_id(key: str) -> str | None:
    """The portal id whose :func:`portal_key` is ``key``; ``None`` for any other key."""
    if key.startswith(SERVICE_KEY_PREFIX):
        return None
    candidate = key.removeprefix(PORTAL_KEY_PREFIX)
    return candidate if portal_key(candidate) == key else None


def service_key(username: str) -> str:
    """The store key of the service account ``username`` (never a portal user's key)."""
    return SERVICE_KEY_PREFIX + username


def forget(manager: TokenManager, key: str, api: str | None = None) -> bool:
    """Forget ``key``'s records (``api`` ``"v3"``, ``"v2"``, or ``None`` for both).

    A record that the current encryption keys cannot read is deleted as well: deleting
    needs no decryption, and the person asked for it. Returns whether any record existed.
    """
    existed = False
    for which in ("v3", "v2") if api is None else (api,):
        try:
            found = manager.v2_logout(key) if which == "v2" else manager.logout(key)
        except TokenDecryptionError:
            manager.store.delete(manager.store_key(key, api=which))
            _logger.info("an unreadable Watcher %s record of user key %r was deleted", which, key)
            found = True
        existed = found or existed
    return existed


def unreadable_keys(manager: TokenManager) -> list[StoreKey] | None:
    """The keys of ``manager``'s server whose records the current keys cannot decrypt.

    ``None`` when the store cannot list its keys. Nothing is deleted.
    """
    store = manager.store
    if type(store).iter_keys is TokenStore.iter_keys:
        return None  # the base class lists nothing: this store cannot enumerate
    keys = list(store.iter_keys(server=manager.server))
    unreadable: list[StoreKey] = []
    for skey in keys:
        try:
            store.load(skey)
        except TokenDecryptionError:
            unreadable.append(skey)
    return unreadable
