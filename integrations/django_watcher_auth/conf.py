"""The ``WATCHER_AUTH`` settings and the process-wide token manager built from them.

One dict in ``settings.py`` configures the app; every key has a default::

    WATCHER_AUTH = {"URL": "https://watcher.example.com", "STORE": "db"}

================== ======================== ====================================================
Key                Default                  Meaning
================== ======================== ====================================================
URL                ``None`` (required)      Watcher's address, ``https://watcher.example.com``.
STORE              ``"db"``                 ``"db"`` (:class:`~.stores.DjangoModelStore`),
                                            ``"cache"`` (:class:`~.stores.DjangoCacheStore`),
                                            ``"memory"``, another registered store name, a
                                            dotted path, or a store instance.
STORE_OPTIONS      ``{}``                   Keyword arguments for the store's constructor
                                            (``{"using": "default"}`` for ``"db"``...).
TIMEOUT            ``10.0``                 Seconds for each request to Watcher.
REFRESH_MARGIN     ``None``                 Seconds before expiry to refresh; ``None``: 10% of
                                            the token's lifetime, at most 60 s.
LOCK_TIMEOUT       ``30.0``                 Seconds to wait for another worker's refresh.
DEADLINE           ``None``                 Seconds a login or refresh may take in all; a
                                            refresh waits for its answer until then, never
                                            cut short by ``TIMEOUT``. ``None``:
                                            ``max(30, 2 * TIMEOUT)``.
LOCAL_CACHE_SIZE   ``10000``                Fresh token pairs kept in each process in front of
                                            a shared store; ``0`` turns the cache off.
VERIFY_TLS         ``True``                 TLS verification: ``True``, ``False``, or a CA
                                            bundle path.
ENCRYPTION_KEYS    ``[]``                   Keys for tokens at rest, newest first (the first
                                            encrypts, all decrypt): generated keys
                                            (``watcher_auth.crypto.generate_key()``) are used
                                            as given, other strings go through HKDF-SHA256.
                                            Empty: derived from ``SECRET_KEY`` and
                                            ``SECRET_KEY_FALLBACKS``.
CACHE_ALIAS        ``"default"``            The ``CACHES`` alias of the ``"cache"`` store.
CACHE_KEY_PREFIX   ``"watcher_auth"``       Prefix of the ``"cache"`` store's keys.
USER_KEY           ``None``                 Dotted path to ``fn(user) -> str``, the key a
                                            portal user's tokens live under; ``None``:
                                            ``str(user.pk)``. A value starting with
                                            ``"service:"`` or ``"user:"`` is stored under
                                            ``"user:" + value`` (service accounts own the
                                            ``"service:"`` keys).
USER_FROM_KEY      ``None``                 Dotted path to ``fn(key) -> user | None``, the
                                            inverse of ``USER_KEY`` (it gets what
                                            ``USER_KEY`` returned); ``None``: a primary key
                                            lookup.
SERVICE_ACCOUNT    ``None``                 ``{"USERNAME": ..., "PASSWORD": ...}`` of a Watcher
                                            account used for portal users who have not
                                            connected their own. ``None``: taken from the
                                            environment variables ``WATCHER_SERVICE_USERNAME``
                                            and ``WATCHER_SERVICE_PASSWORD`` when both are set;
                                            ``False``: never.
CONNECT_URL        ``None``                 Where people connect their account; ``None``:
                                            ``reverse("django_watcher_auth:connect")``.
CONNECT_REDIRECT   ``None``                 Where the connect page goes without a ``next``;
_URL                                        ``None``: the status page.
JSON_ERRORS        ``None``                 ``None``: answer JSON to requests that prefer it
                                            (``Accept``, ``X-Requested-With``); ``True``:
                                            always; ``False``: never.
CLOCK              ``None``                 Dotted path to (or a) ``fn() -> unix seconds``;
                                            ``None``: ``time.time``. Tests pass a fake clock.
SYSTEM_API_KEY     ``None``                 Watcher's API v2 system key, for
                                            ``request.watcher_system`` (super-admin rights).
                                            ``None``: the environment variable
                                            ``WATCHER_SYSTEM_API_KEY``, if set. An empty one
                                            fails check ``E009``.
OPENTELEMETRY      ``False``                ``True``: OpenTelemetry metrics and spans of the
                                            manager (extra ``otel``), with the user key
                                            hashed; ``"raw"`` or ``"omit"``: the key as is,
                                            or not at all (see :mod:`watcher_auth.otel`).
================== ======================== ====================================================

Changing ``WATCHER_AUTH``, ``SECRET_KEY``, ``CACHES`` or ``DATABASES`` (``override_settings``
in tests) rebuilds :data:`watcher_settings` and the managers.

Async views use :func:`get_async_manager`, an :class:`~watcher_auth.AsyncTokenManager` built
from the same settings on the async twin of the store (``"db"``:
:class:`~.stores.AsyncDjangoModelStore`, ``"cache"``: :class:`~.stores.AsyncDjangoCacheStore`,
any other store: the sync manager's own store run in worker threads), so both managers see
the same records.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.signals import setting_changed
from django.urls import reverse

from watcher_auth import (
    AsyncTokenStore,
    ConfigurationError,
    EventType,
    MemoryStore,
    TokenManager,
    TokenStore,
    WatcherEvent,
    otel,
    resolve_store,
    web,
)
from watcher_auth.stores import import_string, resolve_async_store
from watcher_auth.v2 import SYSTEM_API_KEY_ENV, system_api_key_setting

if TYPE_CHECKING:
    from watcher_auth import AsyncTokenManager

__all__ = [
    "DEFAULTS",
    "SERVICE_KEY_PREFIX",
    "SYSTEM_API_KEY_ENV",
    "WatcherSettings",
    "build_async_store",
    "build_store",
    "connect_url",
    "get_async_manager",
    "get_clock",
    "get_manager",
    "reset_manager",
    "service_account",
    "service_key",
    "system_api_key",
    "user_for_key",
    "user_key",
    "watcher_settings",
]

DEFAULTS: dict[str, Any] = {
    "URL": None,
    "STORE": "db",
    "STORE_OPTIONS": {},
    "TIMEOUT": 10.0,
    "REFRESH_MARGIN": None,
    "LOCK_TIMEOUT": 30.0,
    "DEADLINE": None,
    "LOCAL_CACHE_SIZE": 10_000,
    "VERIFY_TLS": True,
    "ENCRYPTION_KEYS": [],
    "CACHE_ALIAS": "default",
    "CACHE_KEY_PREFIX": "watcher_auth",
    "USER_KEY": None,
    "USER_FROM_KEY": None,
    "SERVICE_ACCOUNT": None,
    "CONNECT_URL": None,
    "CONNECT_REDIRECT_URL": None,
    "JSON_ERRORS": None,
    "CLOCK": None,
    "SYSTEM_API_KEY": None,
    "OPENTELEMETRY": False,
}

#: The environment variable read when ``WATCHER_AUTH['SYSTEM_API_KEY']`` is not set.

#: Keys of service accounts start with this; :func:`user_key` never makes one.
SERVICE_KEY_PREFIX = web.SERVICE_KEY_PREFIX

_RELOAD_ON = frozenset(
    {"WATCHER_AUTH", "SECRET_KEY", "SECRET_KEY_FALLBACKS", "CACHES", "DATABASES"}
)


class WatcherSettings:
    """``settings.WATCHER_AUTH`` over :data:`DEFAULTS`, read as attributes.

    ``watcher_settings.URL`` is the configured value or the default. An attribute that is not
    a known key raises ``AttributeError``.
    """

    URL: str | None
    STORE: str | TokenStore | type[TokenStore]
    STORE_OPTIONS: dict[str, Any]
    TIMEOUT: float
    REFRESH_MARGIN: float | None
    LOCK_TIMEOUT: float
    DEADLINE: float | None
    LOCAL_CACHE_SIZE: int
    VERIFY_TLS: bool | str
    ENCRYPTION_KEYS: list[str]
    CACHE_ALIAS: str
    CACHE_KEY_PREFIX: str
    USER_KEY: str | Callable[[Any], str] | None
    USER_FROM_KEY: str | Callable[[str], Any] | None
    SERVICE_ACCOUNT: Mapping[str, str] | bool | None
    CONNECT_URL: str | None
    CONNECT_REDIRECT_URL: str | None
    JSON_ERRORS: bool | None
    CLOCK: str | Callable[[], float] | None
    SYSTEM_API_KEY: str | None
    OPENTELEMETRY: bool | str

    def __init__(self, user_settings: Mapping[str, Any] | None = None) -> None:
        self._user_settings = user_settings
        self._loaded: set[str] = set()
        #: Values derived from the settings (and the environment), kept until a reload.
        self.resolved: dict[str, object] = {}

    @property
    def user_settings(self) -> Mapping[str, Any]:
        """The ``WATCHER_AUTH`` dict as configured (empty when absent or not a dict)."""
        if self._user_settings is None:
            value = getattr(settings, "WATCHER_AUTH", None)
            self._user_settings = value if isinstance(value, Mapping) else {}
        return self._user_settings

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"{name!r} is not a WATCHER_AUTH setting")
        value = self.user_settings.get(name, DEFAULTS[name])
        if isinstance(value, (dict, list)):
            value = value.copy()
        setattr(self, name, value)
        self._loaded.add(name)
        return value

    def reload(self) -> None:
        """Forget what was read, so the next access reads ``settings.WATCHER_AUTH`` again."""
        for name in self._loaded:
            delattr(self, name)
        self._loaded.clear()
        self.resolved.clear()
        self._user_settings = None


_UNREAD = object()

#: The app's settings; rebuilt when ``WATCHER_AUTH`` changes.
watcher_settings = WatcherSettings()

_manager_lock = threading.Lock()
_manager: TokenManager | None = None
_async_manager: AsyncTokenManager | None = None


def get_manager() -> TokenManager:
    """The process's :class:`~watcher_auth.TokenManager` for ``WATCHER_AUTH['URL']``.

    Built on first use and shared by every thread; rebuilt after the settings change. Its
    events are sent as this app's signals.

    Raises:
        ConfigurationError: ``WATCHER_AUTH`` is missing the URL or names an unknown store.
    """
    global _manager
    manager = _manager
    if manager is None:
        with _manager_lock:
            if _manager is None:
                _manager = _build_manager()
            manager = _manager
    return manager


def get_async_manager() -> AsyncTokenManager:
    """The process's :class:`~watcher_auth.AsyncTokenManager`, for async views.

    Built on first use from the same ``WATCHER_AUTH`` settings as :func:`get_manager`, on
    :func:`build_async_store`; shared by every event loop of the process (its per-key locks
    and connection pools work across loops). Its events are sent as this app's signals,
    from a worker thread (receivers may use the ORM).

    Raises:
        ConfigurationError: ``WATCHER_AUTH`` is missing the URL or names an unknown store.
    """
    global _async_manager
    manager = _async_manager
    if manager is None:
        with _manager_lock:
            if _async_manager is None:
                _async_manager = _build_async_manager()
            manager = _async_manager
    return manager


def reset_manager() -> None:
    """Drop the current managers; the next :func:`get_manager` builds a new one.

    The async manager's connection pools are dropped with it (they close when collected).
    """
    global _manager, _async_manager
    with _manager_lock:
        old, _manager = _manager, None
        _async_manager = None
    if old is not None:
        old.close()


def _manager_options() -> dict[str, Any]:
    """The settings both managers are built from (all but the store)."""
    url = watcher_settings.URL
    if not url:
        raise ConfigurationError("WATCHER_AUTH['URL'] is not set: give Watcher's address")
    service = service_account()
    return {
        "base_url": url,
        "credentials": _service_credentials(service) if service is not None else None,
        "timeout": watcher_settings.TIMEOUT,
        "clock": get_clock(),
        "refresh_margin": watcher_settings.REFRESH_MARGIN,
        "lock_timeout": float(watcher_settings.LOCK_TIMEOUT),
        "deadline": watcher_settings.DEADLINE,
        "local_cache_size": int(watcher_settings.LOCAL_CACHE_SIZE),
        "verify": watcher_settings.VERIFY_TLS,
    }


def _build_manager() -> TokenManager:
    options = _manager_options()
    manager = TokenManager(store=build_store(), **options)
    manager.add_listener(_send_signal)
    _instrument(manager)
    return manager


def _instrument(manager: TokenManager | AsyncTokenManager) -> None:
    user_key = otel.parse_setting(
        watcher_settings.OPENTELEMETRY, setting="WATCHER_AUTH['OPENTELEMETRY']"
    )
    if user_key is not None:
        otel.instrument(manager, user_key=user_key)


def _build_async_manager() -> AsyncTokenManager:
    from watcher_auth import AsyncTokenManager

    options = _manager_options()
    manager = AsyncTokenManager(store=build_async_store(), **options)
    manager.add_listener(_send_signal_from_thread)
    _instrument(manager)
    return manager


def build_async_store() -> AsyncTokenStore:
    """The async twin of the store :func:`build_store` makes.

    ``"db"`` and ``"cache"`` get :class:`~.stores.AsyncDjangoModelStore` and
    :class:`~.stores.AsyncDjangoCacheStore` with the same options; any other store is the
    sync manager's own store run in worker threads, so a per-process ``"memory"`` store is
    one store for sync and async views alike.

    Raises:
        ConfigurationError: the store cannot be found or built.
    """
    spec = watcher_settings.STORE
    options = dict(watcher_settings.STORE_OPTIONS or {})
    if spec == "db":
        from django_watcher_auth.stores import AsyncDjangoModelStore

        return AsyncDjangoModelStore(**options)
    if spec == "cache":
        from django_watcher_auth.stores import AsyncDjangoCacheStore

        options.setdefault("alias", watcher_settings.CACHE_ALIAS)
        options.setdefault("key_prefix", watcher_settings.CACHE_KEY_PREFIX)
        options.setdefault("lease", float(watcher_settings.LOCK_TIMEOUT))
        return AsyncDjangoCacheStore(**options)
    return resolve_async_store(get_manager().store)


def build_store() -> TokenStore:
    """The store ``WATCHER_AUTH['STORE']`` and ``STORE_OPTIONS`` describe.

    Raises:
        ConfigurationError: the store cannot be found or built.
    """
    spec = watcher_settings.STORE
    options = dict(watcher_settings.STORE_OPTIONS or {})
    if spec == "db":
        from django_watcher_auth.stores import DjangoModelStore

        return DjangoModelStore(**options)
    if spec == "cache":
        from django_watcher_auth.stores import DjangoCacheStore

        options.setdefault("alias", watcher_settings.CACHE_ALIAS)
        options.setdefault("key_prefix", watcher_settings.CACHE_KEY_PREFIX)
        return DjangoCacheStore(**options)
    if spec == "memory":
        return MemoryStore(**options)
    if not isinstance(spec, (str, TokenStore)) and not (
        isinstance(spec, type) and issubclass(spec, TokenStore)
    ):
        raise ConfigurationError(f"WATCHER_AUTH['STORE'] must be a name or dotted path: {spec!r}")
    return resolve_store(spec, **options)


def get_clock() -> Callable[[], float]:
    """The wall clock of ``WATCHER_AUTH['CLOCK']`` (``time.time`` unless a test sets one)."""
    clock = watcher_settings.CLOCK
    if clock is None:
        return time.time
    if isinstance(clock, str):
        clock = import_string(clock)
    if not callable(clock):
        raise ConfigurationError("WATCHER_AUTH['CLOCK'] must be callable or a dotted path")
    return clock


def _callable_setting(name: str) -> Callable[..., Any] | None:
    value = getattr(watcher_settings, name)
    if value is None:
        return None
    if isinstance(value, str):
        value = import_string(value)
    if not callable(value):
        raise ConfigurationError(f"WATCHER_AUTH[{name!r}] must be a dotted path to a function")
    return value  # type: ignore[no-any-return]


def user_key(user: Any) -> str:
    """The key under which ``user``'s Watcher tokens are stored (``str(user.pk)`` by default).

    What ``USER_KEY`` returns goes through :func:`watcher_auth.web.portal_key`: a value
    starting with ``"service:"`` or ``"user:"`` is stored under ``"user:" + value``, so no
    portal user can reach a service account's tokens.
    """
    resolved = watcher_settings.resolved
    if "USER_KEY" not in resolved:  # looked up once until WATCHER_AUTH changes
        resolved["USER_KEY"] = _callable_setting("USER_KEY")
    function: Callable[..., Any] | None = resolved["USER_KEY"]  # type: ignore[assignment]
    key = function(user) if function is not None else str(user.pk)
    if not isinstance(key, str) or not key:
        raise ConfigurationError("WATCHER_AUTH['USER_KEY'] must return a non-empty string")
    return web.portal_key(key)


def user_for_key(key: str, using: str | None = None) -> Any:
    """The portal user whose key is ``key``, or ``None`` (service accounts, deleted users)."""
    portal_id = web.portal_id(key)
    if portal_id is None:
        return None
    function = _callable_setting("USER_FROM_KEY")
    if function is not None:
        return function(portal_id)
    model = get_user_model()
    try:
        pk = model._meta.pk.to_python(portal_id)
    except (ValidationError, ValueError, TypeError):
        return None
    manager = model._default_manager.db_manager(using) if using else model._default_manager
    return manager.filter(pk=pk).first()


def service_account() -> tuple[str, str] | None:
    """``(username, password)`` of the configured service account, or ``None``.

    Read once (settings and environment) until ``WATCHER_AUTH`` changes.
    """
    known: tuple[str, str] | object | None = watcher_settings.resolved.get(
        "SERVICE_ACCOUNT", _UNREAD
    )
    if known is not _UNREAD:
        return known  # type: ignore[return-value]
    account = _read_service_account()
    watcher_settings.resolved["SERVICE_ACCOUNT"] = account
    return account


def _read_service_account() -> tuple[str, str] | None:
    configured = watcher_settings.SERVICE_ACCOUNT
    if configured is False:
        return None
    config: Mapping[str, Any] = configured if isinstance(configured, Mapping) else {}
    username = config.get("USERNAME") or os.environ.get("WATCHER_SERVICE_USERNAME")
    password = config.get("PASSWORD") or os.environ.get("WATCHER_SERVICE_PASSWORD")
    if not username or not password:
        if isinstance(configured, Mapping):
            raise ConfigurationError(
                "WATCHER_AUTH['SERVICE_ACCOUNT'] needs a USERNAME and a PASSWORD (or the "
                "WATCHER_SERVICE_USERNAME / WATCHER_SERVICE_PASSWORD environment variables)"
            )
        return None
    return str(username), str(password)


def system_api_key() -> str | None:
    """Watcher's API v2 system key from ``WATCHER_AUTH['SYSTEM_API_KEY']`` or the environment.

    ``None`` when neither is set. The setting wins over the environment variable
    ``WATCHER_SYSTEM_API_KEY``.

    Raises:
        ConfigurationError: the key is set but empty, blank, or not usable in a header (the
            message names the setting, never the value).
    """
    return system_api_key_setting(
        watcher_settings.SYSTEM_API_KEY, setting="WATCHER_AUTH['SYSTEM_API_KEY']"
    )


def service_key(username: str) -> str:
    """The store key of the service account ``username``."""
    return web.service_key(username)


def _service_credentials(service: tuple[str, str]) -> Callable[[str], tuple[str, str] | None]:
    own_key = service_key(service[0])

    def credentials(key: str) -> tuple[str, str] | None:
        return service if key == own_key else None

    return credentials


def connect_url(api: str = "v3") -> str:
    """The connect page's URL (``WATCHER_AUTH['CONNECT_URL']`` or the app's own).

    With ``api="v2"``, the app's own page is the API v2 one (an API key or a password).
    """
    if watcher_settings.CONNECT_URL:
        return str(watcher_settings.CONNECT_URL)
    return reverse(
        "django_watcher_auth:connect_v2" if api == "v2" else "django_watcher_auth:connect"
    )


def _send_signal(event: WatcherEvent) -> None:
    from django_watcher_auth import signals

    signal = {
        EventType.CONNECTED: signals.watcher_connected,
        EventType.REFRESHED: signals.watcher_tokens_refreshed,
        EventType.REAUTHENTICATION_REQUIRED: signals.watcher_reauthentication_required,
        EventType.DISCONNECTED: signals.watcher_disconnected,
    }.get(event.type)
    if signal is None or not signal.has_listeners(TokenManager):
        return  # nobody listens: spare the user lookup
    signal.send(
        sender=TokenManager,
        user=user_for_key(event.key),
        user_key=event.key,
        username=event.username,
        server=event.server,
        api=event.api,
    )


# Signals sent from the event loop, until their worker thread is done (kept from collection).
_pending_signals: set[asyncio.Future[None]] = set()


def _send_signal_from_thread(event: WatcherEvent) -> None:
    """Send ``event``'s signal off the event loop: its receivers (and the user lookup) may
    use the ORM, which Django refuses to run on an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _send_signal(event)
        return
    from asgiref.sync import sync_to_async

    future = asyncio.ensure_future(sync_to_async(_send_signal, thread_sensitive=True)(event))
    _pending_signals.add(future)
    future.add_done_callback(_signal_sent)


def _signal_sent(future: asyncio.Future[None]) -> None:
    _pending_signals.discard(future)
    if not future.cancelled() and future.exception() is not None:
        logging.getLogger("django_watcher_auth").error(
            "sending a Watcher signal failed", exc_info=future.exception()
        )


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in _RELOAD_ON:
        watcher_settings.reload()
        reset_manager()


setting_changed.connect(_on_setting_changed, dispatch_uid="django_watcher_auth.conf")
