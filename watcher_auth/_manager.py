"""The token manager: logs in, stores, refreshes, and hands out authenticated sessions."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from watcher_auth._base import CredentialsProvider, ManagerBase
from watcher_auth._calls import BearerScheme
from watcher_auth._drivers import DEFAULT_MAX_RESPONSE_BYTES, SyncSteps, Timeout
from watcher_auth._lifecycle import Margin
from watcher_auth._lru import LRU
from watcher_auth._session import (
    SessionLoan,
    WatcherBearerAuth,
    WatcherSession,
    _Made,
    block_cookies,
)
from watcher_auth._tokens import Secret, TokenPair
from watcher_auth._urls import normalize_server_url
from watcher_auth.stores import MemoryStore, TokenStore, resolve_store
from watcher_auth.stores.memory import local_reader
from watcher_auth.v2._auth import SystemApiKeyAuth, WatcherV2Auth
from watcher_auth.v2._lifecycle import V2Scheme
from watcher_auth.v2._session import WatcherV2Session

if TYPE_CHECKING:
    import httpx

    from watcher_auth._httpx import WatcherClient

__all__ = ["CredentialsProvider", "TokenManager", "normalize_server_url"]

logger = logging.getLogger("watcher_auth")

SessionT = TypeVar("SessionT", bound=requests.Session)


# The auth objects kept for recently used keys (a few hundred bytes each).
_AUTHS_KEPT = 4096


_V = TypeVar("_V")


def _kept(entries: dict[str, _V], key: str, value: _V) -> _V:
    """What ``entries`` keeps for ``key``: ``value``, unless another thread put one there
    first; past :data:`_AUTHS_KEPT` entries the oldest is dropped. Each dict step is atomic,
    so no lock is taken."""
    kept = entries.setdefault(key, value)
    if kept is value and len(entries) > _AUTHS_KEPT:
        # (StopIteration, RuntimeError): changed by other threads meanwhile
        with contextlib.suppress(KeyError, StopIteration, RuntimeError):
            entries.pop(next(iter(entries)))
    return kept


class TokenManager(ManagerBase):
    """Keeps Watcher API v3 tokens (and API v2 credentials) for many user keys of one server.

    Create one per Watcher server per process and share it between threads. The ``v2_*``
    methods keep API v2 sessions and user keys in the same store, apart from the v3 tokens.
    A manager used before ``fork()`` is safe in the child: it gets its own connection pool,
    locks and cache there.

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
        lock_timeout: at most this many seconds waiting for another refresh of the same key;
            then :class:`~watcher_auth.StoreLockTimeout` (retryable).
        local_cache_size: how many fresh pairs to keep in this process in front of a shared
            store, so a steady call costs no store round trip; 0 turns the cache off. A copy
            is used while its token is fresh and, when the store has no change channel (or
            it is down), for the store's ``staleness_bound`` seconds at most.
        verify: TLS verification for ``requests`` (``True``, ``False`` or a CA bundle path).
        pool_maxsize: connections kept per Watcher host.
        max_lifetime: the longest access-token lifetime believed, whatever its ``exp``
            says (default one day).
        deadline: seconds a login or refresh may take in all, answer included (default
            ``max(30, 2 * read timeout)``); it is never cut short by the call timeout.
        max_response_bytes: the largest answer read from Watcher, after decompression
            (default 16 MiB); a larger one raises :class:`~watcher_auth.ResponseTooLarge`.
        max_waiters: how many callers may wait for one key's refresh in this process; more
            get :class:`~watcher_auth.StoreLockTimeout` at once (default 100).
    """

    def __init__(
        self,
        base_url: str,
        *,
        store: TokenStore | str | None = None,
        credentials: CredentialsProvider | None = None,
        timeout: Timeout = 10.0,
        clock: Callable[[], float] = time.time,
        refresh_margin: float | Margin | None = None,
        lock_timeout: float = 30.0,
        local_cache_size: int = 10_000,
        verify: bool | str = True,
        pool_maxsize: int = 32,
        max_lifetime: float | None = None,
        deadline: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_waiters: int | None = 100,
    ) -> None:
        self.store: TokenStore = MemoryStore() if store is None else resolve_store(store)
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
        # The environment (proxies, CA bundle) is read once here rather than by requests on
        # every call; netrc is never wanted, since every request carries its own credentials.
        self._proxies = requests.utils.get_environ_proxies(self.server)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._verify = bundle if verify is True and bundle else verify
        self.steps = SyncSteps(
            self.lifecycle,
            self.store,
            pool_maxsize=pool_maxsize,
            verify=self._verify,
            proxies=self._proxies,
            **self._step_options(),
        )
        self._bearer = BearerScheme(
            self.lifecycle,
            self.api_root,
            local_read=local_reader(self.store),
        )
        self._v2_scheme = V2Scheme(self.v2)
        self._auths: LRU[str, WatcherBearerAuth] = LRU(_AUTHS_KEPT)
        self._auths_lock = threading.Lock()
        # The sessions web requests gave back unchanged, one per key, oldest first (lend()
        # pops a key's session and _keep puts it back last: a dict keeps that order).
        self._idle: dict[str, tuple[WatcherSession, _Made]] = {}
        # The sessions every thread shares for their calls, one per key (shared_session()),
        # and the pool they call other origins on.
        self._shared: dict[str, WatcherSession] = {}
        self._foreign: requests.adapters.HTTPAdapter | None = None

    @property
    def adapter(self) -> requests.adapters.HTTPAdapter:
        """The connection pool every session of this manager shares."""
        return self.steps.adapter

    def _after_fork(self) -> None:
        super()._after_fork()
        self.steps.after_fork()
        self._idle = {}  # their connections are the parent's
        self._shared = {}
        self._foreign = None
        self._auths_lock = threading.Lock()

    def _watch(self) -> None:
        # The store's change channel keeps this process's copies coherent; started on first
        # use (and again in a child after fork), not at import time.
        self._watching = True
        if self._cache is not None:
            self._cache.watch = self.store.watch(self._cache.on_change)

    def _run(self, flow: Any) -> Any:
        if not self._watching:
            self._watch()
        return self.steps.run(flow)

    # --- API v3 -----------------------------------------------------------------------

    def login(self, key: str, *, username: str, password: str) -> TokenPair:
        """Log ``key`` in with a Watcher username and password and store the pair.

        The password is sent once (HTTP Basic, UTF-8) and not kept anywhere.

        Raises:
            InvalidCredentials: Watcher rejected the username or password.
            WatcherUnavailable: Watcher could not be reached; nothing was stored.
            WatcherProtocolError: Watcher's answer was not a valid login answer.
        """
        flow = self.lifecycle.login(key, username, Secret(password))
        del password  # only the flow holds it now: crash reporters capture frame locals
        result: TokenPair = self._run(flow)
        return result

    def logout(self, key: str) -> bool:
        """Forget ``key``'s tokens (Watcher has no logout call). Returns whether any existed."""
        result: bool = self._run(self.lifecycle.logout(self.store_key(key)))
        return result

    def tokens(self, key: str) -> TokenPair | None:
        """The stored pair for ``key`` as it is now (not refreshed), or ``None``."""
        return self.store.load(self.store_key(key))

    def is_connected(self, key: str) -> bool:
        """Whether ``key`` has stored tokens.

        A fresh pair this process already holds answers without a store read (the same pair a
        call would use, see ``local_cache_size``).
        """
        skey = self.store_key(key)
        return self.lifecycle.cached(skey) is not None or self.store.load(skey) is not None

    def current_tokens(self, key: str) -> TokenPair:
        """A pair for ``key`` whose access token is fresh, refreshing first if needed.

        Raises:
            NotConnected: ``key`` has no stored tokens (and no credentials provider for it).
            ReauthenticationRequired: the refresh token was rejected; the pair was deleted.
            WatcherUnavailable: Watcher could not be reached for a needed refresh.
        """
        # The common case in a web request: this process holds a fresh copy, the flow's
        # whole answer (a session made for the key has looked for it already).
        auth = self._auths.get(key) if type(key) is str else None
        if auth is not None:
            pair = auth.fresh_copy()
            if pair is not None:
                return pair
        result: TokenPair = self._run(self.lifecycle.current(key))
        return result

    def access_token(self, key: str) -> str:
        """A fresh access token for ``key`` (see :meth:`current_tokens`)."""
        return self.current_tokens(key).access_token

    def refresh(self, key: str) -> TokenPair:
        """Refresh ``key``'s tokens now, whatever their expiry."""
        skey = self.store_key(key)
        result: TokenPair = self._run(
            self.lifecycle.refresh(skey, seen=self.store.load(skey), force=True)
        )
        return result

    def refresh_after_unauthorized(self, key: str, sent: TokenPair) -> TokenPair:
        """The pair to retry with after Watcher answered 401 to ``sent``'s access token.

        If another thread or process already replaced that token, its pair is returned
        without a new refresh.
        """
        result: TokenPair = self._run(self.lifecycle.refresh_after_unauthorized(key, sent))
        return result

    def auth(self, key: str) -> WatcherBearerAuth:
        """``requests`` auth for ``key``: ``requests.get(url, auth=manager.auth(key))``.

        One is kept per recently used key (it holds no request state), so the sessions a web
        layer makes per request share it.
        """
        if not self._watching:
            self._watch()
        auth = self._auths.get(key) if type(key) is str else None
        return auth if auth is not None else self._new_auth(key)

    def _new_auth(self, key: str) -> WatcherBearerAuth:
        auth = WatcherBearerAuth(self.steps, self._bearer, key)
        if type(key) is str:  # any other key is kept by no one: the call will refuse it
            with self._auths_lock:
                self._auths[key] = auth
        return auth

    def session(self, key: str) -> WatcherSession:
        """A ``requests.Session`` for ``key`` whose relative paths resolve against API v3.

        Creating one does no I/O; tokens are loaded (and refreshed) on the first request.
        """
        session = WatcherSession(
            base_url=self.api_root,
            auth=self.auth(key),
            timeout=self.timeout,
            adapter=self.steps.adapter,
            max_response_bytes=self.max_response_bytes,
        )
        # What configure_session does; the session already refuses cookies.
        session.trust_env = False
        if self._proxies:
            session.proxies.update(self._proxies)
        session.verify = self._verify
        return session

    def shared_session(self, key: str) -> WatcherSession:
        """The key's session shared by every thread of this process, for its calls only.

        Use nothing of it but its calls (``get``, ``post``... ``request``, ``json``,
        ``paginate``; :attr:`SessionLoan.CALLS`): every caller gets the same object, so a
        header set or an attribute changed on it would reach every request of the key. For
        a session of one's own, :meth:`session` or :meth:`lend`. Calls to another origin
        go out without credentials, on a pool the shared sessions of this manager keep for
        other origins. Watcher's answers go to the hook the calling context set with
        :func:`watcher_auth.web.report_answers`. One is kept per recently used key.
        """
        session = self._shared.get(key) if type(key) is str else None
        return session if session is not None else self._share(key)

    def _share(self, key: str) -> WatcherSession:
        session = self.session(key)
        with self._auths_lock:
            foreign = self._foreign
            if foreign is None:
                foreign = self._foreign = requests.adapters.HTTPAdapter()
        session._foreign_adapter = foreign
        session._reports_answers = True
        if type(key) is not str:  # kept by no one: the call will refuse it
            return session
        return _kept(self._shared, key, session)

    def lend(
        self, key: str, hook: Callable[..., Any] | None = None, *, owner: object = None
    ) -> SessionLoan:
        """The session of :meth:`session` for one web request, with ``hook`` (if given) as
        its response hook; the request ends the loan after its response
        (:meth:`SessionLoan.end`, or leave ``with manager.lend(key) as session:``).

        A session given back unchanged is lent again to the next request for ``key`` (one is
        kept per recently used key), so a web request does not build one; a request never
        gets a session another request holds, nor one another request changed. ``owner`` is
        recorded on the loan for the caller (the request holding it). A session used after
        its loan ended (kept by a thread the view started, say) may be lent to a later
        request for the same key at the same time.
        """
        # dict operations made in one step each, safe between threads without a lock
        kept = self._idle.pop(key, None) if type(key) is str else None
        if kept is None:
            session = self.session(key)
            kept = session, _Made(session)
        else:
            session = kept[0]
        if hook is not None:
            session.hooks["response"].append(hook)
        return SessionLoan(self, key, session, kept[1], hook, owner)

    def _keep(self, key: str, session: WatcherSession, made: _Made) -> None:
        """Keep an ended loan's unchanged session for its key (unless one is kept)."""
        if type(key) is not str:
            session.close()
            return
        kept = (session, made)
        if _kept(self._idle, key, kept) is not kept:
            session.close()

    def httpx_auth(self, key: str) -> httpx.Auth:
        """``httpx`` auth for ``key`` in sync code (``httpx.get(url, auth=...)``)."""
        from watcher_auth._httpx import FlowHttpxAuth

        if not self._watching:
            self._watch()
        return FlowHttpxAuth(self._bearer, key, sync_steps=self.steps)

    def httpx_client(self, key: str, **options: Any) -> WatcherClient:
        """An ``httpx.Client`` for ``key`` whose relative paths resolve against API v3.

        ``options`` go to ``httpx.Client`` (``verify`` and ``timeout`` default to the
        manager's). Close it when done, or use it in a ``with`` block.
        """
        from watcher_auth._httpx import WatcherClient, httpx_proxy, httpx_verify

        if "verify" not in options:
            options["verify"] = httpx_verify(self._verify)
        if "proxy" not in options and "transport" not in options and "mounts" not in options:
            options["proxy"] = httpx_proxy(self._proxies, self.server)
        options.setdefault("timeout", self.timeout)
        return WatcherClient(
            base_url=self.api_root,
            auth=self.httpx_auth(key),
            max_response_bytes=self.max_response_bytes,
            **options,
        )

    def configure_session(self, session: SessionT) -> SessionT:
        """Give ``session`` this manager's TLS verification and proxies, and refuse cookies."""
        session.trust_env = False
        session.proxies.update(self._proxies)
        session.verify = self._verify
        block_cookies(session)
        return session

    def close(self) -> None:
        """Close pooled connections and the store's change channel (the manager stays usable)."""
        self._idle.clear()
        self._shared.clear()
        with self._auths_lock:
            foreign, self._foreign = self._foreign, None
        if foreign is not None:
            foreign.close()
        self.steps.http.close()
        self.adapter.close()
        if self._cache is not None and self._cache.watch is not None:
            self._cache.watch.close()
            self._cache.watch = None
        self._watching = False

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
        flow = self.v2.login(key, username, Secret(password))
        del password
        result: TokenPair = self._run(flow)
        return result

    def v2_connect_user_key(self, key: str, *, username: str, api_key: str) -> TokenPair:
        """Store a user's API v2 key for ``key`` after checking it with ``GET /auth/whoami``.

        Raises:
            InvalidCredentials: Watcher rejected the key (the message does not show it).
            ConfigurationError: the login or key is empty or cannot travel in a header.
            WatcherUnavailable: Watcher could not be reached; nothing was stored.
        """
        from watcher_auth.v2._policy import check_secret

        check_secret(username, "Watcher login")
        flow = self.v2.connect_user_key(
            key, username, Secret(check_secret(api_key, "user API key"))
        )
        del api_key
        result: TokenPair = self._run(flow)
        return result

    def v2_logout(self, key: str) -> bool:
        """Forget ``key``'s API v2 session or user key. Returns whether one existed."""
        result: bool = self._run(self.v2.logout(key))
        return result

    def v2_tokens(self, key: str) -> TokenPair | None:
        """The stored API v2 record of ``key`` (``scheme`` ``"session"`` or ``"user-key"``)."""
        return self.store.load(self.v2.store_key(key))

    def v2_is_connected(self, key: str) -> bool:
        """Whether ``key`` has a stored API v2 session or user key (see :meth:`is_connected`)."""
        if self.lifecycle.cached(self.v2.store_key(key)) is not None:
            return True
        return self.v2_tokens(key) is not None

    def v2_whoami(self, key: str) -> dict[str, Any]:
        """``GET /vsaas/api/v2/auth/whoami`` as ``key``: the Watcher user behind it.

        Raises:
            NotConnected: ``key`` has no API v2 record (and no credentials provider for it).
            ReauthenticationRequired: Watcher no longer accepts the record; it was deleted.
            WatcherUnavailable: Watcher could not be reached.
        """
        data = self.v2_session(key).json("auth/whoami")
        if not isinstance(data, dict):
            from watcher_auth._exceptions import WatcherProtocolError

            raise WatcherProtocolError("Watcher's whoami answer is not a JSON object")
        return data

    def v2_auth(self, key: str) -> WatcherV2Auth:
        """``requests`` auth with ``key``'s API v2 record (see :class:`WatcherV2Auth`)."""
        if not self._watching:
            self._watch()
        return WatcherV2Auth(self.steps, self._v2_scheme, key)

    def v2_session(self, key: str) -> WatcherV2Session:
        """A ``requests.Session`` for ``key`` whose relative paths resolve against API v2.

        ``manager.v2_session(key).get("cameras")``. A 403 is checked with whoami: dead
        credentials are replaced by a provider login (and the request retried once) or
        deleted with :class:`ReauthenticationRequired`; a refusal is returned as it came.
        Creating one does no I/O.
        """
        return self._v2_session(self.v2_auth(key))

    def v2_system_session(self, system_key: str) -> WatcherV2Session:
        """A ``requests.Session`` for API v2 with Watcher's system key (super-admin rights).

        The key is sent only to this manager's Watcher origin and is not stored.
        """
        return self._v2_session(SystemApiKeyAuth(system_key, origin=self.server))

    def _v2_session(self, auth: requests.auth.AuthBase) -> WatcherV2Session:
        session = WatcherV2Session(
            base_url=self.v2.api_root,
            auth=auth,
            timeout=self.timeout,
            adapter=self.adapter,
            max_response_bytes=self.max_response_bytes,
        )
        return self.configure_session(session)
