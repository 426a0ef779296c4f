"""The blueprint's pages: the connect form's checks, disconnect, status, templates, CSRF."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_watcher_auth import safe_next_url
from watcher_auth.testing import WatcherEmulator

MakeApp = Callable[..., Flask]
SignIn = Callable[[FlaskClient, str], None]
Connect = Callable[..., TestResponse]
CsrfToken = Callable[[FlaskClient], str]
JSON = {"Accept": "application/json"}


@pytest.fixture
def user(client: FlaskClient, sign_in: SignIn) -> FlaskClient:
    """The test client, with portal user 1 signed in."""
    sign_in(client, "1")
    return client


def test_the_connect_form_has_the_fields_and_a_csrf_token(user: FlaskClient) -> None:
    page = user.get("/watcher/connect?next=/cameras")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for field in ('name="username"', 'name="password"', 'name="next" value="/cameras"'):
        assert field in html
    assert 'name="csrf_token" value="' in html


def test_a_connect_post_without_the_csrf_token_is_rejected_before_any_login(
    user: FlaskClient, emulator: WatcherEmulator
) -> None:
    response = user.post("/watcher/connect", data={"username": "alice", "password": "secret"})
    assert response.status_code == 400
    wrong = user.post(
        "/watcher/connect",
        data={"username": "alice", "password": "secret", "csrf_token": "forged"},
    )
    assert wrong.status_code == 400
    assert emulator.stats.password_logins + emulator.stats.failed_logins == 0


def test_without_flask_wtf_a_session_token_protects_the_forms(
    make_app: MakeApp,
    monkeypatch: pytest.MonkeyPatch,
    sign_in: SignIn,
    connect: Connect,
    emulator: WatcherEmulator,
) -> None:
    # Flask-WTF is installed here; hiding its module is the only way to have a real app
    # built as it is on a machine without it.
    monkeypatch.setitem(sys.modules, "flask_wtf.csrf", None)
    client = make_app().test_client()
    sign_in(client, "1")
    bare = client.post("/watcher/connect", data={"username": "alice", "password": "secret"})
    assert bare.status_code == 400
    assert connect(client).status_code == 302
    assert emulator.stats.password_logins == 1
    with client.session_transaction() as session:
        assert "_watcher_auth_csrf" in session


def test_a_wrong_password_shows_the_form_again_and_stores_nothing(
    user: FlaskClient, connect: Connect, emulator: WatcherEmulator
) -> None:
    response = connect(user, "alice", "wrong password")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Watcher did not accept this username and password." in html
    assert 'value="alice"' in html and "wrong password" not in html
    assert user.get("/watcher/status", headers=JSON).json["connected"] is False
    assert (emulator.stats.failed_logins, emulator.stats.password_logins) == (1, 0)


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("", "secret"),
        ("alice", ""),
        ("   ", "secret"),
        ("a" * 151, "secret"),
        ("alice", "p" * 1025),
        ("ali\x00ce", "secret"),
        ("alice\n", "secret\x1b[2J"),
        ("ali:ce", "secret"),
        ("alice\u202e", "secret"),
    ],
)
def test_empty_huge_or_control_character_input_is_refused_without_asking_watcher(
    user: FlaskClient, connect: Connect, emulator: WatcherEmulator, username: str, password: str
) -> None:
    response = connect(user, username, password)
    assert response.status_code == 400
    assert 'class="watcher-error"' in response.get_data(as_text=True)
    assert emulator.stats.password_logins + emulator.stats.failed_logins == 0


@pytest.mark.parametrize(
    "next_url",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/ok\x00",
        "/" + "a" * 3000,
    ],
)
def test_an_unsafe_next_is_ignored_after_connecting(
    user: FlaskClient, connect: Connect, next_url: str
) -> None:
    response = connect(user, next=next_url)
    assert response.status_code == 302
    assert response.location == "/watcher/status"


def test_a_safe_next_is_followed(user: FlaskClient, connect: Connect) -> None:
    assert connect(user, next="/cameras?page=2").location == "/cameras?page=2"
    assert safe_next_url("/a/b?c=d#e") == "/a/b?c=d#e"
    assert safe_next_url("/%2F%2Fevil.example") == "/%2F%2Fevil.example"


def test_the_password_never_reaches_the_logs_or_the_page(
    user: FlaskClient, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    failed = connect(user, "alice", "wrong-Pa55word")
    done = connect(user, "alice", "secret")
    assert failed.status_code == 400 and done.status_code == 302
    assert "wrong-Pa55word" not in caplog.text + failed.get_data(as_text=True)
    assert "secret" not in caplog.text
    assert "alice" in caplog.text  # the connect itself was logged


def test_a_watcher_outage_during_connect_shows_an_error(
    user: FlaskClient, connect: Connect, emulator: WatcherEmulator
) -> None:
    emulator.fail_next("login", mode="502_html")
    response = connect(user)
    assert response.status_code == 503
    assert "Watcher cannot be reached right now" in response.get_data(as_text=True)
    assert user.get("/watcher/status", headers=JSON).json["connected"] is False


def test_disconnect_is_a_protected_post_that_forgets_the_tokens(
    user: FlaskClient, connect: Connect, csrf_token: CsrfToken
) -> None:
    connect(user)
    assert user.get("/watcher/disconnect").status_code == 405
    assert user.post("/watcher/disconnect").status_code == 400
    assert user.get("/watcher/status", headers=JSON).json["connected"] is True

    response = user.post(
        "/watcher/disconnect", data={"csrf_token": csrf_token(user), "next": "/cameras"}
    )
    assert (response.status_code, response.location) == (302, "/cameras")
    assert user.get("/watcher/status", headers=JSON).json["connected"] is False


def test_the_status_page_shows_the_connected_account(user: FlaskClient, connect: Connect) -> None:
    assert "No Watcher account is connected." in user.get("/watcher/status").get_data(as_text=True)
    connect(user)
    html = user.get("/watcher/status").get_data(as_text=True)
    assert '<strong class="watcher-username">alice</strong>' in html
    assert "Your Watcher account is connected." in html  # the flashed message
    status = user.get("/watcher/status", headers=JSON).json
    assert status["connected"] is True and status["username"] == "alice"
    assert status["expires_at"].endswith("+00:00")


def test_the_app_can_override_the_templates(
    make_app: MakeApp, tmp_path: Path, sign_in: SignIn
) -> None:
    (tmp_path / "watcher_auth").mkdir()
    (tmp_path / "watcher_auth" / "connect.html").write_text(
        "Portal-styled connect form {{ watcher_csrf_token() }}"
    )
    client = make_app(template_folder=str(tmp_path)).test_client()
    sign_in(client, "1")
    assert client.get("/watcher/connect").get_data(as_text=True).startswith("Portal-styled")


def test_the_blueprint_sits_under_the_configured_prefix(make_app: MakeApp) -> None:
    app = make_app(WATCHER_URL_PREFIX="/accounts/watcher")
    with app.test_request_context():
        from flask import url_for

        assert url_for("watcher_auth.connect") == "/accounts/watcher/connect"
        assert url_for("watcher_auth.disconnect") == "/accounts/watcher/disconnect"
        assert url_for("watcher_auth.status") == "/accounts/watcher/status"


def test_pages_for_an_anonymous_visitor_lead_to_the_portals_sign_in(
    client: FlaskClient,
) -> None:
    for path in ("/watcher/connect", "/watcher/status"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.location.startswith("/sign-in?next=")
