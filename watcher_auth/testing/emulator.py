"""A Flussonic Watcher emulator (client API v3 and API v2) on a loopback HTTP server.

It issues RS256 access JWTs and opaque refresh tokens like the real server, keeps server-side
sessions with ``max_sessions`` eviction, serves the stream and profile endpoints, speaks API
v2 (``/vsaas/api/v2``: sessions, user and system API keys, cameras), counts what it sees, and
fails on demand. Drive it in-process with :class:`WatcherEmulator`, or from
another process through its ``/_emulator/`` endpoints with :class:`RemoteEmulator`.

Run it on its own (prints ``Watcher emulator listening on <url>`` and then
``Control token: <token>``, stops on SIGINT/SIGTERM)::

    python -m watcher_auth.testing.emulator --port 8080 --user alice:secret --user bob:pw

Every setting of :class:`WatcherEmulator` has an option (``--help`` lists them), and
``--fail TARGET:MODE[:COUNT]`` queues failures as :meth:`WatcherEmulator.fail_next` does. The
control token is ``WATCHER_EMULATOR_CONTROL_TOKEN`` from the environment when set, else a
random one.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from watcher_auth.testing._emulator_server import (
    CONTROL_TOKEN_ENV,
    CONTROL_TOKEN_HEADER,
    RemoteEmulator,
    WatcherEmulator,
)
from watcher_auth.testing._emulator_state import (
    DEAD_SESSION_ANSWERS,
    FAILURE_MODES,
    FAILURE_TARGETS,
    CallRecord,
    EmulatorStats,
)

__all__ = [
    "CONTROL_TOKEN_ENV",
    "CONTROL_TOKEN_HEADER",
    "CallRecord",
    "EmulatorStats",
    "RemoteEmulator",
    "WatcherEmulator",
    "main",
]


def _user_arg(value: str) -> tuple[str, str, str | None]:
    """``USER:PASSWORD`` or ``USER:PASSWORD:API_KEY`` (the user's API v2 key)."""
    username, sep, rest = value.partition(":")
    if not sep or not username:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD[:API_KEY]")
    password, sep, api_key = rest.partition(":")
    return username, password, (api_key or None) if sep else None


def _failure_arg(value: str) -> tuple[str, str, int]:
    """``TARGET:MODE`` or ``TARGET:MODE:COUNT``, as ``fail_next(target, count, mode)``."""
    target, _, rest = value.partition(":")
    mode, _, count = rest.partition(":")
    if target not in FAILURE_TARGETS or mode not in FAILURE_MODES:
        raise argparse.ArgumentTypeError(
            f"expected TARGET:MODE[:COUNT], TARGET one of {', '.join(sorted(FAILURE_TARGETS))}"
            f" and MODE one of {', '.join(sorted(FAILURE_MODES))}"
        )
    try:
        times = int(count) if count else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"COUNT must be an integer, not {count!r}") from None
    return target, mode, times


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m watcher_auth.testing.emulator",
        description="Serve an emulated Flussonic Watcher client API v3 and API v2.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    users = parser.add_argument_group("users")
    users.add_argument(
        "--user", type=_user_arg, action="append", default=[], metavar="USER:PASSWORD[:API_KEY]"
    )
    users.add_argument(
        "--admin", type=_user_arg, action="append", default=[], metavar="USER:PASSWORD[:API_KEY]"
    )
    users.add_argument("--streams", type=int, default=3, help="streams seeded per user")
    tokens = parser.add_argument_group("tokens and sessions")
    tokens.add_argument(
        "--access-lifetime", type=float, default=300.0, help="seconds an access token lives"
    )
    tokens.add_argument(
        "--refresh-lifetime",
        type=float,
        default=30 * 86400.0,
        help="seconds a refresh token (and its session) lives",
    )
    tokens.add_argument(
        "--rotate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="a refresh hands out a new refresh token and kills the old one",
    )
    tokens.add_argument("--max-sessions", type=int, default=None, help="sessions per user")
    tokens.add_argument(
        "--include-iat",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="access tokens carry iat",
    )
    tokens.add_argument(
        "--server-clock-offset",
        type=float,
        default=0.0,
        help="seconds the server's clock runs ahead (negative: behind)",
    )
    tokens.add_argument(
        "--system-api-key", default=None, help="the API v2 system key (random if not given)"
    )
    tokens.add_argument(
        "--v2-dead-session-answer",
        choices=sorted(DEAD_SESSION_ANSWERS),
        default="403",
        help="how API v2 whoami answers a dead session: 403, or 200 with guest data",
    )
    behaviour = parser.add_argument_group("timing and failures")
    behaviour.add_argument(
        "--latency", type=float, default=0.0, help="seconds before answering any API request"
    )
    behaviour.add_argument(
        "--refresh-latency", type=float, default=0.0, help="extra seconds before a refresh"
    )
    behaviour.add_argument(
        "--hang-seconds", type=float, default=5.0, help='how long the "hang" failure waits'
    )
    behaviour.add_argument(
        "--send-date-header",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="answers carry a Date header",
    )
    behaviour.add_argument(
        "--legacy-error-field",
        action=argparse.BooleanOptionalAction,
        default=False,
        help='error bodies also carry a top-level "error" like older servers',
    )
    behaviour.add_argument(
        "--fail",
        type=_failure_arg,
        action="append",
        default=[],
        metavar="TARGET:MODE[:COUNT]",
        help="queue failures at start, like fail_next (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run an emulator until SIGINT or SIGTERM (the ``python -m`` entry point)."""
    args = _parser().parse_args(argv)
    emulator = WatcherEmulator(
        host=args.host,
        port=args.port,
        access_lifetime=args.access_lifetime,
        refresh_lifetime=args.refresh_lifetime,
        rotate_refresh_tokens=args.rotate,
        max_sessions=args.max_sessions,
        server_clock_offset=args.server_clock_offset,
        latency=args.latency,
        refresh_latency=args.refresh_latency,
        include_iat=args.include_iat,
        send_date_header=args.send_date_header,
        legacy_error_field=args.legacy_error_field,
        hang_seconds=args.hang_seconds,
        system_api_key=args.system_api_key,
        v2_dead_session_answer=args.v2_dead_session_answer,
        control_token=os.environ.get(CONTROL_TOKEN_ENV, "").strip() or None,
    )
    for (username, password, api_key), is_admin in [(u, False) for u in args.user] + [
        (u, True) for u in args.admin
    ]:
        emulator.add_user(
            username, password, is_admin=is_admin, streams=args.streams, api_key=api_key
        )
    for target, mode, count in args.fail:
        emulator.fail_next(target, count, mode)

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        emulator.start()
    except OSError as exc:
        taken = exc.errno == errno.EADDRINUSE
        reason = "is taken by another program" if taken else f"cannot be used ({exc.strerror})"
        print(
            f"Port {args.port} on {args.host} {reason}: stop what uses it, or pick another"
            " with --port (0 picks a free one).",
            file=sys.stderr,
        )
        return 2
    try:
        print(f"Watcher emulator listening on {emulator.url}", flush=True)
        print(f"Control token: {emulator.control_token}", flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
