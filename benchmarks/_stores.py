"""How each store is set up for the benchmarks, on the local PostgreSQL and Redis servers.

Everything lives in places of its own, removed by :func:`cleanup`: the PostgreSQL database
``watcher_auth_bench``, keys under ``watcher_auth_bench`` in Redis database 12, and a
temporary SQLite file. ``WATCHER_TEST_POSTGRES_URL`` and ``WATCHER_TEST_REDIS_URL`` move the
servers, as they do for the tests.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from watcher_auth import MemoryStore, TokenManager, TokenStore

REDIS_DB = 12
PREFIX = "watcher_auth_bench"
BENCH_DATABASE = "watcher_auth_bench"
ENCRYPTION_KEYS = ["watcher-auth benchmark key"]


class StoreUnavailable(Exception):
    """The store's service or package is missing here; its rows are skipped."""


#: ``make(watcher_url, clock, **manager_options)``, called in each worker process.
MakeManager = Callable[..., TokenManager]
Prepared = tuple[MakeManager, Callable[[], None] | None, str]


@dataclass
class StoreSpec:
    prepare: Callable[[], Prepared]
    #: Whether several processes may share the store (else its rows run one process).
    shared: bool = True


# --- services -------------------------------------------------------------------------------


@functools.cache
def redis_url() -> str:
    """Redis database 12, once the server answers."""
    try:
        import redis
    except ImportError:
        raise StoreUnavailable("the redis package is not installed") from None
    base = os.environ.get("WATCHER_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    url = f"{base}/{REDIS_DB}"
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StoreUnavailable(f"Redis is not reachable ({type(exc).__name__})") from None
    finally:
        client.close()
    return url


@functools.cache
def postgres_url() -> str:
    """The ``postgresql://`` URL of the benchmark database, created on first use."""
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        raise StoreUnavailable("the psycopg package is not installed") from None
    maintenance = os.environ.get(
        "WATCHER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    try:
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=3) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DATABASE,)
            ).fetchone()
            if found is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DATABASE)))
    except psycopg.Error as exc:
        raise StoreUnavailable(f"PostgreSQL is not reachable ({type(exc).__name__})") from None
    return f"{maintenance.rpartition('/')[0]}/{BENCH_DATABASE}"


@functools.cache
def scratch_dir() -> str:
    """A temporary folder for SQLite files."""
    return tempfile.mkdtemp(prefix="watcher-auth-bench-")


def cleanup() -> None:
    """Remove the benchmark database, Redis keys and SQLite files (what exists of them)."""
    if redis_url.cache_info().currsize:
        import redis

        client = redis.Redis.from_url(redis_url())
        names = list(client.scan_iter(match=f"*{PREFIX}*", count=1000))
        if names:
            client.delete(*names)
        client.close()
    if postgres_url.cache_info().currsize:
        import psycopg
        from psycopg import sql

        with contextlib.suppress(ImportError):
            from django.conf import settings
            from django.db import connections

            if settings.configured:
                connections.close_all()
        maintenance = os.environ.get(
            "WATCHER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        )
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (BENCH_DATABASE,),
            )
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(BENCH_DATABASE))
            )
    if scratch_dir.cache_info().currsize:
        shutil.rmtree(scratch_dir(), ignore_errors=True)


# --- stores ---------------------------------------------------------------------------------


def _memory() -> Prepared:
    store = MemoryStore()

    def make(server: str, clock: Callable[[], float], **options: Any) -> TokenManager:
        return TokenManager(server, store=store, clock=clock, **options)

    return make, None, ""


def redis_store() -> TokenStore:
    """A new client of the benchmark's Redis store."""
    from watcher_auth.stores.redis import RedisStore

    return RedisStore(url=redis_url(), prefix=f"{PREFIX}:", encryption_keys=ENCRYPTION_KEYS)


def sqlalchemy_url() -> str:
    """The benchmark database as a SQLAlchemy URL (psycopg 3)."""
    return postgres_url().replace("postgresql://", "postgresql+psycopg://", 1)


def _redis() -> Prepared:
    redis_url()  # StoreUnavailable here, before the row starts

    def make(server: str, clock: Callable[[], float], **options: Any) -> TokenManager:
        return TokenManager(server, store=redis_store(), clock=clock, **options)

    return make, None, ""


def _sqlalchemy_postgres() -> Prepared:
    from watcher_auth.stores.sqlalchemy import SQLAlchemyStore

    url = sqlalchemy_url()

    def make(server: str, clock: Callable[[], float], **options: Any) -> TokenManager:
        store = SQLAlchemyStore(url, table_name=f"{PREFIX}_tokens", encryption_keys=ENCRYPTION_KEYS)
        return TokenManager(server, store=store, clock=clock, **options)

    return make, None, ""


def _django_model(alias: str) -> Callable[[], Prepared]:
    def prepare() -> Prepared:
        import _django

        _django.ready(alias)
        from django.db import connections

        from django_watcher_auth.stores import DjangoModelStore

        def make(server: str, clock: Callable[[], float], **options: Any) -> TokenManager:
            store = DjangoModelStore(using=alias)
            return TokenManager(server, store=store, clock=clock, **options)

        return make, connections.close_all, ""

    return prepare


def _django_cache() -> Prepared:
    import _django

    _django.ready("redis")
    from django.db import connections

    from django_watcher_auth.stores import DjangoCacheStore

    def make(server: str, clock: Callable[[], float], **options: Any) -> TokenManager:
        store = DjangoCacheStore(alias="redis", key_prefix=f"{PREFIX}_django")
        return TokenManager(server, store=store, clock=clock, **options)

    return make, connections.close_all, ""


STORES: dict[str, StoreSpec] = {
    "memory": StoreSpec(_memory, shared=False),
    "Django model, SQLite": StoreSpec(_django_model("default"), shared=False),
    "Django model, PostgreSQL": StoreSpec(_django_model("postgres")),
    "Django cache, Redis": StoreSpec(_django_cache),
    "Redis store": StoreSpec(_redis),
    "SQLAlchemy, PostgreSQL": StoreSpec(_sqlalchemy_postgres),
}
