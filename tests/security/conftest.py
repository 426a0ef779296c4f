"""Stores on the real backends, a private Redis server, and a lock holder that gets killed.

Every store is encrypted with :data:`KEYS`. Redis tests use database :data:`REDIS_DB` under a
fresh key prefix; PostgreSQL tests use database :data:`POSTGRES_DATABASE` with a fresh table.
Both are removed when the test ends.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from watcher_auth import MemoryStore, StoreKey, TokenStore
from watcher_auth.testing.services import (
    require_postgres,
    require_redis,
    service_missing,
)

HERE = Path(__file__).resolve().parent
REDIS_DB = 11
DJANGO_REDIS_DB = 14  # the "redis" cache alias of tests/django/settings.py
POSTGRES_DATABASE = "watcher_auth_security_test"
KEYS = ["security suite key", "an older security suite key"]

MakeStore = Callable[..., TokenStore]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder's tests on Django's PostgreSQL alias before pytest-django sets it up.

    The check is ``require_postgres`` (which fails instead of skipping under ``CI``); under
    ``CI`` nothing is skipped here, so a missing server fails the run.
    """
    ours = [
        item
        for item in items
        if HERE in Path(str(item.path)).parents
        and "postgres" in _django_databases(item.get_closest_marker("django_db"))
    ]
    if not ours or os.environ.get("CI"):
        return
    try:
        require_postgres()
    except pytest.skip.Exception as exc:
        for item in ours:
            item.add_marker(pytest.mark.skip(reason=str(exc)))
            item.add_marker(pytest.mark.django_db(databases=[]), append=False)


def _django_databases(marker: pytest.Mark | None) -> list[str]:
    if marker is None:
        return []
    return list(marker.kwargs.get("databases") or [])


@pytest.fixture
def redis_url() -> str:
    return require_redis(REDIS_DB)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    import redis

    prefix = f"watcher_auth_security:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for name in client.scan_iter(match=prefix + "*"):
        client.delete(name)
    client.close()


@pytest.fixture
def make_redis_store(redis_url: str, redis_prefix: str) -> Iterator[MakeStore]:
    """``make(**options)``: a new RedisStore client over the test's key prefix."""
    from watcher_auth.stores.redis import RedisStore

    stores: list[RedisStore] = []

    def make(**options: Any) -> RedisStore:
        options.setdefault("encryption_keys", KEYS)
        options.setdefault("url", redis_url)
        store = RedisStore(prefix=redis_prefix, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture(scope="session")
def postgres_url(run_postgres_database: Callable[[str], str]) -> str:
    """A psycopg URL of this suite's own database in this test run."""
    return run_postgres_database(POSTGRES_DATABASE)


@pytest.fixture
def postgres_table(postgres_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text

    table = f"tokens_{uuid.uuid4().hex[:12]}"
    yield table
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
    engine.dispose()


@pytest.fixture
def application_name() -> str:
    """The PostgreSQL ``application_name`` the test's stores connect with."""
    return f"watcher-security-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_postgres_store(
    postgres_url: str, postgres_table: str, application_name: str
) -> Iterator[MakeStore]:
    """``make(**options)``: a new SQLAlchemyStore (its own engine) over the test's table."""
    from watcher_auth.stores.sqlalchemy import SQLAlchemyStore

    stores: list[SQLAlchemyStore] = []

    def make(**options: Any) -> SQLAlchemyStore:
        options.setdefault("encryption_keys", KEYS)
        options.setdefault(
            "engine_options", {"connect_args": {"application_name": application_name}}
        )
        store = SQLAlchemyStore(postgres_url, table_name=postgres_table, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def make_sqlite_store(tmp_path: Path) -> Iterator[MakeStore]:
    from watcher_auth.stores.sqlalchemy import SQLAlchemyStore

    stores: list[SQLAlchemyStore] = []

    def make(**options: Any) -> SQLAlchemyStore:
        options.setdefault("encryption_keys", KEYS)
        store = SQLAlchemyStore(f"sqlite:///{tmp_path / 'tokens.sqlite3'}", **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def make_django_db_store() -> MakeStore:
    """``make(**options)``: a DjangoModelStore on the default (SQLite) database."""
    from django_watcher_auth.stores import DjangoModelStore

    return lambda **options: DjangoModelStore(**options)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("django_db", marks=pytest.mark.django_db),
        pytest.param("django_cache", marks=pytest.mark.redis),
    ]
)
def make_store(request: pytest.FixtureRequest) -> MakeStore:
    """A store factory for each kind of store: memory, Redis, PostgreSQL, Django's two."""
    if request.param == "memory":
        shared = MemoryStore()
        return lambda **_options: shared
    factory: MakeStore = request.getfixturevalue(f"make_{request.param}_store")
    return factory


@pytest.fixture
def django_cache_prefix() -> Iterator[str]:
    """A key prefix of its own in Django's ``"redis"`` cache; its keys go afterwards."""
    import redis

    url = require_redis(DJANGO_REDIS_DB)
    prefix = f"watcher-security-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(url)
    for name in client.scan_iter(match=f"*{prefix}*"):
        client.delete(name)
    client.close()


@pytest.fixture
def make_django_cache_store(django_cache_prefix: str) -> Iterator[MakeStore]:
    """``make(**options)``: a DjangoCacheStore on Django's ``"redis"`` cache."""
    from django_watcher_auth.stores import DjangoCacheStore

    stores: list[DjangoCacheStore] = []

    def make(**options: Any) -> DjangoCacheStore:
        store = DjangoCacheStore(alias="redis", key_prefix=django_cache_prefix, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()  # its change watches, which would otherwise outlive the test


@pytest.fixture
def make_django_postgres_store() -> Iterator[MakeStore]:
    """``make(**options)``: a DjangoModelStore on Django's ``"postgres"`` alias.

    Tests using it carry ``django_db(databases=["postgres"], transaction=True)``.
    """
    from django_watcher_auth.stores import DjangoModelStore

    stores: list[DjangoModelStore] = []

    def make(**options: Any) -> DjangoModelStore:
        store = DjangoModelStore(using="postgres", **options)
        stores.append(store)
        return store

    yield make
    # A watch's LISTEN connection would keep the test database from being dropped.
    for store in stores:
        store.close()


# --- a lock holder that dies ---------------------------------------------------------------


def _hold_lock(make_store: MakeStore, key: StoreKey, ready: Any) -> None:
    store = make_store()  # after the fork: its own connections
    held = store.lock(key, timeout=5)
    held.__enter__()  # never left: the process dies holding the lock
    ready.set()
    time.sleep(60)
    held.__exit__(None, None, None)


KillLockHolder = Callable[..., None]


def _close_django_connections() -> None:
    """Close Django's connections before a fork, so the child never shares their sockets."""
    from django.conf import settings

    if settings.configured:
        from django.db import connections

        connections.close_all()


@pytest.fixture
def kill_lock_holder() -> KillLockHolder:
    """``kill(make_store, key, while_held=None)``: a forked worker takes ``key``'s lock, then
    ``while_held()`` runs here, then the worker is killed with SIGKILL."""

    def kill(
        make_store: MakeStore, key: StoreKey, while_held: Callable[[], None] | None = None
    ) -> None:
        _close_django_connections()
        ctx = multiprocessing.get_context("fork")
        ready = ctx.Event()
        worker = ctx.Process(target=_hold_lock, args=(make_store, key, ready), daemon=True)
        worker.start()
        try:
            assert ready.wait(10), "the worker did not take the lock"
            if while_held is not None:
                while_held()
        finally:
            os.kill(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]
            worker.join(10)
        assert worker.exitcode == -signal.SIGKILL

    return kill


# --- a private Redis server ----------------------------------------------------------------


class RedisServer:
    """A ``redis-server`` of the test's own on a free port, persisting every write to disk.

    The machine's shared Redis must never be restarted by a test; this one is.
    """

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # appendfsync always: every write is on disk before Redis answers it.
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn,
            ):
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A started private Redis server, stopped after the test."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis-server", "the redis-server binary is not installed")
    server = RedisServer(binary, tmp_path)
    server.start()
    yield server
    server.stop()


# --- the two frameworks' connect pages, driven like a browser -----------------------------


@dataclass
class Page:
    """One answer of a portal: status, ``Location`` (or ``None``), body text, headers."""

    status: int
    location: str | None
    text: str
    headers: dict[str, str]


class Site:
    """A portal (Flask or Django) on the emulator, with one signed-in portal user."""

    framework: str
    #: Where the connect page lives, as a browser would resolve ``Location`` against it.
    connect_url: str
    user_key: str

    def get(self, path: str, **headers: str) -> Page:
        raise NotImplementedError

    def connect(
        self, username: str = "alice", password: str = "secret", next: str | None = None
    ) -> Page:
        raise NotImplementedError

    def connect_v2(self, username: str, mode: str, secret: str, next: str | None = None) -> Page:
        """Submit the API v2 connect form (``mode`` ``"api_key"`` or ``"password"``)."""
        raise NotImplementedError

    def disconnect(self, next: str | None = None) -> Page:
        raise NotImplementedError

    def connect_page(self, next: str) -> Page:
        raise NotImplementedError

    def manager(self) -> Any:
        """The portal's TokenManager."""
        raise NotImplementedError

    def connected(self) -> bool:
        """Whether the signed-in user's Watcher account is connected."""
        return bool(self.manager().is_connected(self.user_key))


class FlaskSite(Site):
    framework = "flask"
    connect_url = "http://localhost/watcher/connect"

    def __init__(self, app: Any) -> None:
        self.app = app
        self.client = app.test_client()
        assert self.client.post("/sign-in/1").status_code == 200
        self.user_key = "1"

    @staticmethod
    def _page(response: Any) -> Page:
        return Page(
            response.status_code,
            response.headers.get("Location"),
            response.get_data(as_text=True),
            dict(response.headers),
        )

    def _csrf(self) -> str:
        html = self.client.get("/watcher/connect").get_data(as_text=True)
        match = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert match, html
        return match.group(1)

    def get(self, path: str, **headers: str) -> Page:
        return self._page(self.client.get(path, headers=headers))

    def connect(
        self, username: str = "alice", password: str = "secret", next: str | None = None
    ) -> Page:
        form = {"csrf_token": self._csrf(), "username": username, "password": password}
        if next is not None:
            form["next"] = next
        return self._page(self.client.post("/watcher/connect", data=form))

    def connect_v2(self, username: str, mode: str, secret: str, next: str | None = None) -> Page:
        form = {"csrf_token": self._csrf(), "username": username, "mode": mode, mode: secret}
        if next is not None:
            form["next"] = next
        return self._page(self.client.post("/watcher/connect/v2", data=form))

    def disconnect(self, next: str | None = None) -> Page:
        form = {"csrf_token": self._csrf()}
        if next is not None:
            form["next"] = next
        return self._page(self.client.post("/watcher/disconnect", data=form))

    def connect_page(self, next: str) -> Page:
        return self._page(self.client.get("/watcher/connect", query_string={"next": next}))

    def manager(self) -> Any:
        from flask_watcher_auth import get_state

        return get_state(self.app).manager


class DjangoSite(Site):
    framework = "django"
    connect_url = "http://testserver/watcher/connect/"

    def __init__(self, user: Any) -> None:
        from django.test import Client

        self.client = Client(enforce_csrf_checks=True, raise_request_exception=False)
        self.client.force_login(user)
        self.user_key = str(user.pk)

    @staticmethod
    def _page(response: Any) -> Page:
        return Page(
            response.status_code,
            response.get("Location"),
            response.content.decode(errors="replace"),
            dict(response.items()),
        )

    def _csrf(self) -> str:
        self.client.get("/watcher/connect/")
        return str(self.client.cookies["csrftoken"].value)

    def get(self, path: str, **headers: str) -> Page:
        return self._page(self.client.get(path, headers=headers))

    def connect(
        self, username: str = "alice", password: str = "secret", next: str | None = None
    ) -> Page:
        form = {"csrfmiddlewaretoken": self._csrf(), "username": username, "password": password}
        if next is not None:
            form["next"] = next
        return self._page(self.client.post("/watcher/connect/", form))

    def connect_v2(self, username: str, mode: str, secret: str, next: str | None = None) -> Page:
        form = {
            "csrfmiddlewaretoken": self._csrf(),
            "username": username,
            "mode": mode,
            mode: secret,
        }
        if next is not None:
            form["next"] = next
        return self._page(self.client.post("/watcher/connect/v2/", form))

    def disconnect(self, next: str | None = None) -> Page:
        form = {"csrfmiddlewaretoken": self._csrf()}
        if next is not None:
            form["next"] = next
        return self._page(self.client.post("/watcher/disconnect/", form))

    def connect_page(self, next: str) -> Page:
        return self._page(self.client.get("/watcher/connect/", {"next": next}))

    def manager(self) -> Any:
        from django_watcher_auth.conf import get_manager

        return get_manager()


class PortalUser:
    """A Flask-Login user."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(self, user_id: str) -> None:
        self.id = user_id

    def get_id(self) -> str:
        return self.id


def build_flask_portal(**config: Any) -> Any:
    """A Flask portal: Flask-Login sign-in, the extension, a view using Watcher, a broken view."""
    from flask import Flask
    from flask_login import LoginManager, login_user

    from flask_watcher_auth import WatcherAuth, current_watcher, watcher_required

    app = Flask("portal")
    app.config.update({"SECRET_KEY": "portal secret key", **config})
    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> PortalUser:
        return PortalUser(user_id)

    @app.post("/sign-in/<user_id>")
    def sign_in(user_id: str) -> str:
        login_user(PortalUser(user_id))
        return "signed in"

    WatcherAuth(app)

    @app.get("/cameras")
    @watcher_required
    def cameras() -> dict[str, Any]:
        return {"streams": [s["name"] for s in current_watcher.paginate("streams")]}

    @app.get("/boom")
    @watcher_required
    def boom() -> str:
        current_watcher.get("profile")
        raise RuntimeError("a bug in a portal view that used Watcher")

    return app


@pytest.fixture
def forms_emulator(watcher_emulator_factory: Any, fake_clock: Any) -> Any:
    return watcher_emulator_factory(clock=fake_clock, rotate_refresh_tokens=True)


@pytest.fixture
def flask_site(forms_emulator: Any, fake_clock: Any) -> FlaskSite:
    app = build_flask_portal(WATCHER_URL=forms_emulator.url, WATCHER_CLOCK=fake_clock)
    return FlaskSite(app)


@pytest.fixture
def django_site(forms_emulator: Any, fake_clock: Any, settings: Any, db: None) -> DjangoSite:
    # Tests reaching this through ``site`` carry the django_db mark: pytest-django sets the
    # test database up only for tests it sees asking for one.
    from django.contrib.auth import get_user_model

    settings.WATCHER_AUTH = {"URL": forms_emulator.url, "CLOCK": fake_clock, "STORE": "db"}
    user = get_user_model().objects.create_user(username="portal-user", password="portal-pw")
    return DjangoSite(user)


@pytest.fixture(params=["flask", pytest.param("django", marks=pytest.mark.django_db)])
def site(request: pytest.FixtureRequest) -> Site:
    """The Flask portal, then the Django one."""
    result: Site = request.getfixturevalue(f"{request.param}_site")
    return result


@pytest.fixture
def make_flask_portal() -> Callable[..., Any]:
    """``make(**config)``: a Flask portal (see :func:`build_flask_portal`)."""
    return build_flask_portal
