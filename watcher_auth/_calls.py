"""One algorithm for every authorized call: attach credentials, send, and on Watcher's own
challenge (401 for API v3, 403 for API v2) settle the credentials and retry once.

:func:`call_flow` yields :data:`~watcher_auth._effects.SEND` where the caller's request goes
out and receives an :class:`~watcher_auth._effects.Answer`; the ``requests`` auth and the
``httpx`` auth drive it. Credentials go only to Watcher's origin, and only an answer from
Watcher's origin can make the library refresh, log in again, delete or retry.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, MutableMapping
from typing import Protocol
from urllib.parse import urlsplit

from watcher_auth._effects import SEND, Answer, Flow
from watcher_auth._events import EventType
from watcher_auth._lifecycle import Lifecycle
from watcher_auth._policy import bearer_authorization
from watcher_auth._tokens import Secret, StoreKey, TokenPair
from watcher_auth._urls import origin_of

__all__ = [
    "BearerScheme",
    "CallRequest",
    "CallScheme",
    "KeyedCopy",
    "answered",
    "call_flow",
    "replace_credentials",
]


def _no_copy() -> None:
    return None


class CallRequest(Protocol):
    """The caller's request, as a call flow sees it."""

    @property
    def url(self) -> str:
        """The absolute URL."""

    @property
    def replayable(self) -> bool:
        """Whether the body can be sent a second time (it is not a one-shot stream)."""

    def set_credentials(self, headers: Mapping[str, str]) -> None:
        """Replace the scheme's credential headers with ``headers``."""


class CallScheme(ABC):
    """How one kind of stored credentials rides on a call, and what a challenge means."""

    #: The status with which Watcher says the credentials may be stale.
    challenge: int
    #: The headers that carry the credentials (removed before a retry).
    header_names: tuple[str, ...]

    def __init__(self, lifecycle: Lifecycle, api_root: str) -> None:
        self.lifecycle = lifecycle
        self.api_root = api_root
        self.origin = origin_of(api_root)
        parts = urlsplit(api_root)
        # "scheme://netloc/" ends the netloc, so a URL that starts with it is on the origin.
        self.prefix = f"{parts.scheme}://{parts.netloc}/"
        self.api = "v3"

    def owns(self, url: str) -> bool:
        """Whether ``url`` is on Watcher's origin (same scheme, host and port)."""
        return url.startswith(self.prefix) or origin_of(url) == self.origin

    def copier(self, key: str) -> Callable[[], TokenPair | None]:
        """What tells, in one call, this process's fresh copy of ``key``'s record, to send
        with no step at all; it tells ``None`` when only :meth:`credentials` can (no copy, or
        the copy is stale or was dropped by a change notice: the cache's rules decide). An
        auth object makes one per key and calls it on every request.

        Raises:
            ConfigurationError: ``key`` is not a non-empty string (as the flow would).
        """
        skey = self.lifecycle.store_key(key, self.api)
        cache = self.lifecycle.cache
        if cache is None:
            return _no_copy  # no copies kept: a process-local store
        return functools.partial(cache.get, skey)

    @abstractmethod
    def credentials(self, key: str) -> Flow[TokenPair]:
        """The record to send for ``key``."""

    @abstractmethod
    def headers(self, pair: TokenPair) -> dict[str, str]:
        """The headers that carry ``pair``."""

    @abstractmethod
    def after_challenge(self, key: str, sent: TokenPair, answer: Answer) -> Flow[TokenPair | None]:
        """What to retry with after Watcher challenged ``sent``; ``None``: return the answer."""


class BearerScheme(CallScheme):
    """API v3: the access token as ``Authorization: Bearer``; a 401 refreshes it."""

    challenge = 401
    header_names = ("Authorization",)

    def __init__(
        self,
        lifecycle: Lifecycle,
        api_root: str,
        *,
        local_read: Callable[[StoreKey], TokenPair | None] | None = None,
    ) -> None:
        super().__init__(lifecycle, api_root)
        #: Reads a process-local store with no I/O (a memory store's): such a store is this
        #: process's own truth, so a fresh pair in it needs no flow either.
        self.local_read = local_read

    def copier(self, key: str) -> Callable[[], TokenPair | None]:
        read = self.local_read
        if read is None:  # a shared store: the per-process cache's rules
            return super().copier(key)
        skey = self.lifecycle.store_key(key)
        is_stale = self.lifecycle.is_stale

        def fresh() -> TokenPair | None:
            pair = read(skey)
            if pair is None or is_stale(pair):
                return None  # what ``Lifecycle.current`` hands to a refresh (or NotConnected)
            return pair

        return fresh

    def credentials(self, key: str) -> Flow[TokenPair]:
        return self.lifecycle.current(key)

    def headers(self, pair: TokenPair) -> dict[str, str]:
        return {"Authorization": Secret(bearer_authorization(pair.access_token))}

    def after_challenge(self, key: str, sent: TokenPair, answer: Answer) -> Flow[TokenPair | None]:
        fresh = yield from self.lifecycle.refresh_after_unauthorized(key, sent)
        return fresh


class KeyedCopy:
    """What an auth object for one key keeps between calls, for the ``requests`` and ``httpx``
    auths alike: the key's fresh-copy check (see :meth:`CallScheme.copier`), and the headers
    of the pair it sent last (most calls send the same pair again)."""

    _scheme: CallScheme
    key: str

    def _keep_copies(self, scheme: CallScheme, key: str) -> None:
        self._scheme = scheme
        self.key = key
        self._copier: tuple[str, Callable[[], TokenPair | None]] | None = None
        self._sent: tuple[TokenPair, dict[str, str]] | None = None

    def fresh_copy(self) -> TokenPair | None:
        """This process's fresh copy of the key's record, found with no I/O; ``None`` when
        only the flow can tell."""
        copier, key = self._copier, self.key
        if copier is None or copier[0] is not key:
            copier = self._copier = (key, self._scheme.copier(key))
        return copier[1]()

    def headers_for(self, pair: TokenPair) -> dict[str, str]:
        """The scheme's headers for ``pair``, kept for the pair sent last."""
        sent = self._sent
        if sent is None or sent[0] is not pair:
            sent = self._sent = (pair, self._scheme.headers(pair))
        return sent[1]


def replace_credentials(
    sent: MutableMapping[str, str], names: tuple[str, ...], headers: Mapping[str, str]
) -> None:
    """Put ``headers`` in a request's case-insensitive ``sent`` headers in place of the
    scheme's credential headers ``names``."""
    for name in names:
        if name not in headers:
            sent.pop(name, None)
    for name, value in headers.items():
        sent[name] = value  # replaces any header of that name, whatever its case


def call_flow(scheme: CallScheme, key: str, request: CallRequest) -> Flow[None]:
    """Send ``request`` as ``key``, retrying once after a challenge from Watcher itself."""
    if not scheme.owns(request.url):
        yield SEND  # not Watcher: sent as it is, with no credentials
        return
    pair = yield from scheme.credentials(key)
    request.set_credentials(scheme.headers(pair))
    answer: Answer = yield SEND
    yield from answered(scheme, key, request, pair, answer)


def answered(
    scheme: CallScheme, key: str, request: CallRequest, pair: TokenPair, answer: Answer
) -> Flow[None]:
    """What follows Watcher's ``answer`` to ``request`` sent with ``pair``: nothing, or the
    credentials settled and the request sent once more.

    The rest of :func:`call_flow`, on its own for a driver that attached ``pair`` without
    running the flow (a fresh copy already in this process, see ``FlowAuth``).
    """
    lifecycle = scheme.lifecycle
    lifecycle.server_clock.observe_date(answer.date, lifecycle.clock)
    if answer.status != scheme.challenge or not scheme.owns(answer.url) or not request.replayable:
        return
    skey = lifecycle.store_key(key, scheme.api)
    lifecycle.emit(EventType.UNAUTHORIZED_RETRY, skey, pair.username)
    fresh = yield from scheme.after_challenge(key, pair, answer)
    if fresh is None:
        return
    request.set_credentials(scheme.headers(fresh))
    yield SEND
