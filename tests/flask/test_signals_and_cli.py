"""Blinker signals, and the ``flask watcher`` commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_watcher_auth import (
    get_state,
    watcher_connected,
    watcher_disconnected,
    watcher_reauthentication_required,
    watcher_tokens_refreshed,
)
from watcher_auth.testing import FakeClock, WatcherEmulator

MakeApp = Callable[..., Flask]
SignIn = Callable[[FlaskClient, str], None]
Connect = Callable[..., TestResponse]
CsrfToken = Callable[..., str]


@pytest.fixture
def received(app: Flask) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every signal sent by ``app``: (signal name, keyword arguments)."""
    events: list[tuple[str, dict[str, Any]]] = []
    signals = (
        watcher_connected,
        watcher_tokens_refreshed,
        watcher_reauthentication_required,
        watcher_disconnected,
    )
    receivers = []
    for signal in signals:

        def receiver(sender: Flask, _name: str = str(signal.name), **kwargs: Any) -> None:
            events.append((_name, kwargs))

        signal.connect(receiver, sender=app)
        receivers.append((signal, receiver))
    yield events
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def test_each_credential_event_sends_its_signal_with_the_user_key(
    app: Flask,
    client: FlaskClient,
    received: list[tuple[str, dict[str, Any]]],
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    sign_in: SignIn,
    connect: Connect,
    csrf_token: CsrfToken,
) -> None:
    sign_in(client, "1")
    connect(client)
    fake_clock.advance(300)
    client.get("/cameras")
    emulator.revoke("alice")
    client.get("/cameras")
    connect(client)
    client.post("/watcher/disconnect", data={"csrf_token": csrf_token(client)})

    about_alice = {"user_key": "1", "username": "alice", "server": emulator.url, "api": "v3"}
    assert received == [
        ("watcher-connected", about_alice),
        ("watcher-tokens-refreshed", about_alice),
        ("watcher-reauthentication-required", about_alice),
        ("watcher-connected", about_alice),
        ("watcher-disconnected", about_alice),
    ]


def test_signals_of_another_app_are_not_received(
    make_app: MakeApp,
    received: list[tuple[str, dict[str, Any]]],
    sign_in: SignIn,
    connect: Connect,
) -> None:
    other = make_app().test_client()
    sign_in(other, "1")
    connect(other)
    assert received == []


def test_status_lists_the_connected_accounts(
    app: Flask, sign_in: SignIn, connect: Connect, fake_clock: FakeClock
) -> None:
    runner = app.test_cli_runner()
    empty = runner.invoke(args=["watcher", "status"])
    assert empty.exit_code == 0
    assert "No connected Watcher accounts" in empty.output

    for user_id, username, password in (("1", "alice", "secret"), ("2", "bob", "hunter2")):
        client = app.test_client()
        sign_in(client, user_id)
        connect(client, username, password)
    result = runner.invoke(args=["watcher", "status"])
    assert result.exit_code == 0, result.output
    rows = [line.split()[:2] for line in result.output.splitlines()[3:5]]
    assert rows == [["1", "alice"], ["2", "bob"]]
    assert "2 connected account(s)." in result.output
    assert "eyJ" not in result.output  # no token, not even its start


def test_disconnect_forgets_a_portal_users_account(
    app: Flask, sign_in: SignIn, connect: Connect
) -> None:
    client = app.test_client()
    sign_in(client, "1")
    connect(client)
    runner = app.test_cli_runner()

    result = runner.invoke(args=["watcher", "disconnect", "1"])
    assert result.exit_code == 0
    assert "Disconnected the Watcher account of portal user '1'" in result.output
    with app.app_context():
        assert get_state().manager.tokens("1") is None
    again = runner.invoke(args=["watcher", "disconnect", "1"])
    assert again.exit_code == 1
    assert "has no connected Watcher account" in again.output


def test_check_reports_a_reachable_watcher_and_tries_a_login(
    app: Flask, emulator: WatcherEmulator
) -> None:
    runner = app.test_cli_runner()
    plain = runner.invoke(args=["watcher", "check"])
    assert plain.exit_code == 0, plain.output
    assert f"Watcher at {emulator.url} answers (HTTP 401 without a token)" in plain.output

    login = runner.invoke(args=["watcher", "check", "--username", "alice"], input="secret\n")
    assert login.exit_code == 0, login.output
    assert "Logged in as 'alice'; the access token lasts 300 s" in login.output
    assert "secret" not in login.output

    wrong = runner.invoke(args=["watcher", "check", "--username", "alice"], input="nope\n")
    assert wrong.exit_code == 1
    assert "login as 'alice' failed" in wrong.output
    assert (emulator.stats.password_logins, emulator.stats.failed_logins) == (1, 1)
    with app.app_context():
        assert list(get_state().store.iter_keys()) == []


def test_check_fails_when_watcher_cannot_be_reached(make_app: MakeApp) -> None:
    # Nothing listens on port 1 of loopback: a real refused connection.
    app = make_app(WATCHER_URL="http://127.0.0.1:1")
    result = app.test_cli_runner().invoke(args=["watcher", "check"])
    assert result.exit_code == 1
    assert "Watcher at http://127.0.0.1:1 cannot be reached (ConnectionError)" in result.output
