"""A loopback server answering ``{}`` to every GET, run in a process of its own.

``python benchmarks/_trivial.py`` prints its URL and serves until stdin closes. The
per-call rows talk to it from the benchmark process, as a portal talks to a Watcher on
another machine: its work does not take turns with the client's on one interpreter lock.
"""

from __future__ import annotations

import http.server
import sys
import threading
from typing import Any


class Trivial(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trivial)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdin.read()  # until the benchmark closes it (or exits)
    server.shutdown()


if __name__ == "__main__":
    main()
