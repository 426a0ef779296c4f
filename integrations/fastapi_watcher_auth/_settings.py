"""The ``WATCHER_*`` settings: defaults, validation at start-up, and building the async store."""

from __future__ import annotations

import difflib
import logging
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from watcher_auth import (
    AsyncTokenStore,
    ConfigurationError,
    TokenStore,
    normalize_server_url,
)
from watcher_auth.crypto import TokenCipher
from watcher_auth.stores import resolve_async_store
from watcher_auth.v2 import SYSTEM_API_KEY_ENV, system_api_key_setting

__all__ = [
    "CONCURRENCY_ENV",
    "DEFAULTS",
    "SYSTEM_API_KEY_ENV",
    "WatcherSettings",
    "build_store",
    "load_settings",
]

logger = logging.getLogger("fastapi_watcher_auth")

#: Every setting the plugin reads, with its default. The names are the Flask extension's.
DEFAULTS: Mapping[str, Any] = {
    "WATCHER_URL": None,
    "WATCHER_STORE": "memory",
    "WATCHER_STORE_OPTIONS": {},
    "WATCHER_REDIS_URL": "redis://127.0.0.1:6379/0",
    "WATCHER_SQLALCHEMY_URL": None,
    "WATCHER_ENCRYPTION_KEYS": [],
    "WATCHER_TIMEOUT": 10.0,
    "WATCHER_REFRESH_MARGIN": None,
    "WATCHER_LOCK_TIMEOUT": 30.0,
    "WATCHER_LOCAL_CACHE_SIZE": 10_000,
    "WATCHER_VERIFY_TLS": True,
    "WATCHER_URL_PREFIX": "/watcher",
    "WATCHER_CLOCK": None,
    "WATCHER_SYSTEM_API_KEY": None,
    "WATCHER_MULTIPROCESS": None,
}

#: Read when ``WATCHER_MULTIPROCESS`` is ``None``: the worker count uvicorn and gunicorn take
#: from the environment.
CONCURRENCY_ENV = "WEB_CONCURRENCY"

_ENCRYPTED_STORES = ("redis", "sqlalchemy")


@dataclass(frozen=True)
class WatcherSettings:
    """The validated ``WATCHER_*`` settings of one app."""

    url: str
    store: str | AsyncTokenStore | TokenStore | type[Any]
    store_options: dict[str, Any] = field(repr=False)
    redis_url: str = field(repr=False)
    sqlalchemy_url: str | None = field(repr=False)
    encryption_keys: tuple[str | bytes, ...] = field(repr=False)
    timeout: float | tuple[float, float]
    refresh_margin: float | None
    lock_timeout: float
    local_cache_size: int
    verify_tls: bool | str
    url_prefix: str | None
    clock: Callable[[], float] | None
    system_api_key: str | None = field(default=None, repr=False)
    multiprocess: bool = False


def load_settings(config: Mapping[str, Any]) -> WatcherSettings:
    """Validate ``config`` over :data:`DEFAULTS`.

    Unknown ``WATCHER_*`` names are logged with the closest known one.

    Raises:
        ConfigurationError: a setting is missing or wrong; the message names it.
    """
    for name in sorted(k for k in config if k.startswith("WATCHER_") and k not in DEFAULTS):
        known = [k.removeprefix("WATCHER_") for k in DEFAULTS]
        close = difflib.get_close_matches(name.removeprefix("WATCHER_"), known, n=1)
        hint = f"; did you mean WATCHER_{close[0]}?" if close else ""
        logger.warning("unknown setting %s is ignored by WatcherAuth%s", name, hint)
    values = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}

    url = values["WATCHER_URL"]
    if not url:
        raise ConfigurationError(
            "WATCHER_URL is not set: give Watcher's address, e.g. 'https://watcher.example.com'"
        )
    try:
        url = normalize_server_url(url)
    except ConfigurationError as exc:
        raise ConfigurationError(f"WATCHER_URL: {exc}") from None
    store = values["WATCHER_STORE"]
    if not isinstance(store, (str, AsyncTokenStore, TokenStore)) and not isinstance(store, type):
        raise ConfigurationError(
            "WATCHER_STORE must be 'memory', 'redis', 'sqlalchemy', a dotted path, "
            f"a store class or instance, not {type(store).__name__}"
        )
    options = values["WATCHER_STORE_OPTIONS"]
    if not isinstance(options, Mapping):
        raise ConfigurationError("WATCHER_STORE_OPTIONS must be a dict of store arguments")
    keys = values["WATCHER_ENCRYPTION_KEYS"]
    if isinstance(keys, (str, bytes)):
        keys = [keys]
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, (str, bytes)) for k in keys):
        raise ConfigurationError("WATCHER_ENCRYPTION_KEYS must be a list of keys, newest first")
    keys = tuple(k for k in keys if k)
    if store in _ENCRYPTED_STORES and not keys and not {"cipher", "encryption_keys"} & set(options):
        raise ConfigurationError(
            f"WATCHER_STORE is {store!r}, which encrypts tokens at rest: set "
            "WATCHER_ENCRYPTION_KEYS (newest first; watcher_auth.crypto.generate_key() makes one)"
        )
    prefix = values["WATCHER_URL_PREFIX"]
    if prefix is not None and (not isinstance(prefix, str) or not prefix.startswith("/")):
        raise ConfigurationError("WATCHER_URL_PREFIX must be a path starting with '/', or None")
    clock = values["WATCHER_CLOCK"]
    if clock is not None and not callable(clock):
        raise ConfigurationError("WATCHER_CLOCK must be a function returning unix seconds")
    verify = values["WATCHER_VERIFY_TLS"]
    if not isinstance(verify, (bool, str)):
        raise ConfigurationError("WATCHER_VERIFY_TLS must be True, False or a CA bundle path")
    margin = values["WATCHER_REFRESH_MARGIN"]
    if margin is not None:
        margin = _number(margin, "WATCHER_REFRESH_MARGIN", minimum=0.0)
    cache_size = values["WATCHER_LOCAL_CACHE_SIZE"]
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
        raise ConfigurationError("WATCHER_LOCAL_CACHE_SIZE must be a whole number, 0 or more")
    settings = WatcherSettings(
        url=url,
        store=store,
        store_options=dict(options),
        redis_url=str(values["WATCHER_REDIS_URL"]),
        sqlalchemy_url=values["WATCHER_SQLALCHEMY_URL"],
        encryption_keys=keys,
        timeout=_timeout(values["WATCHER_TIMEOUT"]),
        refresh_margin=margin,
        lock_timeout=_number(values["WATCHER_LOCK_TIMEOUT"], "WATCHER_LOCK_TIMEOUT"),
        local_cache_size=cache_size,
        verify_tls=verify,
        url_prefix=None if prefix is None else prefix.rstrip("/"),
        clock=clock,
        system_api_key=system_api_key_setting(
            values["WATCHER_SYSTEM_API_KEY"], setting="WATCHER_SYSTEM_API_KEY"
        ),
        multiprocess=_multiprocess(values["WATCHER_MULTIPROCESS"]),
    )
    if settings.multiprocess and store == "memory":
        raise ConfigurationError(
            "WATCHER_STORE is 'memory', which keeps tokens inside one process, but this app "
            f"runs several (WATCHER_MULTIPROCESS or {CONCURRENCY_ENV}): each worker would log "
            "in on its own and undo the others' refreshes. Use 'redis' or 'sqlalchemy'"
        )
    return settings


def build_store(settings: WatcherSettings) -> AsyncTokenStore:
    """The async store ``WATCHER_STORE`` names, with ``WATCHER_STORE_OPTIONS``.

    ``"redis"`` and ``"sqlalchemy"`` also get their URL and a cipher from
    ``WATCHER_ENCRYPTION_KEYS`` unless the options give them. A sync store runs in worker
    threads (:class:`~watcher_auth.stores.AsyncStoreAdapter`).

    Raises:
        ConfigurationError: the store is unknown or cannot be built; the message names it.
    """
    spec = settings.store
    options = dict(settings.store_options)
    if spec in _ENCRYPTED_STORES and not {"cipher", "encryption_keys"} & options.keys():
        options["cipher"] = TokenCipher(settings.encryption_keys, setting="WATCHER_ENCRYPTION_KEYS")
    if spec == "redis":
        options.setdefault("url", settings.redis_url)
    elif spec == "sqlalchemy" and "engine" not in options:
        if not settings.sqlalchemy_url:
            raise ConfigurationError(
                "WATCHER_STORE is 'sqlalchemy' but WATCHER_SQLALCHEMY_URL is not set"
            )
        options["engine"] = settings.sqlalchemy_url
    try:
        return resolve_async_store(spec, **options)
    except ConfigurationError as exc:
        raise ConfigurationError(f"WATCHER_STORE: {exc}") from None
    except TypeError as exc:
        raise ConfigurationError(f"WATCHER_STORE_OPTIONS do not fit the store: {exc}") from None


def _multiprocess(configured: object) -> bool:
    if configured is not None:
        if not isinstance(configured, bool):
            raise ConfigurationError("WATCHER_MULTIPROCESS must be True, False or None")
        return configured
    workers = os.environ.get(CONCURRENCY_ENV, "").strip()
    return workers.isdigit() and int(workers) > 1


def _number(value: object, name: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{name} must be a number of seconds")
    number = float(value)
    if (minimum is None and number <= 0) or (minimum is not None and number < minimum):
        raise ConfigurationError(f"{name} must be {'positive' if minimum is None else '0 or more'}")
    return number


def _timeout(value: object) -> float | tuple[float, float]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (_number(value[0], "WATCHER_TIMEOUT"), _number(value[1], "WATCHER_TIMEOUT"))
    return _number(value, "WATCHER_TIMEOUT")
