"""Token stores in Redis (redis-py), shared by every process and host that uses the server.

:class:`RedisStore` and its async twin :class:`AsyncRedisStore` (on ``redis.asyncio``) use the
same key layout, encryption, lock and change channel, so sync and async workers can share
one prefix.

- Records are encrypted with a :class:`~watcher_auth.crypto.TokenCipher`; key names hold the
  Watcher server, API and user key, never a token.
- The refresh lock is a Redis key set with ``SET NX PX`` to a random owner token. While its
  holder lives, a watchdog extends the lease every third of ``lock_lease`` (only while the
  key still holds the owner's token), so slow work is never overtaken; a holder that dies
  stops renewing and its lock frees itself within one lease. Only the owner removes it.
  Waiters retry with bounded exponential backoff and jitter until their timeout.
- Every save and delete publishes the key's text (``api|server|user``, never a token) on the
  channel ``<prefix>changes`` in the same round trip (``MULTI``/``EXEC``), so
  :meth:`RedisStore.watch` tells every process of every change at once.
- After ``fork()``: redis-py's sync pool notices the new process and opens new connections;
  the async store replaces its client in the child; watches inherited from the parent are
  dead in the child (it starts its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from watcher_auth._exceptions import ConfigurationError, StoreError, StoreLockTimeout
from watcher_auth._tokens import StoreKey, TokenPair
from watcher_auth.crypto import TokenCipher
from watcher_auth.stores._waiting import Backoff
from watcher_auth.stores._watch import (
    AsyncChannelListener,
    ChannelListener,
    after_fork_in_child,
    keep_from_finalizing,
)
from watcher_auth.stores.base import AsyncTokenStore, ChangeListener, StoreWatch, TokenStore

__all__ = ["DEFAULT_PREFIX", "DEFAULT_URL", "AsyncRedisStore", "RedisStore", "watch_channel"]

logger = logging.getLogger("watcher_auth")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "watcher_auth:"
DEFAULT_LEASE = 5.0
WATCH_CONNECT_WAIT = 2.0  # how long watch() waits for the channel before returning unhealthy

# Delete the lock only if it still holds our owner token: after our lease ran out another
# process may hold it, and that lock is not ours to remove.
_RELEASE_SCRIPT = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"""
# Extend the lease only while the lock is still ours.
_EXTEND_SCRIPT = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
"""
_GLOB_SPECIAL = frozenset("*?[]\\")
# Clean-ups left running by cancelled waiters (the loop keeps only weak references to tasks).
_BACKGROUND: set[asyncio.Future[None]] = set()


class _RedisLayout:
    """What both Redis stores share: settings, key names, encryption, error messages."""

    def __init__(
        self,
        *,
        cipher: TokenCipher | None,
        encryption_keys: Sequence[str | bytes] | None,
        prefix: str,
        lock_lease: float | None,
        ttl: float | None,
        poll_interval: float,
        staleness_bound: float,
    ) -> None:
        name = type(self).__name__
        if cipher is None:
            if not encryption_keys:
                raise ConfigurationError(
                    f"{name} needs a cipher or encryption_keys: records are always encrypted"
                )
            cipher = TokenCipher(encryption_keys, setting=f"{name}(encryption_keys=...)")
        if lock_lease is None:
            lock_lease = DEFAULT_LEASE
        if lock_lease <= 0:
            raise ConfigurationError(f"{name} lock_lease must be positive")
        if ttl is not None and ttl <= 0:
            raise ConfigurationError(f"{name} ttl must be positive or None")
        if poll_interval <= 0:
            raise ConfigurationError(f"{name} poll_interval must be positive")
        self.cipher = cipher
        self.prefix = prefix
        self.lock_lease = float(lock_lease)
        self.ttl = ttl
        self.poll_interval = poll_interval
        self.staleness_bound = staleness_bound
        self._where = "client"

    @property
    def channel(self) -> bytes:
        """The pub/sub channel that carries the text of every changed key."""
        return f"{self.prefix}changes".encode()

    def _record_name(self, key: StoreKey) -> bytes:
        return f"{self.prefix}pair:{key}".encode()

    def _lock_name(self, key: StoreKey) -> bytes:
        return f"{self.prefix}lock:{key}".encode()

    def _seal(self, pair: TokenPair, key: StoreKey) -> bytes:
        return self.cipher.dumps(pair, key)

    def _open(self, raw: bytes | str, key: StoreKey) -> TokenPair:
        return self.cipher.loads(raw, key)

    def _record_px(self) -> int | None:
        return None if self.ttl is None else _ms(self.ttl)

    def _key_pattern(self) -> tuple[bytes, bytes]:
        start = f"{self.prefix}pair:".encode()
        return start, _glob_escape(start) + b"*"

    def _timed_out(self, key: StoreKey, timeout: float) -> StoreLockTimeout:
        return StoreLockTimeout(f"Redis lock for user key {key.user!r} not acquired in {timeout}s")

    def _lease_lost(self, key: StoreKey) -> None:
        logger.warning(
            "the Redis lock for user key %r expired while held (a pause longer than %ss?)",
            key.user,
            self.lock_lease,
        )

    def _release_failed(self, key: StoreKey, exc: Exception) -> None:
        # The work under the lock is done; the lease frees the lock soon enough.
        logger.warning(
            "could not release the Redis lock for key %r (%s); it expires in %ss",
            key.user,
            type(exc).__name__,
            self.lock_lease,
        )

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise StoreError(
                f"Redis at {self._where} failed to {action} ({type(exc).__name__}: {exc})"
            ) from exc

    def _describe(self, url: str | None, connection_kwargs: dict[str, Any]) -> str:
        if url is not None:
            parts = urlsplit(url)
            return f"{parts.hostname}:{parts.port or 6379}{parts.path}"
        host = connection_kwargs.get("host") or connection_kwargs.get("path") or "client"
        port = connection_kwargs.get("port")
        return f"{host}:{port}/{connection_kwargs.get('db', 0)}" if port else str(host)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r}, prefix={self.prefix!r})"


def _select_keys(
    names: list[Any], start: bytes, server: str | None, api: str | None
) -> Iterator[StoreKey]:
    for name in sorted(names):
        raw = name if isinstance(name, bytes) else str(name).encode()
        try:
            skey = StoreKey.parse(raw[len(start) :].decode())
        except (UnicodeDecodeError, ValueError):
            continue
        if (server is None or skey.server == server) and (api is None or skey.api == api):
            yield skey


def _listener_kwargs(connection_kwargs: dict[str, Any], retry: object) -> dict[str, Any]:
    # The listener sees every failure itself (no silent retries), so it knows messages may
    # have been lost; a periodic PING finds a server that went away without closing.
    return {**connection_kwargs, "retry": retry, "health_check_interval": 5}


class RedisStore(_RedisLayout, TokenStore):
    """Keeps encrypted records in Redis; safe across threads, processes and hosts.

    Args:
        client: a ``redis.Redis`` client to use; by default one is made from ``url``.
        url: the server, as ``redis://[:password@]host:port/db`` (or ``rediss://``).
        cipher: encrypts the records.
        encryption_keys: keys to build a cipher from when ``cipher`` is not given (newest
            first; any secret string works). One of the two is required.
        prefix: prepended to every key name, so several portals can share a database.
        lock_lease: seconds a lock outlives a holder that stopped renewing it (a dead
            process); a live holder renews it every third of this. ``None`` means
            ``DEFAULT_LEASE`` (5 s).
        ttl: seconds a record lives after its last save, or ``None`` to keep it until it is
            deleted. Watcher does not tell a refresh token's lifetime; when you know it, set
            ``ttl`` to it, since the record is useless afterwards.
        poll_interval: longest pause between two attempts to take a held lock.
        staleness_bound: seconds a per-process copy is trusted while the change channel is
            down (see :meth:`watch`).

    Raises:
        ConfigurationError: no cipher or keys, or a setting is out of range.
    """

    shared = True

    def __init__(
        self,
        client: redis.Redis | None = None,
        *,
        url: str = DEFAULT_URL,
        cipher: TokenCipher | None = None,
        encryption_keys: Sequence[str | bytes] | None = None,
        prefix: str = DEFAULT_PREFIX,
        lock_lease: float | None = None,
        ttl: float | None = None,
        poll_interval: float = 0.05,
        staleness_bound: float = 1.0,
    ) -> None:
        super().__init__(
            cipher=cipher,
            encryption_keys=encryption_keys,
            prefix=prefix,
            lock_lease=lock_lease,
            ttl=ttl,
            poll_interval=poll_interval,
            staleness_bound=staleness_bound,
        )
        self._owns_client = client is None
        if client is None:
            try:
                client = redis.Redis.from_url(url)
            except ValueError as exc:
                raise ConfigurationError(f"invalid Redis URL for RedisStore: {exc}") from None
            self._where = self._describe(url, {})
        else:
            self._where = self._describe(None, client.connection_pool.connection_kwargs)
        self.client = client
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._extend = client.register_script(_EXTEND_SCRIPT)
        self._watches: weakref.WeakSet[_RedisListener] = weakref.WeakSet()
        after_fork_in_child(self, RedisStore._forget_inherited_watches)

    # --- the contract -------------------------------------------------------------------

    def load(self, key: StoreKey) -> TokenPair | None:
        with self._errors("read a record"):
            raw = self.client.get(self._record_name(key))
        return None if raw is None else self._open(raw, key)

    def save(self, key: StoreKey, pair: TokenPair) -> None:
        value = self._seal(pair, key)
        with self._errors("save a record"), self.client.pipeline(transaction=True) as pipe:
            pipe.set(self._record_name(key), value, px=self._record_px())
            pipe.publish(self.channel, str(key))
            pipe.execute()

    def delete(self, key: StoreKey) -> None:
        with self._errors("delete a record"), self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self._record_name(key))
            pipe.publish(self.channel, str(key))
            pipe.execute()

    @contextmanager
    def lock(self, key: StoreKey, *, timeout: float) -> Iterator[None]:
        name = self._lock_name(key)
        owner = secrets.token_hex(16)
        wait = Backoff(timeout, cap=self.poll_interval)
        while True:
            with self._errors("take a lock"):
                if self.client.set(name, owner, nx=True, px=_ms(self.lock_lease)):
                    break
            pause = wait.pause()
            if pause is None:
                raise self._timed_out(key, timeout)
            time.sleep(pause)
        renewing = threading.Event()
        watchdog = threading.Thread(
            target=self._renew,
            args=(key, name, owner, renewing),
            name="watcher-auth-lease",
            daemon=True,
        )
        watchdog.start()
        try:
            yield
        finally:
            renewing.set()
            try:
                self._release(keys=[name], args=[owner])
            except redis.RedisError as exc:
                self._release_failed(key, exc)

    def watch(self, on_change: ChangeListener) -> StoreWatch:
        """Listen on the store's channel; ``on_change`` runs on the listener's thread."""
        listener = _RedisListener(self.client, self.channel, on_change, repr(self))
        self._watches.add(listener)
        return listener.start(WATCH_CONNECT_WAIT)

    def iter_keys(self, *, server: str | None = None, api: str | None = None) -> Iterator[StoreKey]:
        start, pattern = self._key_pattern()
        with self._errors("list records"):
            names = list(self.client.scan_iter(match=pattern, count=500))
        return _select_keys(names, start, server, api)

    def close(self) -> None:
        for listener in list(self._watches):
            listener.close()
        if self._owns_client:
            self.client.close()

    # --- helpers ------------------------------------------------------------------------

    def _renew(self, key: StoreKey, name: bytes, owner: str, done: threading.Event) -> None:
        while not done.wait(self.lock_lease / 3):
            try:
                extended = self._extend(keys=[name], args=[owner, _ms(self.lock_lease)])
            except redis.RedisError as exc:
                # Redis may be back before the lease ends: keep trying until then.
                logger.warning("could not extend the Redis lock (%s)", type(exc).__name__)
                continue
            if not extended and not done.is_set():
                self._lease_lost(key)
                return

    def _forget_inherited_watches(self) -> None:
        for listener in list(self._watches):
            listener.forget_after_fork()
        self._watches = weakref.WeakSet()


def watch_channel(
    client: redis.Redis, channel: bytes | str, on_change: ChangeListener, description: str
) -> StoreWatch:
    """Listen on a Redis pub/sub channel whose messages are changed keys' texts.

    The listener has a connection of its own, made with ``client``'s settings, in a thread
    that reconnects with backoff; ``on_change`` runs on that thread. Used by
    :meth:`RedisStore.watch` and by stores on other Redis clients (Django's cache).
    """
    return _RedisListener(client, channel, on_change, description).start(WATCH_CONNECT_WAIT)


class _RedisListener(ChannelListener):
    def __init__(
        self,
        client: redis.Redis,
        channel: bytes | str,
        on_change: ChangeListener,
        description: str,
    ) -> None:
        super().__init__(on_change, description)
        pool = client.connection_pool
        self._pool_class = pool.connection_class
        self._pool_kwargs = _listener_kwargs(pool.connection_kwargs, Retry(NoBackoff(), 0))
        self._channel = channel
        self._pubsub: Any = None
        self._client: redis.Redis | None = None

    def _connect(self) -> None:
        pool = redis.ConnectionPool(connection_class=self._pool_class, **self._pool_kwargs)
        self._client = redis.Redis(connection_pool=pool)
        self._pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
        self._pubsub.subscribe(self._channel)
        deadline = time.monotonic() + WATCH_CONNECT_WAIT
        while time.monotonic() < deadline:
            message = self._pubsub.get_message(timeout=0.2)
            if message is not None and message["type"] == "subscribe":
                return
        raise redis.ConnectionError("no subscription confirmation")

    def _receive(self, timeout: float) -> Iterator[str | bytes]:
        message = self._pubsub.get_message(timeout=timeout)
        while message is not None:
            if message["type"] == "message":
                yield message["data"]
            elif message["type"] == "subscribe":
                yield b""  # subscribed again after a reconnect: anything may have changed
            message = self._pubsub.get_message(timeout=0)

    def _disconnect(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        with contextlib.suppress(Exception):
            if pubsub is not None:
                pubsub.close()
            if client is not None:
                client.close()

    def _connection(self) -> object:
        return (self._pubsub, self._client)


class AsyncRedisStore(_RedisLayout, AsyncTokenStore):
    """The async twin of :class:`RedisStore` on ``redis.asyncio``: the same keys, encryption,
    lock and change channel, every call a coroutine.

    Use one instance per event loop (redis.asyncio connections belong to the loop that opened
    them). The lease watchdog is a task on that loop: a holder that blocks the loop for
    longer than ``lock_lease`` may lose its lock.

    Args:
        client: a ``redis.asyncio.Redis`` client to use; by default one is made from ``url``.
        url, cipher, encryption_keys, prefix, lock_lease, ttl, poll_interval,
            staleness_bound: as for :class:`RedisStore`.

    Raises:
        ConfigurationError: no cipher or keys, or a setting is out of range.
    """

    shared = True

    def __init__(
        self,
        client: aredis.Redis | None = None,
        *,
        url: str = DEFAULT_URL,
        cipher: TokenCipher | None = None,
        encryption_keys: Sequence[str | bytes] | None = None,
        prefix: str = DEFAULT_PREFIX,
        lock_lease: float | None = None,
        ttl: float | None = None,
        poll_interval: float = 0.05,
        staleness_bound: float = 1.0,
    ) -> None:
        super().__init__(
            cipher=cipher,
            encryption_keys=encryption_keys,
            prefix=prefix,
            lock_lease=lock_lease,
            ttl=ttl,
            poll_interval=poll_interval,
            staleness_bound=staleness_bound,
        )
        self._owns_client = client is None
        if client is None:
            try:
                client = aredis.Redis.from_url(url)
            except ValueError as exc:
                raise ConfigurationError(f"invalid Redis URL for AsyncRedisStore: {exc}") from None
            self._where = self._describe(url, {})
        else:
            self._where = self._describe(None, client.connection_pool.connection_kwargs)
        self._use(client)
        self._watches: weakref.WeakSet[_AsyncRedisListener] = weakref.WeakSet()
        after_fork_in_child(self, AsyncRedisStore._reset_after_fork)

    # --- the contract -------------------------------------------------------------------

    async def load(self, key: StoreKey) -> TokenPair | None:
        with self._errors("read a record"):
            raw = await self.client.get(self._record_name(key))
        return None if raw is None else self._open(raw, key)

    async def save(self, key: StoreKey, pair: TokenPair) -> None:
        value = self._seal(pair, key)
        with self._errors("save a record"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.set(self._record_name(key), value, px=self._record_px())
                pipe.publish(self.channel, str(key))
                await pipe.execute()

    async def delete(self, key: StoreKey) -> None:
        with self._errors("delete a record"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(self._record_name(key))
                pipe.publish(self.channel, str(key))
                await pipe.execute()

    @asynccontextmanager
    async def lock(self, key: StoreKey, *, timeout: float) -> AsyncIterator[None]:
        name = self._lock_name(key)
        owner = secrets.token_hex(16)
        wait = Backoff(timeout, cap=self.poll_interval)
        while True:
            try:
                with self._errors("take a lock"):
                    taken = await self.client.set(name, owner, nx=True, px=_ms(self.lock_lease))
                if _cancelled_meanwhile():
                    # redis.asyncio may retry a command its cancellation interrupted, and
                    # the cancellation is lost: honour it here.
                    raise asyncio.CancelledError
            except asyncio.CancelledError:
                # The SET may have reached Redis: drop the lock if it did.
                cleanup = asyncio.ensure_future(self._release_quietly(key, name, owner))
                _BACKGROUND.add(cleanup)
                cleanup.add_done_callback(_BACKGROUND.discard)
                raise
            if taken:
                break
            pause = wait.pause()
            if pause is None:
                raise self._timed_out(key, timeout)
            await asyncio.sleep(pause)
        watchdog = asyncio.ensure_future(self._renew(key, name, owner))
        try:
            yield
        finally:
            watchdog.cancel()
            await self._release_quietly(key, name, owner)

    async def watch(self, on_change: ChangeListener) -> StoreWatch:
        """Listen on the store's channel; ``on_change`` runs on the event loop."""
        listener = _AsyncRedisListener(self, on_change)
        self._watches.add(listener)
        return await listener.start(WATCH_CONNECT_WAIT)

    async def iter_keys(
        self, *, server: str | None = None, api: str | None = None
    ) -> AsyncIterator[StoreKey]:
        start, pattern = self._key_pattern()
        with self._errors("list records"):
            names = [name async for name in self.client.scan_iter(match=pattern, count=500)]
        for skey in _select_keys(names, start, server, api):
            yield skey

    async def aclose(self) -> None:
        for listener in list(self._watches):
            await listener.aclose()
        if self._owns_client:
            await self.client.aclose()

    # --- helpers ------------------------------------------------------------------------

    def _use(self, client: aredis.Redis) -> None:
        self.client = client
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._extend = client.register_script(_EXTEND_SCRIPT)

    async def _release_quietly(self, key: StoreKey, name: bytes, owner: str) -> None:
        try:
            await self._release(keys=[name], args=[owner])
        except Exception as exc:
            # Also what redis.asyncio raises from a connection a cancellation broke.
            self._release_failed(key, exc)

    async def _renew(self, key: StoreKey, name: bytes, owner: str) -> None:
        while True:
            await asyncio.sleep(self.lock_lease / 3)
            try:
                extended = await self._extend(keys=[name], args=[owner, _ms(self.lock_lease)])
            except Exception as exc:
                logger.warning("could not extend the Redis lock (%s)", type(exc).__name__)
                continue
            if not extended:
                self._lease_lost(key)
                return

    def _listener_client(self) -> aredis.Redis:
        pool = self.client.connection_pool
        kwargs = _listener_kwargs(pool.connection_kwargs, AsyncRetry(NoBackoff(), 0))
        listener_pool = aredis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        return aredis.Redis(connection_pool=listener_pool)

    def _reset_after_fork(self) -> None:
        # redis.asyncio pools do not check the process id: a child would read the parent's
        # sockets. The child gets a new client on the same settings.
        for listener in list(self._watches):
            listener.forget_after_fork()
        self._watches = weakref.WeakSet()
        inherited = self.client
        keep_from_finalizing(inherited)
        pool = inherited.connection_pool
        fresh = aredis.ConnectionPool(
            connection_class=pool.connection_class, **pool.connection_kwargs
        )
        self._use(aredis.Redis(connection_pool=fresh))
        self._owns_client = True


class _AsyncRedisListener(AsyncChannelListener):
    def __init__(self, store: AsyncRedisStore, on_change: ChangeListener) -> None:
        super().__init__(on_change, repr(store))
        self._store = store
        self._pubsub: Any = None
        self._client: aredis.Redis | None = None

    async def _connect(self) -> None:
        self._client = self._store._listener_client()
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(self._store.channel)
        deadline = time.monotonic() + WATCH_CONNECT_WAIT
        while time.monotonic() < deadline:
            message = await self._pubsub.get_message(timeout=0.2)
            if message is not None and message["type"] == "subscribe":
                return
        raise redis.ConnectionError("no subscription confirmation")

    async def _receive(self, timeout: float) -> AsyncIterator[str | bytes]:
        message = await self._pubsub.get_message(timeout=timeout)
        while message is not None:
            if message["type"] == "message":
                yield message["data"]
            elif message["type"] == "subscribe":
                yield b""  # subscribed again after a reconnect: anything may have changed
            message = await self._pubsub.get_message(timeout=0)

    async def _disconnect(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        with contextlib.suppress(Exception):
            if pubsub is not None:
                await pubsub.aclose()
            if client is not None:
                await client.aclose()

    def _connection(self) -> object:
        return (self._pubsub, self._client)


def _cancelled_meanwhile() -> bool:
    """Whether the running task was asked to cancel (Python 3.11+ keeps count)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling is not None and cancelling())


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _glob_escape(text: bytes) -> bytes:
    return b"".join(b"\\" + bytes([c]) if chr(c) in _GLOB_SPECIAL else bytes([c]) for c in text)
