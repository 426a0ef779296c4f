"""Django settings for the test session (pytest-django loads them for every test)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

# The same servers as watcher_auth.testing.services, which decides whether tests skip.
_POSTGRES = urlsplit(os.environ.get("WATCHER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1"))
_REDIS = os.environ.get("WATCHER_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
# One name per test run (inherited by the worker processes tests start), so two runs on one
# machine never share a PostgreSQL test database or Redis keys.
RUN_ID = os.environ.setdefault("WATCHER_TEST_RUN_ID", f"{os.getpid()}")

SECRET_KEY = "django-watcher-auth-tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
ROOT_URLCONF = "tests.django.testapp.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_watcher_auth",
    "tests.django.testapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_watcher_auth.middleware.WatcherMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    "postgres": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": _POSTGRES.hostname or "127.0.0.1",
        "PORT": _POSTGRES.port or 5432,
        "USER": _POSTGRES.username or "postgres",
        "PASSWORD": _POSTGRES.password or "",
        "NAME": "watcher_auth",
        "TEST": {"NAME": f"test_watcher_auth_django_{RUN_ID}", "DEPENDENCIES": []},
    },
}

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "redis": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"{_REDIS}/14",
        "KEY_PREFIX": f"run{RUN_ID}",
    },
}

# Tests point URL at their emulator with the ``settings`` fixture.
WATCHER_AUTH = {"URL": "http://127.0.0.1:9", "STORE": "db"}
