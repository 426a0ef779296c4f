"""``manage.py watcher_status`` for every store, and ``WATCHER_AUTH['OPENTELEMETRY']``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.test import AsyncClient

from django_watcher_auth.conf import get_async_manager, get_manager, user_key
from tests.otel.telemetry import global_telemetry
from watcher_auth import ConfigurationError
from watcher_auth.crypto import generate_key
from watcher_auth.otel import user_key_hash

CONNECT = "/watcher/connect/"


def status() -> str:
    out = StringIO()
    call_command("watcher_status", stdout=out, stderr=out)
    return out.getvalue()


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@pytest.mark.django_db
@pytest.mark.parametrize("store", ["db", "memory"])
def test_status_shows_api_expiry_last_refresh_and_connected_since_for_each_record(
    portal: Any, make_user: Any, client_for: Any, post_form: Any, store: str
) -> None:
    portal.configure(STORE=store)
    user = make_user("portal-ida")
    client = client_for(user)
    connected_at = portal.clock()
    post_form(client, CONNECT, {"username": "alice", "password": "secret"})
    portal.clock.advance(400)
    assert client.get("/cameras/").status_code == 200  # refreshed on the way
    get_manager().v2_login(user_key(user), username="bob", password="hunter2")

    out = status()
    lines = out.splitlines()
    pair = get_manager().tokens(user_key(user))
    assert pair is not None and pair.expires_at is not None
    v3 = lines.index(next(line for line in lines if line.split()[:2] == ["portal-ida", "alice"]))
    assert lines[v3].split()[2] == "connected"
    assert re.search(r"expires in (299|300)s$", lines[v3])
    assert lines[v3 + 1].strip() == (
        f"API v3; access token expires {utc(pair.expires_at)} (Watcher's clock); "
        f"last refresh {utc(portal.clock())}; connected since {utc(connected_at)}"
    )
    v2 = lines.index(next(line for line in lines if line.split()[:2] == ["portal-ida", "bob"]))
    assert lines[v2 + 1].strip().startswith("API v2; session ")
    assert (
        lines[v2 + 1].strip().endswith(f"last refresh never; connected since {utc(portal.clock())}")
    )
    assert "2 account(s)." in out
    secrets = portal.emulator.issued_secrets()
    assert secrets and not any(secret in out for secret in secrets)


@pytest.mark.django_db
def test_status_says_plainly_that_the_cache_store_cannot_list_its_records(
    portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    portal.configure(STORE="cache")
    post_form(
        client_for(make_user("portal-jo")), CONNECT, {"username": "alice", "password": "secret"}
    )
    out = status()
    assert "The DjangoCacheStore store cannot list its records" in out
    assert "No connected users" not in out


@pytest.mark.django_db
def test_status_on_an_empty_store_that_can_list_says_no_one_is_connected(portal: Any) -> None:
    assert status().splitlines()[1:] == ["No connected users."]


@pytest.mark.django_db
def test_a_record_the_current_keys_cannot_read_is_listed_without_failing(
    portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    portal.configure(STORE="db", ENCRYPTION_KEYS=[generate_key()])
    post_form(
        client_for(make_user("portal-kim")), CONNECT, {"username": "bob", "password": "hunter2"}
    )
    post_form(
        client_for(make_user("portal-lou")), CONNECT, {"username": "alice", "password": "secret"}
    )
    portal.configure(STORE="db", ENCRYPTION_KEYS=[generate_key()])
    lines = status().splitlines()
    unreadable = [line.strip() for line in lines if "cannot be read (needs reconnect)" in line]
    assert len(unreadable) == 2 and all(line.startswith("API v3") for line in unreadable)
    assert sum(line.startswith(("portal-kim", "portal-lou")) for line in lines) == 2


@pytest.mark.django_db
def test_the_opentelemetry_setting_instruments_the_process_manager(
    portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    telemetry = global_telemetry()
    portal.configure(STORE="db", OPENTELEMETRY=True)
    user = make_user("portal-max")
    client = client_for(user)
    post_form(client, CONNECT, {"username": "alice", "password": "secret"})
    portal.clock.advance(400)
    assert client.get("/cameras/").status_code == 200
    server = get_manager().server
    counts = telemetry.counts(server)
    # Taking the database's row lock takes a few milliseconds, which count as waits.
    counts.pop("watcher_auth.lock.wait_time", None)
    assert counts == {
        "watcher_auth.logins": 1,
        "watcher_auth.login.duration": 1,
        "watcher_auth.refreshes": 1,
        "watcher_auth.refresh.duration": 1,
    }
    (login,) = telemetry.points(server)["watcher_auth.logins"]
    assert login.attributes["watcher.user_key_hash"] == user_key_hash(user_key(user))
    assert sorted(span.name for span in telemetry.spans(server)) == [
        "watcher_auth.login",
        "watcher_auth.refresh",
    ]


@pytest.mark.django_db
def test_without_the_setting_nothing_is_recorded(
    portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    telemetry = global_telemetry()
    post_form(
        client_for(make_user("portal-ned")), CONNECT, {"username": "alice", "password": "secret"}
    )
    assert telemetry.counts(get_manager().server) == {}


def test_a_wrong_opentelemetry_setting_is_a_configuration_error(settings: Any) -> None:
    settings.WATCHER_AUTH = {"URL": "https://watcher.example.com", "OPENTELEMETRY": "yes"}
    with pytest.raises(ConfigurationError, match=r"WATCHER_AUTH\['OPENTELEMETRY'\] must be"):
        get_manager()


@pytest.mark.django_db(transaction=True)
def test_the_opentelemetry_setting_instruments_the_async_manager_too(
    portal: Any, make_user: Any
) -> None:
    telemetry = global_telemetry()
    portal.configure(STORE="db", OPENTELEMETRY="omit")
    user = make_user("portal-ola")

    async def scenario() -> None:
        client = AsyncClient()
        await client.aforce_login(user)
        answer = await client.post(CONNECT, {"username": "alice", "password": "secret"})
        assert answer.status_code == 302
        portal.clock.advance(400)
        assert (await client.get("/async/cameras/")).status_code == 200

    async_to_sync(scenario)()
    server = get_async_manager().server
    (refresh,) = telemetry.points(server)["watcher_auth.refreshes"]
    assert dict(refresh.attributes) == {"watcher.server": server, "watcher.api": "v3"}
    assert [span.name for span in telemetry.spans(server)].count("watcher_auth.refresh") == 1


@pytest.mark.django_db
def test_status_all_also_lists_accounts_that_need_a_new_login(
    portal: Any, make_user: Any, client_for: Any, post_form: Any
) -> None:
    client = client_for(make_user("portal-pam"))
    post_form(client, CONNECT, {"username": "alice", "password": "secret"})
    portal.emulator.revoke("alice")
    client.get("/cameras/")  # the refresh is refused: the account needs a new login
    assert status().splitlines()[1:] == ["No connected users."]
    out = StringIO()
    call_command("watcher_status", "--all", stdout=out)
    row, details = out.getvalue().splitlines()[2:4]
    assert row.split()[:2] == ["portal-pam", "alice"] and "needs re-login" in row
    assert details.strip().startswith("API v3; connected since ")
