"""A token store in Redis (redis-py), shared by every process and host that uses the server.

Records are encrypted with a :class:`~watcher_auth.crypto.TokenCipher`; key names hold the
Watcher server, API and user key, never a token. The refresh lock is a Redis key set with
``SET NX PX`` to a random owner token and removed by a compare-and-delete script, so only its
owner releases it and a crashed holder's lock expires after ``lock_lease`` seconds.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

import redis

from watcher_auth._exceptions import ConfigurationError, StoreError, StoreLockTimeout
from watcher_auth._tokens import StoreKey, TokenPair
from watcher_auth.crypto import TokenCipher
from watcher_auth.stores.base import TokenStore

__all__ = ["DEFAULT_PREFIX", "DEFAULT_URL", "RedisStore"]

logger = logging.getLogger("watcher_auth")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "watcher_auth:"

# Delete the lock only if it still holds our owner token: after our lease ran out another
# process may hold it, and that lock is not ours to remove.
_RELEASE_SCRIPT = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"""
_GLOB_SPECIAL = frozenset("*?[]\\")


class RedisStore(TokenStore):
    """Keeps encrypted records in Redis; safe across threads, processes and hosts.

    Args:
        client: a ``redis.Redis`` client to use; by default one is made from ``url``.
        url: the server, as ``redis://[:password@]host:port/db`` (or ``rediss://``).
        cipher: encrypts the records.
        encryption_keys: keys to build a cipher from when ``cipher`` is not given (newest
            first; any secret string works). One of the two is required.
        prefix: prepended to every key name, so several portals can share a database.
        lock_lease: seconds after which a lock whose holder died frees itself. Keep it above
            the manager's request timeout.
        ttl: seconds a record lives after its last save, or ``None`` to keep it until it is
            deleted. Watcher does not tell a refresh token's lifetime; when you know it, set
            ``ttl`` to it, since the record is useless afterwards.
        poll_interval: longest pause between two attempts to take a held lock.

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
        lock_lease: float = 30.0,
        ttl: float | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        if cipher is None:
            if not encryption_keys:
                raise ConfigurationError(
                    "RedisStore needs a cipher or encryption_keys: records are always encrypted"
                )
            cipher = TokenCipher(encryption_keys, setting="RedisStore(encryption_keys=...)")
        if lock_lease <= 0:
            raise ConfigurationError("RedisStore lock_lease must be positive")
        if ttl is not None and ttl <= 0:
            raise ConfigurationError("RedisStore ttl must be positive or None")
        self.cipher = cipher
        self.prefix = prefix
        self.lock_lease = float(lock_lease)
        self.ttl = ttl
        self.poll_interval = poll_interval
        self._owns_client = client is None
        if client is None:
            try:
                client = redis.Redis.from_url(url)
            except ValueError as exc:
                raise ConfigurationError(f"invalid Redis URL for RedisStore: {exc}") from None
            parts = urlsplit(url)
            self._where = f"{parts.hostname}:{parts.port or 6379}{parts.path}"
        else:
            self._where = "client"
        self.client = client
        self._release = client.register_script(_RELEASE_SCRIPT)

    # --- the contract -------------------------------------------------------------------

    def load(self, key: StoreKey) -> TokenPair | None:
        with self._errors("read a record"):
            raw = self.client.get(self._record_name(key))
        return None if raw is None else self.cipher.loads(raw, key)

    def save(self, key: StoreKey, pair: TokenPair) -> None:
        value = self.cipher.dumps(pair, key)
        with self._errors("save a record"):
            if self.ttl is None:
                self.client.set(self._record_name(key), value)
            else:
                self.client.set(self._record_name(key), value, px=_ms(self.ttl))

    def delete(self, key: StoreKey) -> None:
        with self._errors("delete a record"):
            self.client.delete(self._record_name(key))

    @contextmanager
    def lock(self, key: StoreKey, *, timeout: float) -> Iterator[None]:
        name = self._lock_name(key)
        owner = secrets.token_hex(16)
        deadline = time.monotonic() + max(0.0, timeout)
        pause = 0.002
        while True:
            with self._errors("take a lock"):
                taken = self.client.set(name, owner, nx=True, px=_ms(self.lock_lease))
            if taken:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreLockTimeout(
                    f"Redis lock for user key {key.user!r} not acquired in {timeout}s"
                )
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, self.poll_interval)
        try:
            yield
        finally:
            try:
                self._release(keys=[name], args=[owner])
            except redis.RedisError as exc:
                # The work under the lock is done; the lease frees the lock soon enough.
                logger.warning(
                    "could not release the Redis lock for key %r (%s); it expires in %ss",
                    key.user,
                    type(exc).__name__,
                    self.lock_lease,
                )

    def iter_keys(self, *, server: str | None = None, api: str | None = None) -> Iterator[StoreKey]:
        start = f"{self.prefix}pair:".encode()
        pattern = _glob_escape(start) + b"*"
        with self._errors("list records"):
            names = list(self.client.scan_iter(match=pattern, count=500))
        for name in sorted(names):
            raw = name if isinstance(name, bytes) else str(name).encode()
            try:
                skey = StoreKey.parse(raw[len(start) :].decode())
            except (UnicodeDecodeError, ValueError):
                continue
            if (server is None or skey.server == server) and (api is None or skey.api == api):
                yield skey

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # --- helpers ------------------------------------------------------------------------

    def _record_name(self, key: StoreKey) -> bytes:
        return f"{self.prefix}pair:{key}".encode()

    def _lock_name(self, key: StoreKey) -> bytes:
        return f"{self.prefix}lock:{key}".encode()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise StoreError(
                f"Redis at {self._where} failed to {action} ({type(exc).__name__}: {exc})"
            ) from exc

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, prefix={self.prefix!r})"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _glob_escape(text: bytes) -> bytes:
    return b"".join(b"\\" + bytes([c]) if chr(c) in _GLOB_SPECIAL else bytes([c]) for c in text)
