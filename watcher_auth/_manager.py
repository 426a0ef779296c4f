"""The token manager: logs in, stores, refreshes, and hands out authenticated sessions."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from cachetools import TLRUCache
from requests.adapters import HTTPAdapter

from watcher_auth._events import EventHub, EventType, Listener, WatcherEvent
from watcher_auth._exceptions import (
    ConfigurationError,
    NotConnected,
    ReauthenticationRequired,
    StoreLockTimeout,
    WatcherUnavailable,
)
from watcher_auth._locks import KeyedLocks
from watcher_auth._policy import (
    RefreshRejected,
    default_refresh_margin,
    parse_token_response,
)
from watcher_auth._session import WatcherBearerAuth, WatcherSession, block_cookies, origin_of
from watcher_auth._tokens import Secret, StoreKey, TokenPair
from watcher_auth.stores import MemoryStore, TokenStore, resolve_store
from watcher_auth.v2._accounts import V2Accounts
from watcher_auth.v2._auth import WatcherV2Auth
from watcher_auth.v2._session import WatcherV2Session

__all__ = ["CredentialsProvider", "TokenManager"]

logger = logging.getLogger("watcher_auth")

#: Returns ``(username, password)`` for a user key, or ``None`` when it has none.
CredentialsProvider = Callable[[str], "tuple[str, str] | None"]
Timeout = float | tuple[float, float]
SessionT = TypeVar("SessionT", bound=requests.Session)

V3_ROOT = "/watcher/client-api/v3/"


def normalize_server_url(url: str) -> str:
    """``scheme://host[:port][/prefix]`` without a trailing slash or the API path.

    Raises:
        ConfigurationError: not an http(s) URL with a host, or it carries credentials.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("the Watcher URL is empty")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"the Watcher URL must be http:// or https:// with a host: {url!r}"
        )
    if parts.username or parts.password:
        raise ConfigurationError("the Watcher URL must not contain a username or password")
    if parts.query or parts.fragment:
        raise ConfigurationError("the Watcher URL must not have a query or fragment")
    path = parts.path.rstrip("/")
    for api_root in (V3_ROOT.rstrip("/"), "/vsaas/api/v2"):
        if path.endswith(api_root):
            path = path[: -len(api_root)]
    return f"{parts.scheme}://{parts.netloc.lower()}{path}"


class TokenManager:
    """Keeps Watcher API v3 tokens for many user keys of one Watcher server.

    Create one per Watcher server per process and share it between threads. The ``v2_*``
    methods keep API v2 sessions and user keys in the same store, apart from the v3 tokens.

    Args:
        base_url: Watcher's address, e.g. ``"https://watcher.example.com"``.
        store: where tokens are kept: a :class:`~watcher_auth.TokenStore`, or a name or dotted
            path for :func:`~watcher_auth.resolve_store`. Default: a new :class:`MemoryStore`.
        credentials: optional ``key -> (username, password) | None``. With it, a key whose
            refresh token was rejected (or that has no tokens yet) logs in again by itself,
            as does a key whose API v2 session died; meant for service accounts. Passwords
            it returns are used once and not kept.
        timeout: seconds for every request to Watcher (or ``(connect, read)``).
        clock: the wall clock, ``time.time`` unless a test moves a fake one.
        refresh_margin: seconds before expiry to refresh, or a function of the token's
            lifetime; by default 10% of the lifetime and at most 60 s.
        lock_timeout: at most this many seconds waiting for another refresh of the same key.
        local_cache_size: how many fresh pairs to keep in this process in front of a shared
            store, so a steady call costs no store round trip; 0 turns the cache off. A cached
            pair is used only while its access token is fresh.
        verify: TLS verification for ``requests`` (``True``, ``False`` or a CA bundle path).
        pool_maxsize: connections kept per Watcher host.
    """

    def __init__(
        self,
        base_url: str,
        *,
        store: TokenStore | str | None = None,
        credentials: CredentialsProvider | None = None,
        timeout: Timeout = 10.0,
        clock: Callable[[], float] = time.time,
        refresh_margin: float | Callable[[float | None], float] | None = None,
        lock_timeout: float = 30.0,
        local_cache_size: int = 10_000,
        verify: bool | str = True,
        pool_maxsize: int = 32,
    ) -> None:
        self.server = normalize_server_url(base_url)
        self.api_root = self.server + V3_ROOT
        self.login_url = self.api_root + "login"
        self.origin = origin_of(self.server)
        self.store = MemoryStore() if store is None else resolve_store(store)
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self._credentials = credentials
        self._clock = clock
        if refresh_margin is None:
            self._margin: Callable[[float | None], float] = default_refresh_margin
        elif callable(refresh_margin):
            self._margin = refresh_margin
        else:
            fixed = float(refresh_margin)
            self._margin = lambda _lifetime: fixed
        self._events = EventHub()
        self._locks = KeyedLocks()
        self._cache: TLRUCache[StoreKey, TokenPair] | None = None
        self._cache_lock = threading.Lock()
        if self.store.shared and local_cache_size > 0:
            self._cache = TLRUCache(
                maxsize=local_cache_size, ttu=self._fresh_until, timer=self._clock
            )
        self.adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_maxsize)
        # The environment (proxies, CA bundle) is read once here rather than by requests on
        # every call; netrc is never wanted, since every request carries its own credentials.
        self._proxies = requests.utils.get_environ_proxies(self.server)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._verify = bundle if verify is True and bundle else verify
        self._http = requests.Session()
        self._http.mount(self.server.split("://")[0] + "://", self.adapter)
        self.configure_session(self._http)
        self._v2 = V2Accounts(self)

    # --- public API -------------------------------------------------------------------

    def login(self, key: str, *, username: str, password: str) -> TokenPair:
        """Log ``key`` in with a Watcher username and password and store the pair.

        The password is sent once and not kept anywhere.

        Raises:
            InvalidCredentials: Watcher rejected the username or password.
            WatcherUnavailable: Watcher could not be reached; nothing was stored.
            WatcherProtocolError: Watcher's answer was not a valid login answer.
        """
        pair = self._password_login(username, password)
        skey = self.store_key(key)
        with self._exclusive(skey):
            self.store.save(skey, pair)
            self._remember(skey, pair)
        logger.info("Watcher account %r connected for key %r", username, key)
        self._emit(EventType.CONNECTED, key, pair.username)
        return pair

    def logout(self, key: str) -> bool:
        """Forget ``key``'s tokens (Watcher has no logout call). Returns whether any existed."""
        skey = self.store_key(key)
        with self._exclusive(skey):
            existing = self.store.load(skey)
            self.store.delete(skey)
            self._forget(skey)
        if existing is None:
            return False
        logger.info("Watcher account disconnected for key %r", key)
        self._emit(EventType.DISCONNECTED, key, existing.username)
        return True

    def tokens(self, key: str) -> TokenPair | None:
        """The stored pair for ``key`` as it is now (not refreshed), or ``None``."""
        return self.store.load(self.store_key(key))

    def is_connected(self, key: str) -> bool:
        """Whether ``key`` has stored tokens.

        A fresh pair this process already holds answers without a store read (the same pair a
        call would use, see ``local_cache_size``).
        """
        skey = self.store_key(key)
        return self._cached(skey) is not None or self.store.load(skey) is not None

    def current_tokens(self, key: str) -> TokenPair:
        """A pair for ``key`` whose access token is fresh, refreshing first if needed.

        Raises:
            NotConnected: ``key`` has no stored tokens (and no credentials provider for it).
            ReauthenticationRequired: the refresh token was rejected; the pair was deleted.
            WatcherUnavailable: Watcher could not be reached for a needed refresh.
        """
        skey = self.store_key(key)
        pair = self._cached(skey)
        if pair is not None:
            return pair
        pair = self.store.load(skey)
        if pair is None:
            if self._credentials is None:
                # Nothing to refresh and no way to log in: no lock needed to say so.
                raise NotConnected(key)
            return self._refresh(skey, seen=None, force=False)
        if self._is_stale(pair):
            return self._refresh(skey, seen=pair, force=False)
        self._remember(skey, pair)
        return pair

    def access_token(self, key: str) -> str:
        """A fresh access token for ``key`` (see :meth:`current_tokens`)."""
        return self.current_tokens(key).access_token

    def refresh(self, key: str) -> TokenPair:
        """Refresh ``key``'s tokens now, whatever their expiry."""
        skey = self.store_key(key)
        return self._refresh(skey, seen=self.store.load(skey), force=True)

    def refresh_after_unauthorized(self, key: str, sent: TokenPair) -> TokenPair:
        """The pair to retry with after Watcher answered 401 to ``sent``'s access token.

        If another thread or process already replaced that token, its pair is returned
        without a new refresh.
        """
        return self._refresh(self.store_key(key), seen=sent, force=True)

    def auth(self, key: str) -> WatcherBearerAuth:
        """``requests`` auth for ``key``: ``requests.get(url, auth=manager.auth(key))``."""
        return WatcherBearerAuth(self, key)

    def session(self, key: str) -> WatcherSession:
        """A ``requests.Session`` for ``key`` whose relative paths resolve against API v3.

        Creating one does no I/O; tokens are loaded (and refreshed) on the first request.
        """
        session = WatcherSession(
            base_url=self.api_root, auth=self.auth(key), timeout=self.timeout, adapter=self.adapter
        )
        return self.configure_session(session)

    def configure_session(self, session: SessionT) -> SessionT:
        """Give ``session`` this manager's TLS verification and proxies, and refuse cookies."""
        session.trust_env = False
        session.proxies.update(self._proxies)
        session.verify = self._verify
        block_cookies(session)
        return session

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on connect, refresh, reauthentication-required, disconnect."""
        self._events.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._events.remove(listener)

    def store_key(self, key: str, api: str = "v3") -> StoreKey:
        """The store key under which ``key``'s records for ``api`` live."""
        if not isinstance(key, str) or not key:
            raise ConfigurationError("a user key must be a non-empty string")
        return StoreKey(server=self.server, user=key, api=api)

    def needs_refresh(self, pair: TokenPair) -> bool:
        """Whether ``pair`` is due for a refresh now (expired, or within the margin)."""
        return self._is_stale(pair)

    def close(self) -> None:
        """Close pooled connections (the manager stays usable)."""
        self._http.close()
        self.adapter.close()

    def __repr__(self) -> str:
        return f"TokenManager({self.server!r}, store={self.store!r})"

    # --- API v2 -----------------------------------------------------------------------

    def v2_login(self, key: str, *, username: str, password: str) -> TokenPair:
        """Log ``key`` in to API v2 (``POST /vsaas/api/v2/auth/login``) and store the session.

        One login per key at a time; the password is sent once and not kept. The record
        (``scheme="session"``) replaces any v2 record of ``key`` and leaves its v3 pair alone.

        Raises:
            InvalidCredentials: Watcher rejected the username or password (v2 answers 403).
            WatcherUnavailable: Watcher could not be reached; nothing was stored.
            WatcherProtocolError: Watcher's answer was not a valid login answer.
        """
        return self._v2.login(key, username=username, password=password)

    def v2_connect_user_key(self, key: str, *, username: str, api_key: str) -> TokenPair:
        """Store a user's API v2 key for ``key`` after checking it with ``GET /auth/whoami``.

        Raises:
            InvalidCredentials: Watcher rejected the key (the message does not show it).
            ConfigurationError: the login or key is empty or cannot travel in a header.
            WatcherUnavailable: Watcher could not be reached; nothing was stored.
        """
        return self._v2.connect_user_key(key, username=username, api_key=api_key)

    def v2_logout(self, key: str) -> bool:
        """Forget ``key``'s API v2 session or user key. Returns whether one existed."""
        return self._v2.logout(key)

    def v2_tokens(self, key: str) -> TokenPair | None:
        """The stored API v2 record of ``key`` (``scheme`` ``"session"`` or ``"user-key"``)."""
        return self._v2.tokens(key)

    def v2_is_connected(self, key: str) -> bool:
        """Whether ``key`` has a stored API v2 session or user key (see :meth:`is_connected`)."""
        if self._cached(self.store_key(key, api="v2")) is not None:
            return True
        return self.v2_tokens(key) is not None

    def v2_whoami(self, key: str) -> dict[str, Any]:
        """``GET /vsaas/api/v2/auth/whoami`` as ``key``: the Watcher user behind it.

        Raises:
            NotConnected: ``key`` has no API v2 record (and no credentials provider for it).
            ReauthenticationRequired: Watcher no longer accepts the record; it was deleted.
            WatcherUnavailable: Watcher could not be reached.
        """
        return self._v2.whoami(key)

    def v2_auth(self, key: str) -> WatcherV2Auth:
        """``requests`` auth with ``key``'s API v2 record (see :class:`WatcherV2Auth`)."""
        return self._v2.auth(key)

    def v2_session(self, key: str) -> WatcherV2Session:
        """A ``requests.Session`` for ``key`` whose relative paths resolve against API v2.

        ``manager.v2_session(key).get("cameras")``. A 403 is checked with whoami: dead
        credentials are replaced by a provider login (and the request retried once) or
        deleted with :class:`ReauthenticationRequired`; a refusal is returned as it came.
        Creating one does no I/O.
        """
        return self._v2.session(key)

    def v2_system_session(self, system_key: str) -> WatcherV2Session:
        """A ``requests.Session`` for API v2 with Watcher's system key (super-admin rights).

        The key is sent only to this manager's Watcher origin and is not stored.
        """
        return self._v2.system_session(system_key)

    # --- refresh ----------------------------------------------------------------------

    def _refresh(self, skey: StoreKey, *, seen: TokenPair | None, force: bool) -> TokenPair:
        """Make sure ``skey`` has a fresh pair, with one refresh per key at a time.

        ``seen`` is the pair the caller found stale (or that got a 401). Inside the locks the
        store is read again: if the pair there is no longer ``seen``, another thread or
        process has refreshed it, and that result is used instead of refreshing again.
        """
        events: list[tuple[EventType, str | None]] = []
        try:
            with self._thread_lock(skey):
                if not force:
                    # Another thread of this process refreshed while this one waited: its
                    # fresh pair is in the local cache, and the store's lock is not needed.
                    cached = self._cached(skey)
                    if cached is not None:
                        return cached
                with self.store.lock(skey, timeout=self.lock_timeout):
                    current = self.store.load(skey)
                    if (
                        current is not None
                        and (not self._same(current, seen) or not force)
                        and not self._is_stale(current)
                    ):
                        self._remember(skey, current)
                        return current
                    pair = self._renew(skey, current, events)
                    self.store.save(skey, pair)
                    self._remember(skey, pair)
                    return pair
        finally:
            for event_type, username in events:
                self._emit(event_type, skey.user, username)

    def _renew(
        self, skey: StoreKey, current: TokenPair | None, events: list[tuple[EventType, str | None]]
    ) -> TokenPair:
        """Refresh ``current``; on rejection log in with provided credentials or give up."""
        if current is not None and current.refresh_token:
            try:
                pair = self._refresh_request(current)
            except RefreshRejected:
                logger.warning("Watcher rejected the refresh token for key %r", skey.user)
            else:
                logger.info("Watcher tokens refreshed for key %r", skey.user)
                events.append((EventType.REFRESHED, pair.username))
                return pair
        provided = self._credentials(skey.user) if self._credentials else None
        if provided is not None:
            username, password = provided[0], Secret(provided[1])
            del provided  # a plain tuple: only the Secret stays in this frame
            pair = self._password_login(username, password)
            logger.info("Watcher account %r logged in again for key %r", username, skey.user)
            events.append((EventType.CONNECTED, pair.username))
            return pair
        if current is None:
            raise NotConnected(skey.user)
        self.store.delete(skey)
        self._forget(skey)
        events.append((EventType.REAUTHENTICATION_REQUIRED, current.username))
        raise ReauthenticationRequired(skey.user)

    def _password_login(self, username: str, password: str) -> TokenPair:
        status, headers, body, received_at = self._post_login(auth=(username, password))
        try:
            return parse_token_response(
                status, headers, body, received_at=received_at, username=username
            )
        except Exception:
            logger.warning("Watcher login as %r failed", username)
            raise

    def _refresh_request(self, current: TokenPair) -> TokenPair:
        status, headers, body, received_at = self._post_login(
            headers={"Authorization": f"Bearer {current.refresh_token}"}
        )
        return parse_token_response(
            status, headers, body, received_at=received_at, previous=current
        )

    def _post_login(
        self, *, auth: tuple[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, bytes, float]:
        try:
            response = self._http.post(
                self.login_url,
                auth=auth,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
            body = response.content
        except requests.RequestException as exc:
            raise WatcherUnavailable(
                f"Watcher at {self.server} did not answer the login request ({type(exc).__name__})"
            ) from None
        return response.status_code, response.headers, body, self._clock()

    # --- helpers ----------------------------------------------------------------------

    @contextmanager
    def _exclusive(self, skey: StoreKey) -> Iterator[None]:
        """This process's thread lock for the key, then the store's cross-process lock."""
        with self._thread_lock(skey), self.store.lock(skey, timeout=self.lock_timeout):
            yield

    @contextmanager
    def _thread_lock(self, skey: StoreKey) -> Iterator[None]:
        """This process's lock for the key, so its threads queue here, not at the store."""
        with self._locks.hold(skey, self.lock_timeout) as acquired:
            if not acquired:
                raise StoreLockTimeout(
                    f"another refresh of user key {skey.user!r} took over {self.lock_timeout}s"
                )
            yield

    @staticmethod
    def _same(a: TokenPair, b: TokenPair | None) -> bool:
        return b is not None and a.access_token == b.access_token

    def _is_stale(self, pair: TokenPair) -> bool:
        expires = pair.local_expires_at
        if expires is None:
            return False
        return self._clock() >= expires - self._margin(pair.lifetime)

    def _fresh_until(self, _key: StoreKey, pair: TokenPair, now: float) -> float:
        expires = pair.local_expires_at
        if expires is None:
            return now + 60.0
        return expires - self._margin(pair.lifetime)

    def _cached(self, skey: StoreKey) -> TokenPair | None:
        if self._cache is None:
            return None
        with self._cache_lock:
            return self._cache.get(skey)

    def _remember(self, skey: StoreKey, pair: TokenPair) -> None:
        if self._cache is not None:
            with self._cache_lock:
                self._cache[skey] = pair

    def _forget(self, skey: StoreKey) -> None:
        if self._cache is not None:
            with self._cache_lock:
                self._cache.pop(skey, None)

    def _emit(self, event_type: EventType, key: str, username: str | None) -> None:
        self._events.emit(WatcherEvent(event_type, key, self.server, "v3", username))

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a TokenManager cannot be pickled; create one in each process")
