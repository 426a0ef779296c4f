"""Run an example portal against the Watcher emulator, or against a real Watcher.

``make demo``, ``make demo-flask`` and ``make demo-fastapi`` call this::

    python example_projects/run_demo.py django    # the Django portal
    python example_projects/run_demo.py flask     # the Flask portal
    python example_projects/run_demo.py fastapi   # the FastAPI service (async)

It starts the Watcher emulator with two seeded Watcher users, each with a password and an
API v2 user key (unless ``WATCHER_URL`` is set: then the portal talks to that Watcher), hands
the emulator's API v2 system key to the portal in ``WATCHER_SYSTEM_API_KEY``, prepares the
portal's SQLite database with a portal user (a staff member), starts the portal's development
server on 127.0.0.1:8000, prints the address and the sign-in details, and stops everything on
Ctrl-C. A port that is taken (``--port``, ``--emulator-port``) stops the launcher with a message
saying so; port 0 picks a free one. The emulator's control token is
``WATCHER_EMULATOR_CONTROL_TOKEN`` when set (for tests that steer it), else a random one.

``--check`` starts everything, fetches the sign-in page once, and stops: a quick proof that
the demo works on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent

#: The portal user both portals create.
PORTAL_USER = ("demo", "demo-portal-pw")


class WatcherUser(NamedTuple):
    """A Watcher user the emulator starts with."""

    password: str
    #: The user's API v2 key, as Watcher shows it in the user's profile.
    api_key: str
    #: Camera titles; the last camera is offline.
    cameras: list[str]


#: The Watcher users the emulator starts with.
WATCHER_USERS: dict[str, WatcherUser] = {
    "alice": WatcherUser(
        "alice-watcher-pw",
        "alice-watcher-key",
        ["Front door", "Lobby", "Parking lot", "Server room", "Loading dock"],
    ),
    "bob": WatcherUser("bob-watcher-pw", "bob-watcher-key", ["Garage", "Garden", "Back yard"]),
}

# The emulator has no media server behind it; playback links point at this placeholder.
DEMO_STREAMER = "https://streamer.example.invalid"


@dataclass(frozen=True)
class Portal:
    """How to prepare and serve one example portal."""

    title: str
    folder: Path
    prepare: list[str]
    serve: list[str]
    sign_in_path: str
    env: dict[str, str]


PORTALS = {
    "django": Portal(
        title="Django example portal",
        folder=HERE / "django_portal",
        prepare=["manage.py", "prepare_demo"],
        serve=["manage.py", "runserver", "--noreload", "{host}:{port}"],
        sign_in_path="/accounts/login/",
        env={"DJANGO_SETTINGS_MODULE": "portal.settings"},
    ),
    "flask": Portal(
        title="Flask example portal",
        folder=HERE / "flask_portal",
        prepare=["-m", "flask", "--app", "app", "prepare-demo"],
        serve=["-m", "flask", "--app", "app", "run", "--no-reload", "-h", "{host}", "-p", "{port}"],
        sign_in_path="/sign-in",
        env={},
    ),
    "fastapi": Portal(
        title="FastAPI example service",
        folder=HERE / "fastapi_service",
        prepare=["service.py", "prepare"],
        serve=[
            "-m",
            "uvicorn",
            "--factory",
            "service:create_app",
            "--host",
            "{host}",
            "--port",
            "{port}",
        ],
        sign_in_path="/sign-in",
        env={},
    ),
}


def demo_streams(username: str) -> list[dict[str, Any]]:
    """The emulator's streams for a demo Watcher user: named cameras, the last one offline."""
    titles = WATCHER_USERS[username].cameras
    streams: list[dict[str, Any]] = []
    for number, title in enumerate(titles, start=1):
        stream: dict[str, Any] = {"name": f"{username}-cam-{number}", "title": title}
        if number == len(titles):
            stream["stats"] = {
                "alive": False,
                "status": "stopped",
                "playback_token": secrets.token_urlsafe(16),
                "streaming_endpoint": DEMO_STREAMER,
            }
        streams.append(stream)
    return streams


class PortTaken(Exception):
    """The port asked for is in use; the message says which and what to do."""


def pick_port(host: str, wanted: int, option: str) -> int:
    """``wanted`` when it is free on ``host`` (0: a free port the system picks).

    Raises:
        PortTaken: ``wanted`` is in use; the message names ``option`` to choose another.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, wanted))
        except OSError as exc:
            raise PortTaken(
                f"Port {wanted} on {host} is taken ({exc.strerror}): stop what uses it, or"
                f" choose another with {option} N ({option} 0 picks a free one)."
            ) from None
        return int(probe.getsockname()[1])


class WatcherServer(NamedTuple):
    """The Watcher the portal talks to."""

    url: str
    emulated: bool
    #: Watcher's API v2 system key for the portal's staff page (the emulator's; else unset).
    system_api_key: str | None


@contextlib.contextmanager
def watcher(args: argparse.Namespace) -> Iterator[WatcherServer]:
    """The emulator started here, or ``WATCHER_URL`` when it is set."""
    url = os.environ.get("WATCHER_URL", "").strip()
    if url:
        yield WatcherServer(url, emulated=False, system_api_key=None)
        return
    from watcher_auth.testing import WatcherEmulator

    emulator = WatcherEmulator(
        host=args.host,
        port=pick_port(args.host, args.emulator_port, "--emulator-port"),
        access_lifetime=args.access_lifetime,
        control_token=os.environ.get("WATCHER_EMULATOR_CONTROL_TOKEN", "").strip() or None,
    )
    for username, user in WATCHER_USERS.items():
        emulator.add_user(
            username, user.password, api_key=user.api_key, streams=demo_streams(username)
        )
    with emulator:
        yield WatcherServer(emulator.url, emulated=True, system_api_key=emulator.system_api_key)


def run(portal: Portal, args: argparse.Namespace) -> int:
    """Start the Watcher (or use ``WATCHER_URL``) and the portal; serve until interrupted."""
    data_dir = Path(args.data_dir).resolve() if args.data_dir else portal.folder
    data_dir.mkdir(parents=True, exist_ok=True)
    # Checked before anything starts, so a taken port is reported before any other output.
    pick_port(args.host, args.port, "--port")
    with watcher(args) as watcher_server:
        env = {
            **os.environ,
            **portal.env,
            "WATCHER_URL": watcher_server.url,
            "PORTAL_DATABASE": str(data_dir / "db.sqlite3"),
            "PYTHONUNBUFFERED": "1",
        }
        if watcher_server.system_api_key is not None:
            # Only the portal's staff page uses it; it is never printed.
            env["WATCHER_SYSTEM_API_KEY"] = watcher_server.system_api_key
        prepared = subprocess.run(
            [sys.executable, *portal.prepare], cwd=portal.folder, env=env, check=False
        )
        if prepared.returncode != 0:
            print(f"Preparing the portal failed (exit code {prepared.returncode}).", flush=True)
            return prepared.returncode
        port = pick_port(args.host, args.port, "--port")
        command = [part.format(host=args.host, port=port) for part in portal.serve]
        server = subprocess.Popen([sys.executable, *command], cwd=portal.folder, env=env)
        try:
            base = f"http://{args.host}:{port}"
            if not wait_until_up(base + portal.sign_in_path, server, timeout=60):
                print("The portal did not start; its output is above.", flush=True)
                return 1
            if args.check:
                return check(base + portal.sign_in_path)
            print_banner(
                portal,
                base,
                watcher_server.url,
                watcher_server.emulated,
                args.access_lifetime,
            )
            return server.wait()
        finally:
            stop(server)


def wait_until_up(url: str, server: subprocess.Popen[bytes], *, timeout: float) -> bool:
    """Poll ``url`` until it answers; ``False`` when the server exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            with _opener().open(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answers, even if not with 200
        except OSError:
            time.sleep(0.1)
    return False


def check(url: str) -> int:
    """Fetch the sign-in page once; 0 when it is a page with a form."""
    try:
        with _opener().open(url, timeout=10) as response:
            page = response.read().decode("utf-8", "replace")
            ok = response.status == 200 and "<form" in page
    except OSError as exc:
        print(f"Check failed: {url} did not answer ({exc}).", flush=True)
        return 1
    print(f"Check {'passed' if ok else 'failed'}: {url}", flush=True)
    return 0 if ok else 1


def print_banner(
    portal: Portal, base: str, watcher_url: str, emulated: bool, lifetime: float
) -> None:
    """Where the portal is and how to sign in."""
    lines = [
        "",
        f"{portal.title} is running at {base}/",
        f"  Portal user:      {PORTAL_USER[0]} / {PORTAL_USER[1]}",
    ]
    if emulated:
        accounts = ", ".join(
            f"{name} / {user.password} ({len(user.cameras)} cameras)"
            for name, user in WATCHER_USERS.items()
        )
        keys = ", ".join(f"{name} / {user.api_key}" for name, user in WATCHER_USERS.items())
        lines += [
            f"  Watcher users:    {accounts}",
            f"  API v2 user keys: {keys}",
            f"  Watcher emulator: {watcher_url} (access tokens live {lifetime:g} s)",
        ]
    else:
        lines.append(f"  Watcher:          {watcher_url} (from WATCHER_URL): use your own account")
    lines += ["Press Ctrl-C to stop.", ""]
    print("\n".join(lines), flush=True)


def stop(server: subprocess.Popen[bytes]) -> None:
    """End the portal's server: SIGTERM, then SIGKILL if it lingers."""
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _opener() -> urllib.request.OpenerDirector:
    # The portal is on loopback: proxies from the environment must not get in the way.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """The command line: ``run_demo.py {django,flask,fastapi} [options]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("portal", choices=sorted(PORTALS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=8000, help="the portal's port (0: any free one)"
    )
    parser.add_argument(
        "--emulator-port", type=int, default=8080, help="the emulator's port (0: any free one)"
    )
    parser.add_argument(
        "--access-lifetime",
        type=float,
        default=120.0,
        help="seconds the emulator's access tokens live (default 120)",
    )
    parser.add_argument(
        "--data-dir", default=None, help="where the SQLite database goes (default: the portal's)"
    )
    parser.add_argument(
        "--check", action="store_true", help="start, fetch the sign-in page once, stop"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        return run(PORTALS[args.portal], args)
    except PortTaken as exc:
        print(exc, file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\nStopped.", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
