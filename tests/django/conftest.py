"""Fixtures for the Django app's tests: an emulator wired into ``WATCHER_AUTH``, portal users,
and the PostgreSQL and Redis services (skipped when missing, failing under ``CI``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client

from watcher_auth.testing import FakeClock, WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory
from watcher_auth.testing.services import require_postgres, require_redis

HERE = Path(__file__).resolve().parent
REDIS_DB = 14  # the "redis" alias in settings.py


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder's PostgreSQL tests before pytest-django tries to create their database.

    The check itself is ``require_postgres`` (which fails instead of skipping under ``CI``);
    under ``CI`` nothing is skipped here, so a missing server fails the run.
    """
    ours = [
        i for i in items if HERE in Path(str(i.path)).parents and i.get_closest_marker("postgres")
    ]
    if not ours or os.environ.get("CI"):
        return
    try:
        require_postgres()
    except pytest.skip.Exception as exc:
        for item in ours:
            item.add_marker(pytest.mark.skip(reason=str(exc)))
            # Keep pytest-django from setting up the unreachable database for it.
            item.add_marker(pytest.mark.django_db(databases=[]), append=False)


@dataclass
class Portal:
    """A running emulator wired into ``WATCHER_AUTH``, and the fake clock both share."""

    emulator: WatcherEmulator
    clock: FakeClock
    settings: Any

    def configure(self, **watcher_auth: Any) -> None:
        """Replace ``WATCHER_AUTH`` (URL and CLOCK are filled in)."""
        self.settings.WATCHER_AUTH = {
            "URL": self.emulator.url,
            "CLOCK": self.clock,
            **watcher_auth,
        }


@pytest.fixture
def portal(
    watcher_emulator_factory: EmulatorFactory, fake_clock: FakeClock, settings: Any
) -> Portal:
    """An emulator (alice/secret, bob/hunter2) on a fake clock, with the ``"db"`` store."""
    emulator = watcher_emulator_factory(clock=fake_clock, rotate_refresh_tokens=True)
    portal = Portal(emulator=emulator, clock=fake_clock, settings=settings)
    portal.configure(STORE="db")
    return portal


@pytest.fixture
def make_user(db: None) -> Callable[..., Any]:
    """``make_user(name, **fields)`` creates a portal user."""

    def make(name: str, **fields: Any) -> Any:
        return get_user_model().objects.create_user(username=name, password="portal-pw", **fields)

    return make


@pytest.fixture
def client_for(make_user: Callable[..., Any]) -> Callable[[Any], Client]:
    """``client_for(user)``: a test client signed in as ``user`` that enforces CSRF."""

    def make(user: Any) -> Client:
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        return client

    return make


@pytest.fixture
def postgres_alias() -> Iterator[str]:
    """The ``"postgres"`` alias, after the server answered; leftover sessions end afterwards.

    Tests using it are marked ``postgres`` and ``django_db(databases=["postgres"], ...)``.
    """
    require_postgres()
    yield "postgres"
    # Threads and worker processes leave connections behind; they would keep the test
    # database from being dropped at the end of the session.
    with connections["postgres"].cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of its own in the ``"redis"`` cache; its keys are removed afterwards."""
    import redis

    url = require_redis(REDIS_DB)
    prefix = f"watcher-auth-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_prefix: str) -> Iterator[Any]:
    """A raw client of the ``"redis"`` cache's database, to look at what is stored."""
    import redis

    client = redis.Redis.from_url(require_redis(REDIS_DB))
    yield client
    client.close()


def csrf_post(
    client: Client, url: str, data: dict[str, Any], *, page: str | None = None, **extra: Any
) -> Any:
    """GET the form ``page`` (default ``url``) for the CSRF cookie, then POST with the token."""
    client.get(page or url)
    token = client.cookies["csrftoken"].value
    return client.post(url, {**data, "csrfmiddlewaretoken": token}, **extra)


@pytest.fixture
def post_form() -> Callable[..., Any]:
    """``post_form(client, url, data, page=None, **extra)``: a POST with a valid CSRF token."""
    return csrf_post


@pytest.fixture
def alice(make_user: Callable[..., Any]) -> Any:
    """The portal user ``portal-alice``."""
    return make_user("portal-alice")


@pytest.fixture
def connected(
    portal: Any, alice: Any, client_for: Callable[[Any], Client], post_form: Callable[..., Any]
) -> Client:
    """A client for a portal user who has connected the Watcher account alice."""
    client = client_for(alice)
    response = post_form(client, "/watcher/connect/", {"username": "alice", "password": "secret"})
    assert response.status_code == 302
    portal.emulator.reset_stats()
    return client
