"""Async views with ``current_watcher_async``: connect, call, expiry and refresh, revocation,
Watcher down, users kept apart, and each request's client closed on its own event loop."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from watcher_auth.testing import FakeClock, WatcherEmulator

JSON = {"Accept": "application/json"}
SignIn = Callable[[FlaskClient, str], None]
Connect = Callable[..., TestResponse]


def test_an_async_view_gets_the_users_streams_and_closes_its_client(
    app: Flask, client: FlaskClient, emulator: WatcherEmulator, sign_in: SignIn, connect: Connect
) -> None:
    sign_in(client, "1")
    connect(client)
    for _ in range(3):
        answer = client.get("/async/cameras")
        assert answer.status_code == 200
        assert answer.json == {"streams": ["alice-cam-0", "alice-cam-1", "alice-cam-2"]}
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.calls) == (1, 0, 3)
    clients = app.config["ASYNC_CLIENTS"]
    assert len(clients) == 3 and all(c.is_closed for c in clients)


def test_an_expired_token_is_refreshed_once_for_async_and_sync_views(
    client: FlaskClient,
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    sign_in: SignIn,
    connect: Connect,
) -> None:
    emulator.configure(rotate_refresh_tokens=True)
    sign_in(client, "1")
    connect(client)
    fake_clock.advance(301)
    assert client.get("/async/whoami").json == {"name": "alice"}
    assert client.get("/api/cameras").status_code == 200  # the sync manager reads the new pair
    assert client.get("/async/cameras").status_code == 200
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 1, 0)


def test_revoked_credentials_send_async_pages_to_connect_and_json_clients_a_401(
    client: FlaskClient,
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    sign_in: SignIn,
    connect: Connect,
) -> None:
    sign_in(client, "1")
    connect(client)
    emulator.revoke("alice")
    emulator.revoke_access_tokens("alice")
    api = client.get("/async/whoami", headers=JSON)
    assert api.status_code == 401
    assert api.json is not None and api.json["error"] == "watcher_reauthentication_required"
    page = client.get("/async/cameras")
    assert page.status_code == 302
    assert page.headers["Location"] == "/watcher/connect?next=/async/cameras"


def test_watcher_down_answers_503_with_retry_after(
    client: FlaskClient, emulator: WatcherEmulator, sign_in: SignIn, connect: Connect
) -> None:
    sign_in(client, "1")
    connect(client)
    emulator.fail_next("call", mode="503")
    answer = client.get("/async/cameras", headers=JSON)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "30"
    emulator.stop()
    answer = client.get("/async/whoami", headers=JSON)
    assert answer.status_code == 503
    assert answer.json is not None and answer.json["error"] == "watcher_unavailable"


def test_raise_for_status_in_an_async_view_follows_the_policy(
    client: FlaskClient, sign_in: SignIn, connect: Connect
) -> None:
    sign_in(client, "1")
    connect(client)
    answer = client.get("/async/checked", headers=JSON)
    assert answer.status_code == 404
    assert answer.json is not None and answer.json["error"] == "watcher_not_found"


def test_two_users_never_see_each_others_streams(
    app: Flask, emulator: WatcherEmulator, sign_in: SignIn, connect: Connect
) -> None:
    clients = [app.test_client(), app.test_client()]
    for user, (client, (username, password)) in enumerate(
        zip(clients, [("alice", "secret"), ("bob", "hunter2")], strict=True), start=1
    ):
        sign_in(client, str(user))
        connect(client, username, password)

    def visit(turn: int) -> tuple[str, list[str]]:
        owner = ("alice", "bob")[turn % 2]
        return owner, clients[turn % 2].get("/async/cameras").json["streams"]  # type: ignore[index]

    # Separate threads, as a threaded server runs them: each async view on its own loop.
    with ThreadPoolExecutor(4) as pool:
        seen = list(pool.map(visit, range(12)))
    for owner, names in seen:
        assert names and all(name.startswith(f"{owner}-") for name in names)
    assert emulator.stats.calls_by_user == {"alice": 6, "bob": 6}
