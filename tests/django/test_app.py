"""The app around the flow: settings, system checks, migrations, admin, signals, commands,
and the service account."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from django_watcher_auth import signals
from django_watcher_auth.conf import DEFAULTS, get_manager, user_key, watcher_settings
from django_watcher_auth.models import WatcherAccount
from django_watcher_auth.stores import DjangoCacheStore, DjangoModelStore
from watcher_auth import ConfigurationError, MemoryStore

CONNECT = "/watcher/connect/"


def check_ids() -> list[str]:
    return sorted(
        m.id for m in checks.run_checks() if m.id and m.id.startswith("django_watcher_auth.")
    )


# --- settings -----------------------------------------------------------------------------


def test_every_setting_has_a_default_and_changes_are_picked_up(settings: Any) -> None:
    settings.WATCHER_AUTH = {"URL": "https://watcher.example.com"}
    assert watcher_settings.STORE == "db" and DEFAULTS["TIMEOUT"] == watcher_settings.TIMEOUT
    first = get_manager()
    assert first.server == "https://watcher.example.com"
    assert get_manager() is first
    settings.WATCHER_AUTH = {"URL": "https://other.example.com", "TIMEOUT": 3}
    assert watcher_settings.TIMEOUT == 3
    assert get_manager() is not first and get_manager().server == "https://other.example.com"
    with pytest.raises(AttributeError):
        watcher_settings.NO_SUCH_SETTING  # noqa: B018


@pytest.mark.parametrize(
    ("store", "options", "expected"),
    [
        ("db", {}, DjangoModelStore),
        ("cache", {}, DjangoCacheStore),
        ("memory", {}, MemoryStore),
        ("watcher_auth.stores.memory:MemoryStore", {"maxsize": 3}, MemoryStore),
        ("django_watcher_auth.stores.DjangoCacheStore", {"alias": "default"}, DjangoCacheStore),
    ],
)
def test_stores_are_named_by_short_name_or_dotted_path(
    settings: Any, store: str, options: dict[str, Any], expected: type
) -> None:
    settings.WATCHER_AUTH = {"URL": "https://w.test", "STORE": store, "STORE_OPTIONS": options}
    assert type(get_manager().store) is expected


def test_a_missing_url_or_unknown_store_is_a_configuration_error(settings: Any) -> None:
    settings.WATCHER_AUTH = {"STORE": "db"}
    with pytest.raises(ConfigurationError, match=r"WATCHER_AUTH\['URL'\]"):
        get_manager()
    settings.WATCHER_AUTH = {"URL": "https://w.test", "STORE": "no-such-store"}
    with pytest.raises(ConfigurationError, match="unknown token store"):
        get_manager()


# --- system checks ------------------------------------------------------------------------


def test_the_test_settings_pass_every_check() -> None:
    assert check_ids() == []


@pytest.mark.parametrize(
    ("watcher_auth", "expected"),
    [
        ({"STORE": "db"}, ["django_watcher_auth.E001"]),
        ({"URL": "ftp://watcher.example.com"}, ["django_watcher_auth.E002"]),
        ({"URL": "https://user:pw@watcher.example.com"}, ["django_watcher_auth.E002"]),
        ({"URL": "http://watcher.example.com"}, ["django_watcher_auth.W001"]),
        ({"URL": "http://10.0.0.5:8080"}, ["django_watcher_auth.W001"]),
        ({"URL": "http://localhost:8080"}, []),
        ({"URL": "http://[::1]:8080"}, []),
        ({"URL": "https://w.example", "STORE": "memory"}, ["django_watcher_auth.W002"]),
        ({"URL": "https://w.example", "STORE": "cache"}, ["django_watcher_auth.W002"]),
        ({"URL": "https://w.example", "STORE": "cache", "CACHE_ALIAS": "redis"}, []),
        ({"URL": "https://w.example", "STORE": "nope"}, ["django_watcher_auth.E005"]),
        (
            {"URL": "https://w.example", "STORE": "cache", "CACHE_ALIAS": "missing"},
            ["django_watcher_auth.E005"],
        ),
        ({"URL": "https://w.example", "TIMEOUTS": 3}, ["django_watcher_auth.E006"]),
        ({"URL": "https://w.example", "USER_KEY": "x.y"}, ["django_watcher_auth.E008"]),
    ],
)
def test_system_checks_name_each_problem(
    settings: Any, watcher_auth: dict[str, Any], expected: list[str]
) -> None:
    settings.WATCHER_AUTH = watcher_auth
    assert check_ids() == expected


def test_system_checks_on_the_rest_of_the_settings(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DEBUG = True
    settings.WATCHER_AUTH = {"URL": "https://w.example", "STORE": "memory"}
    assert check_ids() == []  # one process in development is fine

    settings.WATCHER_AUTH = "https://w.example"
    assert check_ids() == ["django_watcher_auth.E001", "django_watcher_auth.E006"]

    settings.WATCHER_AUTH = {"URL": "https://w.example"}
    settings.CACHES = {
        **settings.CACHES,
        "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    }
    settings.WATCHER_AUTH = {"URL": "https://w.example", "STORE": "cache", "CACHE_ALIAS": "dummy"}
    assert check_ids() == ["django_watcher_auth.E007"]

    settings.WATCHER_AUTH = {"URL": "https://w.example"}
    monkeypatch.setitem(settings.DATABASES["default"], "ATOMIC_REQUESTS", True)
    assert check_ids() == ["django_watcher_auth.W003"]


def test_system_checks_on_the_middleware(settings: Any) -> None:
    ours = "django_watcher_auth.middleware.WatcherMiddleware"
    auth = "django.contrib.auth.middleware.AuthenticationMiddleware"
    without = [m for m in settings.MIDDLEWARE if m != ours]
    settings.MIDDLEWARE = without
    assert check_ids() == ["django_watcher_auth.E003"]
    settings.MIDDLEWARE = [ours, *without]
    assert check_ids() == ["django_watcher_auth.E004"]
    settings.MIDDLEWARE = [m for m in without if m != auth] + [ours]
    assert "django_watcher_auth.E004" in check_ids()


# --- migrations ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_migrations_match_the_models() -> None:
    call_command("makemigrations", "django_watcher_auth", "--check", "--dry-run", stdout=StringIO())


# --- signals ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_signals_follow_the_account_with_the_portal_user(
    portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    user = make_user("portal-dora")
    seen: list[tuple[str, Any, str | None, str]] = []

    def receiver(signal: Any, name: str) -> Any:
        def record(sender: Any, user: Any, username: str | None, user_key: str, **kw: Any) -> None:
            seen.append((name, user, username, user_key))

        signal.connect(record, weak=False)
        return record

    receivers = [
        (signal, receiver(signal, name))
        for signal, name in [
            (signals.watcher_connected, "connected"),
            (signals.watcher_tokens_refreshed, "refreshed"),
            (signals.watcher_reauthentication_required, "reauthentication_required"),
            (signals.watcher_disconnected, "disconnected"),
        ]
    ]
    try:
        client = client_for(user)
        post_form(client, CONNECT, {"username": "alice", "password": "secret"})
        portal.clock.advance(301)
        client.get("/cameras/")
        portal.emulator.revoke("alice")
        client.get("/cameras/")
        post_form(client, CONNECT, {"username": "alice", "password": "secret"})
        post_form(client, "/watcher/disconnect/", {}, page=CONNECT)
    finally:
        for signal, record in receivers:
            signal.disconnect(record)
    key = str(user.pk)
    assert seen == [
        ("connected", user, "alice", key),
        ("refreshed", user, "alice", key),
        ("reauthentication_required", user, "alice", key),
        ("connected", user, "alice", key),
        ("disconnected", user, "alice", key),
    ]


# --- admin --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_lists_accounts_without_tokens_and_disconnects_them(
    portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    user = make_user("portal-erin")
    post_form(client_for(user), CONNECT, {"username": "alice", "password": "secret"})
    pair = get_manager().tokens(user_key(user))
    assert pair is not None
    account = WatcherAccount.objects.get()

    admin = make_user("admin", is_staff=True, is_superuser=True)
    client = client_for(admin)
    listing = client.get("/admin/django_watcher_auth/watcheraccount/")
    detail = client.get(f"/admin/django_watcher_auth/watcheraccount/{account.pk}/change/")
    for page in (listing, detail):
        assert page.status_code == 200
        text = page.content.decode()
        assert "portal-erin" in text and "alice" in text
        for secret in (pair.access_token, pair.refresh_token, account.record):
            assert secret and secret not in text

    response = post_form(
        client,
        "/admin/django_watcher_auth/watcheraccount/",
        {"action": "disconnect", "_selected_action": [account.pk]},
        page="/admin/django_watcher_auth/watcheraccount/",
    )
    assert response.status_code == 302
    assert not WatcherAccount.objects.exists()
    assert get_manager().tokens(user_key(user)) is None


# --- management commands ------------------------------------------------------------------


@pytest.mark.django_db
def test_watcher_status_lists_connected_users(
    portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    user = make_user("portal-fay")
    post_form(client_for(user), CONNECT, {"username": "bob", "password": "hunter2"})
    out = StringIO()
    call_command("watcher_status", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[1].split() == ["PORTAL", "USER", "WATCHER", "USER", "STATUS", "ACCESS", "TOKEN"]
    assert lines[2].split()[:3] == ["portal-fay", "bob", "connected"]
    assert re.search(r"expires in (299|300)s$", lines[2])
    portal.clock.advance(400)
    out = StringIO()
    call_command("watcher_status", stdout=out)
    assert re.search(r"expired (99|100)s ago", out.getvalue())


@pytest.mark.django_db
def test_watcher_status_on_a_store_that_lists_keys(
    portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    portal.configure(STORE="memory")
    user = make_user("portal-gus")
    post_form(client_for(user), CONNECT, {"username": "alice", "password": "secret"})
    out = StringIO()
    call_command("watcher_status", stdout=out)
    assert out.getvalue().splitlines()[2].split()[:3] == ["portal-gus", "alice", "connected"]


@pytest.mark.django_db
def test_watcher_disconnect_forgets_a_users_tokens(
    portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    user = make_user("portal-hal")
    post_form(client_for(user), CONNECT, {"username": "alice", "password": "secret"})
    out = StringIO()
    call_command("watcher_disconnect", "portal-hal", stdout=out)
    assert out.getvalue() == "Disconnected portal-hal's Watcher account.\n"
    assert not WatcherAccount.objects.exists()
    out = StringIO()
    call_command("watcher_disconnect", "portal-hal", stdout=out)
    assert out.getvalue() == "portal-hal had no Watcher account connected.\n"
    with pytest.raises(CommandError, match="no portal user 'nobody'"):
        call_command("watcher_disconnect", "nobody")


@pytest.mark.django_db
def test_watcher_check_reaches_watcher_and_logs_in(
    portal: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = StringIO()
    call_command("watcher_check", stdout=out)
    first, second = out.getvalue().splitlines()
    assert first == "Every stored record can be read with the current keys."
    assert second.startswith(f"Watcher at {portal.emulator.url} answered in ")

    monkeypatch.setenv("CHECK_PW", "secret")
    out = StringIO()
    call_command("watcher_check", "--username", "alice", "--password-env", "CHECK_PW", stdout=out)
    assert out.getvalue().splitlines()[-1] == (
        "Logged in as alice; the access token is valid for 300s."
    )
    monkeypatch.setenv("CHECK_PW", "wrong")
    with pytest.raises(CommandError, match="login as 'alice' failed"):
        call_command("watcher_check", "--username", "alice", "--password-env", "CHECK_PW")
    assert portal.emulator.stats.password_logins == 1


@pytest.mark.django_db
def test_watcher_check_reports_an_unreachable_watcher(portal: Any) -> None:
    portal.emulator.stop()
    with pytest.raises(CommandError, match="cannot be reached"):
        call_command("watcher_check")


# --- the service account ------------------------------------------------------------------


@pytest.mark.django_db
def test_the_service_account_serves_users_without_their_own(
    portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    portal.configure(SERVICE_ACCOUNT={"USERNAME": "bob", "PASSWORD": "hunter2"})
    first, second, own = (client_for(make_user(n)) for n in ("svc-1", "svc-2", "svc-own"))
    assert first.get("/profile/").json()["name"] == "bob"
    assert second.get("/cameras/").status_code == 200
    post_form(own, CONNECT, {"username": "alice", "password": "secret"})
    assert own.get("/profile/").json()["name"] == "alice"
    assert first.get("/watcher/", HTTP_ACCEPT="application/json").json()["service_account"] == "bob"
    stats = portal.emulator.stats
    assert stats.password_logins == 2  # bob once for everyone, alice once
    assert stats.calls_by_user == {"bob": 2, "alice": 1}


@pytest.mark.django_db
def test_the_service_account_can_come_from_the_environment(
    portal: Any, make_user: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_SERVICE_USERNAME", "bob")
    monkeypatch.setenv("WATCHER_SERVICE_PASSWORD", "hunter2")
    portal.configure()
    assert client_for(make_user("env-user")).get("/profile/").json()["name"] == "bob"
    portal.configure(SERVICE_ACCOUNT=False)
    assert client_for(make_user("env-user-2")).get("/profile/").status_code == 302


def test_anonymous_visitors_never_get_the_service_account(portal: Any) -> None:
    portal.configure(SERVICE_ACCOUNT={"USERNAME": "bob", "PASSWORD": "hunter2"})
    assert Client().get("/profile/").status_code == 302
    assert portal.emulator.stats.password_logins == 0


# --- customising ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_tokens_can_be_keyed_by_another_user_field(
    portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    portal.configure(
        USER_KEY="tests.django.testapp.keys.by_username",
        USER_FROM_KEY="tests.django.testapp.keys.from_username",
    )
    user = make_user("portal-ivy")
    client = client_for(user)
    post_form(client, CONNECT, {"username": "alice", "password": "secret"})
    account = WatcherAccount.objects.get()
    assert (account.user_key, account.user) == ("name:portal-ivy", user)
    assert client.get("/profile/").json()["name"] == "alice"


@pytest.mark.django_db
def test_the_decorator_works_without_the_middleware(
    portal: Any, settings: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "django_watcher_auth" not in m]
    client = client_for(make_user("portal-jo"))
    assert client.get("/cameras/")["Location"] == f"{CONNECT}?next=%2Fcameras%2F"
    post_form(client, CONNECT, {"username": "alice", "password": "secret"})
    assert client.get("/cameras/").status_code == 200
    portal.emulator.revoke("alice")
    assert client.get("/cameras/", HTTP_ACCEPT="application/json").status_code == 401
