"""The token lifecycle, written once: is it stale, take the lock, re-read, refresh or log in,
save, and what a 401 means.

Every operation is a generator that yields the I/O steps of :mod:`watcher_auth._effects` and
receives their results; :mod:`watcher_auth._drivers` runs it with blocking calls or with
coroutines. So the sync and async managers cannot drift apart: they share this code.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TypeVar

from watcher_auth._effects import (
    Delete,
    Flow,
    HttpRequest,
    Load,
    Lock,
    Provide,
    Save,
    Send,
    Unlock,
)
from watcher_auth._events import EventHub, EventType, WatcherEvent
from watcher_auth._exceptions import (
    ConfigurationError,
    NotConnected,
    ReauthenticationRequired,
    WatcherUnavailable,
)
from watcher_auth._lru import LRU
from watcher_auth._policy import (
    DEFAULT_MAX_LIFETIME,
    RefreshRejected,
    basic_authorization,
    bearer_authorization,
    default_refresh_margin,
    parse_token_response,
)
from watcher_auth._tokens import Secret, StoreKey, TokenPair
from watcher_auth._urls import V3_ROOT
from watcher_auth.stores.base import StoreWatch

__all__ = ["V3_ROOT", "Lifecycle", "LocalCache", "ServerClock"]

logger = logging.getLogger("watcher_auth")

T = TypeVar("T")

Margin = Callable[[float | None], float]
# Store keys kept made (a call per request builds one otherwise); the set starts over past it.
_STORE_KEYS_KEPT = 10_000
# Seconds to wait for the channel's echo of this process's own write before giving up on it.
_ECHO_WAIT = 5.0


class ServerClock:
    """This process's estimate of Watcher's clock minus its own.

    Every process judges expiry on its own clock: a pair in a shared store carries the
    offset measured by whichever host obtained it, which is wrong on a host whose clock
    differs. The estimate comes from token ``iat`` claims and the ``Date`` header of the
    answers this process sees; a header equal to the last one is not parsed again.
    """

    __slots__ = ("_last_date", "_moved", "offset")

    def __init__(self, moved: Callable[[float | None, float], None] | None = None) -> None:
        self.offset: float | None = None
        self._last_date: str | None = None
        self._moved = moved

    def observe_date(self, date_header: str | None, clock: Callable[[], float]) -> None:
        """Take a response's ``Date`` header (one-second resolution) into the estimate;
        ``clock`` tells the local time, read only for a header other than the last one."""
        if not date_header or date_header == self._last_date:
            return
        self._last_date = date_header
        try:
            server_now = parsedate_to_datetime(date_header).timestamp() + 0.5
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        self.observe(server_now - clock())

    def observe(self, offset: float) -> None:
        """Take a measured offset; changes within the one-second resolution are noise."""
        if abs(offset) <= 1.0:
            offset = 0.0
        if self.offset is None or abs(offset - self.offset) >= 1.0:
            before, self.offset = self.offset, offset
            if self._moved is not None:
                self._moved(before, offset)

    def local_expiry(self, pair: TokenPair) -> float | None:
        """``pair``'s expiry on this process's clock."""
        if pair.expires_at is None:
            return None
        offset = self.offset if self.offset is not None else pair.clock_offset
        return pair.expires_at - offset


class LocalCache:
    """Fresh records this process may use without a store round trip.

    An entry is trusted until its token is due for a refresh while the store's change
    channel is up; with no channel (or while it is down) for ``staleness_bound`` seconds
    after it was read. Every invalidation bumps an epoch, so a record read before a change
    was announced is never cached after the announcement.
    """

    def __init__(self, maxsize: int, clock: Callable[[], float], staleness_bound: float) -> None:
        self._data: LRU[StoreKey, tuple[TokenPair, float, float]] = LRU(maxsize)
        self._lock = threading.Lock()
        self._clock = clock
        self.staleness_bound = staleness_bound
        self.epoch = 0
        self.watch: StoreWatch | None = None
        self._echoes: dict[StoreKey, list[float]] = {}

    def get(self, key: StoreKey) -> TokenPair | None:
        entry = self._data.lookup(key)
        if entry is None:
            return None
        pair, until, read_at = entry
        now = self._clock()
        watch = self.watch
        if now < until and (
            (watch is not None and watch.healthy) or now < read_at + self.staleness_bound
        ):
            return pair
        with self._lock:
            if self._data.get(key) is entry:
                del self._data[key]
        return None

    def put(self, key: StoreKey, pair: TokenPair, until: float, epoch: int) -> None:
        with self._lock:
            if epoch == self.epoch:
                self._data[key] = (pair, until, self._clock())

    def forget(self, key: StoreKey | None) -> None:
        """Drop ``key``'s copy (every copy for ``None``)."""
        with self._lock:
            self.epoch += 1
            if key is None:
                self._data.clear()
                self._echoes.clear()
            else:
                self._data.pop(key, None)

    def forget_where(self, judged_wrong: Callable[[TokenPair], bool]) -> None:
        """Drop every copy whose pair ``judged_wrong`` says is kept for the wrong time."""
        with self._lock:
            self.epoch += 1
            # A snapshot first: lock-free reads reorder the entries as they are used.
            entries = list(self._data.items())
            for key in [k for k, (pair, _, _) in entries if judged_wrong(pair)]:
                del self._data[key]

    def wrote(self, key: StoreKey) -> None:
        """This process is about to change ``key``'s record: the channel's notice of that
        change is its own echo, and must not empty the copy it is keeping."""
        with self._lock:
            self._echoes.setdefault(key, []).append(self._clock())

    def on_change(self, key: StoreKey | None) -> None:
        """The store's channel: another process (or this one) changed ``key``'s record."""
        if key is not None:
            with self._lock:
                echoes = self._echoes.get(key)
                now = self._clock()
                while echoes and now - echoes[0] > _ECHO_WAIT:
                    echoes.pop(0)  # a notice that never came: the channel lost it
                if echoes:
                    # The oldest pending write of ours: whatever was written before it,
                    # what this process keeps is newer.
                    echoes.pop(0)
                    if not echoes:
                        del self._echoes[key]
                    return
                self._echoes.pop(key, None)
        self.forget(key)

    def reset(self) -> None:
        """Forget everything, including the channel (in a child after ``fork()``)."""
        self._lock = threading.Lock()
        self._data.clear()
        self._echoes = {}
        self.epoch += 1
        self.watch = None

    def __len__(self) -> int:
        return len(self._data)


class Lifecycle:
    """The decisions for one Watcher server: when a pair is stale and what each step does.

    Holds no I/O of its own; the managers create one and run its flows with their driver.

    Args:
        server: the normalized Watcher base URL.
        clock: the wall clock.
        has_credentials: whether a credentials provider is configured.
        refresh_margin: seconds before expiry to refresh, or a function of the lifetime.
        cache: the per-process cache in front of a shared store, or ``None``.
        events: where events go.
        max_lifetime: the longest access-token lifetime believed.
    """

    def __init__(
        self,
        server: str,
        *,
        clock: Callable[[], float],
        has_credentials: bool,
        refresh_margin: float | Margin | None,
        cache: LocalCache | None,
        events: EventHub,
        max_lifetime: float = DEFAULT_MAX_LIFETIME,
    ) -> None:
        self.server = server
        self.api_root = server + V3_ROOT
        self.login_url = self.api_root + "login"
        self.clock = clock
        self.has_credentials = has_credentials
        self.cache = cache
        self.events = events
        # Copies kept in the cache carry a "fresh until" judged on the offset known when they
        # were read: a better estimate makes them wrong (trusted long past expiry on a host
        # whose clock is behind), so they go.
        self.server_clock = ServerClock(moved=self._clock_moved)
        self.max_lifetime = max_lifetime
        # Keys whose last refresh was sent but never answered: with rotation on, Watcher may
        # have spent the refresh token, so a rejection next is explained by that.
        self._unanswered: set[StoreKey] = set()
        self._store_keys: dict[tuple[str, str], StoreKey] = {}
        self._last_fresh: tuple[TokenPair | None, float | None, float] = (None, None, 0.0)
        if refresh_margin is None:
            self.margin: Margin = default_refresh_margin
        elif callable(refresh_margin):
            self.margin = refresh_margin
        else:
            fixed = float(refresh_margin)
            self.margin = lambda _lifetime: fixed

    def _clock_moved(self, before: float | None, now: float) -> None:
        if self.cache is None:
            return
        if before is None:
            # Until now each copy was judged on the offset its pair was obtained with.
            self.cache.forget_where(lambda pair: abs(pair.clock_offset - now) >= 1.0)
        else:
            self.cache.forget(None)

    # --- decisions --------------------------------------------------------------------

    def store_key(self, key: str, api: str = "v3") -> StoreKey:
        """The store key under which ``key``'s records for ``api`` live."""
        if not isinstance(key, str) or not key:
            raise ConfigurationError("a user key must be a non-empty string")
        skey = self._store_keys.get((key, api))
        if skey is None:
            if len(self._store_keys) >= _STORE_KEYS_KEPT:
                self._store_keys.clear()
            skey = self._store_keys[(key, api)] = StoreKey(server=self.server, user=key, api=api)
        return skey

    def fresh_until(self, pair: TokenPair) -> float:
        """Local time from which ``pair`` is due for a refresh (infinite if it never is)."""
        # Most calls ask about the pair asked about last, under the same clock estimate;
        # the answer is kept as one tuple, so threads never see half of an update.
        offset = self.server_clock.offset
        last = self._last_fresh
        if last[0] is pair and last[1] == offset:
            return last[2]
        expires = self.server_clock.local_expiry(pair)
        until = float("inf") if expires is None else expires - self.margin(pair.lifetime)
        self._last_fresh = (pair, offset, until)
        return until

    def is_stale(self, pair: TokenPair) -> bool:
        """Whether ``pair`` is due for a refresh now."""
        last = self._last_fresh  # fresh_until's memo, read here first: most calls hit it
        if last[0] is pair and last[1] == self.server_clock.offset:
            return self.clock() >= last[2]
        return self.clock() >= self.fresh_until(pair)

    def cached(self, skey: StoreKey) -> TokenPair | None:
        """This process's fresh copy of ``skey``'s record, if it has one."""
        return None if self.cache is None else self.cache.get(skey)

    def epoch(self) -> int:
        """The cache's epoch, read before a store load (see :meth:`remember`)."""
        return 0 if self.cache is None else self.cache.epoch

    def remember(self, skey: StoreKey, pair: TokenPair, epoch: int | None = None) -> None:
        """Keep ``pair`` in the per-process cache unless a change was announced since
        ``epoch`` (by default: now)."""
        if self.cache is not None:
            self.cache.put(
                skey, pair, self.fresh_until(pair), self.cache.epoch if epoch is None else epoch
            )

    def forget(self, skey: StoreKey) -> None:
        """Drop this process's copy of ``skey``'s record."""
        if self.cache is not None:
            self.cache.forget(skey)

    def save(self, skey: StoreKey, pair: TokenPair) -> Flow[None]:
        """Store ``pair`` and keep it as this process's copy."""
        if self.cache is not None:
            self.cache.wrote(skey)
        yield Save(skey, pair)
        self.remember(skey, pair)

    def delete(self, skey: StoreKey) -> Flow[None]:
        """Delete ``skey``'s record and this process's copy."""
        yield Delete(skey)
        self.forget(skey)

    def emit(
        self,
        event_type: EventType,
        skey: StoreKey,
        username: str | None = None,
        *,
        duration: float | None = None,
        error: str | None = None,
    ) -> None:
        """Tell the listeners."""
        self.events.emit(
            WatcherEvent(event_type, skey.user, self.server, skey.api, username, duration, error)
        )

    # --- building blocks shared with API v2 -------------------------------------------

    def exclusive(self, skey: StoreKey, body: Callable[[], Flow[T]]) -> Flow[T]:
        """Run ``body`` holding ``skey``'s lock in this process and in the store."""
        local = yield Lock(skey)
        try:
            shared = yield Lock(skey, shared=True)
            try:
                if local.waited + shared.waited >= 0.001:
                    self.emit(EventType.LOCK_WAITED, skey, duration=local.waited + shared.waited)
                return (yield from body())
            finally:
                yield Unlock(shared)
        finally:
            yield Unlock(local)

    def provided_credentials(self, skey: StoreKey) -> Flow[tuple[str, Secret] | None]:
        """The credentials provider's answer for ``skey``'s user, when there is a provider."""
        if not self.has_credentials:
            return None
        provided: tuple[str, Secret] | None = yield Provide(skey.user)
        return provided

    # --- API v3 flows -----------------------------------------------------------------

    def current(self, key: str) -> Flow[TokenPair]:
        """A pair for ``key`` whose access token is fresh, refreshing first if needed."""
        skey = self.store_key(key)
        pair = self.cached(skey)
        if pair is not None:
            return pair
        epoch = self.epoch()
        stored: TokenPair | None = yield Load(skey)
        if stored is None:
            if not self.has_credentials:
                # Nothing to refresh and no way to log in: no lock needed to say so.
                raise NotConnected(key)
            return (yield from self.refresh(skey, seen=None, force=False))
        if self.is_stale(stored):
            return (yield from self.refresh(skey, seen=stored, force=False))
        self.remember(skey, stored, epoch)
        return stored

    def refresh(self, skey: StoreKey, *, seen: TokenPair | None, force: bool) -> Flow[TokenPair]:
        """Make sure ``skey`` has a fresh pair, with one refresh per key at a time.

        ``seen`` is the pair the caller found stale (or that got a 401). Inside the locks the
        store is read again: if the pair there is no longer ``seen``, another thread or
        process has refreshed it, and that pair is used instead of refreshing again.
        """
        events: list[tuple[EventType, str | None, float | None]] = []
        local = yield Lock(skey)
        try:
            if not force:
                # Another thread of this process refreshed while this one waited: its fresh
                # pair is in the local cache, and the store's lock is not needed.
                cached = self.cached(skey)
                if cached is not None:
                    return cached
                if seen is not None:
                    # Or another process did, and its change notice emptied the cache: the
                    # store has the new pair, and a read is cheaper than the store's lock.
                    epoch = self.epoch()
                    latest: TokenPair | None = yield Load(skey)
                    if latest is not None and not _same(latest, seen) and not self.is_stale(latest):
                        self.remember(skey, latest, epoch)
                        return latest
            shared = yield Lock(skey, shared=True)
            try:
                if local.waited + shared.waited >= 0.001:
                    events.append((EventType.LOCK_WAITED, None, local.waited + shared.waited))
                current: TokenPair | None = yield Load(skey)
                if (
                    current is not None
                    and (not force or not _same(current, seen))
                    and not self.is_stale(current)
                ):
                    self.remember(skey, current)
                    return current
                pair = yield from self._renew(skey, current, events)
                try:
                    yield from self.save(skey, pair)
                except BaseException:
                    if any(event[0] is EventType.REFRESHED for event in events):
                        # Watcher answered, and may have spent the old refresh token, but the
                        # new pair is not stored: a rejection next is explained by this loss,
                        # and no listener may hear of a refresh that did not stick.
                        self._unanswered.add(skey)
                        events[:] = [e for e in events if e[0] is not EventType.REFRESHED]
                    raise
                return pair
            finally:
                yield Unlock(shared)
        finally:
            yield Unlock(local)
            for event_type, username, duration in events:
                self.emit(event_type, skey, username, duration=duration)

    def refresh_after_unauthorized(self, key: str, sent: TokenPair) -> Flow[TokenPair]:
        """The pair to retry with after Watcher answered 401 to ``sent``'s access token."""
        return (yield from self.refresh(self.store_key(key), seen=sent, force=True))

    def login(self, key: str, username: str, password: Secret) -> Flow[TokenPair]:
        """Log ``key`` in with a password and store the pair (the password is not kept)."""
        skey = self.store_key(key)
        started = self.clock()
        pair = yield from self._password_login(username, password)
        duration = self.clock() - started

        yield from self.exclusive(skey, lambda: self.save(skey, pair))
        logger.info("Watcher account %r connected for key %r", username, key)
        self.emit(EventType.CONNECTED, skey, pair.username, duration=duration)
        return pair

    def logout(self, skey: StoreKey) -> Flow[bool]:
        """Delete ``skey``'s record. Returns whether there was one."""

        def delete() -> Flow[TokenPair | None]:
            existing: TokenPair | None = yield Load(skey)
            yield from self.delete(skey)
            return existing

        existing = yield from self.exclusive(skey, delete)
        if existing is None:
            return False
        logger.info("Watcher %s account disconnected for key %r", skey.api, skey.user)
        self.emit(EventType.DISCONNECTED, skey, existing.username)
        return True

    # --- inside the locks -------------------------------------------------------------

    def _renew(
        self,
        skey: StoreKey,
        current: TokenPair | None,
        events: list[tuple[EventType, str | None, float | None]],
    ) -> Flow[TokenPair]:
        """Refresh ``current``; on rejection log in with provided credentials or give up."""
        if current is not None and current.refresh_token:
            started = self.clock()
            try:
                pair = yield from self._refresh_request(current)
            except RefreshRejected:
                logger.warning("Watcher rejected the refresh token for key %r", skey.user)
                events.append((EventType.REFRESH_REJECTED, current.username, None))
            except WatcherUnavailable:
                self._unanswered.add(skey)
                raise
            else:
                self._unanswered.discard(skey)
                logger.info("Watcher tokens refreshed for key %r", skey.user)
                events.append((EventType.REFRESHED, pair.username, self.clock() - started))
                return pair
        provided = yield from self.provided_credentials(skey)
        if provided is not None:
            username, password = provided
            del provided
            started = self.clock()
            pair = yield from self._password_login(username, password)
            logger.info("Watcher account %r logged in again for key %r", username, skey.user)
            events.append((EventType.CONNECTED, pair.username, self.clock() - started))
            return pair
        if current is None:
            raise NotConnected(skey.user)
        yield from self.delete(skey)
        events.append((EventType.REAUTHENTICATION_REQUIRED, current.username, None))
        if skey in self._unanswered:
            self._unanswered.discard(skey)
            raise ReauthenticationRequired(
                skey.user,
                f"a refresh for user key {skey.user!r} got no answer and Watcher no longer "
                "accepts its refresh token; connect again",
                reason="refresh_answer_lost",
            )
        raise ReauthenticationRequired(skey.user)

    def _password_login(self, username: str, password: Secret) -> Flow[TokenPair]:
        response = yield Send(
            HttpRequest(
                "POST",
                self.login_url,
                headers={"Authorization": Secret(basic_authorization(username, password))},
            )
        )
        try:
            pair = parse_token_response(
                response.status,
                response.headers,
                response.body,
                received_at=response.received_at,
                username=username,
                max_lifetime=self.max_lifetime,
            )
        except Exception:
            logger.warning("Watcher login as %r failed", username)
            raise
        self.server_clock.observe(pair.clock_offset)
        return pair

    def _refresh_request(self, current: TokenPair) -> Flow[TokenPair]:
        assert current.refresh_token is not None
        response = yield Send(
            HttpRequest(
                "POST",
                self.login_url,
                headers={"Authorization": Secret(bearer_authorization(current.refresh_token))},
                what="the refresh request",
                patient=True,
            )
        )
        pair = parse_token_response(
            response.status,
            response.headers,
            response.body,
            received_at=response.received_at,
            previous=current,
            max_lifetime=self.max_lifetime,
        )
        self.server_clock.observe(pair.clock_offset)
        return pair


def _same(a: TokenPair, b: TokenPair | None) -> bool:
    return b is not None and a.access_token == b.access_token
