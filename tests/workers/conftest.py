"""Fixtures for the many-workers tests: an emulator with five Watcher accounts, a
``redis-server`` of our own (ports 17100-17199) that tests stop, restart and cut, and a
PostgreSQL database of this folder's own."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from watcher_auth.testing import WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory
from watcher_auth.testing.services import service_missing
from watcher_auth.testing.storm import RedisServer

KEYS = ["workers suite key"]
PORTS = range(17100, 17200)
POSTGRES_DATABASE = "watcher_auth_workers_test"
#: Watcher accounts w01..w05, each with its own password.
ACCOUNTS = {f"w0{n}": f"pw-w0{n}" for n in range(1, 6)}


def free_port() -> int:
    for port in random.sample(PORTS, len(PORTS)):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 17100-17199")


@pytest.fixture
def accounts_emulator(watcher_emulator_factory: EmulatorFactory) -> Callable[..., WatcherEmulator]:
    """``make(**settings)``: a started emulator holding the accounts w01..w05."""

    def make(**settings: Any) -> WatcherEmulator:
        emulator = watcher_emulator_factory(seed_users=False, **settings)
        for username, password in ACCOUNTS.items():
            emulator.add_user(username, password)
        return emulator

    return make


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A started ``redis-server`` of this test's own, stopped after it."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server", "the redis-server binary is not installed")
    server = RedisServer(free_port(), str(tmp_path), binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A psycopg URL of this folder's own database."""
    from watcher_auth.testing.services import create_postgres_database

    url = create_postgres_database(POSTGRES_DATABASE)
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def postgres_table(postgres_url: str) -> Iterator[str]:
    """A new token table's name in :func:`postgres_url`, dropped after the test."""
    from watcher_auth.stores.sqlalchemy import SQLAlchemyStore

    table = f"tokens_{uuid.uuid4().hex[:12]}"
    yield table
    store = SQLAlchemyStore(postgres_url, table_name=table, encryption_keys=KEYS)
    with contextlib.suppress(Exception):
        store.table.drop(store.engine, checkfirst=True)
    store.close()


def terminate_backends(postgres_url: str, *, listening: bool = False) -> int:
    """``pg_terminate_backend`` every other connection to ``postgres_url``'s database (only
    the LISTEN ones with ``listening``); returns how many ended."""
    import psycopg

    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND (NOT %s OR query ILIKE 'LISTEN%%')",
            (listening,),
        ).fetchall()
    return sum(1 for (ended,) in rows if ended)
