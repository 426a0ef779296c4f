"""Token stores on Django's database and cache, both encrypting the tokens at rest.

``WATCHER_AUTH["STORE"] = "db"`` picks :class:`DjangoModelStore`, ``"cache"`` picks
:class:`DjangoCacheStore`; both can also be built by hand and given to a
:class:`~watcher_auth.TokenManager`. :class:`AsyncDjangoModelStore` and
:class:`AsyncDjangoCacheStore` are their async twins, for an async manager.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import BaseCache, InvalidCacheBackendError, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.db import DatabaseError, IntegrityError, connections, router, transaction
from django.db.models import QuerySet
from django.utils import timezone as django_timezone

from django_watcher_auth._time import as_datetime
from django_watcher_auth.models import WatcherAccount
from watcher_auth import (
    ConfigurationError,
    KeyedLocks,
    StoreError,
    StoreKey,
    StoreLockTimeout,
    TokenPair,
    TokenStore,
)
from watcher_auth.crypto import TokenCipher
from watcher_auth.stores import (
    AsyncStoreAdapter,
    Backoff,
    ChangeListener,
    StoreWatch,
    after_fork_in_child,
    keep_from_finalizing,
)
from watcher_auth.stores.postgres import PostgresListener, channel_name

__all__ = [
    "AsyncDjangoCacheStore",
    "AsyncDjangoModelStore",
    "DjangoCacheStore",
    "DjangoModelStore",
    "default_cipher",
]

T = TypeVar("T")
WATCH_CONNECT_WAIT = 2.0  # how long watch() waits for LISTEN before returning unhealthy

logger = logging.getLogger("django_watcher_auth")

# Shared by every DjangoModelStore of the process: on SQLite they are the only exclusion
# between threads, and elsewhere they spare the database waiters it would have to queue.
_PROCESS_LOCKS = KeyedLocks()
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for lock_timeout
_SQLITE_BUSY = "database is locked"


def default_cipher() -> TokenCipher:
    """The cipher for ``WATCHER_AUTH['ENCRYPTION_KEYS']``, or keys derived from ``SECRET_KEY``.

    With no keys configured, a key derived (HKDF-SHA256, see :func:`watcher_auth.crypto.derive_key`)
    from ``SECRET_KEY`` encrypts and keys derived from ``SECRET_KEY_FALLBACKS`` also decrypt,
    so rotating Django's secret the documented way keeps stored tokens readable.
    """
    from django_watcher_auth.conf import watcher_settings

    keys = list(watcher_settings.ENCRYPTION_KEYS or [])
    if keys:
        return TokenCipher(keys, setting="WATCHER_AUTH['ENCRYPTION_KEYS']")
    derived = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return TokenCipher(
        derived,
        setting="SECRET_KEY (WATCHER_AUTH['ENCRYPTION_KEYS'] is empty)",
        derive_all=True,  # Django signs with these too: never use one as the AES key itself
    )


class DjangoModelStore(TokenStore):
    """Keeps records in the :class:`~django_watcher_auth.models.WatcherAccount` table.

    The whole pair is encrypted into one column; the Watcher username, status and times
    are plain columns for the admin. The refresh lock is ``SELECT ... FOR UPDATE`` on the
    key's row inside a transaction (the row is created for a key that has none yet), so on
    PostgreSQL it holds across processes and machines, waits at most the lock timeout
    (``lock_timeout``), and frees itself when a dead worker's connection closes.

    SQLite has no row locks: there the lock is exact between the threads of one process,
    and other processes are only kept out by SQLite's database-wide write lock. Use
    PostgreSQL (or the cache store on Redis) when several processes serve the portal.

    With ``ATOMIC_REQUESTS`` on the store's database, point ``using`` at a second alias of
    the same database, so a refresh commits at once instead of with the request.

    On PostgreSQL with psycopg 3 every save and delete sends ``pg_notify`` with the key's
    text in its transaction and :meth:`watch` listens on a connection of its own; elsewhere
    there is no change channel and copies are trusted for ``staleness_bound``.

    Args:
        using: the database alias; by default the router's choice for the model.
        cipher: encrypts the records; by default :func:`default_cipher`.
        user_from_key: ``fn(key) -> user | None`` to fill the user column; by default
            :func:`django_watcher_auth.conf.user_for_key`.
        staleness_bound: seconds a per-process copy is trusted without a change channel.
    """

    def __init__(
        self,
        *,
        using: str | None = None,
        cipher: TokenCipher | None = None,
        user_from_key: Callable[[str], Any] | None = None,
        staleness_bound: float = 1.0,
    ) -> None:
        self.using = using or router.db_for_write(WatcherAccount)
        self.cipher = cipher or default_cipher()
        self.staleness_bound = staleness_bound
        self._user_from_key = user_from_key
        self._watches: list[PostgresListener] = []
        after_fork_in_child(self, DjangoModelStore._reset_after_fork)

    # --- the contract -------------------------------------------------------------------

    def load(self, key: StoreKey) -> TokenPair | None:
        try:
            record = self._rows(key).values_list("record", flat=True).first()
        except DatabaseError as exc:
            raise self._failure("read", exc) from exc
        if not record:
            return None
        return self.cipher.loads(record, key)

    def save(self, key: StoreKey, pair: TokenPair) -> None:
        try:
            fields = {
                "user": self._user(key.user),
                "username": pair.username or "",
                "status": WatcherAccount.Status.CONNECTED,
                "record": self.cipher.dumps(pair, key).decode("ascii"),
                "connected_at": as_datetime(pair.connected_at),
                "last_refreshed_at": as_datetime(pair.refreshed_at),
                "access_expires_at": as_datetime(pair.local_expires_at),
                "updated_at": django_timezone.now(),
            }
            try:
                with transaction.atomic(using=self.using):
                    if not self._rows(key).update(**fields):
                        WatcherAccount.objects.using(self.using).create(
                            user_key=key.user, server=key.server, api=key.api, **fields
                        )
                    self._notify(key)
            except IntegrityError:
                # Another worker created the row between our update and insert.
                with transaction.atomic(using=self.using):
                    if not self._rows(key).update(**fields):
                        raise
                    self._notify(key)
        except DatabaseError as exc:
            raise self._failure("write", exc) from exc

    def delete(self, key: StoreKey) -> None:
        """Empty the record; the row stays, marked "needs re-login", for the admin."""
        try:
            with transaction.atomic(using=self.using):
                self._rows(key).update(
                    record="",
                    status=WatcherAccount.Status.NEEDS_RELOGIN,
                    access_expires_at=None,
                    updated_at=django_timezone.now(),
                )
                self._notify(key)
        except DatabaseError as exc:
            raise self._failure("write", exc) from exc

    @contextmanager
    def lock(self, key: StoreKey, *, timeout: float) -> Iterator[None]:
        started = time.monotonic()
        with _PROCESS_LOCKS.hold((self.using, key), timeout) as acquired:
            if not acquired:
                raise StoreLockTimeout(f"lock for user key {key.user!r} not acquired in {timeout}s")
            remaining = max(0.001, timeout - (time.monotonic() - started))
            failure: BaseException | None = None
            try:
                with transaction.atomic(using=self.using):
                    self._lock_row(key, remaining)
                    try:
                        yield
                    except StoreError:
                        raise  # the transaction may be broken: roll it back
                    except BaseException as exc:
                        # Whatever the manager saved or deleted before this error stands
                        # (a rotated refresh token, a rejected pair's removal): commit it.
                        failure = exc
                    self._drop_placeholder(key)
            except DatabaseError as exc:
                if _is_lock_timeout(exc):
                    raise StoreLockTimeout(
                        f"lock for user key {key.user!r} not acquired in {timeout}s"
                    ) from None
                raise self._failure("lock", exc) from exc
            if failure is not None:
                raise failure

    def watch(self, on_change: ChangeListener) -> StoreWatch | None:
        """Listen for changes on PostgreSQL; ``None`` on other databases.

        ``on_change`` runs on the listener's thread.
        """
        if self._channel() is None:
            return None
        listener = PostgresListener(
            self._listen_connection, self._channel() or "", on_change, repr(self)
        )
        self._watches.append(listener)
        return listener.start(WATCH_CONNECT_WAIT)

    def close(self) -> None:
        for listener in self._watches:
            listener.close()
        self._watches.clear()

    def iter_keys(self, *, server: str | None = None, api: str | None = None) -> Iterator[StoreKey]:
        rows = WatcherAccount.objects.using(self.using).exclude(record="")
        if server is not None:
            rows = rows.filter(server=server)
        if api is not None:
            rows = rows.filter(api=api)
        try:
            found = list(rows.values_list("server", "user_key", "api"))
        except DatabaseError as exc:
            raise self._failure("read", exc) from exc
        return (StoreKey(server=s, user=u, api=a) for s, u, a in found)

    def as_async(self) -> AsyncDjangoModelStore:
        """This store for an async manager (see :class:`AsyncDjangoModelStore`)."""
        return AsyncDjangoModelStore(self)

    # --- beyond the contract --------------------------------------------------------------

    def account(self, key: StoreKey) -> WatcherAccount | None:
        """The row for ``key`` (connected or needing a new login), or ``None``."""
        try:
            account: WatcherAccount | None = (
                self._rows(key).exclude(record="", connected_at=None).first()
            )
        except DatabaseError as exc:
            raise self._failure("read", exc) from exc
        return account

    def purge(self, key: StoreKey) -> None:
        """Remove ``key``'s row if it holds no tokens (after a disconnect)."""
        try:
            self._rows(key).filter(record="").delete()
        except DatabaseError as exc:
            raise self._failure("write", exc) from exc

    # --- helpers --------------------------------------------------------------------------

    def _rows(self, key: StoreKey) -> QuerySet[WatcherAccount]:
        rows: QuerySet[WatcherAccount] = WatcherAccount.objects.using(self.using).filter(
            server=key.server, user_key=key.user, api=key.api
        )
        return rows

    def _user(self, key: str) -> Any:
        if self._user_from_key is not None:
            return self._user_from_key(key)
        from django_watcher_auth.conf import user_for_key

        return user_for_key(key, using=self.using)

    def _lock_row(self, key: StoreKey, timeout: float) -> None:
        connection = connections[self.using]
        postgres = connection.vendor == "postgresql"
        with connection.cursor() as cursor:
            if postgres:
                cursor.execute("SELECT current_setting('lock_timeout')")
                previous = cursor.fetchone()[0]
                cursor.execute(
                    "SELECT set_config('lock_timeout', %s, true)",
                    [f"{math.ceil(timeout * 1000)}ms"],
                )
            # A key without a row gets one first, so there is a row to lock; if the lock
            # body saves nothing it is removed again before the commit.
            WatcherAccount.objects.using(self.using).bulk_create(
                [WatcherAccount(user_key=key.user, server=key.server, api=key.api)],
                ignore_conflicts=True,
            )
            list(self._rows(key).select_for_update().values_list("pk", flat=True))
            if postgres:
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])

    def _channel(self) -> str | None:
        if connections[self.using].vendor != "postgresql":
            return None
        from django.db.backends.postgresql.psycopg_any import is_psycopg3

        # The listener needs psycopg 3; with psycopg2 there is no channel.
        return channel_name(WatcherAccount._meta.db_table) if is_psycopg3 else None

    def _notify(self, key: StoreKey) -> None:
        channel = self._channel()
        if channel is not None:
            with connections[self.using].cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [channel, str(key)])

    def _listen_connection(self) -> Any:
        import psycopg

        params = connections[self.using].get_connection_params()
        return psycopg.connect(**params, autocommit=True)

    def _reset_after_fork(self) -> None:
        # The forking thread's database connection is the parent's socket: the child opens
        # its own on next use, and leaves the parent's untouched.
        connection = connections[self.using]
        keep_from_finalizing(connection.connection)
        connection.connection = None
        for listener in self._watches:
            listener.forget_after_fork()
        self._watches = []

    def _drop_placeholder(self, key: StoreKey) -> None:
        self._rows(key).filter(record="", connected_at=None).delete()

    def _failure(self, action: str, exc: DatabaseError) -> StoreError:
        logger.warning("Watcher token database %s failed on %r: %s", action, self.using, exc)
        return StoreError(
            f"the Watcher token table on database {self.using!r} failed to {action} "
            f"({type(exc).__name__}); nothing was deleted"
        )

    def __repr__(self) -> str:
        return f"DjangoModelStore(using={self.using!r})"


def _is_lock_timeout(exc: DatabaseError) -> bool:
    cause = exc.__cause__
    if getattr(cause, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
        return True
    return _SQLITE_BUSY in str(exc)


_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""
_EXTEND_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class DjangoCacheStore(TokenStore):
    """Keeps records in a Django cache (Redis through ``RedisCache`` in production).

    Records are encrypted and never expire by themselves. The lock is a ``cache.add`` of a
    random owner token with a lease that a watchdog thread extends every third of ``lease``
    while the holder lives (only while the lock still holds its token): slow work is never
    overtaken, and a dead holder's lock frees itself within ``lease`` seconds. A holder only
    ever removes or extends its own lock (atomically on Redis). Waiters retry with bounded
    exponential backoff and jitter until their timeout.

    A per-process cache (``LocMemCache``) is fine for one process only, and a cache that
    evicts (memcached, Redis with an eviction policy) may drop a record, after which the
    person connects again. On ``RedisCache`` every save and delete publishes the key's text
    in the same round trip and :meth:`watch` listens for it; other caches have no change
    channel, and copies are trusted for ``staleness_bound`` seconds.

    Args:
        alias: the ``CACHES`` alias.
        key_prefix: prefix of every key this store writes.
        cipher: encrypts the records; by default :func:`default_cipher`.
        lease: seconds (whole, at least 1) a lock outlives a holder that stopped renewing it.
        poll_interval: the first pause between attempts to take a held lock (it doubles up
            to 0.1 s).
        staleness_bound: seconds a per-process copy of a record is trusted.
    """

    def __init__(
        self,
        *,
        alias: str = "default",
        key_prefix: str = "watcher_auth",
        cipher: TokenCipher | None = None,
        lease: float = 5.0,
        poll_interval: float = 0.005,
        staleness_bound: float = 1.0,
    ) -> None:
        self.alias = alias
        self.key_prefix = key_prefix
        self.cipher = cipher or default_cipher()
        self.lease = max(1, math.ceil(lease))
        self.poll_interval = poll_interval
        self.staleness_bound = staleness_bound
        self._watches: list[StoreWatch] = []
        after_fork_in_child(self, DjangoCacheStore._forget_watches)
        try:
            cache = self.cache
        except InvalidCacheBackendError as exc:
            raise ConfigurationError(f"no cache {alias!r} in CACHES for the token store") from exc
        self.shared = not isinstance(cache, LocMemCache)

    @property
    def cache(self) -> BaseCache:
        """The Django cache (looked up per thread, as Django hands them out)."""
        return caches[self.alias]

    def load(self, key: StoreKey) -> TokenPair | None:
        value = self._call("read", lambda cache: cache.get(self._key("record", key)))
        if value is None:
            return None
        return self.cipher.loads(value, key)

    def save(self, key: StoreKey, pair: TokenPair) -> None:
        token = self.cipher.dumps(pair, key).decode("ascii")
        self._call("write", lambda cache: self._write(cache, key, token))

    def delete(self, key: StoreKey) -> None:
        self._call("write", lambda cache: self._write(cache, key, None))

    def watch(self, on_change: ChangeListener) -> StoreWatch | None:
        """Listen for changes on ``RedisCache``; ``None`` on other caches.

        ``on_change`` runs on the listener's thread.
        """
        cache = self.cache
        if not isinstance(cache, RedisCache):
            return None
        from watcher_auth.stores.redis import watch_channel

        client = self._redis_client(cache)
        channel = cache.make_and_validate_key(self._channel_name)
        watch: StoreWatch = self._call(
            "watch", lambda _cache: watch_channel(client, channel, on_change, repr(self))
        )
        self._watches.append(watch)
        return watch

    def close(self) -> None:
        for watch in self._watches:
            watch.close()
        self._watches.clear()

    def _forget_watches(self) -> None:
        # In a forked child the listener threads are gone and their sockets are the parent's.
        for watch in self._watches:
            forget = getattr(watch, "forget_after_fork", None)
            if forget is not None:
                forget()
        self._watches = []

    def as_async(self) -> AsyncDjangoCacheStore:
        """This store for an async manager (see :class:`AsyncDjangoCacheStore`)."""
        return AsyncDjangoCacheStore(self)

    def _write(self, cache: BaseCache, key: StoreKey, token: str | None) -> None:
        name = self._key("record", key)
        if not isinstance(cache, RedisCache):
            if token is None:
                cache.delete(name)
            else:
                cache.set(name, token, None)
            return
        # On Redis the change is published in the same round trip as the write.
        full = cache.make_and_validate_key(name)
        redis_cache: Any = cache
        with self._redis_client(cache).pipeline(transaction=True) as pipe:
            if token is None:
                pipe.delete(full)
            else:
                pipe.set(full, redis_cache._cache._serializer.dumps(token))
            pipe.publish(cache.make_and_validate_key(self._channel_name), str(key))
            pipe.execute()

    @property
    def _channel_name(self) -> str:
        return f"{self.key_prefix}:changes"

    @staticmethod
    def _redis_client(cache: RedisCache) -> Any:
        redis_cache: Any = cache
        return redis_cache._cache.get_client(None, write=True)

    @contextmanager
    def lock(self, key: StoreKey, *, timeout: float) -> Iterator[None]:
        name = self._key("lock", key)
        # An int, which Django's Redis cache stores unpickled, so a script can compare it.
        owner = secrets.randbits(62) + 1
        wait = Backoff(timeout, first=self.poll_interval, cap=0.1)
        while not self._call("lock", lambda cache: cache.add(name, owner, self.lease)):
            pause = wait.pause()
            if pause is None:
                raise StoreLockTimeout(f"lock for user key {key.user!r} not acquired in {timeout}s")
            time.sleep(pause)
        done = threading.Event()
        watchdog = threading.Thread(
            target=self._renew,
            args=(self.cache, name, owner, key, done),
            name="watcher-auth-lease",
            daemon=True,
        )
        watchdog.start()
        try:
            yield
        finally:
            done.set()
            self._release(name, owner)

    def _renew(
        self, cache: BaseCache, name: str, owner: int, key: StoreKey, done: threading.Event
    ) -> None:
        # The holder's cache object: Django's caches are per thread, and this thread's own
        # would open connections of its own.
        while not done.wait(self.lease / 3):
            try:
                extended = self._extend(cache, name, owner)
            except Exception as exc:
                # The cache may be back before the lease ends: keep trying until then.
                logger.warning("could not extend the cache lock (%s)", type(exc).__name__)
                continue
            if not extended and not done.is_set():
                logger.warning(
                    "the cache lock for user key %r expired while held (a pause over %ss?)",
                    key.user,
                    self.lease,
                )
                return

    def _extend(self, cache: BaseCache, name: str, owner: int) -> bool:
        if isinstance(cache, RedisCache):
            full = cache.make_and_validate_key(name)
            redis_cache: Any = cache
            client = redis_cache._cache.get_client(full, write=True)
            return bool(client.eval(_EXTEND_SCRIPT, 1, full, str(owner), self.lease * 1000))
        # Other caches cannot compare and extend in one step; a lock is theirs only for one
        # process (LocMem) or best effort (memcached).
        if cache.get(name) != owner:
            return False
        return bool(cache.touch(name, self.lease))

    def _release(self, name: str, owner: int) -> None:
        cache = self.cache
        if isinstance(cache, RedisCache):
            full = cache.make_and_validate_key(name)
            redis_cache: Any = cache

            def release_atomically(_cache: BaseCache) -> None:
                client = redis_cache._cache.get_client(full, write=True)
                client.eval(_RELEASE_SCRIPT, 1, full, str(owner))

            self._call("unlock", release_atomically)
            return

        def release(cache: BaseCache) -> None:
            if cache.get(name) == owner:
                cache.delete(name)

        self._call("unlock", release)

    def _key(self, kind: str, key: StoreKey) -> str:
        # Hashed, so any user key or URL makes a short key every cache backend accepts.
        digest = hashlib.sha256(str(key).encode()).hexdigest()
        return f"{self.key_prefix}:{kind}:{digest}"

    def _call(self, action: str, operation: Callable[[BaseCache], Any]) -> Any:
        try:
            return operation(self.cache)
        except StoreError:
            raise
        except Exception as exc:
            logger.warning("Watcher token cache %s failed on %r: %s", action, self.alias, exc)
            raise StoreError(
                f"the Watcher token cache {self.alias!r} failed to {action} "
                f"({type(exc).__name__}); nothing was deleted"
            ) from exc

    def __repr__(self) -> str:
        return f"DjangoCacheStore(alias={self.alias!r}, key_prefix={self.key_prefix!r})"


class AsyncDjangoModelStore(AsyncStoreAdapter):
    """The async twin of :class:`DjangoModelStore`: give it one, or its options.

    Django's database connections belong to threads: reads and writes run on Django's
    thread-sensitive executor (``sync_to_async(thread_sensitive=True)``, as Django's own
    async ORM methods do), and a lock holds its transaction on a thread of its own for its
    whole life, closing that thread's connection after.
    """

    store: DjangoModelStore

    def __init__(self, store: DjangoModelStore | None = None, **options: Any) -> None:
        super().__init__(store if store is not None else DjangoModelStore(**options))

    async def aclose(self) -> None:
        """Stop watching and close the connection of Django's thread-sensitive executor."""
        self.store.close()
        await self._run(lambda: connections[self.store.using].close())

    async def _run(self, call: Callable[[], T]) -> T:
        def fresh_call() -> T:
            # As Django does at each request: a connection that failed is replaced first.
            connections[self.store.using].close_if_unusable_or_obsolete()
            return call()

        return await sync_to_async(fresh_call, thread_sensitive=True)()

    def _lock_thread_ends(self) -> None:
        connections[self.store.using].close()

    def __repr__(self) -> str:
        return f"AsyncDjangoModelStore(using={self.store.using!r})"


class AsyncDjangoCacheStore(AsyncStoreAdapter):
    """The async twin of :class:`DjangoCacheStore`: give it one, or its options.

    Django's cache backends answer their async methods by running the sync ones in a
    thread; this store does the same for every call, and holds each lock (and its lease
    watchdog) from a thread of its own.
    """

    store: DjangoCacheStore

    def __init__(self, store: DjangoCacheStore | None = None, **options: Any) -> None:
        super().__init__(store if store is not None else DjangoCacheStore(**options))

    def __repr__(self) -> str:
        return (
            f"AsyncDjangoCacheStore(alias={self.store.alias!r}, "
            f"key_prefix={self.store.key_prefix!r})"
        )
