"""A small portal built on Flask and Flask-Login, wired to an emulated Watcher.

Portal users are ids "1", "2", "3"; ``sign_in(client, "1")`` signs one in through a real
request. The portal's pages:

- ``/cameras`` (``@watcher_required``): the names of the user's streams, as HTML.
- ``/api/cameras`` (``@watcher_required``): the same as JSON.
- ``/whoami``: the Watcher profile name through ``current_watcher``, without the decorator.
- ``/async/cameras`` (``@watcher_required``, ``async def``): the stream names through
  ``current_watcher_async``; ``/async/whoami``: the profile name, without the decorator.
  Each remembers its client in ``app.config["ASYNC_CLIENTS"]``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask, render_template_string
from flask.testing import FlaskClient
from flask_login import LoginManager, UserMixin, login_user, logout_user
from werkzeug.test import TestResponse

from flask_watcher_auth import (
    WatcherAuth,
    current_watcher,
    current_watcher_async,
    get_state,
    watcher_required,
)
from watcher_auth.testing import FakeClock, WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory
from watcher_auth.testing.services import require_redis

SECRET_KEY = "portal secret key for tests"
USERS = ("1", "2", "3")
REDIS_DB = 13
POSTGRES_DATABASE = "watcher_auth_flask_test"

MakeApp = Callable[..., Flask]


class PortalUser(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def build_portal(
    emulator_url: str, clock: FakeClock, *, extension: WatcherAuth | None = None, **config: Any
) -> Flask:
    app = Flask("portal", template_folder=config.pop("template_folder", None))
    app.config.update(
        {"SECRET_KEY": SECRET_KEY, "WATCHER_URL": emulator_url, "WATCHER_CLOCK": clock}
    )
    app.config.update(config)
    login_manager = LoginManager(app)
    login_manager.login_view = "sign_in_page"

    @login_manager.user_loader
    def load_user(user_id: str) -> PortalUser | None:
        return PortalUser(user_id) if user_id in USERS else None

    @app.get("/sign-in")
    def sign_in_page() -> str:
        return "Sign in to the portal"

    @app.post("/sign-in/<user_id>")
    def sign_in(user_id: str) -> str:
        login_user(PortalUser(user_id))
        return "signed in"

    @app.post("/sign-out")
    def sign_out() -> str:
        logout_user()
        return "signed out"

    (extension or WatcherAuth()).init_app(app)

    @app.get("/cameras")
    @watcher_required
    def cameras() -> str:
        names = [stream["name"] for stream in current_watcher.paginate("streams")]
        return render_template_string(
            "<ul>{% for name in names %}<li>{{ name }}</li>{% endfor %}</ul>", names=names
        )

    @app.get("/api/cameras")
    @watcher_required
    def api_cameras() -> dict[str, Any]:
        return {"streams": [s["name"] for s in current_watcher.get("streams").json()["streams"]]}

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        return {"name": current_watcher.json("profile")["name"]}

    app.config["ASYNC_CLIENTS"] = clients = []

    @app.get("/async/cameras")
    @watcher_required
    async def async_cameras() -> dict[str, Any]:
        clients.append(current_watcher_async._get_current_object())  # type: ignore[attr-defined]
        return {"streams": [s["name"] async for s in current_watcher_async.paginate("streams")]}

    @app.get("/async/checked")
    async def async_checked() -> Any:
        answer = await current_watcher_async.get("streams/no-such-stream")
        answer.raise_for_status()
        return answer.json()

    @app.get("/async/whoami")
    async def async_whoami() -> dict[str, Any]:
        clients.append(current_watcher_async._get_current_object())  # type: ignore[attr-defined]
        return {"name": (await current_watcher_async.json("profile"))["name"]}

    return app


@pytest.fixture
def emulator(watcher_emulator_factory: EmulatorFactory, fake_clock: FakeClock) -> WatcherEmulator:
    """Alice (secret) and Bob (hunter2), each with three streams, on the test's fake clock."""
    return watcher_emulator_factory(clock=fake_clock, access_lifetime=300)


@pytest.fixture
def make_portal(fake_clock: FakeClock) -> Iterator[Callable[..., Flask]]:
    """``make_portal(emulator_url, extension=None, **config)``: a portal app on any Watcher."""
    apps: list[Flask] = []

    def make(emulator_url: str, **config: Any) -> Flask:
        app = build_portal(emulator_url, fake_clock, **config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        get_state(app).store.close()


@pytest.fixture
def make_app(emulator: WatcherEmulator, make_portal: Callable[..., Flask]) -> MakeApp:
    """``make_app(**config)``: a portal app on the emulator with extra config keys."""

    def make(**config: Any) -> Flask:
        return make_portal(emulator.url, **config)

    return make


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def sign_in() -> Callable[[FlaskClient, str], None]:
    """``sign_in(client, user_id)`` signs a portal user in for the client's later requests."""

    def sign(client: FlaskClient, user_id: str) -> None:
        assert client.post(f"/sign-in/{user_id}").status_code == 200

    return sign


@pytest.fixture
def csrf_token() -> Callable[..., str]:
    """``csrf_token(client, page_path="/watcher/connect")`` reads a form's token like a browser."""

    def read(client: FlaskClient, page_path: str = "/watcher/connect") -> str:
        page = client.get(page_path).get_data(as_text=True)
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match, page
        return match.group(1)

    return read


@pytest.fixture
def connect(csrf_token: Callable[..., str]) -> Callable[..., TestResponse]:
    """``connect(client, username, password, next=None)`` submits the connect form."""

    def submit(
        client: FlaskClient,
        username: str = "alice",
        password: str = "secret",
        next: str | None = None,
        **headers: str,
    ) -> TestResponse:
        form = {"csrf_token": csrf_token(client), "username": username, "password": password}
        if next is not None:
            form["next"] = next
        return client.post("/watcher/connect", data=form, headers=headers)

    return submit


@pytest.fixture
def redis_store_config() -> Iterator[dict[str, Any]]:
    """Config for the Redis store on a private key prefix, removed afterwards."""
    url = require_redis(REDIS_DB)
    prefix = f"flask_watcher_test:{uuid.uuid4().hex}:"
    yield {
        "WATCHER_STORE": "redis",
        "WATCHER_REDIS_URL": url,
        "WATCHER_STORE_OPTIONS": {"prefix": prefix},
    }
    client = redis.Redis.from_url(url)
    for name in client.scan_iter(match=prefix + "*"):
        client.delete(name)
    client.close()


@pytest.fixture
def sqlite_store_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "WATCHER_STORE": "sqlalchemy",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
    }


@pytest.fixture(scope="session")
def postgres_url(run_postgres_database: Callable[[str], str]) -> str:
    return run_postgres_database(POSTGRES_DATABASE)


@pytest.fixture
def postgres_store_config(postgres_url: str) -> Iterator[dict[str, Any]]:
    """Config for the SQLAlchemy store on PostgreSQL, in a table dropped afterwards."""
    from sqlalchemy import create_engine, text

    table = f"tokens_{uuid.uuid4().hex[:12]}"
    yield {
        "WATCHER_STORE": "sqlalchemy",
        "WATCHER_SQLALCHEMY_URL": postgres_url,
        "WATCHER_STORE_OPTIONS": {"table_name": table},
    }
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
    engine.dispose()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def store_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Config for each store the extension names: memory, Redis, SQLite, PostgreSQL."""
    if request.param == "memory":
        return {"WATCHER_STORE": "memory"}
    config: dict[str, Any] = request.getfixturevalue(f"{request.param}_store_config")
    return config
