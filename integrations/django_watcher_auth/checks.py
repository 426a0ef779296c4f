"""System checks (``manage.py check``). The ids are stable; silence one with
``SILENCED_SYSTEM_CHECKS``.

================================ ===========================================================
``django_watcher_auth.E001``     ``WATCHER_AUTH['URL']`` is not set.
``django_watcher_auth.E002``     ``WATCHER_AUTH['URL']`` is not a valid Watcher address.
``django_watcher_auth.W001``     ``WATCHER_AUTH['URL']`` is plain ``http://`` to a host that is
                                 not this machine: passwords and tokens cross the network
                                 unencrypted.
``django_watcher_auth.W002``     The store keeps tokens in one process (``"memory"``,
                                 ``LocMemCache``) while ``DEBUG`` is off, where several worker
                                 processes usually run: each would log in on its own.
``django_watcher_auth.E003``     ``WatcherMiddleware`` is not in ``MIDDLEWARE``.
``django_watcher_auth.E004``     ``WatcherMiddleware`` comes before (or without)
                                 ``AuthenticationMiddleware``.
``django_watcher_auth.E005``     The store cannot be built from ``STORE`` / ``STORE_OPTIONS``.
``django_watcher_auth.E006``     ``WATCHER_AUTH`` is not a dict, or has unknown keys.
``django_watcher_auth.E007``     The ``"cache"`` store is on ``DummyCache``, which keeps nothing.
``django_watcher_auth.W003``     ``ATOMIC_REQUESTS`` is on for the ``"db"`` store's database:
                                 refreshed tokens would only be saved when the request commits.
``django_watcher_auth.E008``     ``USER_KEY`` is set without ``USER_FROM_KEY`` (or the other
                                 way round).
``django_watcher_auth.E009``     ``SYSTEM_API_KEY`` (or the environment variable
                                 ``WATCHER_SYSTEM_API_KEY``) is set but empty, blank, or not
                                 usable in an HTTP header.
================================ ===========================================================
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.utils.module_loading import import_string

from django_watcher_auth.conf import DEFAULTS, build_store, system_api_key, watcher_settings
from watcher_auth import MemoryStore, WatcherAuthError, normalize_server_url

__all__ = [
    "check_middleware",
    "check_settings",
    "check_store",
    "check_system_api_key",
    "check_url",
]

_MIDDLEWARE = "django_watcher_auth.middleware.WatcherMiddleware"
_AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
_ID = "django_watcher_auth."


@register()
def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E006 (shape of ``WATCHER_AUTH``) and E008 (user key functions come in pairs)."""
    raw = getattr(settings, "WATCHER_AUTH", None)
    if not isinstance(raw, dict):
        return [
            Error(
                "WATCHER_AUTH must be a dict, e.g. "
                '{"URL": "https://watcher.example.com", "STORE": "db"}.',
                id=_ID + "E006",
            )
        ]
    problems: list[CheckMessage] = []
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        problems.append(
            Error(
                f"WATCHER_AUTH has unknown keys: {', '.join(map(str, unknown))}.",
                hint=f"Known keys: {', '.join(DEFAULTS)}.",
                id=_ID + "E006",
            )
        )
    if (raw.get("USER_KEY") is None) != (raw.get("USER_FROM_KEY") is None):
        problems.append(
            Error(
                "WATCHER_AUTH['USER_KEY'] and WATCHER_AUTH['USER_FROM_KEY'] must be set together.",
                hint="USER_FROM_KEY turns a key back into its user; without it a key could "
                "be matched to the wrong user's primary key.",
                id=_ID + "E008",
            )
        )
    return problems


@register()
def check_url(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E001 (no URL), E002 (malformed URL), W001 (plain HTTP to another machine)."""
    url = watcher_settings.URL
    if not url:
        return [
            Error(
                "WATCHER_AUTH['URL'] is not set.",
                hint='Set it to Watcher\'s address, e.g. "https://watcher.example.com".',
                id=_ID + "E001",
            )
        ]
    try:
        server = normalize_server_url(url)
    except WatcherAuthError as exc:
        return [Error(f"WATCHER_AUTH['URL'] is not valid: {exc}", id=_ID + "E002")]
    parts = urlsplit(server)
    if parts.scheme == "http" and not _is_local(parts.hostname or ""):
        return [
            Warning(
                f"WATCHER_AUTH['URL'] uses plain http:// to {parts.hostname}: Watcher "
                "passwords and tokens would cross the network unencrypted.",
                hint="Use https://.",
                id=_ID + "W001",
            )
        ]
    return []


@register()
def check_middleware(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E003 (middleware missing), E004 (middleware before authentication)."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    ours = _position(middleware, _MIDDLEWARE)
    if ours is None:
        return [
            Error(
                f"{_MIDDLEWARE} is not in MIDDLEWARE.",
                hint="Add it after AuthenticationMiddleware.",
                id=_ID + "E003",
            )
        ]
    auth = _position(middleware, _AUTH_MIDDLEWARE)
    if auth is None or auth > ours:
        return [
            Error(
                f"{_MIDDLEWARE} must come after {_AUTH_MIDDLEWARE} in MIDDLEWARE.",
                hint="request.watcher belongs to request.user, which AuthenticationMiddleware "
                "sets.",
                id=_ID + "E004",
            )
        ]
    return []


@register()
def check_store(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E005 (store cannot be built), E007 (dummy cache), W002 (per-process), W003 (atomic)."""
    if not isinstance(getattr(settings, "WATCHER_AUTH", None), dict):
        return []
    try:
        store = build_store()
    except Exception as exc:
        return [
            Error(
                f"The Watcher token store cannot be built from WATCHER_AUTH['STORE'] = "
                f"{watcher_settings.STORE!r}: {exc}",
                id=_ID + "E005",
            )
        ]
    from django_watcher_auth.stores import DjangoCacheStore, DjangoModelStore

    problems: list[CheckMessage] = []
    per_process = isinstance(store, MemoryStore)
    if isinstance(store, DjangoCacheStore):
        backend = f"{type(store.cache).__module__}.{type(store.cache).__name__}"
        if backend == "django.core.cache.backends.dummy.DummyCache":
            problems.append(
                Error(
                    f"The Watcher token store uses cache {store.alias!r}, a DummyCache, which "
                    "keeps nothing: every user would have to connect on every request.",
                    id=_ID + "E007",
                )
            )
        per_process = not store.shared
    if per_process and not settings.DEBUG:
        problems.append(
            Warning(
                "The Watcher token store keeps tokens inside one process; with several worker "
                "processes each would log in to Watcher on its own and they would undo each "
                "other's refreshes.",
                hint='Use "STORE": "db" (PostgreSQL) or "cache" on Redis, or silence this '
                "check if the site runs exactly one process.",
                id=_ID + "W002",
            )
        )
    databases: dict[str, Any] = settings.DATABASES
    if isinstance(store, DjangoModelStore) and databases.get(store.using, {}).get(
        "ATOMIC_REQUESTS"
    ):
        problems.append(
            Warning(
                f"ATOMIC_REQUESTS is on for database {store.using!r}, which holds Watcher "
                "tokens: a refreshed token is only saved when the request commits, and lost "
                "if it rolls back.",
                hint='Point WATCHER_AUTH["STORE_OPTIONS"]["using"] at a second alias of the '
                "same database without ATOMIC_REQUESTS.",
                id=_ID + "W003",
            )
        )
    return problems


@register()
def check_system_api_key(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """E009 (a system API key that is set but empty or unusable)."""
    try:
        system_api_key()
    except WatcherAuthError as exc:
        return [
            Error(
                f"{exc}.",
                hint="An empty key would leave request.watcher_system failing on every use; "
                "set the key from Watcher's settings, or remove the setting.",
                id=_ID + "E009",
            )
        ]
    return []


def _position(middleware: list[str], wanted: str) -> int | None:
    target = import_string(wanted)
    for index, path in enumerate(middleware):
        if path == wanted:
            return index
        try:
            candidate = import_string(path)
        except ImportError:
            continue
        if isinstance(candidate, type) and issubclass(candidate, target):
            return index
    return None


def _is_local(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
