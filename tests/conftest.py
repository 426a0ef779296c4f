"""Fixtures shared by every test folder."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


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


@pytest.fixture
def second_recording_server() -> Iterator[RecordingServer]:
    """Another recording server, on its own origin."""
    record, server = _start_recording_server()
    yield record
    server.shutdown()
    server.server_close()
