"""Reaching the PostgreSQL and Redis servers that backend tests run against.

A test that needs one calls :func:`require_redis` or :func:`require_postgres`. When the
server cannot be reached the test is skipped with the reason, except when the ``CI``
environment variable is set: there a missing service fails the test, so a broken CI machine
is never mistaken for a passing run.

The addresses default to the local servers (``127.0.0.1``); the environment variables
``WATCHER_TEST_REDIS_URL`` (without a database number) and ``WATCHER_TEST_POSTGRES_URL``
(pointing at a database the tests may connect to) change them.
"""

from __future__ import annotations

import contextlib
import os
from typing import NoReturn

import pytest

__all__ = ["create_postgres_database", "require_postgres", "require_redis", "service_missing"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def service_missing(service: str, reason: str) -> NoReturn:
    """Skip the current test, or fail it when ``CI`` is set."""
    message = f"{service} is not reachable: {' '.join(reason.split())}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so tests never skip for a missing service)")
    pytest.skip(message)


def require_redis(db: int) -> str:
    """The URL of Redis database ``db`` after checking the server answers ``PING``."""
    try:
        import redis
    except ImportError:
        service_missing("Redis", "the redis package is not installed")
    url = f"{os.environ.get('WATCHER_TEST_REDIS_URL', DEFAULT_REDIS_URL).rstrip('/')}/{db}"
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_missing("Redis", f"{type(exc).__name__}: {exc}")
    finally:
        client.close()
    return url


def require_postgres() -> str:
    """The ``postgresql://`` URL of the tests' maintenance database, once it answers."""
    try:
        import psycopg
    except ImportError:
        service_missing("PostgreSQL", "the psycopg package is not installed")
    url = os.environ.get("WATCHER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        service_missing("PostgreSQL", f"{type(exc).__name__}: {exc}")
    return url


def create_postgres_database(name: str) -> str:
    """Create database ``name`` unless it exists; returns its ``postgresql://`` URL.

    Skips (or fails under ``CI``) like :func:`require_postgres` when the server is missing.
    """
    import psycopg
    from psycopg import sql

    url = require_postgres()
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        # Another test process may create it between the check and the CREATE.
        if exists is None:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"
