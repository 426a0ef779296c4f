"""A Flussonic Watcher emulator (client API v3 and API v2) on a loopback HTTP server.

It issues RS256 access JWTs and opaque refresh tokens like the real server, keeps server-side
sessions with ``max_sessions`` eviction, serves the stream and profile endpoints, speaks API
v2 (``/vsaas/api/v2``: sessions, user and system API keys, cameras), counts what it sees, and
fails on demand. Drive it in-process with :class:`WatcherEmulator`, or from
another process through its ``/_emulator/`` endpoints with :class:`RemoteEmulator`.

Run it on its own (prints ``Watcher emulator listening on <url>``, stops on SIGINT/SIGTERM)::

    python -m watcher_auth.testing.emulator --port 8080 --user alice:secret --user bob:pw
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from watcher_auth.testing._emulator_server import RemoteEmulator, WatcherEmulator
from watcher_auth.testing._emulator_state import CallRecord, EmulatorStats

__all__ = ["CallRecord", "EmulatorStats", "RemoteEmulator", "WatcherEmulator", "main"]


def _user_arg(value: str) -> tuple[str, str, str | None]:
    """``USER:PASSWORD`` or ``USER:PASSWORD:API_KEY`` (the user's API v2 key)."""
    username, sep, rest = value.partition(":")
    if not sep or not username:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD[:API_KEY]")
    password, sep, api_key = rest.partition(":")
    return username, password, (api_key or None) if sep else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run an emulator until SIGINT or SIGTERM (the ``python -m`` entry point)."""
    parser = argparse.ArgumentParser(
        prog="python -m watcher_auth.testing.emulator",
        description="Serve an emulated Flussonic Watcher client API v3 and API v2.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument(
        "--user", type=_user_arg, action="append", default=[], metavar="USER:PASSWORD[:API_KEY]"
    )
    parser.add_argument(
        "--admin", type=_user_arg, action="append", default=[], metavar="USER:PASSWORD[:API_KEY]"
    )
    parser.add_argument("--streams", type=int, default=3, help="streams seeded per user")
    parser.add_argument("--access-lifetime", type=float, default=300.0)
    parser.add_argument("--refresh-lifetime", type=float, default=30 * 86400.0)
    parser.add_argument("--rotate", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--max-sessions", type=int, default=None)
    parser.add_argument(
        "--system-api-key", default=None, help="the API v2 system key (random if not given)"
    )
    args = parser.parse_args(argv)

    emulator = WatcherEmulator(
        host=args.host,
        port=args.port,
        access_lifetime=args.access_lifetime,
        refresh_lifetime=args.refresh_lifetime,
        rotate_refresh_tokens=args.rotate,
        max_sessions=args.max_sessions,
        system_api_key=args.system_api_key,
    )
    for (username, password, api_key), is_admin in [(u, False) for u in args.user] + [
        (u, True) for u in args.admin
    ]:
        emulator.add_user(
            username, password, is_admin=is_admin, streams=args.streams, api_key=api_key
        )

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with emulator:
        print(f"Watcher emulator listening on {emulator.url}", flush=True)
        while not stopping.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
