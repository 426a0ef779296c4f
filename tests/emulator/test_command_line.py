"""The emulator's command line and the demo launcher, run as real processes."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from watcher_auth.testing import RemoteEmulator

REPO = Path(__file__).resolve().parents[2]
# Ports these tests occupy on purpose to see them refused.
PORT_RANGE = range(16550, 16600)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program (this test) is listening on."""
    for port in PORT_RANGE:
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            holder.bind(("127.0.0.1", port))
        except OSError:
            holder.close()
            continue
        holder.listen()
        try:
            yield port
        finally:
            holder.close()
        return
    pytest.fail(f"no free port in {PORT_RANGE} to occupy")


def env() -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k != "WATCHER_EMULATOR_CONTROL_TOKEN"},
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


def start_cli(*args: str, tmp_path: Path) -> tuple[subprocess.Popen[str], str, str]:
    """Start the emulator's command line; returns the process, its URL and control token."""
    command = [sys.executable, "-m", "watcher_auth.testing.emulator", "--port", "0", *args]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=20), "the emulator printed nothing"
    url = process.stdout.readline().strip().rsplit(" ", 1)[1]
    token = process.stdout.readline().strip()
    assert token.startswith("Control token: "), token
    return process, url, token.rsplit(" ", 1)[1]


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    return stderr


def test_the_command_line_takes_every_setting_and_queued_failures(tmp_path: Path) -> None:
    process, url, token = start_cli(
        "--user=alice:secret",
        "--access-lifetime=42",
        "--refresh-lifetime=600",
        "--no-include-iat",
        "--legacy-error-field",
        "--latency=0.25",
        "--refresh-latency=0.5",
        "--server-clock-offset=-30",
        "--hang-seconds=1.5",
        "--max-sessions=2",
        "--no-send-date-header",
        "--v2-dead-session-answer=guest",
        "--fail=login:503:2",
        "--fail=v2_call:403",
        tmp_path=tmp_path,
    )
    try:
        remote = RemoteEmulator(url, token)
        shown = requests.get(
            url + "/_emulator/settings",
            headers={"X-Emulator-Control-Token": token},
            timeout=5,
        ).json()
        assert {k: shown[k] for k in shown if k not in ("host", "port", "system_api_key")} == {
            "access_lifetime": 42.0,
            "refresh_lifetime": 600.0,
            "rotate_refresh_tokens": False,
            "max_sessions": 2,
            "server_clock_offset": -30.0,
            "latency": 0.25,
            "refresh_latency": 0.5,
            "include_iat": False,
            "send_date_header": False,
            "legacy_error_field": True,
            "hang_seconds": 1.5,
            "v2_dead_session_answer": "guest",
        }
        login_url = url + "/watcher/client-api/v3/login"
        started = time.monotonic()
        answers = [requests.post(login_url, auth=("alice", "secret"), timeout=5) for _ in range(3)]
        assert time.monotonic() - started >= 3 * 0.25
        assert [a.status_code for a in answers] == [503, 503, 200]
        assert answers[0].json()["error"]  # the legacy top-level field
        assert "Date" not in answers[2].headers
        assert remote.stats.injected_failures == 2
        cameras = requests.get(url + "/vsaas/api/v2/cameras", timeout=5)
        assert cameras.status_code == 403
        assert remote.stats.injected_failures == 3
    finally:
        stop(process)


def test_the_command_line_refuses_a_malformed_failure(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "watcher_auth.testing.emulator", "--fail", "login:sometimes"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert "TARGET:MODE[:COUNT]" in result.stderr


def test_the_command_line_says_when_its_port_is_taken(tmp_path: Path, taken_port: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "watcher_auth.testing.emulator", "--port", str(taken_port)],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert f"Port {taken_port} on 127.0.0.1 is taken" in result.stderr
    assert result.stdout == ""


def test_the_command_line_uses_the_control_token_from_the_environment(tmp_path: Path) -> None:
    token = "a-control-token-from-the-environment"
    command = [sys.executable, "-m", "watcher_auth.testing.emulator", "--port", "0"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**env(), "WATCHER_EMULATOR_CONTROL_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[1]
        assert process.stdout.readline().strip() == f"Control token: {token}"
        RemoteEmulator(url, token).add_user("zoe", "pw")
        login = requests.post(url + "/watcher/client-api/v3/login", auth=("zoe", "pw"), timeout=5)
        assert login.status_code == 200
    finally:
        stop(process)


@pytest.mark.parametrize("option", ["--port", "--emulator-port"])
def test_the_demo_launcher_says_when_the_chosen_port_is_taken(
    tmp_path: Path, taken_port: int, option: str
) -> None:
    other = "--emulator-port=0" if option == "--port" else "--port=0"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "example_projects" / "run_demo.py"),
            "django",
            "--check",
            f"{option}={taken_port}",
            other,
            f"--data-dir={tmp_path}",
        ],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "WATCHER_URL"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2
    assert f"Port {taken_port} on 127.0.0.1 is taken" in result.stderr
    assert f"choose another with {option} N" in result.stderr
    # Nothing was started on another port instead.
    assert "is running at" not in result.stdout
    assert not (tmp_path / "db.sqlite3").exists()


def test_make_demo_passes_args_to_the_launcher() -> None:
    result = subprocess.run(
        ["make", "-n", "demo", "demo-flask", "ARGS=--port 9000 --access-lifetime 30"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )

    lines = [line for line in result.stdout.splitlines() if "run_demo.py" in line]
    assert len(lines) == 2, result.stdout + result.stderr
    for line, portal in zip(lines, ("django", "flask"), strict=True):
        assert line.endswith(f"run_demo.py {portal} --port 9000 --access-lifetime 30")
