"""``flask watcher status`` for every store, and ``WATCHER_OPENTELEMETRY``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_watcher_auth import get_state
from tests.otel.telemetry import global_telemetry
from watcher_auth import ConfigurationError, StoreKey, TokenPair, TokenStore
from watcher_auth.crypto import generate_key
from watcher_auth.otel import user_key_hash
from watcher_auth.testing import FakeClock, WatcherEmulator

MakeApp = Callable[..., Flask]
SignIn = Callable[[FlaskClient, str], None]
Connect = Callable[..., TestResponse]


class UnlistableStore(TokenStore):
    """A store that keeps the storage contract and nothing more, as a third party may write."""

    def __init__(self) -> None:
        self.records: dict[StoreKey, TokenPair] = {}

    def load(self, key: StoreKey) -> TokenPair | None:
        return self.records.get(key)

    def save(self, key: StoreKey, pair: TokenPair) -> None:
        self.records[key] = pair

    def delete(self, key: StoreKey) -> None:
        self.records.pop(key, None)

    @contextmanager
    def lock(self, key: StoreKey, *, timeout: float) -> Iterator[None]:
        yield


def status(app: Flask) -> list[str]:
    result = app.test_cli_runner().invoke(args=["watcher", "status"])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def test_status_shows_api_expiry_last_refresh_and_connected_since_for_each_record(
    make_app: MakeApp,
    sqlite_store_config: dict[str, Any],
    sign_in: SignIn,
    connect: Connect,
    fake_clock: FakeClock,
    emulator: WatcherEmulator,
) -> None:
    app = make_app(**sqlite_store_config)
    client = app.test_client()
    sign_in(client, "1")
    connected_at = fake_clock()
    connect(client, "alice", "secret")
    fake_clock.advance(400)
    assert client.get("/api/cameras").status_code == 200  # refreshed on the way
    manager = get_state(app).manager
    manager.v2_login("1", username="bob", password="hunter2")
    pair = manager.tokens("1")
    assert pair is not None and pair.expires_at is not None
    assert pair.local_expires_at is not None

    lines = status(app)
    assert cells(lines[2]) == [
        "USER",
        "WATCHER USER",
        "API",
        "ACCESS TOKEN EXPIRES (WATCHER CLOCK)",
        "LAST REFRESH",
        "CONNECTED SINCE",
    ]
    rows = sorted(cells(line) for line in lines[3:5])
    assert rows[0] == [
        "1",
        "alice",
        "v3",
        f"{utc(pair.expires_at)} (in {int(pair.local_expires_at - fake_clock())} s)",
        utc(fake_clock()),
        utc(connected_at),
    ]
    assert rows[1] == ["1", "bob", "v2", "no expiry", "never", utc(fake_clock())]
    assert lines[5] == "2 connected account(s)."

    fake_clock.advance(600)
    (expired,) = (cells(line) for line in status(app) if line.startswith("1 ") and "v3" in line)
    assert re.fullmatch(rf"{utc(pair.expires_at)} \(expired 30[01] s ago\)", expired[3])
    output = "\n".join(status(app))
    assert not any(secret in output for secret in emulator.issued_secrets())


def test_a_record_the_current_keys_cannot_read_is_listed_without_failing(
    make_app: MakeApp,
    sqlite_store_config: dict[str, Any],
    sign_in: SignIn,
    connect: Connect,
) -> None:
    before = make_app(**sqlite_store_config, WATCHER_ENCRYPTION_KEYS=[generate_key()])
    for user_id, username, password in (("1", "alice", "secret"), ("2", "bob", "hunter2")):
        client = before.test_client()
        sign_in(client, user_id)
        connect(client, username, password)
    after = make_app(**sqlite_store_config, WATCHER_ENCRYPTION_KEYS=[generate_key()])
    lines = status(after)
    assert sorted(cells(line) for line in lines[3:5]) == [
        ["1", "?", "v3", "cannot be read (needs reconnect)", "-", "-"],
        ["2", "?", "v3", "cannot be read (needs reconnect)", "-", "-"],
    ]


def test_status_says_plainly_that_a_store_cannot_list_its_records(
    make_app: MakeApp, sign_in: SignIn, connect: Connect
) -> None:
    app = make_app(WATCHER_STORE=UnlistableStore())
    client = app.test_client()
    sign_in(client, "1")
    connect(client, "alice", "secret")
    lines = status(app)
    assert lines[2:] == [
        "The UnlistableStore store cannot list its records, so its connected accounts cannot "
        "be shown here."
    ]


def test_the_opentelemetry_setting_instruments_the_manager(
    make_app: MakeApp, sign_in: SignIn, connect: Connect, fake_clock: FakeClock
) -> None:
    telemetry = global_telemetry()
    app = make_app(WATCHER_OPENTELEMETRY=True)
    client = app.test_client()
    sign_in(client, "1")
    connect(client, "alice", "secret")
    fake_clock.advance(400)
    assert client.get("/api/cameras").status_code == 200
    server = get_state(app).manager.server
    assert telemetry.counts(server) == {
        "watcher_auth.logins": 1,
        "watcher_auth.login.duration": 1,
        "watcher_auth.refreshes": 1,
        "watcher_auth.refresh.duration": 1,
    }
    (login,) = telemetry.points(server)["watcher_auth.logins"]
    assert login.attributes["watcher.user_key_hash"] == user_key_hash("1")
    assert sorted(span.name for span in telemetry.spans(server)) == [
        "watcher_auth.login",
        "watcher_auth.refresh",
    ]


def test_the_user_key_can_be_left_out_of_every_attribute(
    make_app: MakeApp, sign_in: SignIn, connect: Connect
) -> None:
    telemetry = global_telemetry()
    app = make_app(WATCHER_OPENTELEMETRY="omit")
    client = app.test_client()
    sign_in(client, "1")
    connect(client, "alice", "secret")
    server = get_state(app).manager.server
    (login,) = telemetry.points(server)["watcher_auth.logins"]
    assert dict(login.attributes) == {"watcher.server": server, "watcher.api": "v3"}


def test_without_the_setting_nothing_is_recorded(
    app: Flask, sign_in: SignIn, connect: Connect
) -> None:
    telemetry = global_telemetry()
    client = app.test_client()
    sign_in(client, "1")
    connect(client, "alice", "secret")
    assert telemetry.counts(get_state(app).manager.server) == {}


def test_a_wrong_opentelemetry_setting_fails_at_start_up(make_app: MakeApp) -> None:
    with pytest.raises(ConfigurationError, match="WATCHER_OPENTELEMETRY must be True, False"):
        make_app(WATCHER_OPENTELEMETRY="on")
