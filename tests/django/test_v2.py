"""Watcher API v2 in the Django app, through Django's test client against the emulator: the
system key (``request.watcher_system``), a user's API key or v2 password login
(``request.watcher_v2``), dead sessions, the E009 check, status, disconnect, admin, signals,
and a DEBUG log of it all without a secret in it."""

from __future__ import annotations

import logging
import re
from types import ModuleType
from typing import Any

import pytest
from django.contrib.admin.views.decorators import staff_member_required
from django.core import checks
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client
from django.urls import path
from django.views import View

from django_watcher_auth import signals
from django_watcher_auth.checks import check_system_api_key
from django_watcher_auth.conf import get_manager, user_key
from django_watcher_auth.decorators import watcher_v2_required
from django_watcher_auth.mixins import WatcherRequiredMixin
from django_watcher_auth.models import WatcherAccount
from django_watcher_auth.stores import DjangoCacheStore, DjangoModelStore
from tests.django.testapp.urls import urlpatterns as testapp_urlpatterns
from watcher_auth import ConfigurationError, TokenManager, TokenStore

pytestmark = pytest.mark.django_db

SYSTEM_KEY = "system-key-5c1d2e3f4a5b"
CONNECT = "/watcher/connect/"
CONNECT_V2 = "/watcher/connect/v2/"
JSON = {"HTTP_ACCEPT": "application/json"}
BOB_CAMERAS = ["bob-cam-0", "bob-cam-1", "bob-cam-2"]
ALICE_CAMERAS = ["alice-cam-0", "alice-cam-1", "alice-cam-2"]


# --- views a portal would write with API v2 ---------------------------------------------------


@watcher_v2_required
def my_cameras(request: HttpRequest) -> HttpResponse:
    cameras = request.watcher_v2.paginate("cameras")  # type: ignore[attr-defined]
    return JsonResponse({"cameras": [camera["name"] for camera in cameras]})


def my_cameras_plain(request: HttpRequest) -> HttpResponse:
    """No decorator: the middleware answers the Watcher errors."""
    cameras = request.watcher_v2.json("cameras")  # type: ignore[attr-defined]
    return JsonResponse({"cameras": [camera["name"] for camera in cameras]})


@staff_member_required
def all_cameras(request: HttpRequest) -> HttpResponse:
    cameras = request.watcher_system.paginate("cameras", limit=4)  # type: ignore[attr-defined]
    return JsonResponse({"cameras": [camera["name"] for camera in cameras]})


class WhoAmIView(WatcherRequiredMixin, View):
    watcher_api = "v2"

    def get(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse(request.watcher_v2.json("auth/whoami"))  # type: ignore[attr-defined]


# A URLconf module of its own, so the shared test app's URLs stay as they are.
URLCONF = ModuleType("v2_portal_urls")
URLCONF.urlpatterns = [  # type: ignore[attr-defined]
    *testapp_urlpatterns,
    path("v2/cameras/", my_cameras),
    path("v2/plain-cameras/", my_cameras_plain),
    path("v2/all-cameras/", all_cameras),
    path("v2/whoami/", WhoAmIView.as_view()),
]


@pytest.fixture
def v2_portal(portal: Any, settings: Any) -> Any:
    """The portal with the views above and Watcher's system key in ``WATCHER_AUTH``."""
    settings.ROOT_URLCONF = URLCONF
    portal.emulator.configure(system_api_key=SYSTEM_KEY)
    portal.configure(STORE="db", SYSTEM_API_KEY=SYSTEM_KEY)
    return portal


@pytest.fixture
def user(make_user: Any) -> Any:
    return make_user("portal-vera")


@pytest.fixture
def client(user: Any, client_for: Any) -> Client:
    return client_for(user)


def connect_key(post_form: Any, client: Client, username: str, api_key: str, **data: Any) -> Any:
    form = {"username": username, "mode": "api_key", "api_key": api_key, **data}
    return post_form(client, CONNECT_V2, form)


def connect_password(post_form: Any, client: Client, username: str, password: str) -> Any:
    form = {"username": username, "mode": "password", "password": password}
    return post_form(client, CONNECT_V2, form)


# --- the system key -----------------------------------------------------------------------------


def test_a_staff_view_with_the_system_key_lists_every_camera(
    v2_portal: Any, make_user: Any, client_for: Any
) -> None:
    staff = client_for(make_user("portal-staff", is_staff=True))
    response = staff.get("/v2/all-cameras/")
    assert response.status_code == 200
    assert response.json()["cameras"] == ALICE_CAMERAS + BOB_CAMERAS
    stats = v2_portal.emulator.stats
    assert (stats.v2_system_calls, stats.v2_logins, stats.password_logins) == (2, 0, 0)
    assert not WatcherAccount.objects.exists()


def test_the_system_key_serves_no_one_the_view_does_not_let_in(
    v2_portal: Any, client: Client
) -> None:
    assert client.get("/v2/all-cameras/").status_code == 302
    assert v2_portal.emulator.stats.v2_calls == 0


def test_the_system_key_can_come_from_the_environment(
    v2_portal: Any, make_user: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_SYSTEM_API_KEY", SYSTEM_KEY)
    v2_portal.configure(STORE="db")
    staff = client_for(make_user("portal-staff", is_staff=True))
    assert len(staff.get("/v2/all-cameras/").json()["cameras"]) == 6


def test_the_system_session_without_a_key_is_a_clear_configuration_error(
    v2_portal: Any,
    make_user: Any,
    client_for: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("WATCHER_SYSTEM_API_KEY", raising=False)
    v2_portal.configure(STORE="db")
    staff = client_for(make_user("portal-staff", is_staff=True))
    response = staff.get("/v2/all-cameras/", **JSON)
    assert (response.status_code, response.json()["error"]) == (503, "watcher_misconfigured")
    [line] = [r.getMessage() for r in caplog.records if r.name == "django_watcher_auth"]
    message = line.split("cause: ", 1)[1]
    assert message.startswith(ConfigurationError.__name__)
    assert "request.watcher_system" in message and "WATCHER_AUTH['SYSTEM_API_KEY']" in message
    assert "WATCHER_SYSTEM_API_KEY" in message
    assert v2_portal.emulator.stats.v2_calls == 0


def e009(messages: list[checks.CheckMessage]) -> list[str]:
    return [m.msg for m in messages if m.id == "django_watcher_auth.E009"]


@pytest.mark.parametrize(
    ("configured", "environment", "expected"),
    [
        ("", None, "WATCHER_AUTH['SYSTEM_API_KEY'] is set but empty"),
        ("   ", None, "WATCHER_AUTH['SYSTEM_API_KEY'] is set but empty"),
        (None, "", "the environment variable WATCHER_SYSTEM_API_KEY is set but empty"),
        (" padded-key-12345 ", None, "WATCHER_AUTH['SYSTEM_API_KEY']: the system API key has"),
        (12345, None, "WATCHER_AUTH['SYSTEM_API_KEY'] must be a string"),
    ],
)
def test_a_system_key_set_but_empty_fails_check_e009(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    configured: Any,
    environment: str | None,
    expected: str,
) -> None:
    monkeypatch.delenv("WATCHER_SYSTEM_API_KEY", raising=False)
    if environment is not None:
        monkeypatch.setenv("WATCHER_SYSTEM_API_KEY", environment)
    settings.WATCHER_AUTH = {"URL": "http://127.0.0.1:9", "SYSTEM_API_KEY": configured}
    found = e009(checks.run_checks())
    assert len(found) == 1 and found[0].startswith(expected)
    assert "padded-key-12345" not in found[0]


@pytest.mark.parametrize("configured", [None, SYSTEM_KEY])
def test_a_usable_or_absent_system_key_passes_the_check(
    settings: Any, monkeypatch: pytest.MonkeyPatch, configured: str | None
) -> None:
    monkeypatch.delenv("WATCHER_SYSTEM_API_KEY", raising=False)
    settings.WATCHER_AUTH = {"URL": "http://127.0.0.1:9", "SYSTEM_API_KEY": configured}
    assert check_system_api_key() == []
    assert e009(checks.run_checks()) == []


def test_the_system_key_is_hidden_on_django_error_pages(v2_portal: Any) -> None:
    from django.views.debug import SafeExceptionReporterFilter

    shown = SafeExceptionReporterFilter().get_safe_settings()["WATCHER_AUTH"]
    assert SYSTEM_KEY not in repr(shown)


# --- a user's API key -------------------------------------------------------------------------


def test_a_user_connects_an_api_key_and_sees_only_their_cameras(
    v2_portal: Any, client: Client, user: Any, post_form: Any
) -> None:
    emulator = v2_portal.emulator
    first = client.get("/v2/cameras/")
    assert first.status_code == 302
    assert first["Location"] == f"{CONNECT_V2}?next=%2Fv2%2Fcameras%2F"
    form = client.get(first["Location"])
    assert form.status_code == 200
    assert b'name="api_key"' in form.content and b'value="/v2/cameras/"' in form.content

    bob_key = emulator.user_api_key("bob")
    done = connect_key(post_form, client, "bob", bob_key, next="/v2/cameras/")
    assert done.status_code == 302 and done["Location"] == "/v2/cameras/"
    assert client.get("/v2/cameras/").json() == {"cameras": BOB_CAMERAS}
    assert client.get("/v2/plain-cameras/").json() == {"cameras": BOB_CAMERAS}
    assert client.get("/v2/whoami/").json()["login"] == "bob"

    stats = emulator.stats
    assert (stats.v2_logins, stats.v2_calls_by_user, stats.password_logins) == (
        0,
        {"bob": 4},  # whoami at connect, two camera lists, whoami
        0,
    )
    account = WatcherAccount.objects.get()
    assert (account.api, account.user, account.username, account.status) == (
        "v2",
        user,
        "bob",
        WatcherAccount.Status.CONNECTED,
    )
    assert bob_key not in account.record
    stored = get_manager().v2_tokens(user_key(user))
    assert stored is not None and stored.scheme == "user-key"
    assert get_manager().tokens(user_key(user)) is None  # API v3 untouched


def test_a_rejected_api_key_shows_an_error_without_the_key(
    v2_portal: Any, client: Client, post_form: Any
) -> None:
    bad_key = "not-bobs-key-0123456789"
    response = connect_key(post_form, client, "bob", bad_key)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Watcher did not accept this API key for this username." in page
    assert bad_key not in page
    assert not WatcherAccount.objects.exists()
    assert v2_portal.emulator.stats.v2_forbidden == 1


@pytest.mark.parametrize(
    ("data", "field_error"),
    [
        ({"mode": "api_key", "api_key": ""}, "Enter the API key from your Watcher profile."),
        ({"mode": "api_key", "api_key": " key-with-spaces "}, "without spaces around them"),
        ({"mode": "password", "password": ""}, "Enter your Watcher password."),
    ],
)
def test_an_incomplete_form_is_refused_before_asking_watcher(
    v2_portal: Any, client: Client, post_form: Any, data: dict[str, str], field_error: str
) -> None:
    response = post_form(client, CONNECT_V2, {"username": "bob", **data})
    assert response.status_code == 200
    page = response.content.decode()
    assert field_error in page and "key-with-spaces" not in page
    assert v2_portal.emulator.stats.v2_calls == 0


def test_watcher_down_at_connect_answers_503_and_stores_nothing(
    v2_portal: Any, client: Client, post_form: Any
) -> None:
    v2_portal.emulator.fail_next("v2_call", mode="503")
    response = connect_key(post_form, client, "bob", v2_portal.emulator.user_api_key("bob"))
    assert response.status_code == 503
    assert b"Watcher cannot be reached right now" in response.content
    assert not WatcherAccount.objects.exists()


def test_a_replaced_api_key_sends_the_user_back_to_connect(
    v2_portal: Any, client: Client, post_form: Any
) -> None:
    emulator = v2_portal.emulator
    connect_key(post_form, client, "bob", emulator.user_api_key("bob"))
    emulator.rotate_api_key("bob")
    response = client.get("/v2/cameras/")
    assert response.status_code == 302
    assert response["Location"] == f"{CONNECT_V2}?next=%2Fv2%2Fcameras%2F"
    assert WatcherAccount.objects.get().status == WatcherAccount.Status.NEEDS_RELOGIN
    status = client.get("/watcher/", **JSON).json()
    assert status["v2"] == {
        "connected": False,
        "needs_relogin": True,
        "needs_reconnect": False,
        "username": "bob",
        "scheme": None,
        "connected_at": None,
    }
    assert b"Watcher no longer accepts your saved sign-in" in client.get(CONNECT_V2).content
    connect_key(post_form, client, "bob", emulator.user_api_key("bob"))
    assert client.get("/v2/cameras/").json() == {"cameras": BOB_CAMERAS}


# --- a v2 password login ------------------------------------------------------------------------


def test_a_v2_password_login_keeps_only_the_session(
    v2_portal: Any, client: Client, user: Any, post_form: Any
) -> None:
    preselected = client.get(f"{CONNECT_V2}?mode=password").content.decode()
    assert re.search(r'<input type="radio" name="mode" value="password"[^>]* checked>', preselected)
    done = connect_password(post_form, client, "alice", "secret")
    assert done.status_code == 302 and done["Location"] == "/watcher/"
    assert client.get("/v2/cameras/").json() == {"cameras": ALICE_CAMERAS}
    stats = v2_portal.emulator.stats
    assert (stats.v2_logins, stats.password_logins, stats.v2_calls_by_user) == (1, 0, {"alice": 1})
    stored = get_manager().v2_tokens(user_key(user))
    assert stored is not None and stored.scheme == "session"
    assert "secret" not in WatcherAccount.objects.get().record


def test_a_wrong_v2_password_shows_an_error_without_the_password(
    v2_portal: Any, client: Client, post_form: Any
) -> None:
    response = connect_password(post_form, client, "alice", "wrong-password")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Watcher did not accept this username and password." in page
    assert "wrong-password" not in page
    assert v2_portal.emulator.stats.v2_failed_logins == 1


def test_a_dead_session_redirects_to_the_v2_connect_page(
    v2_portal: Any, client: Client, post_form: Any
) -> None:
    connect_password(post_form, client, "alice", "secret")
    v2_portal.emulator.revoke("alice")
    for view in ("/v2/cameras/", "/v2/plain-cameras/"):
        connect_password(post_form, client, "alice", "secret")
        v2_portal.emulator.revoke("alice")
        response = client.get(view)
        assert response.status_code == 302
        assert response["Location"].startswith(f"{CONNECT_V2}?next=%2Fv2%2F")
    stats = v2_portal.emulator.stats
    assert (stats.v2_logins, stats.v2_forbidden) == (3, 4)  # each: the call and whoami


def test_anonymous_visitors_sign_in_then_come_to_the_v2_connect_page(v2_portal: Any) -> None:
    client = Client()
    assert client.get("/v2/cameras/")["Location"].startswith("/accounts/login/?next=")
    response = client.get("/v2/plain-cameras/")
    assert response["Location"] == f"{CONNECT_V2}?next=%2Fv2%2Fplain-cameras%2F"
    assert v2_portal.emulator.stats.v2_calls == 0


def test_json_clients_get_a_401_with_the_v2_connect_url(
    v2_portal: Any, client: Client, post_form: Any
) -> None:
    first = client.get("/v2/cameras/", **JSON).json()
    assert (first["error"], first["reason"]) == ("watcher_not_connected", "not_connected")
    assert first["connect_url"] == CONNECT_V2
    connect_password(post_form, client, "alice", "secret")
    v2_portal.emulator.revoke("alice")
    response = client.get("/v2/plain-cameras/", **JSON)
    assert response.status_code == 401
    assert response.json()["error"] == "watcher_reauthentication_required"
    assert response.json()["reason"] == "reauthentication_required"
    assert response.json()["connect_url"] == CONNECT_V2


def test_watcher_unavailable_in_a_v2_view_answers_503_and_keeps_the_session(
    v2_portal: Any, client: Client, post_form: Any
) -> None:
    connect_password(post_form, client, "alice", "secret")
    v2_portal.emulator.fail_next("v2_call", mode="403")
    v2_portal.emulator.fail_next("v2_call", mode="503")  # whoami, asked about the 403
    response = client.get("/v2/cameras/", **JSON)
    assert (response.status_code, response.json()["error"]) == (503, "watcher_unavailable")
    assert client.get("/v2/cameras/").json() == {"cameras": ALICE_CAMERAS}


# --- status, disconnect, admin, signals ---------------------------------------------------------


def test_the_status_shows_v2_only_once_connected(
    v2_portal: Any, client: Client, post_form: Any
) -> None:
    assert "v2" not in client.get("/watcher/", **JSON).json()
    connect_key(post_form, client, "bob", v2_portal.emulator.user_api_key("bob"))
    data = client.get("/watcher/", **JSON).json()
    assert data["connected"] is False
    assert data["v2"]["connected"] is True
    assert (data["v2"]["username"], data["v2"]["scheme"]) == ("bob", "user-key")
    page = client.get("/watcher/").content.decode()
    assert "Connected as bob" in page and "with an API key" in page
    assert "No Watcher account is connected." not in page


def test_disconnect_forgets_both_the_v3_and_the_v2_account(
    v2_portal: Any, client: Client, user: Any, post_form: Any
) -> None:
    post_form(client, CONNECT, {"username": "alice", "password": "secret"})
    connect_key(post_form, client, "bob", v2_portal.emulator.user_api_key("bob"))
    assert WatcherAccount.objects.count() == 2
    response = post_form(client, "/watcher/disconnect/", {}, page=CONNECT)
    assert response.status_code == 302
    assert not WatcherAccount.objects.exists()
    manager = get_manager()
    assert manager.tokens(user_key(user)) is None and manager.v2_tokens(user_key(user)) is None
    assert client.get("/v2/cameras/").status_code == 302


def test_the_admin_shows_v2_accounts_without_secrets_and_disconnects_one_api(
    v2_portal: Any, client: Client, user: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    post_form(client, CONNECT, {"username": "alice", "password": "secret"})
    bob_key = v2_portal.emulator.user_api_key("bob")
    connect_key(post_form, client, "bob", bob_key)
    v2_account = WatcherAccount.objects.get(api="v2")

    admin = client_for(make_user("admin", is_staff=True, is_superuser=True))
    listing = admin.get("/admin/django_watcher_auth/watcheraccount/")
    detail = admin.get(f"/admin/django_watcher_auth/watcheraccount/{v2_account.pk}/change/")
    for page in (listing, detail):
        text = page.content.decode()
        assert page.status_code == 200 and "bob" in text and "v2" in text
        assert bob_key not in text and v2_account.record not in text

    post_form(
        admin,
        "/admin/django_watcher_auth/watcheraccount/",
        {"action": "disconnect", "_selected_action": [v2_account.pk]},
        page="/admin/django_watcher_auth/watcheraccount/",
    )
    assert list(WatcherAccount.objects.values_list("api", flat=True)) == ["v3"]
    assert get_manager().v2_tokens(user_key(user)) is None
    assert get_manager().tokens(user_key(user)) is not None


def test_signals_are_sent_for_v2_events_with_the_api(
    v2_portal: Any, client: Client, user: Any, post_form: Any
) -> None:
    seen: list[tuple[str, Any, str | None, str]] = []
    receivers = []
    for signal, name in [
        (signals.watcher_connected, "connected"),
        (signals.watcher_reauthentication_required, "reauthentication_required"),
        (signals.watcher_disconnected, "disconnected"),
    ]:

        def record(
            sender: Any, user: Any, username: str | None, api: str, _n: str = name, **kw: Any
        ) -> None:
            seen.append((_n, user, username, api))

        signal.connect(record, weak=False)
        receivers.append((signal, record))
    try:
        connect_password(post_form, client, "alice", "secret")
        v2_portal.emulator.revoke("alice")
        client.get("/v2/cameras/")
        connect_key(post_form, client, "bob", v2_portal.emulator.user_api_key("bob"))
        post_form(client, "/watcher/disconnect/", {}, page=CONNECT)
    finally:
        for signal, record in receivers:
            signal.disconnect(record)
    assert seen == [
        ("connected", user, "alice", "v2"),
        ("reauthentication_required", user, "alice", "v2"),
        ("connected", user, "bob", "v2"),
        ("disconnected", user, "bob", "v2"),
    ]


def test_the_service_account_serves_v2_users_without_their_own(
    v2_portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    v2_portal.configure(
        STORE="db",
        SYSTEM_API_KEY=SYSTEM_KEY,
        SERVICE_ACCOUNT={"USERNAME": "bob", "PASSWORD": "hunter2"},
    )
    first, second, own = (client_for(make_user(n)) for n in ("svc-1", "svc-2", "svc-own"))
    assert first.get("/v2/cameras/").json() == {"cameras": BOB_CAMERAS}
    assert second.get("/v2/plain-cameras/").json() == {"cameras": BOB_CAMERAS}
    connect_key(post_form, own, "alice", v2_portal.emulator.user_api_key("alice"))
    assert own.get("/v2/cameras/").json() == {"cameras": ALICE_CAMERAS}
    assert v2_portal.emulator.stats.v2_logins == 1  # bob once, for everyone
    assert Client().get("/v2/cameras/").status_code == 302  # never for anonymous visitors


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.django_db(transaction=True, databases=["default", "postgres"]),
            ],
        ),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
def test_v2_records_are_kept_apart_and_encrypted_in_each_django_store(
    portal: Any, request: pytest.FixtureRequest, backend: str
) -> None:
    def new_store() -> TokenStore:
        if backend == "redis":
            return DjangoCacheStore(
                alias="redis", key_prefix=request.getfixturevalue("redis_prefix")
            )
        using = request.getfixturevalue("postgres_alias") if backend == "postgres" else "default"
        return DjangoModelStore(using=using)

    emulator = portal.emulator
    writer = TokenManager(emulator.url, store=new_store(), clock=portal.clock)
    bob_key = emulator.user_api_key("bob")
    writer.v2_connect_user_key("7", username="bob", api_key=bob_key)
    session = writer.v2_login("8", username="alice", password="secret").access_token
    writer.login("8", username="alice", password="secret")

    reader = TokenManager(emulator.url, store=new_store(), clock=portal.clock)
    assert [c["name"] for c in reader.v2_session("7").json("cameras")] == BOB_CAMERAS
    assert reader.v2_whoami("8")["login"] == "alice"
    assert reader.session("8").json("profile")["name"] == "alice"
    assert emulator.stats.v2_logins == 1
    store = reader.store
    if isinstance(store, DjangoModelStore):
        assert sorted(k.user for k in store.iter_keys(api="v2")) == ["7", "8"]
        rows = repr(list(WatcherAccount.objects.using(store.using).values()))
        assert bob_key not in rows and session not in rows
    assert reader.v2_logout("7") and reader.v2_tokens("7") is None
    assert writer.v2_tokens("8") is not None and writer.tokens("8") is not None


# --- secrets ------------------------------------------------------------------------------------


def test_no_key_session_id_or_password_reaches_the_debug_log(
    v2_portal: Any,
    client: Client,
    user: Any,
    make_user: Any,
    client_for: Any,
    post_form: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = v2_portal.emulator
    key = user_key(user)
    sessions: list[str] = []
    pages: list[str] = []

    staff = client_for(make_user("portal-staff", is_staff=True))
    staff.get("/v2/all-cameras/")
    pages.append(connect_key(post_form, client, "bob", "bad-user-key-0123456").content.decode())
    old_bob_key = emulator.user_api_key("bob")
    connect_key(post_form, client, "bob", old_bob_key)
    client.get("/v2/cameras/")
    emulator.rotate_api_key("bob")
    client.get("/v2/cameras/")
    pages.append(connect_password(post_form, client, "alice", "wrong-password").content.decode())
    connect_password(post_form, client, "alice", "secret")
    sessions.append(get_manager().v2_tokens(key).access_token)  # type: ignore[union-attr]
    client.get("/v2/plain-cameras/", **JSON)
    emulator.revoke("alice")
    client.get("/v2/cameras/")
    post_form(client, CONNECT, {"username": "alice", "password": "secret"})
    connect_password(post_form, client, "alice", "secret")
    sessions.append(get_manager().v2_tokens(key).access_token)  # type: ignore[union-attr]
    pages.append(client.get("/watcher/").content.decode())
    post_form(client, "/watcher/disconnect/", {}, page=CONNECT)
    v2_portal.configure(
        STORE="db",
        SYSTEM_API_KEY=SYSTEM_KEY,
        SERVICE_ACCOUNT={"USERNAME": "bob", "PASSWORD": "hunter2"},
    )
    client_for(make_user("svc-user")).get("/v2/cameras/")

    assert "/vsaas/api/v2/cameras" in caplog.text and "v2" in caplog.text
    secrets = [SYSTEM_KEY, "bad-user-key-0123456", "wrong-password", "secret", "hunter2"]
    secrets += [emulator.user_api_key(name) for name in ("alice", "bob")]
    secrets += [old_bob_key, *sessions]
    assert [s for s in secrets if s in caplog.text] == []
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
@pytest.mark.parametrize("path", ["/v2/cameras/", "/v2/plain-cameras/", "/v2/whoami/"])
def test_a_failing_v2_call_gets_a_deliberate_answer_from_every_entry_point(
    v2_portal: Any, client: Client, post_form: Any, path: str, mode: str, code: str
) -> None:
    connect_password(post_form, client, "alice", "secret")
    v2_portal.emulator.fail_next("v2_call", mode=mode)
    page = client.get(path)
    assert (page.status_code, page["Retry-After"]) == (503, "30")
    assert f'data-error="{code}"'.encode() in page.content
    v2_portal.emulator.fail_next("v2_call", mode=mode)
    api = client.get(path, **JSON)
    assert (api.status_code, api.json()["error"]) == (503, code)
    assert client.get(path, **JSON).status_code == 200
