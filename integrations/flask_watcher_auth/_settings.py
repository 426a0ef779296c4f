"""The ``WATCHER_*`` configuration keys: defaults, validation, and building the store."""

from __future__ import annotations

import difflib
import logging
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask

from watcher_auth import (
    ConfigurationError,
    MemoryStore,
    StoreError,
    StoreKey,
    TokenStore,
    normalize_server_url,
    resolve_store,
)
from watcher_auth.crypto import TokenCipher
from watcher_auth.otel import UserKeyAttribute, parse_setting
from watcher_auth.v2 import SYSTEM_API_KEY_ENV, system_api_key_setting

__all__ = [
    "CONCURRENCY_ENV",
    "CONFIG_DEFAULTS",
    "SYSTEM_API_KEY_ENV",
    "WatcherSettings",
    "build_store",
    "check_process_model",
    "load_settings",
    "probe_store",
]

logger = logging.getLogger("flask_watcher_auth")

#: Every configuration key the extension reads, with its default.
CONFIG_DEFAULTS: Mapping[str, Any] = {
    "WATCHER_URL": None,
    "WATCHER_STORE": "memory",
    "WATCHER_STORE_OPTIONS": {},
    "WATCHER_REDIS_URL": "redis://127.0.0.1:6379/0",
    "WATCHER_SQLALCHEMY_URL": None,
    "WATCHER_TIMEOUT": 10.0,
    "WATCHER_REFRESH_MARGIN": None,
    "WATCHER_LOCK_TIMEOUT": 30.0,
    "WATCHER_DEADLINE": None,
    "WATCHER_LOCAL_CACHE_SIZE": 10_000,
    "WATCHER_VERIFY_TLS": True,
    "WATCHER_ENCRYPTION_KEYS": [],
    "WATCHER_SERVICE_USERNAME": None,
    "WATCHER_SERVICE_PASSWORD": None,
    "WATCHER_CONNECT_VIEW": "watcher_auth.connect",
    "WATCHER_URL_PREFIX": "/watcher",
    "WATCHER_CLOCK": None,
    "WATCHER_SYSTEM_API_KEY": None,
    "WATCHER_MULTIPROCESS": None,
    "WATCHER_CHECK_STORE_ON_START": False,
    "WATCHER_OPENTELEMETRY": False,
}

#: Read when ``WATCHER_MULTIPROCESS`` is ``None``: the worker count gunicorn and uvicorn take
#: from the environment (and most platforms set).
CONCURRENCY_ENV = "WEB_CONCURRENCY"

#: The environment variable read when ``WATCHER_SYSTEM_API_KEY`` is not in the config.

_ENCRYPTED_STORES = ("redis", "sqlalchemy")


@dataclass(frozen=True)
class WatcherSettings:
    """The validated ``WATCHER_*`` configuration of one app."""

    url: str
    store: str | TokenStore | type[TokenStore]
    store_options: dict[str, Any] = field(repr=False)
    redis_url: str = field(repr=False)
    sqlalchemy_url: str | None = field(repr=False)
    timeout: float | tuple[float, float]
    refresh_margin: float | Callable[[float | None], float] | None
    lock_timeout: float
    deadline: float | None
    local_cache_size: int
    verify_tls: bool | str
    encryption_keys: tuple[str | bytes, ...] = field(repr=False)
    encryption_setting: str
    service_username: str | None
    service_password: str | None = field(repr=False)
    connect_view: str
    url_prefix: str
    clock: Callable[[], float] | None
    system_api_key: str | None = field(default=None, repr=False)
    multiprocess: bool = False
    check_store_on_start: bool = False
    encryption_from_secret_key: bool = False
    opentelemetry: UserKeyAttribute | None = None

    @property
    def has_service_account(self) -> bool:
        """Whether a service account is configured."""
        return self.service_username is not None

    def cipher(self) -> TokenCipher:
        """The cipher for encrypted stores, from the keys or the app's ``SECRET_KEY``.

        Keys in ``WATCHER_ENCRYPTION_KEYS`` that are generated keys are used as given, others
        are derived with HKDF-SHA256. Without them, keys derived from ``SECRET_KEY`` (which
        encrypts) and ``SECRET_KEY_FALLBACKS`` (which also decrypt) are used.
        """
        if not self.encryption_keys:
            raise ConfigurationError(
                "WATCHER_ENCRYPTION_KEYS is empty and the app has no SECRET_KEY: "
                "the token store needs a key to encrypt records with"
            )
        return TokenCipher(
            self.encryption_keys,
            setting=self.encryption_setting,
            # The SECRET_KEY also signs the session cookie: only a key derived from it encrypts.
            derive_all=self.encryption_from_secret_key,
        )


def load_settings(app: Flask) -> WatcherSettings:
    """Set every missing ``WATCHER_*`` key to its default and validate them all.

    Raises:
        ConfigurationError: a key is missing or wrong; the message names it.
    """
    config = app.config
    _warn_unknown_keys(config)
    for name, default in CONFIG_DEFAULTS.items():
        config.setdefault(name, _copy(default))

    url = config["WATCHER_URL"]
    if not url:
        raise ConfigurationError(
            "WATCHER_URL is not set: give Watcher's address, e.g. 'https://watcher.example.com'"
        )
    try:
        url = normalize_server_url(url)
    except ConfigurationError as exc:
        raise ConfigurationError(f"WATCHER_URL: {exc}") from None

    store = config["WATCHER_STORE"]
    if not isinstance(store, (str, TokenStore)) and not (
        isinstance(store, type) and issubclass(store, TokenStore)
    ):
        raise ConfigurationError(
            "WATCHER_STORE must be 'memory', 'redis', 'sqlalchemy', a dotted path, "
            f"a TokenStore class or instance, not {type(store).__name__}"
        )
    options = config["WATCHER_STORE_OPTIONS"]
    if not isinstance(options, Mapping):
        raise ConfigurationError("WATCHER_STORE_OPTIONS must be a dict of store arguments")

    keys = config["WATCHER_ENCRYPTION_KEYS"]
    if isinstance(keys, (str, bytes)):
        keys = [keys]
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, (str, bytes)) for k in keys):
        raise ConfigurationError("WATCHER_ENCRYPTION_KEYS must be a list of keys, newest first")
    setting = "WATCHER_ENCRYPTION_KEYS"
    from_secret_key = not any(keys)
    if from_secret_key:
        # Flask rotates its secret through SECRET_KEY_FALLBACKS; records follow the same way.
        secret = config.get("SECRET_KEY")
        keys = [secret, *(config.get("SECRET_KEY_FALLBACKS") or [])] if secret else []
        setting = "SECRET_KEY (WATCHER_ENCRYPTION_KEYS is empty)"

    service_username = config["WATCHER_SERVICE_USERNAME"] or os.environ.get(
        "WATCHER_SERVICE_USERNAME"
    )
    service_password = config["WATCHER_SERVICE_PASSWORD"] or os.environ.get(
        "WATCHER_SERVICE_PASSWORD"
    )
    if bool(service_username) != bool(service_password):
        raise ConfigurationError(
            "WATCHER_SERVICE_USERNAME and WATCHER_SERVICE_PASSWORD must be set together"
        )

    prefix = config["WATCHER_URL_PREFIX"]
    if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
        raise ConfigurationError("WATCHER_URL_PREFIX must be a path starting with '/'")
    connect_view = config["WATCHER_CONNECT_VIEW"]
    if not isinstance(connect_view, str) or not connect_view:
        raise ConfigurationError("WATCHER_CONNECT_VIEW must be an endpoint name or a URL path")
    clock = config["WATCHER_CLOCK"]
    if clock is not None and not callable(clock):
        raise ConfigurationError("WATCHER_CLOCK must be a function returning unix seconds")
    verify = config["WATCHER_VERIFY_TLS"]
    if not isinstance(verify, (bool, str)):
        raise ConfigurationError("WATCHER_VERIFY_TLS must be True, False or a CA bundle path")
    margin = config["WATCHER_REFRESH_MARGIN"]
    if margin is not None and not callable(margin):
        margin = _number(margin, "WATCHER_REFRESH_MARGIN", minimum=0.0)
    cache_size = config["WATCHER_LOCAL_CACHE_SIZE"]
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
        raise ConfigurationError("WATCHER_LOCAL_CACHE_SIZE must be a whole number, 0 or more")

    return WatcherSettings(
        url=url,
        store=store,
        store_options=dict(options),
        redis_url=str(config["WATCHER_REDIS_URL"]),
        sqlalchemy_url=config["WATCHER_SQLALCHEMY_URL"] or config.get("SQLALCHEMY_DATABASE_URI"),
        timeout=_timeout(config["WATCHER_TIMEOUT"]),
        refresh_margin=margin,
        lock_timeout=_number(config["WATCHER_LOCK_TIMEOUT"], "WATCHER_LOCK_TIMEOUT"),
        deadline=None
        if config["WATCHER_DEADLINE"] is None
        else _number(config["WATCHER_DEADLINE"], "WATCHER_DEADLINE"),
        local_cache_size=cache_size,
        verify_tls=verify,
        encryption_keys=tuple(k for k in keys if k),
        encryption_setting=setting,
        encryption_from_secret_key=from_secret_key,
        service_username=service_username or None,
        service_password=service_password or None,
        connect_view=connect_view,
        url_prefix=prefix.rstrip("/"),
        clock=clock,
        system_api_key=_system_api_key(config["WATCHER_SYSTEM_API_KEY"]),
        multiprocess=_multiprocess(config["WATCHER_MULTIPROCESS"]),
        check_store_on_start=bool(config["WATCHER_CHECK_STORE_ON_START"]),
        opentelemetry=parse_setting(
            config["WATCHER_OPENTELEMETRY"], setting="WATCHER_OPENTELEMETRY"
        ),
    )


def _warn_unknown_keys(config: Mapping[str, Any]) -> None:
    """A ``WATCHER_*`` key the extension does not know is most likely a typo: say so."""
    for name in sorted(k for k in config if k.startswith("WATCHER_") and k not in CONFIG_DEFAULTS):
        # Compared without the shared prefix, which would make every name look alike.
        known = [k.removeprefix("WATCHER_") for k in CONFIG_DEFAULTS]
        close = difflib.get_close_matches(name.removeprefix("WATCHER_"), known, n=1)
        hint = f"; did you mean WATCHER_{close[0]}?" if close else ""
        logger.warning("unknown configuration key %s is ignored by WatcherAuth%s", name, hint)


def _multiprocess(configured: object) -> bool:
    if configured is not None:
        if not isinstance(configured, bool):
            raise ConfigurationError("WATCHER_MULTIPROCESS must be True, False or None")
        return configured
    workers = os.environ.get(CONCURRENCY_ENV, "").strip()
    return workers.isdigit() and int(workers) > 1


def check_process_model(settings: WatcherSettings, store: TokenStore) -> None:
    """Warn about a store that lives in one process; refuse it when several processes run.

    Raises:
        ConfigurationError: a per-process store (``"memory"``) while ``WATCHER_MULTIPROCESS``
            is true, or ``WEB_CONCURRENCY`` asks for more than one worker.
    """
    if not isinstance(store, MemoryStore):
        return
    if settings.multiprocess:
        raise ConfigurationError(
            "WATCHER_STORE is 'memory', which keeps tokens inside one process, but this app "
            f"runs several (WATCHER_MULTIPROCESS or {CONCURRENCY_ENV}): each worker would log "
            "in on its own and undo the others' refreshes. Use 'redis' or 'sqlalchemy'"
        )
    logger.warning(
        "WATCHER_STORE is 'memory': tokens live in this process only and are lost on restart; "
        "with several worker processes use 'redis' or 'sqlalchemy'"
    )


def probe_store(settings: WatcherSettings, store: TokenStore) -> None:
    """Read one (absent) record, so a store that cannot be reached fails at start-up.

    Raises:
        StoreError: the store failed; the message says it was this start-up probe.
    """
    try:
        store.load(StoreKey(server=settings.url, user="watcher-auth-start-up-probe"))
    except StoreError as exc:
        raise StoreError(f"WATCHER_CHECK_STORE_ON_START: the token store failed: {exc}") from exc


def _system_api_key(configured: object) -> str | None:
    """The API v2 system key from the config or the environment; ``None`` when neither has one.

    A key that is set but empty fails here, at start-up, rather than on first use.
    """
    return system_api_key_setting(configured, setting="WATCHER_SYSTEM_API_KEY")


def build_store(settings: WatcherSettings) -> TokenStore:
    """The store ``WATCHER_STORE`` names, with ``WATCHER_STORE_OPTIONS`` as its arguments.

    ``"redis"`` and ``"sqlalchemy"`` also get their URL key and a cipher (from
    ``WATCHER_ENCRYPTION_KEYS`` or ``SECRET_KEY``) unless the options give them.

    Raises:
        ConfigurationError: the store is unknown or cannot be built; the message names the key.
    """
    spec = settings.store
    options = dict(settings.store_options)
    if spec in _ENCRYPTED_STORES and not {"cipher", "encryption_keys"} & options.keys():
        options["cipher"] = settings.cipher()
    if spec == "redis":
        options.setdefault("url", settings.redis_url)
    elif spec == "sqlalchemy" and "engine" not in options:
        if not settings.sqlalchemy_url:
            raise ConfigurationError(
                "WATCHER_STORE is 'sqlalchemy' but neither WATCHER_SQLALCHEMY_URL nor "
                "SQLALCHEMY_DATABASE_URI is set"
            )
        options["engine"] = settings.sqlalchemy_url
    try:
        return resolve_store(spec, **options)
    except ConfigurationError as exc:
        raise ConfigurationError(f"WATCHER_STORE: {exc}") from None
    except TypeError as exc:
        raise ConfigurationError(f"WATCHER_STORE_OPTIONS do not fit the store: {exc}") from None


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


def _copy(default: Any) -> Any:
    return type(default)(default) if isinstance(default, (dict, list)) else default
