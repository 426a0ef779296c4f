"""A loopback HTTP server of another origin that answers what the test asks for, and records
what reached it: for the checks that credentials never leave Watcher's origin and that another
origin's 401 or 403 is never taken for Watcher's."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["ForeignServer", "foreign_server"]


@dataclass
class ForeignServer:
    """``GET /status/<code>`` answers ``<code>`` with ``{}``; ``GET /redirect?to=<url>``
    answers 302 to ``<url>``; any other method answers 405. ``seen`` holds every request's
    method, path and headers."""

    url: str
    seen: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def foreign_server() -> Iterator[ForeignServer]:
    """A started :class:`ForeignServer`, stopped at the end of the block."""
    record = ForeignServer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _answer(self, status: int, location: str | None = None) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(status)
            if location is not None:
                self.send_header("Location", location)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_GET(self) -> None:
            record.seen.append({"method": "GET", "path": self.path, **dict(self.headers.items())})
            if self.path.startswith("/redirect?to="):
                self._answer(302, self.path.split("=", 1)[1])
            elif self.path.startswith("/status/"):
                self._answer(int(self.path.split("/")[2].split("?")[0]))
            else:
                self._answer(200)

        def do_POST(self) -> None:
            record.seen.append({"method": "POST", "path": self.path, **dict(self.headers.items())})
            self._answer(405)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    record.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
