"""API v2 credentials per user key, on the same machinery as API v3.

Records live in the manager's store under ``StoreKey(server, key, api="v2")``, apart from
the key's v3 pair, and change under the same per-key locks. A 403 may mean "dead
credentials" or "not allowed": ``GET /auth/whoami`` with the same credentials tells which.
Like :mod:`watcher_auth._lifecycle`, every operation is a generator of I/O steps, run by the
sync or the async driver.
"""

from __future__ import annotations

import logging

from watcher_auth._calls import CallScheme
from watcher_auth._effects import Answer, Flow, HttpRequest, Load, Send
from watcher_auth._events import EventType
from watcher_auth._exceptions import (
    InvalidCredentials,
    NotConnected,
    ReauthenticationRequired,
)
from watcher_auth._lifecycle import Lifecycle
from watcher_auth._tokens import Secret, StoreKey, TokenPair
from watcher_auth._urls import V2_ROOT, path_only
from watcher_auth.v2._policy import (
    API_KEY_HEADER,
    SCHEME_SESSION,
    USER_HEADER,
    credential_headers,
    parse_login_response,
    user_key_pair,
    whoami_answer,
)

__all__ = ["API", "V2Lifecycle", "V2Scheme"]

logger = logging.getLogger("watcher_auth")

API = "v2"
_WHOAMI_PATH = V2_ROOT + "auth/whoami"


class V2Lifecycle:
    """The API v2 decisions of one Watcher server, on a :class:`Lifecycle`'s machinery."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.api_root = lifecycle.server + V2_ROOT
        self.login_url = self.api_root + "auth/login"
        self.whoami_url = self.api_root + "auth/whoami"

    def store_key(self, key: str) -> StoreKey:
        """Where ``key``'s API v2 record lives."""
        return self.lifecycle.store_key(key, api=API)

    # --- flows the managers run -------------------------------------------------------

    def login(self, key: str, username: str, password: Secret) -> Flow[TokenPair]:
        """Log ``key`` in to API v2 and store the session (one login per key at a time)."""
        skey = self.store_key(key)

        def login_and_save() -> Flow[TokenPair]:
            pair = yield from self._password_login(username, password)
            yield from self.lifecycle.save(skey, pair)
            return pair

        pair = yield from self.lifecycle.exclusive(skey, login_and_save)
        logger.info("Watcher API v2 account %r connected for key %r", pair.username, key)
        self.lifecycle.emit(EventType.CONNECTED, skey, pair.username)
        return pair

    def connect_user_key(self, key: str, username: str, api_key: Secret) -> Flow[TokenPair]:
        """Check a user's API key with whoami, then store it for ``key``."""
        skey = self.store_key(key)
        response = yield Send(
            HttpRequest(
                "GET",
                self.whoami_url,
                headers={API_KEY_HEADER: api_key, USER_HEADER: username},
                what="whoami",
            )
        )
        if whoami_answer(response.status, response.body) is None:
            logger.warning("Watcher API v2 rejected the API key of %r for key %r", username, key)
            raise InvalidCredentials(f"Watcher rejected the API key of Watcher user {username!r}")
        pair = user_key_pair(username, api_key, received_at=response.received_at)

        yield from self.lifecycle.exclusive(skey, lambda: self.lifecycle.save(skey, pair))
        logger.info("Watcher API v2 user key of %r connected for key %r", username, key)
        self.lifecycle.emit(EventType.CONNECTED, skey, username)
        return pair

    def logout(self, key: str) -> Flow[bool]:
        """Forget ``key``'s API v2 record."""
        return self.lifecycle.logout(self.store_key(key))

    def credentials(self, key: str) -> Flow[TokenPair]:
        """The stored record to send for ``key``; with none, a provider login or NotConnected."""
        skey = self.store_key(key)
        pair = self.lifecycle.cached(skey)
        if pair is not None:
            return pair
        epoch = self.lifecycle.epoch()
        stored: TokenPair | None = yield Load(skey)
        if stored is not None:
            self.lifecycle.remember(skey, stored, epoch)
            return stored
        settled = yield from self.settle(skey, sent=None, verdict=None)
        if settled is None:  # only a record that was sent can turn out to be merely refused
            raise NotConnected(key)
        return settled

    def settle(
        self, skey: StoreKey, *, sent: TokenPair | None, verdict: tuple[int, bytes] | None
    ) -> Flow[TokenPair | None]:
        """Decide, one thread and process per key at a time, what ``skey`` should send now.

        ``None`` means ``sent`` still works (whoami says so) and a 403 was a refusal. Inside
        the locks the store is read again: if its record is no longer ``sent``, another
        thread or process already dealt with it, and its record is used as it is.

        Raises:
            ReauthenticationRequired: the credentials are dead and were deleted.
            NotConnected: another thread or process deleted them meanwhile.
            WatcherUnavailable: whoami could not be asked now (nothing was deleted), or
                the new login failed after whoami confirmed the record dead (it is gone).
        """
        lifecycle = self.lifecycle
        events: list[tuple[EventType, str | None]] = []

        def decide() -> Flow[TokenPair | None]:
            current: TokenPair | None = yield Load(skey)
            if current is not None and (sent is None or current.access_token != sent.access_token):
                lifecycle.remember(skey, current)
                return current
            if current is not None:
                status, body = verdict or (yield from self._ask_whoami(current))
                if whoami_answer(status, body) is not None:
                    return None
                logger.warning(
                    "Watcher API v2 no longer accepts the stored %s for key %r",
                    current.scheme,
                    skey.user,
                )
                # Definitely dead: gone even if the new login below fails.
                yield from lifecycle.delete(skey)
                events.append((EventType.REFRESH_REJECTED, current.username))
            # A password login replaces a session, never a user key (the person chose that).
            basis = current or sent
            provided = None
            if basis is None or basis.scheme == SCHEME_SESSION:
                provided = yield from lifecycle.provided_credentials(skey)
            if provided is not None:
                username, password = provided
                del provided
                pair = yield from self._password_login(username, password)
                yield from lifecycle.save(skey, pair)
                logger.info(
                    "Watcher API v2 account %r logged in by the credentials provider for key %r",
                    username,
                    skey.user,
                )
                events.append((EventType.CONNECTED, pair.username))
                return pair
            if current is None:
                raise NotConnected(skey.user)
            events.append((EventType.REAUTHENTICATION_REQUIRED, current.username))
            raise ReauthenticationRequired(skey.user, reason="session_dead")

        try:
            return (yield from lifecycle.exclusive(skey, decide))
        finally:
            for event_type, who in events:
                lifecycle.emit(event_type, skey, who)

    # --- requests to Watcher ----------------------------------------------------------

    def _password_login(self, username: str, password: Secret) -> Flow[TokenPair]:
        response = yield Send(
            HttpRequest(
                "POST",
                self.login_url,
                json={"login": username, "password": password},
                what="the API v2 login",
            )
        )
        try:
            return parse_login_response(
                response.status, response.body, username=username, received_at=response.received_at
            )
        except Exception:
            logger.warning("Watcher API v2 login as %r failed", username)
            raise

    def _ask_whoami(self, pair: TokenPair) -> Flow[tuple[int, bytes]]:
        response = yield Send(
            HttpRequest("GET", self.whoami_url, headers=credential_headers(pair), what="whoami")
        )
        return response.status, response.body


class V2Scheme(CallScheme):
    """API v2: a stored session or user key as ``x-vsaas-*`` headers; a 403 asks whoami."""

    challenge = 403
    header_names = ("x-vsaas-session", "x-vsaas-api-key", "x-vsaas-user")

    def __init__(self, v2: V2Lifecycle) -> None:
        super().__init__(v2.lifecycle, v2.api_root)
        self.v2 = v2
        self.api = API

    def credentials(self, key: str) -> Flow[TokenPair]:
        return self.v2.credentials(key)

    def headers(self, pair: TokenPair) -> dict[str, str]:
        return credential_headers(pair)

    def after_challenge(self, key: str, sent: TokenPair, answer: Answer) -> Flow[TokenPair | None]:
        # A 403 from whoami itself already is the verdict; no need to ask again.
        verdict = (
            (answer.status, answer.body) if path_only(answer.url).endswith(_WHOAMI_PATH) else None
        )
        return (yield from self.v2.settle(self.v2.store_key(key), sent=sent, verdict=verdict))
