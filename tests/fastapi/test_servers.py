"""The FastAPI portal under a real uvicorn: a slow Watcher never stalls the event loop, and
worker processes share one login and one refresh per expiry per user."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.asgi_server import timed_while_busy, uvicorn_server, visit_in_rounds
from tests.fastapi.portal import USER_HEADER
from watcher_auth.crypto import generate_key
from watcher_auth.testing import WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory
from watcher_auth.testing.services import create_postgres_database, require_redis

APP = "tests.fastapi.portal:create_app"
QUICK = 0.05  # seconds a request may take while another one waits on Watcher
# No quick request may take this long: the loop blocked during the slow request's one second
# of waiting would hold the first of them up for at least 0.7 s.
BLOCKED = 0.5


def as_user(user_id: str) -> dict[str, str]:
    return {USER_HEADER: user_id}


def connect(client: httpx.Client, user_id: str, username: str, password: str) -> None:
    answer = client.post(
        "/watcher/connect",
        json={"username": username, "password": password},
        headers=as_user(user_id),
    )
    assert answer.status_code == 200, answer.text


def serve(emulator: WatcherEmulator, port: int, workers: int = 1, **settings: Any) -> Any:
    portal_settings = {"WATCHER_URL": emulator.url, **settings}
    env = {"PORTAL_SETTINGS": json.dumps(portal_settings), "WEB_CONCURRENCY": str(workers)}
    return uvicorn_server(APP, port=port, env=env, workers=workers, factory=True)


def test_a_slow_watcher_call_leaves_the_event_loop_free(
    watcher_emulator_factory: EmulatorFactory,
) -> None:
    emulator = watcher_emulator_factory()
    with serve(emulator, 17010) as url, httpx.Client(base_url=url, timeout=30) as client:
        connect(client, "1", "alice", "secret")
        client.get("/health")  # the quick requests reuse this warm connection
        emulator.configure(latency=1.0)

        def slow() -> httpx.Response:
            return httpx.get(url + "/cameras", headers=as_user("1"), timeout=30)

        slow_answer, slow_seconds, quick_answers, quick_seconds = timed_while_busy(
            slow, lambda: client.get("/watcher/status", headers=as_user("1"))
        )

    assert slow_answer.status_code == 200 and slow_seconds >= 1.0
    assert all(answer.json()["connected"] is True for answer in quick_answers)
    assert max(quick_seconds) < BLOCKED and min(quick_seconds) < QUICK, quick_seconds


def test_a_slow_refresh_leaves_the_event_loop_free(
    watcher_emulator_factory: EmulatorFactory,
) -> None:
    emulator = watcher_emulator_factory(access_lifetime=2, rotate_refresh_tokens=True)
    with serve(emulator, 17011) as url, httpx.Client(base_url=url, timeout=30) as client:
        connect(client, "1", "alice", "secret")
        client.get("/health")
        emulator.configure(refresh_latency=1.0)
        time.sleep(2.1)  # the access token expires

        def slow() -> httpx.Response:
            return httpx.get(url + "/cameras", headers=as_user("1"), timeout=30)

        slow_answer, slow_seconds, quick_answers, quick_seconds = timed_while_busy(
            slow, lambda: client.get("/health")
        )

    assert slow_answer.status_code == 200 and slow_seconds >= 1.0
    assert [answer.status_code for answer in quick_answers] == [200] * 3
    assert max(quick_seconds) < BLOCKED and min(quick_seconds) < QUICK, quick_seconds
    assert emulator.stats.refreshes == 1


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def shared_store(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """``WATCHER_*`` settings of a store every worker process shares."""
    keys = [generate_key()]
    if request.param == "redis":
        url = require_redis(12)
        yield {
            "WATCHER_STORE": "redis",
            "WATCHER_REDIS_URL": url,
            "WATCHER_STORE_OPTIONS": {"prefix": f"fastapi-test-{uuid.uuid4().hex}:"},
            "WATCHER_ENCRYPTION_KEYS": keys,
        }
        return
    database = f"watcher_auth_fastapi_{uuid.uuid4().hex[:12]}"
    url = create_postgres_database(database)
    yield {
        "WATCHER_STORE": "sqlalchemy",
        "WATCHER_SQLALCHEMY_URL": url.replace("postgresql://", "postgresql+psycopg://", 1),
        "WATCHER_ENCRYPTION_KEYS": keys,
    }
    _drop_database(database)


@pytest.mark.multiprocess
def test_four_workers_share_one_login_and_one_refresh_per_expiry_per_user(
    watcher_emulator_factory: EmulatorFactory, shared_store: dict[str, Any]
) -> None:
    lifetime, users, rounds = 6, 20, 2
    emulator = watcher_emulator_factory(
        access_lifetime=lifetime, rotate_refresh_tokens=True, seed_users=False
    )
    for number in range(users):
        emulator.add_user(f"user{number}", f"pw-{number}", streams=1)

    def cameras(client: httpx.Client, user: int) -> httpx.Response:
        return client.get("/cameras", headers=as_user(str(user)))

    port = 17012 if shared_store["WATCHER_STORE"] == "redis" else 17013
    with serve(emulator, port, workers=4, **shared_store) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            for number in range(users):
                connect(client, str(number), f"user{number}", f"pw-{number}")
        # Each round starts after every user's token expired, and ends before a new one does.
        answers = visit_in_rounds(url, cameras, users=users, rounds=rounds, pause=lifetime + 0.3)

    assert [a.status_code for a in answers] == [200] * len(answers)
    order = [user for user in range(users) for _ in range(3)] * rounds
    for number, answer in zip(order, answers, strict=True):
        assert answer.json() == [f"user{number}-cam-0"]
    stats = emulator.stats
    assert stats.password_logins == users
    assert stats.refreshes == users * rounds
    assert (stats.rejected_refreshes, stats.failed_logins, stats.unauthorized) == (0, 0, 0)


def _drop_database(name: str) -> None:
    import psycopg
    from psycopg import sql

    from watcher_auth.testing.services import require_postgres

    with psycopg.connect(require_postgres(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
