"""API v2 credentials per user key: log in, connect a user key, notice dead ones, forget.

The :class:`~watcher_auth.TokenManager`'s ``v2_*`` methods delegate here. Records live in the
manager's store under ``StoreKey(server, key, api="v2")``, apart from the key's v3 pair, and
every change happens under the manager's per-key locks, as for v3.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import requests
from requests.auth import AuthBase

from watcher_auth._events import EventType, WatcherEvent
from watcher_auth._exceptions import (
    InvalidCredentials,
    NotConnected,
    ReauthenticationRequired,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth._tokens import Secret, StoreKey, TokenPair
from watcher_auth.v2._auth import SystemApiKeyAuth, UserApiKeyAuth, WatcherV2Auth
from watcher_auth.v2._policy import (
    SCHEME_SESSION,
    V2_ROOT,
    credential_headers,
    parse_login_response,
    user_key_pair,
    whoami_answer,
)
from watcher_auth.v2._session import WatcherV2Session

if TYPE_CHECKING:
    from watcher_auth._manager import TokenManager

__all__ = ["V2Accounts"]

logger = logging.getLogger("watcher_auth")

API = "v2"


class V2Accounts:
    """The API v2 side of one :class:`~watcher_auth.TokenManager`."""

    def __init__(self, manager: TokenManager) -> None:
        self._manager = manager
        self.api_root = manager.server + V2_ROOT
        self.login_url = self.api_root + "auth/login"
        self.whoami_url = self.api_root + "auth/whoami"

    # --- what the manager exposes -----------------------------------------------------

    def login(self, key: str, *, username: str, password: str) -> TokenPair:
        """See :meth:`TokenManager.v2_login`."""
        skey = self._skey(key)
        with self._manager._exclusive(skey):
            pair = self._password_login(username, password)
            self._save(skey, pair)
        logger.info("Watcher API v2 account %r connected for key %r", pair.username, key)
        self._emit(EventType.CONNECTED, key, pair.username)
        return pair

    def connect_user_key(self, key: str, *, username: str, api_key: str) -> TokenPair:
        """See :meth:`TokenManager.v2_connect_user_key`."""
        skey = self._skey(key)
        auth = UserApiKeyAuth(username, api_key)
        status, body, received_at = self._get(self.whoami_url, auth=auth)
        if whoami_answer(status, body) is None:
            logger.warning("Watcher API v2 rejected the API key of %r for key %r", username, key)
            raise InvalidCredentials(f"Watcher rejected the API key of Watcher user {username!r}")
        pair = user_key_pair(username, api_key, received_at=received_at)
        with self._manager._exclusive(skey):
            self._save(skey, pair)
        logger.info("Watcher API v2 user key of %r connected for key %r", username, key)
        self._emit(EventType.CONNECTED, key, username)
        return pair

    def logout(self, key: str) -> bool:
        """See :meth:`TokenManager.v2_logout`."""
        skey = self._skey(key)
        with self._manager._exclusive(skey):
            existing = self._manager.store.load(skey)
            self._manager.store.delete(skey)
            self._manager._forget(skey)
        if existing is None:
            return False
        logger.info("Watcher API v2 account disconnected for key %r", key)
        self._emit(EventType.DISCONNECTED, key, existing.username)
        return True

    def tokens(self, key: str) -> TokenPair | None:
        """See :meth:`TokenManager.v2_tokens`."""
        return self._manager.store.load(self._skey(key))

    def whoami(self, key: str) -> dict[str, Any]:
        """See :meth:`TokenManager.v2_whoami`."""
        data = self.session(key).json("auth/whoami")
        if not isinstance(data, dict):
            raise WatcherProtocolError("Watcher's whoami answer is not a JSON object")
        return data

    def auth(self, key: str) -> WatcherV2Auth:
        """See :meth:`TokenManager.v2_auth`."""
        return WatcherV2Auth(self, key)

    def session(self, key: str) -> WatcherV2Session:
        """See :meth:`TokenManager.v2_session`."""
        return self._new_session(self.auth(key))

    def system_session(self, system_key: str) -> WatcherV2Session:
        """See :meth:`TokenManager.v2_system_session`."""
        return self._new_session(SystemApiKeyAuth(system_key, origin=self._manager.server))

    # --- what WatcherV2Auth asks ------------------------------------------------------

    def credentials(self, key: str) -> TokenPair:
        """The stored record to send for ``key``; with none, a provider login or NotConnected."""
        skey = self._skey(key)
        pair = self._manager._cached(skey)
        if pair is not None:
            return pair
        pair = self._manager.store.load(skey)
        if pair is not None:
            self._manager._remember(skey, pair)
            return pair
        pair = self._settle(skey, sent=None, verdict=None)
        if pair is None:  # only a record that was sent can turn out to be merely refused
            raise NotConnected(key)
        return pair

    def after_forbidden(
        self, key: str, sent: TokenPair, verdict: tuple[int, bytes] | None
    ) -> TokenPair | None:
        """What to retry with after Watcher answered 403 to ``sent``; ``None``: do not retry.

        ``None`` means the credentials still work (whoami says so) and the 403 was a refusal.
        ``verdict`` is whoami's own answer when the 403 came from whoami.

        Raises:
            ReauthenticationRequired: the credentials are dead and were deleted.
            NotConnected: another thread or process deleted them meanwhile.
            WatcherUnavailable: whoami could not be asked now (nothing was deleted), or
                the new login failed after whoami confirmed the record dead (it is gone).
        """
        return self._settle(self._skey(key), sent=sent, verdict=verdict)

    # --- inside the locks -------------------------------------------------------------

    def _settle(
        self, skey: StoreKey, *, sent: TokenPair | None, verdict: tuple[int, bytes] | None
    ) -> TokenPair | None:
        """Decide, one thread and process per key at a time, what ``skey`` should send now.

        The store is read again inside the locks: if its record is no longer ``sent``,
        another thread or process already dealt with it, and its record is used as it is.
        """
        manager = self._manager
        events: list[tuple[EventType, str | None]] = []
        try:
            with manager._exclusive(skey):
                current = manager.store.load(skey)
                if current is not None and (
                    sent is None or current.access_token != sent.access_token
                ):
                    manager._remember(skey, current)
                    return current
                if current is not None:
                    status, body = verdict or self._ask_whoami(current)
                    if whoami_answer(status, body) is not None:
                        return None
                    logger.warning(
                        "Watcher API v2 no longer accepts the stored %s for key %r",
                        current.scheme,
                        skey.user,
                    )
                    # Definitely dead: gone even if the new login below fails.
                    manager.store.delete(skey)
                    manager._forget(skey)
                # A password login replaces a session, never a user key (the person chose that).
                basis = current or sent
                provided = None
                if manager._credentials and (basis is None or basis.scheme == SCHEME_SESSION):
                    provided = manager._credentials(skey.user)
                if provided is not None:
                    username, password = provided[0], Secret(provided[1])
                    provided = None  # a plain tuple: only the Secret stays in this frame
                    pair = self._password_login(username, password)
                    self._save(skey, pair)
                    logger.info(
                        "Watcher API v2 account %r logged in by the credentials provider "
                        "for key %r",
                        username,
                        skey.user,
                    )
                    events.append((EventType.CONNECTED, pair.username))
                    return pair
                if current is None:
                    raise NotConnected(skey.user)
                events.append((EventType.REAUTHENTICATION_REQUIRED, current.username))
                raise ReauthenticationRequired(skey.user)
        finally:
            for event_type, who in events:
                self._emit(event_type, skey.user, who)

    # --- transport --------------------------------------------------------------------

    def _password_login(self, username: str, password: str) -> TokenPair:
        try:
            response = self._manager._http.post(
                self.login_url,
                json={"login": username, "password": password},
                timeout=self._manager.timeout,
                allow_redirects=False,
            )
            body = response.content
        except requests.RequestException as exc:
            raise WatcherUnavailable(
                f"Watcher at {self._manager.server} did not answer the API v2 login "
                f"({type(exc).__name__})"
            ) from None
        try:
            return parse_login_response(
                response.status_code, body, username=username, received_at=self._manager._clock()
            )
        except Exception:
            logger.warning("Watcher API v2 login as %r failed", username)
            raise

    def _ask_whoami(self, pair: TokenPair) -> tuple[int, bytes]:
        status, body, _ = self._get(self.whoami_url, headers=credential_headers(pair))
        return status, body

    def _get(
        self, url: str, *, auth: AuthBase | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, float]:
        try:
            response = self._manager._http.get(
                url,
                auth=auth,
                headers=headers,
                timeout=self._manager.timeout,
                allow_redirects=False,
            )
            body = response.content
        except requests.RequestException as exc:
            raise WatcherUnavailable(
                f"Watcher at {self._manager.server} did not answer whoami ({type(exc).__name__})"
            ) from None
        return response.status_code, body, self._manager._clock()

    # --- helpers ----------------------------------------------------------------------

    def _new_session(self, auth: AuthBase) -> WatcherV2Session:
        manager = self._manager
        session = WatcherV2Session(
            base_url=self.api_root, auth=auth, timeout=manager.timeout, adapter=manager.adapter
        )
        return manager.configure_session(session)

    def _skey(self, key: str) -> StoreKey:
        return self._manager.store_key(key, api=API)

    def _save(self, skey: StoreKey, pair: TokenPair) -> None:
        self._manager.store.save(skey, pair)
        self._manager._remember(skey, pair)

    def _emit(self, event_type: EventType, key: str, username: str | None) -> None:
        event = WatcherEvent(event_type, key, self._manager.server, API, username)
        self._manager._events.emit(event)
