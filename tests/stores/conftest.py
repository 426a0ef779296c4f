"""Fixtures for the store tests: Redis and PostgreSQL on the shared servers, and a private
``redis-server`` (ports 16400-16499) that tests may stop, restart and watch."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from watcher_auth.testing.services import require_redis, service_missing

REDIS_DB = 12
KEYS = ["stores suite key", "an older stores suite key"]
PRIVATE_PORTS = range(16400, 16500)


@pytest.fixture
def redis_url() -> str:
    return require_redis(REDIS_DB)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"watcher_auth_stores:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for name in client.scan_iter(match=prefix + "*"):
        client.delete(name)
    client.close()


class PrivateRedis:
    """A ``redis-server`` of the test's own, without persistence, on a port of our range."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn,
            ):
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def _free_port() -> int:
    for port in random.sample(PRIVATE_PORTS, len(PRIVATE_PORTS)):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 16400-16499")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A started private Redis server, stopped after the test."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server", "the redis-server binary is not installed")
    server = PrivateRedis(binary, tmp_path)
    server.start()
    yield server
    server.stop()


POSTGRES_DATABASE = "watcher_auth_stores_test"


@pytest.fixture(scope="session")
def postgres_url(run_postgres_database: Callable[[str], str]) -> str:
    """A psycopg URL of this folder's own database in this test run."""
    return run_postgres_database(POSTGRES_DATABASE)
