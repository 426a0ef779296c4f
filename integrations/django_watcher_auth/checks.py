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
``django_watcher_auth.E010``     A URL pattern's view is an ``async def`` view inside a
                                 sync-only wrapper (a decorator that calls it without
                                 awaiting): it would answer an unawaited coroutine.
``django_watcher_auth.W004``     (``--deploy``) ``VERIFY_TLS`` is off: anyone on the path to
                                 Watcher can read passwords and tokens.
``django_watcher_auth.W005``     (``--deploy``) ``DEBUG`` is on while a service account is
                                 configured: error pages could show its settings.
``django_watcher_auth.W006``     (``--deploy``) Neither ``XFrameOptionsMiddleware`` nor a
                                 Content Security Policy with ``frame-ancestors`` keeps
                                 other sites from framing the connect and disconnect pages.
``django_watcher_auth.W007``     (``--database``) Stored records the current encryption keys
                                 cannot read; their users see "needs reconnect".
================================ ===========================================================

The ``--database`` check reads every record of the store (``manage.py check --database
default``, or ``manage.py watcher_check``); it runs only for stores that can list their keys.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections
from django.utils.module_loading import import_string

from django_watcher_auth.conf import (
    DEFAULTS,
    build_store,
    get_manager,
    service_account,
    system_api_key,
    watcher_settings,
)
from watcher_auth import MemoryStore, WatcherAuthError, normalize_server_url
from watcher_auth.web import unreadable_keys

__all__ = [
    "check_async_views",
    "check_deploy",
    "check_framing",
    "check_middleware",
    "check_settings",
    "check_store",
    "check_system_api_key",
    "check_unreadable_records",
    "check_url",
    "unreadable_warning",
]

_MIDDLEWARE = "django_watcher_auth.middleware.WatcherMiddleware"
_AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
_XFRAME_MIDDLEWARE = "django.middleware.clickjacking.XFrameOptionsMiddleware"
_CSP_MIDDLEWARE = "django.middleware.csp.ContentSecurityPolicyMiddleware"
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


@register(deploy=True)
def check_deploy(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """W004 (TLS verification off), W005 (``DEBUG`` with a service account)."""
    if not isinstance(getattr(settings, "WATCHER_AUTH", None), dict):
        return []
    problems: list[CheckMessage] = []
    if watcher_settings.VERIFY_TLS is False:
        problems.append(
            Warning(
                "WATCHER_AUTH['VERIFY_TLS'] is False: Watcher's certificate is not checked, so "
                "anyone on the network path can read Watcher passwords and tokens.",
                hint="Remove the setting, or set it to the path of the CA bundle that signed "
                "Watcher's certificate.",
                id=_ID + "W004",
            )
        )
    try:
        service = service_account()
    except WatcherAuthError:
        service = None  # E005 and friends report a broken configuration
    if settings.DEBUG and service is not None:
        problems.append(
            Warning(
                "DEBUG is on while a Watcher service account is configured: debug pages and "
                "logs could show the site's settings to visitors.",
                hint="Turn DEBUG off in production.",
                id=_ID + "W005",
            )
        )
    return problems


@register(Tags.urls)
def check_async_views(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """E010: an ``async def`` view wrapped by a decorator that only works on sync views."""
    if not getattr(settings, "ROOT_URLCONF", None):
        return []
    from django.urls import get_resolver

    problems: list[CheckMessage] = []
    for route, callback in _views(get_resolver().url_patterns, ""):
        if iscoroutinefunction(callback):
            continue
        inner = getattr(callback, "__wrapped__", None)
        while inner is not None and not iscoroutinefunction(inner):
            inner = getattr(inner, "__wrapped__", None)
        if inner is None:
            continue
        name = getattr(inner, "__qualname__", repr(inner))
        problems.append(
            Error(
                f"The URL pattern '{route}' serves the async view {name} through a sync-only "
                "wrapper: the wrapper calls it without awaiting, so the request would get an "
                "unawaited coroutine instead of a response.",
                hint="Use decorators that keep async views async (watcher_required and "
                "watcher_v2_required do); mark an async wrapper with "
                "asgiref.sync.markcoroutinefunction.",
                obj=callback,
                id=_ID + "E010",
            )
        )
    return problems


def _views(patterns: Sequence[Any], prefix: str) -> Any:
    """``(route, view)`` of every URL pattern under ``patterns``."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if hasattr(pattern, "url_patterns"):  # an include()
            yield from _views(pattern.url_patterns, route)
        elif callable(getattr(pattern, "callback", None)):
            yield route, pattern.callback


@register(deploy=True)
def check_framing(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """W006: nothing stops another site from framing the connect and disconnect pages."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if _position(middleware, _XFRAME_MIDDLEWARE) is not None:
        return []
    if _csp_frame_ancestors(middleware):
        return []
    return [
        Warning(
            "Other sites may frame the Watcher connect and disconnect pages (clickjacking): "
            f"{_XFRAME_MIDDLEWARE} is not in MIDDLEWARE and no Content Security Policy sets "
            "frame-ancestors.",
            hint=f"Add {_XFRAME_MIDDLEWARE} to MIDDLEWARE, or a CSP with "
            "frame-ancestors 'none' (SECURE_CSP on Django 6.0+).",
            id=_ID + "W006",
        )
    ]


@register(Tags.database)
def check_unreadable_records(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W007: records the current encryption keys cannot read (only with ``--database``)."""
    if not kwargs.get("databases") or not isinstance(getattr(settings, "WATCHER_AUTH", None), dict):
        return []
    from django_watcher_auth.models import WatcherAccount
    from django_watcher_auth.stores import DjangoModelStore

    try:
        manager = get_manager()
        store = manager.store
        if isinstance(store, DjangoModelStore):
            # Before the first migrate (which runs this check) there is nothing to read.
            tables = connections[store.using].introspection.table_names()
            if WatcherAccount._meta.db_table not in tables:
                return []
        unreadable = unreadable_keys(manager)
    except WatcherAuthError:
        return []  # E005 reports a store that cannot be built; a store outage is no setting
    if not unreadable:
        return []
    return [unreadable_warning(len(unreadable))]


def unreadable_warning(count: int) -> Warning:
    """The W007 warning for ``count`` unreadable records."""
    return Warning(
        f"{count} stored Watcher record(s) cannot be read with the current encryption keys; "
        'their users see "needs reconnect" until they connect again.',
        hint="If the encryption key (WATCHER_AUTH['ENCRYPTION_KEYS'], or SECRET_KEY) was "
        "rotated, keep the old key after the new one (or in SECRET_KEY_FALLBACKS). Nothing "
        "is deleted: connecting again replaces a record, disconnecting deletes it.",
        id=_ID + "W007",
    )


def _csp_frame_ancestors(middleware: list[str]) -> bool:
    """A Content Security Policy middleware configured with ``frame-ancestors``."""
    builtin: Any = getattr(settings, "SECURE_CSP", None)  # Django 6.0+
    if isinstance(builtin, dict) and "frame-ancestors" in builtin and _CSP_MIDDLEWARE in middleware:
        return True
    third_party: Any = getattr(settings, "CONTENT_SECURITY_POLICY", None)  # django-csp 4
    directives = third_party.get("DIRECTIVES", {}) if isinstance(third_party, dict) else {}
    return "frame-ancestors" in directives and "csp.middleware.CSPMiddleware" in middleware
