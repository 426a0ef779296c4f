"""Watcher API v2 in the Flask extension, through Flask's test client against the emulator: the
system key (``current_watcher_system``), a user's API key or v2 password login
(``current_watcher_v2``), dead sessions, start-up validation, status, disconnect, signals, the
CLI, and a DEBUG log of it all without a secret in it."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, abort
from flask.testing import FlaskClient
from flask_login import current_user
from werkzeug.test import TestResponse

from flask_watcher_auth import (
    SERVICE_ACCOUNT_KEY,
    WatcherAuth,
    current_watcher_system,
    current_watcher_v2,
    get_state,
    watcher_connected,
    watcher_disconnected,
    watcher_reauthentication_required,
    watcher_v2_required,
)
from watcher_auth import ConfigurationError
from watcher_auth.testing import WatcherEmulator

SYSTEM_KEY = "system-key-5c1d2e3f4a5b"
CONNECT_V2 = "/watcher/connect/v2"
JSON = {"Accept": "application/json"}
ALICE_CAMERAS = ["alice-cam-0", "alice-cam-1", "alice-cam-2"]
BOB_CAMERAS = ["bob-cam-0", "bob-cam-1", "bob-cam-2"]
STAFF = "3"  # the portal user id the staff-only view lets in

MakeApp = Callable[..., Flask]
SignIn = Callable[[FlaskClient, str], None]
CsrfToken = Callable[..., str]


def add_v2_views(app: Flask) -> Flask:
    """The API v2 pages a portal would write."""

    @app.get("/v2/cameras")
    @watcher_v2_required
    def my_cameras() -> dict[str, Any]:
        return {"cameras": [camera["name"] for camera in current_watcher_v2.paginate("cameras")]}

    @app.get("/v2/plain-cameras")
    def my_cameras_plain() -> dict[str, Any]:
        """No decorator: the extension's error handlers answer."""
        return {"cameras": [camera["name"] for camera in current_watcher_v2.json("cameras")]}

    @app.get("/v2/all-cameras")
    def all_cameras() -> dict[str, Any]:
        if not current_user.is_authenticated or current_user.get_id() != STAFF:
            abort(403)
        cameras = current_watcher_system.paginate("cameras", limit=4)
        return {"cameras": [camera["name"] for camera in cameras]}

    return app


@pytest.fixture(autouse=True)
def no_system_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHER_SYSTEM_API_KEY", raising=False)


@pytest.fixture
def emulator(emulator: WatcherEmulator) -> WatcherEmulator:
    """The folder's emulator (alice, bob), with Watcher's API v2 system key."""
    emulator.configure(system_api_key=SYSTEM_KEY)
    return emulator


@pytest.fixture
def make_v2_app(make_app: MakeApp) -> MakeApp:
    def make(**config: Any) -> Flask:
        return add_v2_views(make_app(**{"WATCHER_SYSTEM_API_KEY": SYSTEM_KEY, **config}))

    return make


@pytest.fixture
def v2_app(make_v2_app: MakeApp) -> Flask:
    return make_v2_app()


@pytest.fixture
def user(v2_app: Flask, sign_in: SignIn) -> FlaskClient:
    """A client signed in as portal user "1"."""
    client = v2_app.test_client()
    sign_in(client, "1")
    return client


@pytest.fixture
def connect_v2(csrf_token: CsrfToken) -> Callable[..., TestResponse]:
    """``connect_v2(client, username, mode, secret, next=None)`` submits the API v2 form."""

    def submit(
        client: FlaskClient, username: str, mode: str, secret: str, next: str | None = None
    ) -> TestResponse:
        form = {"csrf_token": csrf_token(client, CONNECT_V2), "username": username, "mode": mode}
        form["api_key" if mode == "api_key" else "password"] = secret
        if next is not None:
            form["next"] = next
        return client.post(CONNECT_V2, data=form)

    return submit


ConnectV2 = Callable[..., TestResponse]


# --- the system key -----------------------------------------------------------------------------


def test_a_staff_view_with_the_system_key_lists_every_camera(
    v2_app: Flask, emulator: WatcherEmulator, sign_in: SignIn
) -> None:
    staff = v2_app.test_client()
    sign_in(staff, STAFF)
    response = staff.get("/v2/all-cameras")
    assert response.status_code == 200
    assert response.json == {"cameras": ALICE_CAMERAS + BOB_CAMERAS}
    stats = emulator.stats
    assert (stats.v2_system_calls, stats.v2_logins, stats.password_logins) == (2, 0, 0)
    with v2_app.app_context():
        assert list(get_state().store.iter_keys()) == []


def test_the_system_key_can_come_from_the_environment(
    make_v2_app: MakeApp, sign_in: SignIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_SYSTEM_API_KEY", SYSTEM_KEY)
    staff = make_v2_app(WATCHER_SYSTEM_API_KEY=None).test_client()
    sign_in(staff, STAFF)
    assert len(staff.get("/v2/all-cameras").json["cameras"]) == 6


def test_the_system_session_without_a_key_is_a_clear_configuration_error(
    make_v2_app: MakeApp, emulator: WatcherEmulator
) -> None:
    app = make_v2_app(WATCHER_SYSTEM_API_KEY=None)
    with app.test_request_context(), pytest.raises(ConfigurationError) as caught:
        current_watcher_system.get("cameras")
    message = str(caught.value)
    assert "current_watcher_system" in message and "WATCHER_SYSTEM_API_KEY" in message
    assert emulator.stats.v2_calls == 0


@pytest.mark.parametrize(
    ("configured", "environment", "expected"),
    [
        ("", None, "WATCHER_SYSTEM_API_KEY is set but empty"),
        ("   ", None, "WATCHER_SYSTEM_API_KEY is set but empty"),
        (None, "", "the environment variable WATCHER_SYSTEM_API_KEY is set but empty"),
        (" padded-key-12345 ", None, "WATCHER_SYSTEM_API_KEY: the system API key has"),
        (12345, None, "WATCHER_SYSTEM_API_KEY must be a string"),
    ],
)
def test_a_system_key_set_but_empty_fails_at_start_up(
    monkeypatch: pytest.MonkeyPatch, configured: Any, environment: str | None, expected: str
) -> None:
    if environment is not None:
        monkeypatch.setenv("WATCHER_SYSTEM_API_KEY", environment)
    app = Flask("bare")
    app.config.update(WATCHER_URL="http://127.0.0.1:9", WATCHER_SYSTEM_API_KEY=configured)
    with pytest.raises(ConfigurationError) as caught:
        WatcherAuth(app)
    assert str(caught.value).startswith(expected)
    assert "padded-key-12345" not in str(caught.value)
    assert "watcher_auth" not in app.extensions


def test_the_settings_repr_hides_the_system_key(v2_app: Flask) -> None:
    settings = get_state(v2_app).settings
    assert settings.system_api_key == SYSTEM_KEY and SYSTEM_KEY not in repr(settings)


# --- a user's API key -------------------------------------------------------------------------


def test_a_user_connects_an_api_key_and_sees_only_their_cameras(
    make_v2_app: MakeApp,
    store_config: dict[str, Any],
    emulator: WatcherEmulator,
    sign_in: SignIn,
    connect_v2: ConnectV2,
) -> None:
    app = make_v2_app(**store_config)
    client = app.test_client()
    sign_in(client, "1")
    first = client.get("/v2/cameras")
    assert first.status_code == 302 and first.location == f"{CONNECT_V2}?next=/v2/cameras"
    form = client.get(first.location).get_data(as_text=True)
    assert 'name="api_key"' in form and 'value="/v2/cameras"' in form

    bob_key = emulator.user_api_key("bob")
    done = connect_v2(client, "bob", "api_key", bob_key, next="/v2/cameras")
    assert done.status_code == 302 and done.location == "/v2/cameras"
    assert client.get("/v2/cameras").json == {"cameras": BOB_CAMERAS}
    assert client.get("/v2/plain-cameras").json == {"cameras": BOB_CAMERAS}

    stats = emulator.stats
    assert (stats.v2_logins, stats.password_logins, stats.v2_calls_by_user) == (
        0,
        0,
        {"bob": 3},  # whoami at connect, two camera lists
    )
    with app.app_context():
        manager = get_state().manager
        stored = manager.v2_tokens("1")
        assert stored is not None and (stored.scheme, stored.username) == ("user-key", "bob")
        assert manager.tokens("1") is None  # API v3 untouched


def test_a_rejected_api_key_shows_an_error_without_the_key(
    user: FlaskClient, emulator: WatcherEmulator, connect_v2: ConnectV2
) -> None:
    bad_key = "not-bobs-key-0123456789"
    response = connect_v2(user, "bob", "api_key", bad_key)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Watcher did not accept this API key for this username." in page
    assert bad_key not in page
    assert emulator.stats.v2_forbidden == 1
    assert user.get("/watcher/status", headers=JSON).json["connected"] is False


@pytest.mark.parametrize(
    ("mode", "secret", "error"),
    [
        ("api_key", "", "Enter your Watcher username and API key."),
        ("api_key", " key-with-spaces ", "without spaces around them"),
        ("password", "", "Enter your Watcher username and password."),
    ],
)
def test_an_incomplete_form_is_refused_before_asking_watcher(
    user: FlaskClient,
    emulator: WatcherEmulator,
    connect_v2: ConnectV2,
    mode: str,
    secret: str,
    error: str,
) -> None:
    response = connect_v2(user, "bob", mode, secret)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert error in page and "key-with-spaces" not in page
    assert emulator.stats.v2_calls == 0


def test_watcher_down_at_connect_answers_503(
    user: FlaskClient, emulator: WatcherEmulator, connect_v2: ConnectV2
) -> None:
    emulator.fail_next("v2_call", mode="503")
    response = connect_v2(user, "bob", "api_key", emulator.user_api_key("bob"))
    assert response.status_code == 503
    assert "Watcher cannot be reached right now" in response.get_data(as_text=True)


def test_a_replaced_api_key_sends_the_user_back_to_connect(
    user: FlaskClient, emulator: WatcherEmulator, connect_v2: ConnectV2
) -> None:
    connect_v2(user, "bob", "api_key", emulator.user_api_key("bob"))
    emulator.rotate_api_key("bob")
    response = user.get("/v2/cameras")
    assert response.status_code == 302 and response.location == f"{CONNECT_V2}?next=/v2/cameras"
    reconnect_page = user.get(response.location).get_data(as_text=True)
    assert "Connect your Watcher account again" in reconnect_page
    connect_v2(user, "bob", "api_key", emulator.user_api_key("bob"))
    assert user.get("/v2/cameras").json == {"cameras": BOB_CAMERAS}


# --- a v2 password login ------------------------------------------------------------------------


def test_a_v2_password_login_keeps_only_the_session(
    v2_app: Flask, user: FlaskClient, emulator: WatcherEmulator, connect_v2: ConnectV2
) -> None:
    preselected = user.get(f"{CONNECT_V2}?mode=password").get_data(as_text=True)
    assert re.search(r'value="password" checked>', preselected)
    done = connect_v2(user, "alice", "password", "secret")
    assert done.status_code == 302 and done.location == "/watcher/status"
    assert user.get("/v2/cameras").json == {"cameras": ALICE_CAMERAS}
    stats = emulator.stats
    assert (stats.v2_logins, stats.password_logins, stats.v2_calls_by_user) == (1, 0, {"alice": 1})
    with v2_app.app_context():
        stored = get_state().manager.v2_tokens("1")
        assert stored is not None and stored.scheme == "session"


def test_a_wrong_v2_password_shows_an_error_without_the_password(
    user: FlaskClient, emulator: WatcherEmulator, connect_v2: ConnectV2
) -> None:
    response = connect_v2(user, "alice", "password", "wrong-password")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Watcher did not accept this username and password." in page
    assert "wrong-password" not in page
    assert emulator.stats.v2_failed_logins == 1


def test_a_dead_session_redirects_to_the_v2_connect_page(
    user: FlaskClient, emulator: WatcherEmulator, connect_v2: ConnectV2
) -> None:
    for view in ("/v2/cameras", "/v2/plain-cameras"):
        connect_v2(user, "alice", "password", "secret")
        emulator.revoke("alice")
        response = user.get(view)
        assert response.status_code == 302
        assert response.location == f"{CONNECT_V2}?next={view}"
    stats = emulator.stats
    assert (stats.v2_logins, stats.v2_forbidden) == (2, 4)  # each: the call and whoami


def test_json_clients_get_a_401_with_the_v2_connect_url(
    user: FlaskClient, emulator: WatcherEmulator, connect_v2: ConnectV2
) -> None:
    not_connected = user.get("/v2/cameras", headers=JSON)
    assert not_connected.status_code == 401
    assert not_connected.json["error"] == "watcher_not_connected"
    assert not_connected.json["connect_url"] == f"{CONNECT_V2}?next=/v2/cameras"
    connect_v2(user, "alice", "password", "secret")
    emulator.revoke("alice")
    dead = user.get("/v2/plain-cameras", headers=JSON)
    assert dead.status_code == 401
    assert dead.json["connect_url"] == f"{CONNECT_V2}?next=/v2/plain-cameras"


def test_watcher_unavailable_in_a_v2_view_answers_503_and_keeps_the_session(
    user: FlaskClient, emulator: WatcherEmulator, connect_v2: ConnectV2
) -> None:
    connect_v2(user, "alice", "password", "secret")
    emulator.fail_next("v2_call", mode="403")
    emulator.fail_next("v2_call", mode="503")  # whoami, asked about the 403
    response = user.get("/v2/cameras", headers=JSON)
    assert (response.status_code, response.json["error"]) == (503, "watcher_unavailable")
    assert user.get("/v2/cameras").json == {"cameras": ALICE_CAMERAS}


def test_anonymous_visitors_are_sent_to_sign_in(v2_app: Flask, emulator: WatcherEmulator) -> None:
    client = v2_app.test_client()
    response = client.get("/v2/cameras")
    assert response.status_code == 302 and response.location == f"{CONNECT_V2}?next=/v2/cameras"
    assert client.get(response.location).location.startswith("/sign-in?next=")
    assert emulator.stats.v2_calls == 0


# --- status, disconnect, signals, CLI, service account -----------------------------------------


def test_the_status_shows_v2_only_once_connected(
    user: FlaskClient, emulator: WatcherEmulator, connect_v2: ConnectV2
) -> None:
    assert "v2" not in user.get("/watcher/status", headers=JSON).json
    connect_v2(user, "bob", "api_key", emulator.user_api_key("bob"))
    data = user.get("/watcher/status", headers=JSON).json
    assert data["connected"] is False
    assert (data["v2"]["connected"], data["v2"]["username"], data["v2"]["scheme"]) == (
        True,
        "bob",
        "user-key",
    )
    assert data["v2"]["connected_at"].endswith("+00:00")
    page = user.get("/watcher/status").get_data(as_text=True)
    assert "bob" in page and "with an API key" in page
    assert "No Watcher account is connected." not in page


def test_disconnect_forgets_both_the_v3_and_the_v2_account(
    v2_app: Flask,
    user: FlaskClient,
    emulator: WatcherEmulator,
    connect: Callable[..., TestResponse],
    connect_v2: ConnectV2,
    csrf_token: CsrfToken,
) -> None:
    connect(user, "alice", "secret")
    connect_v2(user, "bob", "api_key", emulator.user_api_key("bob"))
    token = csrf_token(user)
    assert user.post("/watcher/disconnect", data={"csrf_token": token}).status_code == 302
    with v2_app.app_context():
        manager = get_state().manager
        assert manager.tokens("1") is None and manager.v2_tokens("1") is None
    assert user.get("/v2/cameras").status_code == 302


def test_signals_are_sent_for_v2_events_with_the_api(
    v2_app: Flask,
    user: FlaskClient,
    emulator: WatcherEmulator,
    connect_v2: ConnectV2,
    csrf_token: CsrfToken,
) -> None:
    seen: list[tuple[str, str, str | None, str]] = []
    receivers = []
    for signal in (watcher_connected, watcher_reauthentication_required, watcher_disconnected):

        def receiver(sender: Flask, _name: str = str(signal.name), **kw: Any) -> None:
            seen.append((_name, kw["user_key"], kw["username"], kw["api"]))

        signal.connect(receiver, sender=v2_app)
        receivers.append((signal, receiver))
    try:
        connect_v2(user, "alice", "password", "secret")
        emulator.revoke("alice")
        user.get("/v2/cameras")
        connect_v2(user, "bob", "api_key", emulator.user_api_key("bob"))
        user.post("/watcher/disconnect", data={"csrf_token": csrf_token(user)})
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)
    assert seen == [
        ("watcher-connected", "1", "alice", "v2"),
        ("watcher-reauthentication-required", "1", "alice", "v2"),
        ("watcher-connected", "1", "bob", "v2"),
        ("watcher-disconnected", "1", "bob", "v2"),
    ]


def test_the_cli_disconnect_forgets_the_v2_account_too(
    v2_app: Flask, user: FlaskClient, emulator: WatcherEmulator, connect_v2: ConnectV2
) -> None:
    connect_v2(user, "bob", "api_key", emulator.user_api_key("bob"))
    result = v2_app.test_cli_runner().invoke(args=["watcher", "disconnect", "1"])
    assert result.exit_code == 0, result.output
    with v2_app.app_context():
        assert get_state().manager.v2_tokens("1") is None


def test_the_service_account_serves_v2_users_without_their_own(
    make_v2_app: MakeApp, emulator: WatcherEmulator, sign_in: SignIn, connect_v2: ConnectV2
) -> None:
    app = make_v2_app(WATCHER_SERVICE_USERNAME="bob", WATCHER_SERVICE_PASSWORD="hunter2")
    first, second, own = (app.test_client() for _ in range(3))
    for client, user_id in ((first, "1"), (second, "2"), (own, "3")):
        sign_in(client, user_id)
    assert first.get("/v2/cameras").json == {"cameras": BOB_CAMERAS}
    assert second.get("/v2/plain-cameras").json == {"cameras": BOB_CAMERAS}
    connect_v2(own, "alice", "api_key", emulator.user_api_key("alice"))
    assert own.get("/v2/cameras").json == {"cameras": ALICE_CAMERAS}
    assert emulator.stats.v2_logins == 1  # bob once, for everyone


# --- secrets ------------------------------------------------------------------------------------


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def test_no_key_session_id_or_password_reaches_the_debug_log(
    make_v2_app: MakeApp,
    emulator: WatcherEmulator,
    sign_in: SignIn,
    connect: Callable[..., TestResponse],
    connect_v2: ConnectV2,
    csrf_token: CsrfToken,
    debug_log: pytest.LogCaptureFixture,
) -> None:
    app = make_v2_app(WATCHER_SERVICE_USERNAME="bob", WATCHER_SERVICE_PASSWORD="hunter2")
    user, staff, other = (app.test_client() for _ in range(3))
    for client, user_id in ((user, "1"), (staff, STAFF), (other, "2")):
        sign_in(client, user_id)
    sessions: list[str] = []
    pages: list[str] = []

    def session_of(key: str) -> str:
        with app.app_context():
            pair = get_state().manager.v2_tokens(key)
        assert pair is not None
        return pair.access_token

    staff.get("/v2/all-cameras")
    other.get("/v2/cameras")  # the service account logs in to API v2
    sessions.append(session_of(SERVICE_ACCOUNT_KEY))
    pages.append(connect_v2(user, "bob", "api_key", "bad-user-key-0123456").get_data(as_text=True))
    old_bob_key = emulator.user_api_key("bob")
    connect_v2(user, "bob", "api_key", old_bob_key)
    user.get("/v2/cameras")
    emulator.rotate_api_key("bob")
    user.get("/v2/cameras")
    pages.append(connect_v2(user, "alice", "password", "wrong-password").get_data(as_text=True))
    connect_v2(user, "alice", "password", "secret")
    sessions.append(session_of("1"))
    user.get("/v2/plain-cameras", headers=JSON)
    emulator.revoke("alice")
    user.get("/v2/cameras")
    connect(user, "alice", "secret")
    connect_v2(user, "alice", "password", "secret")
    sessions.append(session_of("1"))
    pages.append(user.get("/watcher/status").get_data(as_text=True))
    pages.append(user.get("/watcher/status", headers=JSON).get_data(as_text=True))
    user.post("/watcher/disconnect", data={"csrf_token": csrf_token(user)})

    text = debug_log.text
    assert "/vsaas/api/v2/cameras" in text and "v2" in text
    secrets = [SYSTEM_KEY, "bad-user-key-0123456", "wrong-password", "secret", "hunter2"]
    secrets += [old_bob_key, *(emulator.user_api_key(name) for name in ("alice", "bob"))]
    secrets += sessions
    assert [s for s in secrets if s in text] == []
    assert [s for s in secrets if any(s in page for page in pages)] == []


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("500", "watcher_unavailable"),
        ("502_html", "watcher_unavailable"),
        ("non_json", "watcher_bad_answer"),
        ("drop", "watcher_unavailable"),
    ],
)
@pytest.mark.parametrize("path", ["/v2/cameras", "/v2/plain-cameras"])
def test_a_failing_v2_call_gets_a_deliberate_answer_with_and_without_the_decorator(
    user: FlaskClient,
    emulator: WatcherEmulator,
    connect_v2: ConnectV2,
    path: str,
    mode: str,
    code: str,
) -> None:
    connect_v2(user, "alice", "password", "secret")
    emulator.fail_next("v2_call", mode=mode)
    page = user.get(path)
    assert (page.status_code, page.headers["Retry-After"]) == (503, "30")
    assert f'data-error="{code}"' in page.get_data(as_text=True)
    emulator.fail_next("v2_call", mode=mode)
    api = user.get(path, headers=JSON)
    assert (api.status_code, api.json["error"]) == (503, code)
    assert user.get(path, headers=JSON).status_code == 200
