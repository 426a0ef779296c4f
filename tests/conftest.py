"""Fixtures shared by every test folder."""

from __future__ import annotations

import http.server
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from watcher_auth import TokenPair

# One name per test run (inherited by the worker processes tests start), so two runs on one
# machine never share a PostgreSQL database; tests/django/settings.py reads the same variable.
RUN_ID = re.sub(
    r"[^a-z0-9_]", "_", os.environ.setdefault("WATCHER_TEST_RUN_ID", f"{os.getpid()}").lower()
)


@pytest.fixture(scope="session")
def run_postgres_database() -> Iterator[Callable[[str], str]]:
    """Makes ``<base>_<run id>``, a PostgreSQL database of this test run, and returns its
    SQLAlchemy URL; every database made is dropped when the session ends."""
    made: list[str] = []

    def make(base: str) -> str:
        from watcher_auth.testing.services import create_postgres_database

        name = f"{base}_{RUN_ID}"[:63]
        url = create_postgres_database(name)
        if name not in made:
            made.append(name)
        return url.replace("postgresql://", "postgresql+psycopg://", 1)

    yield make
    if made:
        import psycopg
        from psycopg import sql

        from watcher_auth.testing.services import require_postgres

        with psycopg.connect(require_postgres(), autocommit=True) as admin:
            for name in made:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@dataclass
class RecordingServer:
    """A plain HTTP server on loopback that records the headers it receives.

    ``GET /redirect?to=<url>`` answers 302 to ``<url>``; anything else answers 200 ``{}``.
    """

    url: str
    seen: list[dict[str, str]] = field(default_factory=list)


def _start_recording_server() -> tuple[RecordingServer, http.server.ThreadingHTTPServer]:
    record = RecordingServer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            record.seen.append({"path": self.path, **dict(self.headers.items())})
            if self.path.startswith("/redirect?to="):
                self.send_response(302)
                self.send_header("Location", self.path.split("=", 1)[1])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    record.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return record, server


@pytest.fixture
def recording_server() -> Iterator[RecordingServer]:
    """A loopback server that records request headers (for checks of what we send)."""
    record, server = _start_recording_server()
    yield record
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def module_recording_server() -> Iterator[RecordingServer]:
    """A recording server shared by a module's tests (each stop waits half a second)."""
    record, server = _start_recording_server()
    yield record
    server.shutdown()
    server.server_close()


def fresh_pair(now: float, username: str = "alice") -> TokenPair:
    """A pair whose access token (an HS256 JWT) is fresh for an hour from ``now``."""
    import jwt

    from watcher_auth import TokenPair

    token = jwt.encode({"exp": now + 3600, "iat": now}, "a-signing-key-of-32-bytes-length", "HS256")
    return TokenPair(token, "refresh", now + 3600, now, username=username)


@pytest.fixture
def second_recording_server() -> Iterator[RecordingServer]:
    """Another recording server, on its own origin."""
    record, server = _start_recording_server()
    yield record
    server.shutdown()
    server.server_close()
