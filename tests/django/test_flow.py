"""The whole flow through Django's test client against the Watcher emulator: connect, views
using ``request.watcher``, expiry and refresh, revocation, JSON clients, Watcher down."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.views.debug import SafeExceptionReporterFilter

from django_watcher_auth.conf import get_manager, user_key
from django_watcher_auth.models import WatcherAccount

pytestmark = pytest.mark.django_db

CONNECT = "/watcher/connect/"
JSON = {"HTTP_ACCEPT": "application/json"}


def stream_names(response: Any) -> list[str]:
    return response.content.decode().split("\n")


# --- connecting ---------------------------------------------------------------------------


def test_a_user_connects_once_and_the_view_gets_their_streams(
    portal: Any, alice: Any, client_for: Any, post_form: Any
) -> None:
    client = client_for(alice)

    first = client.get("/cameras/")
    assert first.status_code == 302
    assert first["Location"] == f"{CONNECT}?next=%2Fcameras%2F"

    form = client.get(first["Location"])
    assert form.status_code == 200
    assert b'name="password"' in form.content and b'value="/cameras/"' in form.content

    done = post_form(
        client,
        first["Location"],
        {"username": "alice", "password": "secret", "next": "/cameras/"},
    )
    assert done.status_code == 302 and done["Location"] == "/cameras/"

    cameras = client.get("/cameras/")
    assert cameras.status_code == 200
    assert stream_names(cameras) == ["alice-cam-0", "alice-cam-1", "alice-cam-2"]
    stats = portal.emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.calls) == (1, 0, 1)


def test_an_expired_token_is_refreshed_without_the_password(portal: Any, connected: Client) -> None:
    for _ in range(3):
        portal.clock.advance(301)
        assert connected.get("/cameras/").status_code == 200
        assert connected.get("/profile/").status_code == 200
    stats = portal.emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (0, 3, 0)
    assert stats.calls == 6
    account = WatcherAccount.objects.get()
    assert account.last_refreshed_at is not None
    assert account.status == WatcherAccount.Status.CONNECTED


def test_revoked_tokens_send_the_user_back_to_connect(portal: Any, connected: Client) -> None:
    portal.emulator.revoke("alice")

    response = connected.get("/cameras/?page=2")
    assert response.status_code == 302
    assert response["Location"] == f"{CONNECT}?next=%2Fcameras%2F%3Fpage%3D2"
    assert [str(m) for m in get_messages(response.wsgi_request)][-1] == (
        "Watcher no longer accepts your saved sign-in. Connect your Watcher account again."
    )
    assert WatcherAccount.objects.get().status == WatcherAccount.Status.NEEDS_RELOGIN

    again = connected.get("/cameras/")
    assert again.status_code == 302
    stats = portal.emulator.stats
    assert (stats.unauthorized, stats.rejected_refreshes, stats.password_logins) == (1, 1, 0)

    status = connected.get("/watcher/", **JSON).json()
    assert status["connected"] is False and status["needs_relogin"] is True


def test_json_clients_get_401_with_the_connect_url(portal: Any, connected: Client) -> None:
    portal.emulator.revoke("alice")
    response = connected.get("/api/streams/", **JSON)
    assert response.status_code == 401
    assert response.json() == {
        "error": "watcher_reauthentication_required",
        "reason": "reauthentication_required",
        "message": "Watcher no longer accepts your saved sign-in. Connect your Watcher "
        "account again.",
        "connect_url": CONNECT,
    }
    ajax = connected.get("/profile/", HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert ajax.status_code == 401
    assert ajax.json()["error"] == "watcher_not_connected"
    assert ajax.json()["reason"] == "not_connected"


def test_a_json_view_works_once_connected(connected: Client) -> None:
    response = connected.get("/api/streams/", **JSON)
    assert response.json() == {"streams": ["alice-cam-0", "alice-cam-1", "alice-cam-2"]}


def test_watcher_down_answers_503_and_keeps_the_tokens(portal: Any, connected: Client) -> None:
    portal.clock.advance(301)
    portal.emulator.fail_next("refresh", count=2, mode="503")
    page = connected.get("/cameras/")
    assert page.status_code == 503
    assert page["Retry-After"] == "30"
    assert b"Watcher is unavailable" in page.content
    api = connected.get("/profile/", **JSON)
    assert api.status_code == 503 and api.json()["error"] == "watcher_unavailable"

    assert connected.get("/cameras/").status_code == 200
    stats = portal.emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (0, 1, 0)


def test_watcher_unreachable_during_a_call_answers_503(portal: Any, connected: Client) -> None:
    portal.emulator.stop()
    assert connected.get("/profile/").status_code == 503
    assert connected.get("/cameras/", **JSON).status_code == 503
    assert WatcherAccount.objects.get().status == WatcherAccount.Status.CONNECTED


def test_the_class_based_view_behaves_like_the_decorator(
    portal: Any, connected: Client, client_for: Any, make_user: Any
) -> None:
    assert connected.get("/profile-view/").json()["name"] == "alice"
    stranger = client_for(make_user("portal-stranger"))
    response = stranger.get("/profile-view/")
    assert response["Location"] == f"{CONNECT}?next=%2Fprofile-view%2F"
    assert Client().get("/profile-view/")["Location"].startswith("/accounts/login/")


# --- request.watcher ----------------------------------------------------------------------


def test_a_view_that_does_not_use_watcher_costs_nothing(
    portal: Any, connected: Client, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(0):
        assert connected.get("/untouched/").status_code == 200
    stats = portal.emulator.stats
    assert (stats.calls, stats.password_logins, stats.refreshes) == (0, 0, 0)


def test_request_watcher_never_leaks_between_users(
    portal: Any, alice: Any, make_user: Any, post_form: Any
) -> None:
    bob = make_user("portal-bob")
    nobody = make_user("portal-nobody")
    client = Client(enforce_csrf_checks=True)
    for user, (name, password) in ((alice, ("alice", "secret")), (bob, ("bob", "hunter2"))):
        client.force_login(user)
        post_form(client, CONNECT, {"username": name, "password": password})
    for _round in range(2):
        for user, name in ((alice, "alice"), (bob, "bob")):
            client.force_login(user)
            assert client.get("/profile/").json()["name"] == name
        client.force_login(nobody)
        assert client.get("/profile/").status_code == 302
        client.logout()
        assert client.get("/profile/").status_code == 302
    assert portal.emulator.stats.calls_by_user == {"alice": 2, "bob": 2}


def test_anonymous_requests_are_sent_to_log_in_first(portal: Any) -> None:
    client = Client()
    assert client.get("/cameras/")["Location"] == "/accounts/login/?next=/cameras/"
    assert client.get("/cameras/", **JSON).status_code == 401
    assert client.get("/profile/")["Location"] == f"{CONNECT}?next=%2Fprofile%2F"
    assert client.get(CONNECT)["Location"].startswith("/accounts/login/")
    assert portal.emulator.stats.calls == 0


# --- the connect page ---------------------------------------------------------------------


def test_a_wrong_password_shows_the_form_again(
    portal: Any, alice: Any, client_for: Any, post_form: Any
) -> None:
    client = client_for(alice)
    response = post_form(client, CONNECT, {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert b"Watcher did not accept this username and password." in response.content
    assert b"wrong" not in response.content
    assert not WatcherAccount.objects.exists()
    assert (portal.emulator.stats.failed_logins, portal.emulator.stats.password_logins) == (1, 0)


def test_watcher_down_at_connect_shows_an_error(
    portal: Any, alice: Any, client_for: Any, post_form: Any
) -> None:
    portal.emulator.fail_next("login", mode="drop")
    response = post_form(client_for(alice), CONNECT, {"username": "alice", "password": "secret"})
    assert response.status_code == 503
    assert b"Watcher cannot be reached right now." in response.content
    assert not WatcherAccount.objects.exists()


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("", "secret"),
        ("   ", "secret"),
        ("alice", ""),
        ("ali\x07ce", "secret"),
        ("alice", "sec\x00ret"),
        ("al:ice", "secret"),
        ("a" * 151, "secret"),
        ("alice", "p" * 1025),
    ],
)
def test_bad_input_is_refused_before_watcher_is_asked(
    portal: Any, alice: Any, client_for: Any, post_form: Any, username: str, password: str
) -> None:
    response = post_form(client_for(alice), CONNECT, {"username": username, "password": password})
    assert response.status_code == 200
    assert b"errorlist" in response.content
    stats = portal.emulator.stats
    assert (stats.password_logins, stats.failed_logins) == (0, 0)


@pytest.mark.parametrize(
    "unsafe", ["https://evil.example/", "//evil.example/", "javascript:alert(1)", "\\\\evil"]
)
def test_next_never_leaves_the_site(
    portal: Any, alice: Any, client_for: Any, post_form: Any, unsafe: str
) -> None:
    response = post_form(
        client_for(alice), CONNECT, {"username": "alice", "password": "secret", "next": unsafe}
    )
    assert response.status_code == 302
    assert response["Location"] == "/watcher/"


def test_the_password_is_hidden_from_error_reports_and_never_kept(
    portal: Any, alice: Any, client_for: Any, post_form: Any
) -> None:
    client = client_for(alice)
    response = post_form(client, CONNECT, {"username": "alice", "password": "secret"})
    request = response.wsgi_request
    cleaned = SafeExceptionReporterFilter().get_post_parameters(request)
    assert cleaned["password"] != "secret" and cleaned["username"] == "alice"
    assert "secret" not in json.dumps(dict(client.session.items()))
    assert "secret" not in repr(list(WatcherAccount.objects.values()))


def test_posting_without_the_csrf_token_is_refused(
    portal: Any, alice: Any, client_for: Any
) -> None:
    response = client_for(alice).post(CONNECT, {"username": "alice", "password": "secret"})
    assert response.status_code == 403
    assert portal.emulator.stats.password_logins == 0


# --- disconnect and status ----------------------------------------------------------------


def test_disconnect_is_post_only_and_forgets_the_account(
    portal: Any, connected: Client, post_form: Any
) -> None:
    url = reverse("django_watcher_auth:disconnect")
    assert connected.get(url).status_code == 405
    response = post_form(connected, url, {}, page=CONNECT)
    assert response.status_code == 302 and response["Location"] == "/watcher/"
    assert not WatcherAccount.objects.exists()
    assert connected.get("/cameras/").status_code == 302


def test_the_status_page_shows_the_account(portal: Any, connected: Client, alice: Any) -> None:
    page = connected.get("/watcher/")
    assert b"Connected as alice" in page.content
    data = connected.get("/watcher/", **JSON).json()
    assert data["connected"] is True and data["username"] == "alice"
    assert data["server"] == portal.emulator.url
    assert get_manager().tokens(user_key(alice)) is not None


def test_request_watcher_stands_for_the_users_session_and_is_made_on_first_use(
    portal: Any, connected: Client, alice: Any, rf: Any
) -> None:
    from django.contrib.auth.models import AnonymousUser

    from django_watcher_auth._http import attach_watcher
    from watcher_auth import NotConnected, WatcherSession

    request = rf.get("/")
    request.user = alice
    attach_watcher(request)
    assert repr(request.watcher) == "<request's Watcher session, not made yet>"
    assert isinstance(request.watcher, WatcherSession)  # made here
    request.watcher.headers["X-Trace"] = "t-1"
    request.watcher.timeout = 4.0
    with request.watcher as session:
        assert session.timeout == 4.0 and session.headers["X-Trace"] == "t-1"
        assert session.get("profile").json()["name"] == "alice"
    assert "WatcherSession" in repr(request.watcher)
    assert portal.emulator.stats.calls_by_user == {"alice": 1}

    anonymous = rf.get("/")
    anonymous.user = AnonymousUser()
    attach_watcher(anonymous)
    watcher = anonymous.watcher  # nothing is made until it is used
    for _attempt in range(2):
        with pytest.raises(NotConnected):
            watcher.get("profile")
