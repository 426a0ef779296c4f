"""The I/O steps the token lifecycle asks its drivers to carry out.

The lifecycle (:mod:`watcher_auth._lifecycle`) is written once, as generators that yield
these steps and receive their results; :mod:`watcher_auth._drivers` carries them out with
blocking calls (``requests``, a :class:`~watcher_auth.TokenStore`) or with coroutines
(``httpx``, an :class:`~watcher_auth.AsyncTokenStore`). No step holds a secret in a form its
``repr`` would show, so frame-local captures (Sentry, Django's debug page) see none.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from watcher_auth._tokens import StoreKey, TokenPair

__all__ = [
    "SEND",
    "Answer",
    "Delete",
    "Effect",
    "Flow",
    "HttpRequest",
    "HttpResponse",
    "Load",
    "Lock",
    "LockHandle",
    "Provide",
    "Save",
    "Send",
    "Unlock",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Load:
    """Read ``key``'s record from the store; the result is a :class:`TokenPair` or ``None``."""

    key: StoreKey


@dataclass(frozen=True, slots=True)
class Save:
    """Write ``pair`` under ``key``."""

    key: StoreKey
    pair: TokenPair


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete ``key``'s record."""

    key: StoreKey


@dataclass(frozen=True, slots=True)
class Lock:
    """Take ``key``'s lock: this process's (threads and tasks), or with ``shared`` the
    store's (every process); the result is a :class:`LockHandle`."""

    key: StoreKey
    shared: bool = False


@dataclass(slots=True)
class LockHandle:
    """A held lock: what :class:`Unlock` releases, and how long taking it took."""

    key: StoreKey
    waited: float
    release: Any = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Unlock:
    """Release a lock taken by :class:`Lock`."""

    handle: LockHandle


@dataclass(frozen=True, slots=True)
class Provide:
    """Ask the credentials provider for ``user``'s ``(username, password)``, or ``None``."""

    user: str


@dataclass(frozen=True, slots=True, repr=False)
class HttpRequest:
    """A request the lifecycle itself sends to Watcher (a login, a refresh, a whoami).

    Its headers and JSON body may carry credentials, so ``repr`` shows the method and path.
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    what: str = "the login request"
    #: Wait for the answer until the deadline, not the call timeout: a refresh given up
    #: early may have spent a rotating refresh token.
    patient: bool = False

    def __repr__(self) -> str:
        return f"HttpRequest({self.method} {urlsplit(self.url).path})"


@dataclass(frozen=True, slots=True, repr=False)
class HttpResponse:
    """Watcher's answer to an :class:`HttpRequest`, read whole (within the size limit).

    Attributes:
        status: the HTTP status code.
        headers: the response headers (case-insensitive mapping).
        body: the body, decompressed.
        received_at: local clock time when the answer was complete.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    received_at: float

    def __repr__(self) -> str:
        return f"HttpResponse({self.status})"


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``request``; the result is an :class:`HttpResponse`.

    Raises (thrown into the flow) :class:`~watcher_auth.WatcherUnavailable` when Watcher
    cannot be reached or does not answer within the deadline.
    """

    request: HttpRequest


@dataclass(frozen=True, slots=True, repr=False)
class Answer:
    """What a call flow is told of the answer to the caller's request.

    Attributes:
        status: the HTTP status code.
        url: the URL that answered (after any redirect the transport followed).
        date: the ``Date`` header, if any.
        body: the body, only when the status is the scheme's challenge status.
    """

    status: int
    url: str
    date: str | None = None
    body: bytes = b""

    def __repr__(self) -> str:
        return f"Answer({self.status})"


class _SendCall:
    """Send the caller's own request now (used by the call flows of the sessions)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SEND"


#: Yielded by a call flow when the caller's request is ready to go.
SEND = _SendCall()

Effect = Load | Save | Delete | Lock | Unlock | Provide | Send
#: A lifecycle generator: yields effects, receives their results, returns a ``T``.
Flow = Generator[Any, Any, T]
