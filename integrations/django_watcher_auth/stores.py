"""Token stores on Django's database and cache, both encrypting the tokens at rest.

``WATCHER_AUTH["STORE"] = "db"`` picks :class:`DjangoModelStore`, ``"cache"`` picks
:class:`DjangoCacheStore`; both can also be built by hand and given to a
:class:`~watcher_auth.TokenManager`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

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
    StoreError,
    StoreKey,
    StoreLockTimeout,
    TokenPair,
    TokenStore,
)
from watcher_auth._locks import KeyedLocks
from watcher_auth.crypto import TokenCipher

__all__ = ["DjangoCacheStore", "DjangoModelStore", "default_cipher"]

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

    Args:
        using: the database alias; by default the router's choice for the model.
        cipher: encrypts the records; by default :func:`default_cipher`.
        user_from_key: ``fn(key) -> user | None`` to fill the user column; by default
            :func:`django_watcher_auth.conf.user_for_key`.
    """

    def __init__(
        self,
        *,
        using: str | None = None,
        cipher: TokenCipher | None = None,
        user_from_key: Callable[[str], Any] | None = None,
    ) -> None:
        self.using = using or router.db_for_write(WatcherAccount)
        self.cipher = cipher or default_cipher()
        self._user_from_key = user_from_key

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
            except IntegrityError:
                # Another worker created the row between our update and insert.
                if not self._rows(key).update(**fields):
                    raise
        except DatabaseError as exc:
            raise self._failure("write", exc) from exc

    def delete(self, key: StoreKey) -> None:
        """Empty the record; the row stays, marked "needs re-login", for the admin."""
        try:
            self._rows(key).update(
                record="",
                status=WatcherAccount.Status.NEEDS_RELOGIN,
                access_expires_at=None,
                updated_at=django_timezone.now(),
            )
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


class DjangoCacheStore(TokenStore):
    """Keeps records in a Django cache (Redis through ``RedisCache`` in production).

    Records are encrypted and never expire by themselves. The lock is a ``cache.add`` of a
    random owner token with a lease: a dead holder's lock frees itself after ``lease``
    seconds, and a holder only ever removes its own lock (atomically on Redis).

    A per-process cache (``LocMemCache``) is fine for one process only, and a cache that
    evicts (memcached, Redis with an eviction policy) may drop a record, after which the
    person connects again.

    Args:
        alias: the ``CACHES`` alias.
        key_prefix: prefix of every key this store writes.
        cipher: encrypts the records; by default :func:`default_cipher`.
        lease: seconds a lock lives if its holder never releases it; keep it above the
            longest refresh (the request timeout to Watcher).
        poll_interval: the first pause between attempts to take a held lock (it doubles up
            to 0.1 s).
    """

    def __init__(
        self,
        *,
        alias: str = "default",
        key_prefix: str = "watcher_auth",
        cipher: TokenCipher | None = None,
        lease: float = 30.0,
        poll_interval: float = 0.005,
    ) -> None:
        self.alias = alias
        self.key_prefix = key_prefix
        self.cipher = cipher or default_cipher()
        self.lease = max(1, math.ceil(lease))
        self.poll_interval = poll_interval
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
        self._call("write", lambda cache: cache.set(self._key("record", key), token, None))

    def delete(self, key: StoreKey) -> None:
        self._call("write", lambda cache: cache.delete(self._key("record", key)))

    @contextmanager
    def lock(self, key: StoreKey, *, timeout: float) -> Iterator[None]:
        name = self._key("lock", key)
        # An int, which Django's Redis cache stores unpickled, so a script can compare it.
        owner = secrets.randbits(62) + 1
        deadline = time.monotonic() + timeout
        pause = self.poll_interval
        while not self._call("lock", lambda cache: cache.add(name, owner, self.lease)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreLockTimeout(f"lock for user key {key.user!r} not acquired in {timeout}s")
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.1)
        try:
            yield
        finally:
            self._release(name, owner)

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
