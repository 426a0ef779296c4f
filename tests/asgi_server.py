"""Real ASGI servers for the tests: uvicorn in a subprocess, on a loopback port.

Tests that prove the event loop never waits on Watcher, or that worker processes share one
login, need a real server: in-process test clients run no event loop of their own and no
second process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def uvicorn_server(
    app: str,
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    factory: bool = False,
    interface: str = "auto",
    ready_path: str = "/health",
    start_timeout: float = 90.0,
) -> Iterator[str]:
    """Serve ``app`` (``module:attribute``) with uvicorn on 127.0.0.1:``port``; yields its URL.

    The server is started in its own process group and stopped (SIGTERM, then SIGKILL) on
    the way out; its output is shown when it fails to start.
    """
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--interface",
        interface,
        "--log-level",
        "warning",
        "--no-access-log",
        *(["--factory"] if factory else []),
    ]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "integrations"), str(ROOT)]),
        **(env or {}),
    }
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(process, url + ready_path, start_timeout, output)
            yield url
        finally:
            _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float, output: Any) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output.seek(0)
            raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{output.read()!r}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        time.sleep(0.1)
    output.seek(0)
    raise RuntimeError(f"uvicorn did not answer {url} in {timeout}s:\n{output.read()!r}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # The group holds uvicorn's worker processes too; it is ours alone (start_new_session).
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def timed_while_busy(
    slow: Callable[[], httpx.Response],
    quick: Callable[[], httpx.Response],
    *,
    head_start: float = 0.3,
    tries: int = 3,
) -> tuple[httpx.Response, float, list[httpx.Response], list[float]]:
    """Start ``slow()`` in a thread, then time ``tries`` calls of ``quick()`` while it runs.

    Returns ``(slow answer, its seconds, quick answers, their seconds)``. Several quick
    calls, because this machine's other processes can delay any single one by some tens of
    milliseconds; an event loop blocked while the slow request waits holds the first one up
    for most of that wait. Every quick call must end while ``slow`` still runs.
    """
    result: dict[str, Any] = {}

    def run_slow() -> None:
        started = time.perf_counter()
        result["slow"] = slow()
        result["slow_seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=run_slow)
    thread.start()
    time.sleep(head_start)
    answers: list[httpx.Response] = []
    seconds: list[float] = []
    for _ in range(tries):
        started = time.perf_counter()
        answers.append(quick())
        seconds.append(time.perf_counter() - started)
    still_running = thread.is_alive()
    thread.join(timeout=30)
    assert still_running, f"the slow request ended before the quick ones: {result!r}, {seconds}"
    return result["slow"], result["slow_seconds"], answers, seconds


def visit_in_rounds(
    url: str,
    request: Callable[[httpx.Client, int], httpx.Response],
    *,
    users: int,
    rounds: int,
    pause: float,
    per_user: int = 3,
    threads: int = 8,
) -> list[httpx.Response]:
    """``rounds`` times: wait ``pause`` seconds, then send ``per_user`` requests for each user
    at once (``request(client, user)``), a user's requests side by side on several threads,
    so they reach several worker processes together."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def send(user: int) -> httpx.Response:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=30)
            clients.append(client)
        return request(client, user)

    answers: list[httpx.Response] = []
    try:
        with ThreadPoolExecutor(threads) as pool:
            for _ in range(rounds):
                time.sleep(pause)
                order = [user for user in range(users) for _ in range(per_user)]
                answers += pool.map(send, order)
    finally:
        for client in clients:
            client.close()
    return answers
