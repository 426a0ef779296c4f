"""Django in the benchmark process: settings, migrations, and a signed-in test client.

Django is configured once, before any worker process is forked, with the databases and
caches that are reachable: ``default`` (a SQLite file), ``postgres`` (the benchmark database)
and the ``redis`` cache (Redis database 12).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from _stores import (
    BENCH_DATABASE,
    StoreUnavailable,
    postgres_url,
    redis_url,
    scratch_dir,
)

from watcher_auth import TokenPair

#: The model store's table, to tell its statements from Django's own.
TABLE = "django_watcher_auth_watcheraccount"

_available: set[str] | None = None


def ready(need: str) -> None:
    """Configure Django on first use; raise StoreUnavailable if ``need`` is not reachable."""
    global _available
    if _available is None:
        _available = _configure()
    if need not in _available:
        raise StoreUnavailable(f"the {need!r} service is not reachable")


def _configure() -> set[str]:
    try:
        import django
        from django.conf import settings
    except ImportError:
        raise StoreUnavailable("Django is not installed") from None
    available = {"default"}
    databases: dict[str, Any] = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(scratch_dir(), "portal.sqlite3"),
            "OPTIONS": {"timeout": 30},
        }
    }
    caches: dict[str, Any] = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    }
    with suppress(StoreUnavailable):
        pg = urlsplit(postgres_url())
        databases["postgres"] = {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": pg.hostname,
            "PORT": pg.port or 5432,
            "USER": pg.username or "postgres",
            "PASSWORD": pg.password or "",
            "NAME": BENCH_DATABASE,
        }
        available.add("postgres")
    with suppress(StoreUnavailable):
        caches["redis"] = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url(),
        }
        available.add("redis")
    settings.configure(
        DEBUG=False,
        SECRET_KEY="watcher-auth benchmarks",
        USE_TZ=True,
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="_django_urls",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django_watcher_auth",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django_watcher_auth.middleware.WatcherMiddleware",
        ],
        # Sessions in signed cookies: the only queries per request are the user's and ours.
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        TEMPLATES=[
            {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
        ],
        DATABASES=databases,
        CACHES=caches,
        WATCHER_AUTH={"URL": "http://127.0.0.1:9"},
    )
    django.setup()
    from django.core.management import call_command

    for alias in databases:
        call_command("migrate", database=alias, verbosity=0)
    return available


@dataclass
class Portal:
    """A test client signed in as the benchmark user, whose key holds a fresh pair."""

    client: Any
    key: str

    def get(self, path: str) -> None:
        response = self.client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}")


@contextmanager
def portal(url: str, token: str, pair: TokenPair, **watcher_auth: Any) -> Iterator[Portal]:
    """``WATCHER_AUTH`` pointing at ``url`` with ``watcher_auth``; the plain view sends ``token``.

    The pair is written to the store directly, so the manager's first request reads it.
    """
    ready("default")
    import _django_urls
    from django.contrib.auth import get_user_model
    from django.db import connections
    from django.test import Client, override_settings

    from django_watcher_auth.conf import get_manager

    user, _ = get_user_model().objects.get_or_create(username="bench")
    with override_settings(WATCHER_AUTH={"URL": url, **watcher_auth}):
        manager = get_manager()
        key = str(user.pk)
        manager.store.save(manager.store_key(key), pair)
        _django_urls.PLAIN.headers["Authorization"] = f"Bearer {token}"
        _django_urls.plain_url = manager.api_root + "streams"
        client = Client()
        client.force_login(user)
        try:
            yield Portal(client, key)
        finally:
            manager.store.delete(manager.store_key(key))
    connections.close_all()
