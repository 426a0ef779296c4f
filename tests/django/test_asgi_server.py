"""The Django test project under a real uvicorn (ASGI): async views never stall the event
loop on a slow Watcher, and worker processes share one login and one refresh per expiry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.asgi_server import ROOT, timed_while_busy, uvicorn_server, visit_in_rounds
from watcher_auth.testing import WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory
from watcher_auth.testing.services import create_postgres_database, require_redis

APP = "tests.django.asgi_app:application"
QUICK = 0.05  # seconds a request may take while another one waits on Watcher
# No quick request may take this long: the loop blocked during the slow request's one second
# of waiting would hold the first of them up for at least 0.7 s.
BLOCKED = 0.5


def sqlite_databases(tmp_path: Path) -> dict[str, Any]:
    return {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "portal.db")}
    }


def prepare(env: dict[str, str], accounts: list[tuple[str, str, str]]) -> dict[str, str]:
    """Migrate, create the portal users, connect their accounts; their session cookies."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.django.asgi_prepare"],
        input=json.dumps(accounts),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'integrations'}{os.pathsep}{ROOT}", **env},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sessions: dict[str, str] = json.loads(done.stdout)
    return sessions


def project_env(emulator: WatcherEmulator, databases: dict[str, Any], **watcher_auth: Any) -> dict:
    return {
        "DJANGO_SETTINGS_MODULE": "tests.django.asgi_settings",
        "PORTAL_DATABASES": json.dumps(databases),
        "PORTAL_WATCHER_AUTH": json.dumps({"URL": emulator.url, **watcher_auth}),
    }


def test_a_slow_watcher_call_or_refresh_leaves_the_event_loop_free(
    watcher_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = watcher_emulator_factory(rotate_refresh_tokens=True)
    env = project_env(emulator, sqlite_databases(tmp_path), STORE="db")
    sessions = prepare(env, [("portal-alice", "alice", "secret")])
    cookie = {"Cookie": f"sessionid={sessions['portal-alice']}"}

    with (
        uvicorn_server(APP, port=17020, env=env, ready_path="/health/") as url,
        httpx.Client(base_url=url, timeout=30) as quick_client,
    ):

        def slow() -> httpx.Response:
            return httpx.get(url + "/async/cameras/", headers=cookie, timeout=30)

        quick_client.get("/health/")  # the quick requests reuse this warm connection
        emulator.configure(latency=1.0)
        call = timed_while_busy(slow, lambda: quick_client.get("/health/"))

        emulator.configure(latency=0.0, refresh_latency=1.0)
        emulator.revoke_access_tokens("alice")  # the next call gets 401, then a refresh
        refresh = timed_while_busy(slow, lambda: quick_client.get("/health/"))

    for slow_answer, slow_seconds, quick_answers, quick_seconds in (call, refresh):
        assert slow_answer.status_code == 200, slow_answer.text
        assert slow_answer.json()["streams"] == ["alice-cam-0", "alice-cam-1", "alice-cam-2"]
        assert slow_seconds >= 1.0
        assert [a.status_code for a in quick_answers] == [200] * len(quick_answers)
        assert max(quick_seconds) < BLOCKED and min(quick_seconds) < QUICK, quick_seconds
    assert emulator.stats.refreshes == 1


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def shared_project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Databases and ``WATCHER_AUTH`` of a store that worker processes share: the ``"db"``
    store on PostgreSQL, or the ``"cache"`` store on Redis."""
    if request.param == "redis":
        require_redis(14)
        yield {
            "databases": sqlite_databases(tmp_path),
            "STORE": "cache",
            "CACHE_ALIAS": "redis",
            "CACHE_KEY_PREFIX": f"asgi-test-{uuid.uuid4().hex[:12]}",
        }
        return
    name = f"watcher_auth_django_asgi_{uuid.uuid4().hex[:12]}"
    create_postgres_database(name)
    yield {
        "databases": {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": "127.0.0.1",
                "USER": "postgres",
                "NAME": name,
            }
        },
        "STORE": "db",
    }
    import psycopg
    from psycopg import sql

    from watcher_auth.testing.services import require_postgres

    with psycopg.connect(require_postgres(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.mark.multiprocess
def test_four_workers_share_one_login_and_one_refresh_per_expiry_per_user(
    watcher_emulator_factory: EmulatorFactory, shared_project: dict[str, Any]
) -> None:
    lifetime, users, rounds = 6, 20, 2
    emulator = watcher_emulator_factory(
        access_lifetime=lifetime, rotate_refresh_tokens=True, seed_users=False
    )
    for number in range(users):
        emulator.add_user(f"user{number}", f"pw-{number}", streams=1)
    project = dict(shared_project)
    env = project_env(emulator, project.pop("databases"), **project)
    port = 17021 if project["STORE"] == "db" else 17022
    sessions = prepare(env, [(f"portal{n}", f"user{n}", f"pw-{n}") for n in range(users)])

    def cameras(client: httpx.Client, user: int) -> httpx.Response:
        cookie = {"Cookie": f"sessionid={sessions[f'portal{user}']}"}
        return client.get("/async/cameras/", headers=cookie)

    with uvicorn_server(APP, port=port, env=env, workers=4, ready_path="/health/") as url:
        # Each round starts after every user's token expired, and ends before a new one does.
        answers = visit_in_rounds(url, cameras, users=users, rounds=rounds, pause=lifetime + 0.3)

    assert [a.status_code for a in answers] == [200] * len(answers)
    order = [user for user in range(users) for _ in range(3)] * rounds
    for number, answer in zip(order, answers, strict=True):
        assert answer.json() == {"streams": [f"user{number}-cam-0"]}
    stats = emulator.stats
    assert stats.password_logins == users
    assert stats.refreshes == users * rounds
    assert (stats.rejected_refreshes, stats.failed_logins, stats.unauthorized) == (0, 0, 0)
