"""Setting the extension up: config defaults and checks, several apps, stores, identity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, session
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_watcher_auth import CONFIG_DEFAULTS, WatcherAuth, WatcherState, get_state
from watcher_auth import ConfigurationError, MemoryStore, StoreKey
from watcher_auth.crypto import TokenCipher
from watcher_auth.stores.redis import RedisStore
from watcher_auth.stores.sqlalchemy import SQLAlchemyStore
from watcher_auth.testing import FakeClock, WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory

MakeApp = Callable[..., Flask]
SignIn = Callable[[FlaskClient, str], None]
Connect = Callable[..., TestResponse]
SECRET_KEY = "portal secret key for tests"


def bare_app(**config: Any) -> Flask:
    app = Flask("bare")
    app.config.update(config)
    return app


def test_every_default_is_set_in_the_apps_config(make_app: MakeApp) -> None:
    app = make_app()
    for name, default in CONFIG_DEFAULTS.items():
        assert name in app.config
        if name not in ("WATCHER_URL", "WATCHER_CLOCK"):
            assert app.config[name] == default
    assert isinstance(app.extensions["watcher_auth"], WatcherState)


def test_a_missing_watcher_url_fails_at_start_up() -> None:
    with pytest.raises(ConfigurationError, match="WATCHER_URL is not set"):
        WatcherAuth(bare_app())


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"WATCHER_URL": "ftp://watcher.example.com"}, "WATCHER_URL"),
        ({"WATCHER_URL": "https://user:pw@watcher.example.com"}, "WATCHER_URL"),
        ({"WATCHER_STORE": "no-such-store"}, "WATCHER_STORE: unknown token store"),
        ({"WATCHER_STORE": "portal.stores:Missing"}, "WATCHER_STORE"),
        ({"WATCHER_STORE": 42}, "WATCHER_STORE"),
        ({"WATCHER_STORE_OPTIONS": ["prefix"]}, "WATCHER_STORE_OPTIONS"),
        ({"WATCHER_STORE_OPTIONS": {"colour": "blue"}}, "WATCHER_STORE_OPTIONS"),
        ({"WATCHER_TIMEOUT": 0}, "WATCHER_TIMEOUT"),
        ({"WATCHER_TIMEOUT": "10"}, "WATCHER_TIMEOUT"),
        ({"WATCHER_LOCK_TIMEOUT": -1}, "WATCHER_LOCK_TIMEOUT"),
        ({"WATCHER_REFRESH_MARGIN": -5}, "WATCHER_REFRESH_MARGIN"),
        ({"WATCHER_LOCAL_CACHE_SIZE": -1}, "WATCHER_LOCAL_CACHE_SIZE"),
        ({"WATCHER_VERIFY_TLS": 1}, "WATCHER_VERIFY_TLS"),
        ({"WATCHER_ENCRYPTION_KEYS": [1, 2]}, "WATCHER_ENCRYPTION_KEYS"),
        ({"WATCHER_SERVICE_USERNAME": "svc"}, "WATCHER_SERVICE_PASSWORD"),
        ({"WATCHER_URL_PREFIX": "watcher"}, "WATCHER_URL_PREFIX"),
        ({"WATCHER_CLOCK": 5}, "WATCHER_CLOCK"),
        ({"WATCHER_STORE": "sqlalchemy"}, "WATCHER_SQLALCHEMY_URL"),
    ],
)
def test_a_wrong_setting_fails_at_start_up_naming_the_key(
    config: dict[str, Any], named: str
) -> None:
    settings = {"WATCHER_URL": "https://watcher.example.com", "SECRET_KEY": SECRET_KEY, **config}
    with pytest.raises(ConfigurationError, match=named):
        WatcherAuth(bare_app(**settings))


def test_an_encrypted_store_needs_a_key(redis_store_config: dict[str, Any]) -> None:
    app = bare_app(WATCHER_URL="https://watcher.example.com", **redis_store_config)
    with pytest.raises(ConfigurationError, match="WATCHER_ENCRYPTION_KEYS is empty"):
        WatcherAuth(app)


def test_setting_up_the_same_app_twice_is_an_error(app: Flask) -> None:
    with pytest.raises(ConfigurationError, match="already set up"):
        WatcherAuth(app)


def test_one_extension_serves_two_apps_each_with_its_own_watcher(
    watcher_emulator_factory: EmulatorFactory,
    fake_clock: FakeClock,
    make_portal: Callable[..., Flask],
    sign_in: SignIn,
    connect: Connect,
    csrf_token: Callable[..., str],
) -> None:
    north = watcher_emulator_factory(clock=fake_clock)
    south = watcher_emulator_factory(clock=fake_clock)
    south.add_user("alice", "southern secret", streams=1)
    extension = WatcherAuth()
    north_app = make_portal(north.url, extension=extension)
    south_app = make_portal(south.url, extension=extension, WATCHER_URL_PREFIX="/south")

    north_client, south_client = north_app.test_client(), south_app.test_client()
    sign_in(north_client, "1")
    sign_in(south_client, "1")
    connect(north_client, "alice", "secret")
    assert south_client.get("/api/cameras").status_code == 302  # each app has its own store
    assert south_client.get("/south/connect").status_code == 200
    response = south_client.post(
        "/south/connect",
        data={
            "username": "alice",
            "password": "southern secret",
            "csrf_token": csrf_token(south_client, "/south/connect"),
        },
    )
    assert response.status_code == 302

    assert len(north_client.get("/api/cameras").json["streams"]) == 3
    assert len(south_client.get("/api/cameras").json["streams"]) == 1
    assert (north.stats.password_logins, south.stats.password_logins) == (1, 1)
    with north_app.app_context():
        assert extension.manager.server == north.url
    with south_app.app_context():
        assert extension.manager.server == south.url


def test_the_redis_store_encrypts_with_the_secret_key(
    make_app: MakeApp,
    redis_store_config: dict[str, Any],
    sign_in: SignIn,
    connect: Connect,
) -> None:
    app = make_app(**redis_store_config)
    store = get_state(app).store
    assert isinstance(store, RedisStore)
    client = app.test_client()
    sign_in(client, "1")
    connect(client)
    prefix = redis_store_config["WATCHER_STORE_OPTIONS"]["prefix"]
    names = [n.decode() for n in store.client.scan_iter(match=prefix + "pair:*")]
    assert names == [f"{prefix}pair:v3|{get_state(app).manager.server}|1"]
    raw = store.client.get(names[0])
    pair = TokenCipher([SECRET_KEY]).loads(raw, StoreKey(get_state(app).manager.server, "1"))
    assert pair.username == "alice" and pair.access_token.encode() not in raw


def test_rotated_encryption_keys_still_read_old_records(
    make_app: MakeApp,
    redis_store_config: dict[str, Any],
    sign_in: SignIn,
    connect: Connect,
) -> None:
    old = make_app(WATCHER_ENCRYPTION_KEYS=["old key"], **redis_store_config).test_client()
    sign_in(old, "1")
    connect(old)
    new = make_app(
        WATCHER_ENCRYPTION_KEYS=["new key", "old key"], **redis_store_config
    ).test_client()
    sign_in(new, "1")
    assert new.get("/whoami").json == {"name": "alice"}


def test_the_sqlalchemy_store_defaults_to_the_apps_database(
    make_app: MakeApp, sqlite_store_config: dict[str, Any]
) -> None:
    store = get_state(make_app(**sqlite_store_config)).store
    assert isinstance(store, SQLAlchemyStore)
    assert str(store.engine.url) == sqlite_store_config["SQLALCHEMY_DATABASE_URI"]


def test_a_store_given_to_the_extension_is_used(emulator: WatcherEmulator) -> None:
    store = MemoryStore()
    app = bare_app(WATCHER_URL=emulator.url, SECRET_KEY=SECRET_KEY)
    WatcherAuth(app, store=store)
    assert get_state(app).store is store
    other = bare_app(WATCHER_URL=emulator.url, WATCHER_STORE=store)
    WatcherAuth(other)
    assert get_state(other).store is store


def test_a_user_key_loader_replaces_flask_login(
    make_app: MakeApp, sign_in: SignIn, connect: Connect
) -> None:
    app = make_app()
    extension: WatcherAuth = get_state(app).extension

    @extension.user_key_loader
    def portal_account() -> str | None:
        return session.get("account")

    client = app.test_client()
    sign_in(client, "1")  # Flask-Login's user is ignored now
    assert client.get("/watcher/connect").location.startswith("/sign-in")
    with client.session_transaction() as browser_session:
        browser_session["account"] = "acme-42"
    connect(client)
    with app.app_context():
        assert extension.manager.tokens("acme-42") is not None
        assert extension.manager.tokens("1") is None


def test_a_service_account_serves_users_who_connected_none(
    make_app: MakeApp,
    emulator: WatcherEmulator,
    sign_in: SignIn,
    connect: Connect,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHER_SERVICE_USERNAME", "bob")
    monkeypatch.setenv("WATCHER_SERVICE_PASSWORD", "hunter2")
    app = make_app()
    first, third = app.test_client(), app.test_client()
    sign_in(first, "1")
    sign_in(third, "3")
    connect(first, "alice", "secret")

    assert first.get("/whoami").json == {"name": "alice"}
    for _ in range(3):
        assert third.get("/whoami").json == {"name": "bob"}
        assert third.get("/api/cameras").status_code == 200
    assert app.test_client().get("/whoami").status_code == 302  # anonymous: no service account
    assert emulator.stats.password_logins == 2  # alice once, the service account once
    assert "WATCHER_SERVICE_PASSWORD" not in repr(get_state(app).settings)
    assert "hunter2" not in repr(get_state(app).settings)


def test_the_settings_repr_shows_no_secret(make_app: MakeApp) -> None:
    app = make_app(
        WATCHER_ENCRYPTION_KEYS=["key-that-must-stay-hidden"],
        WATCHER_REDIS_URL="redis://:redis-password@127.0.0.1:6379/0",
        WATCHER_SERVICE_USERNAME="svc",
        WATCHER_SERVICE_PASSWORD="service-password",
    )
    shown = repr(get_state(app).settings) + repr(get_state(app))
    for secret in ("key-that-must-stay-hidden", "redis-password", "service-password", SECRET_KEY):
        assert secret not in shown
