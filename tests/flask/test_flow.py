"""The whole flow a portal user goes through, with every store the extension can name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from watcher_auth.testing import FakeClock, WatcherEmulator

MakeApp = Callable[..., Flask]
SignIn = Callable[[FlaskClient, str], None]
Connect = Callable[..., TestResponse]
JSON = {"Accept": "application/json"}


def streams(response: TestResponse) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def test_connect_use_refresh_revoke_and_reconnect(
    make_app: MakeApp,
    store_config: dict[str, Any],
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    sign_in: SignIn,
    connect: Connect,
) -> None:
    client = make_app(**store_config).test_client()
    sign_in(client, "1")

    first_visit = client.get("/cameras")
    assert first_visit.status_code == 302
    assert first_visit.location == "/watcher/connect?next=/cameras"

    connected = connect(client, "alice", "secret", next="/cameras")
    assert connected.status_code == 302 and connected.location == "/cameras"
    assert "<li>alice-cam-0</li>" in streams(client.get("/cameras"))
    assert "<li>alice-cam-0</li>" in streams(client.get("/cameras"))
    assert (emulator.stats.password_logins, emulator.stats.refreshes) == (1, 0)

    fake_clock.advance(300)
    assert "alice-cam-2" in streams(client.get("/cameras"))
    assert (emulator.stats.password_logins, emulator.stats.refreshes) == (1, 1)

    emulator.revoke("alice")
    revoked = client.get("/cameras")
    assert revoked.status_code == 302
    assert revoked.location == "/watcher/connect?next=/cameras"
    assert emulator.stats.rejected_refreshes == 1
    assert client.get("/watcher/status", headers=JSON).json == {
        "connected": False,
        "needs_reconnect": False,
        "connect_url": "/watcher/connect",
        "username": None,
        "connected_at": None,
        "refreshed_at": None,
        "expires_at": None,
    }
    reconnect_page = client.get(revoked.location).get_data(as_text=True)
    assert "Connect your Watcher account again" in reconnect_page

    connect(client, "alice", "secret", next="/cameras")
    assert "alice-cam-1" in streams(client.get("/cameras"))
    assert (emulator.stats.password_logins, emulator.stats.refreshes) == (2, 1)


def test_json_requests_get_a_401_with_the_connect_url(
    app: Flask, client: FlaskClient, emulator: WatcherEmulator, sign_in: SignIn, connect: Connect
) -> None:
    sign_in(client, "1")
    expected = {
        "error": "watcher_not_connected",
        "reason": "not_connected",
        "message": "Connect your Watcher account to continue.",
        "connect_url": "/watcher/connect?next=/api/cameras",
    }
    not_connected = client.get("/api/cameras", headers=JSON)
    assert (not_connected.status_code, not_connected.json) == (401, expected)

    connect(client)
    assert client.get("/api/cameras", headers=JSON).json == {
        "streams": ["alice-cam-0", "alice-cam-1", "alice-cam-2"]
    }
    emulator.revoke("alice")
    xhr = client.get("/api/cameras", headers={"X-Requested-With": "XMLHttpRequest"})
    assert xhr.status_code == 401
    assert (xhr.json["error"], xhr.json["reason"]) == (
        "watcher_reauthentication_required",
        "reauthentication_required",
    )
    assert xhr.json["connect_url"] == expected["connect_url"]


def test_an_unreachable_watcher_answers_503_and_keeps_the_account(
    store_config: dict[str, Any],
    make_app: MakeApp,
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    sign_in: SignIn,
    connect: Connect,
) -> None:
    client = make_app(**store_config).test_client()
    sign_in(client, "1")
    connect(client)
    fake_clock.advance(300)

    emulator.fail_next("refresh", mode="503")
    page = client.get("/cameras")
    assert page.status_code == 503
    assert "Watcher cannot be reached right now" in page.get_data(as_text=True)
    emulator.fail_next("refresh", mode="drop")
    api = client.get("/api/cameras", headers=JSON)
    assert (api.status_code, api.json["error"]) == (503, "watcher_unavailable")

    assert "alice-cam-0" in streams(client.get("/cameras"))
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 1, 0)


def test_a_call_cut_off_by_watcher_answers_503(
    app: Flask, client: FlaskClient, emulator: WatcherEmulator, sign_in: SignIn, connect: Connect
) -> None:
    sign_in(client, "1")
    connect(client)
    emulator.fail_next("call", mode="drop")
    assert client.get("/cameras").status_code == 503
    assert client.get("/whoami").json == {"name": "alice"}


def test_two_portal_users_never_see_each_others_watcher_account(
    app: Flask, emulator: WatcherEmulator, sign_in: SignIn, connect: Connect
) -> None:
    first, second = app.test_client(), app.test_client()
    sign_in(first, "1")
    sign_in(second, "2")
    connect(first, "alice", "secret")

    assert second.get("/api/cameras", headers=JSON).status_code == 401
    assert second.get("/whoami", headers=JSON).status_code == 401

    connect(second, "bob", "hunter2")
    for _ in range(2):
        assert first.get("/whoami").json == {"name": "alice"}
        assert second.get("/whoami").json == {"name": "bob"}
        assert second.get("/api/cameras").json == {
            "streams": ["bob-cam-0", "bob-cam-1", "bob-cam-2"]
        }
    assert emulator.stats.calls_by_user == {"alice": 2, "bob": 4}


def test_a_session_kept_on_g_is_not_reused_by_the_next_request_in_the_same_app_context(
    make_app: MakeApp, emulator: WatcherEmulator, connect: Connect
) -> None:
    app = make_app()
    extension = app.extensions["watcher_auth"].extension

    # The user key comes from the portal's own session here: Flask-Login caches its user on g.
    @extension.user_key_loader
    def user_key() -> str | None:
        from flask import session

        return session.get("portal_user")

    alice, bob = app.test_client(), app.test_client()
    with alice.session_transaction() as session:
        session["portal_user"] = "1"
    with bob.session_transaction() as session:
        session["portal_user"] = "2"
    connect(alice, "alice", "secret")
    connect(bob, "bob", "hunter2")

    with app.app_context():
        assert alice.get("/whoami").json == {"name": "alice"}
        assert bob.get("/whoami").json == {"name": "bob"}
        assert alice.get("/whoami").json == {"name": "alice"}


def test_an_anonymous_visitor_is_sent_to_connect_and_from_there_to_sign_in(
    client: FlaskClient, emulator: WatcherEmulator
) -> None:
    visit = client.get("/cameras")
    assert visit.location == "/watcher/connect?next=/cameras"
    connect_page = client.get(visit.location)
    assert connect_page.status_code == 302
    assert connect_page.location.startswith("/sign-in?next=")
    assert client.get("/api/cameras", headers=JSON).status_code == 401
    assert emulator.stats.calls == 0
