"""Safe defaults, loud mistakes: what ``init_app`` says or refuses, and misuse of the proxies."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_watcher_auth import current_watcher, current_watcher_system, current_watcher_v2
from watcher_auth import ConfigurationError, StoreError
from watcher_auth.testing import WatcherEmulator
from watcher_auth.testing.services import service_missing

MakeApp = Callable[..., Flask]
OWN_REDIS_PORT = 16631


@pytest.fixture
def startup_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="flask_watcher_auth")
    return caplog


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flask_watcher_auth"]


def test_a_misspelt_key_is_named_with_the_closest_known_one(
    make_app: MakeApp, startup_log: pytest.LogCaptureFixture
) -> None:
    make_app(WATCHER_STROE="redis", WATCHER_LOCK_TIMOUT=5, WATCHER_SOMETHING_ELSE=1)
    lines = warnings_of(startup_log)
    assert (
        "unknown configuration key WATCHER_STROE is ignored by WatcherAuth; did you mean "
        "WATCHER_STORE?"
    ) in lines
    assert (
        "unknown configuration key WATCHER_LOCK_TIMOUT is ignored by WatcherAuth; did you mean "
        "WATCHER_LOCK_TIMEOUT?"
    ) in lines
    assert "unknown configuration key WATCHER_SOMETHING_ELSE is ignored by WatcherAuth" in lines


def test_known_keys_raise_no_warning(
    make_app: MakeApp, sqlite_store_config: dict[str, Any], startup_log: pytest.LogCaptureFixture
) -> None:
    make_app(**sqlite_store_config, WATCHER_TIMEOUT=3, WATCHER_CHECK_STORE_ON_START=True)
    assert warnings_of(startup_log) == []


def test_the_memory_store_is_named_as_per_process(
    make_app: MakeApp, startup_log: pytest.LogCaptureFixture
) -> None:
    make_app(WATCHER_STORE="memory")
    assert warnings_of(startup_log) == [
        "WATCHER_STORE is 'memory': tokens live in this process only and are lost on restart; "
        "with several worker processes use 'redis' or 'sqlalchemy'"
    ]


def test_the_memory_store_is_refused_when_the_app_says_it_runs_several_processes(
    make_app: MakeApp,
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        make_app(WATCHER_STORE="memory", WATCHER_MULTIPROCESS=True)
    assert str(refused.value).startswith(
        "WATCHER_STORE is 'memory', which keeps tokens inside one process, but this app runs "
        "several (WATCHER_MULTIPROCESS or WEB_CONCURRENCY)"
    )


def test_the_memory_store_is_refused_under_several_web_workers(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    with pytest.raises(ConfigurationError):
        make_app(WATCHER_STORE="memory")
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    make_app(WATCHER_STORE="memory")
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    make_app(WATCHER_STORE="memory", WATCHER_MULTIPROCESS=False)  # the app knows better


def test_a_shared_store_is_fine_with_several_processes(
    make_app: MakeApp, sqlite_store_config: dict[str, Any], startup_log: pytest.LogCaptureFixture
) -> None:
    make_app(**sqlite_store_config, WATCHER_MULTIPROCESS=True)
    assert warnings_of(startup_log) == []


def test_a_wrong_multiprocess_value_is_refused(make_app: MakeApp) -> None:
    with pytest.raises(ConfigurationError, match="WATCHER_MULTIPROCESS must be True, False"):
        make_app(WATCHER_MULTIPROCESS="yes")


class OwnRedis:
    """A ``redis-server`` of this test's own, on a port of the suite's range."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            service_missing("redis-server", "the redis-server binary is not installed")
        self.command = [
            str(binary),
            "--port",
            str(OWN_REDIS_PORT),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(directory),
        ]
        self.url = f"redis://127.0.0.1:{OWN_REDIS_PORT}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", OWN_REDIS_PORT), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.redis
def test_the_start_up_probe_fails_fast_on_a_store_that_is_down(
    make_app: MakeApp, own_redis: OwnRedis
) -> None:
    config = {
        "WATCHER_STORE": "redis",
        "WATCHER_REDIS_URL": own_redis.url,
        "WATCHER_CHECK_STORE_ON_START": True,
    }
    make_app(**config)  # the store answers: the app starts
    own_redis.stop()
    with pytest.raises(StoreError) as failed:
        make_app(**config)
    assert str(failed.value).startswith("WATCHER_CHECK_STORE_ON_START: the token store failed")
    make_app(**{**config, "WATCHER_CHECK_STORE_ON_START": False})  # without it: no store I/O


def test_current_watcher_outside_a_request_is_a_clear_error(app: Flask) -> None:
    with app.app_context(), pytest.raises(RuntimeError) as outside:
        current_watcher.get("streams")
    assert str(outside.value).startswith("current_watcher was used outside a request")
    with app.app_context(), pytest.raises(RuntimeError, match="current_watcher_v2 was used"):
        current_watcher_v2.get("cameras")
    with pytest.raises(RuntimeError, match="current_watcher_system was used outside an app"):
        current_watcher_system.get("cameras")


def test_a_user_who_never_connected_is_told_so_not_asked_to_reauthenticate(
    client: FlaskClient, sign_in: Callable[[FlaskClient, str], None], emulator: WatcherEmulator
) -> None:
    sign_in(client, "1")
    answer = client.get("/api/cameras", headers={"Accept": "application/json"})
    assert answer.status_code == 401
    assert (answer.json["error"], answer.json["reason"]) == (
        "watcher_not_connected",
        "not_connected",
    )
    assert emulator.stats.password_logins == 0
