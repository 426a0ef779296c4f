"""A record the current encryption keys cannot read locks nobody out, and is never deleted
behind anyone's back.

The attacker here is bad luck: the encryption key is rotated without keeping the old one.
Each test connects with one key and starts the portal again with only another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.sites import KEY_ONE, KEY_TWO, DjangoSite, FlaskSite, Options, Site
from watcher_auth.testing import FakeClock, WatcherEmulator

MakeSite = Callable[..., Site]


@pytest.fixture
def emulator(watcher_emulator_factory: Any, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(clock=fake_clock, rotate_refresh_tokens=True)


@pytest.fixture(params=["flask", pytest.param("django", marks=pytest.mark.django_db)])
def rotated(
    request: pytest.FixtureRequest, emulator: WatcherEmulator, fake_clock: FakeClock, tmp_path: Path
) -> Iterator[Site]:
    """A portal whose user connected under one key, started again with only another key."""
    site: Site
    if request.param == "flask":
        site = FlaskSite(emulator, fake_clock, Options(), tmp_path)
    else:
        site = DjangoSite(emulator, fake_clock, Options(), request.getfixturevalue("settings"))
    assert site.connect().status == 302
    site.rebuild(keys=(KEY_TWO,))
    yield site
    site.close()


def record_exists_under_the_old_key(site: Site) -> bool:
    """Whether the record is still stored (read with the old key, then back to the new)."""
    keys = site.options.keys
    site.rebuild(keys=(*keys, KEY_ONE))
    try:
        return site.manager().tokens(site.user_key) is not None
    finally:
        site.rebuild(keys=keys)


def test_the_status_page_says_needs_reconnect(rotated: Site) -> None:
    page = rotated.get(rotated.status_path)
    assert page.status == 200
    assert "needs reconnecting" in page.text
    data = rotated.get(rotated.status_path, as_json=True).json
    assert (data["connected"], data["needs_reconnect"]) == (False, True)


def test_pages_send_the_user_to_connect_again_and_the_connect_page_works(rotated: Site) -> None:
    page = rotated.get("/stream-list/")
    assert page.status == 302 and page.location is not None
    assert page.location.startswith(rotated.connect_path)
    api = rotated.get("/stream-list/", as_json=True)
    assert (api.status, api.json["error"]) == (401, "watcher_reconnect_required")
    assert rotated.get(rotated.connect_path).status == 200


def test_connecting_again_replaces_the_unreadable_record(rotated: Site) -> None:
    assert rotated.connect().status == 302
    assert rotated.get("/stream-list/").text.split("\n") == [
        "alice-cam-0",
        "alice-cam-1",
        "alice-cam-2",
    ]
    assert rotated.get(rotated.status_path, as_json=True).json["connected"] is True


def test_disconnecting_deletes_the_unreadable_record(rotated: Site) -> None:
    answer = rotated.disconnect()
    assert answer.status == 302
    assert not record_exists_under_the_old_key(rotated)
    assert rotated.get(rotated.status_path, as_json=True).json["needs_reconnect"] is False


def test_nothing_is_deleted_until_someone_asks(rotated: Site) -> None:
    for path in (rotated.status_path, rotated.connect_path, "/stream-list/", "/profile/"):
        assert rotated.get(path).status != 500
        assert rotated.get(path, as_json=True).status != 500
    # The old key back (after the new one): the record reads again, without a new login.
    rotated.rebuild(keys=(KEY_TWO, KEY_ONE))
    assert rotated.get("/stream-list/").status == 200
    assert rotated.emulator.stats.password_logins == 1


# --- Flask's command line -----------------------------------------------------------------------


@pytest.fixture
def flask_rotated(
    emulator: WatcherEmulator, fake_clock: FakeClock, tmp_path: Path
) -> Iterator[Any]:
    site = FlaskSite(emulator, fake_clock, Options(), tmp_path)
    assert site.connect().status == 302
    site.rebuild(keys=(KEY_TWO,))
    yield site
    site.close()


def test_flask_check_counts_the_unreadable_records(flask_rotated: FlaskSite) -> None:
    result = flask_rotated.app.test_cli_runner().invoke(args=["watcher", "check"])
    assert result.exit_code == 0, result.output
    assert "Warning: 1 stored record(s) cannot be read with the current encryption keys" in (
        result.output
    )
    assert record_exists_under_the_old_key(flask_rotated)


def test_flask_disconnect_command_deletes_an_unreadable_record(flask_rotated: FlaskSite) -> None:
    runner = flask_rotated.app.test_cli_runner()
    result = runner.invoke(args=["watcher", "disconnect", flask_rotated.options.user_id])
    assert result.exit_code == 0, result.output
    assert not record_exists_under_the_old_key(flask_rotated)
    again = flask_rotated.app.test_cli_runner().invoke(args=["watcher", "check"])
    assert "every stored record can be read" in again.output


# --- Django's admin, command and checks ---------------------------------------------------------


@pytest.fixture
def django_rotated(
    emulator: WatcherEmulator, fake_clock: FakeClock, settings: Any, db: None
) -> DjangoSite:
    site = DjangoSite(emulator, fake_clock, Options(), settings)
    assert site.connect().status == 302
    site.rebuild(keys=(KEY_TWO,))
    return site


def test_django_database_check_counts_the_unreadable_records(django_rotated: DjangoSite) -> None:
    from django.core import checks

    found = [
        m for m in checks.run_checks(databases=["default"]) if m.id == "django_watcher_auth.W007"
    ]
    assert [m.msg for m in found] == [
        "1 stored Watcher record(s) cannot be read with the current encryption keys; their "
        'users see "needs reconnect" until they connect again.'
    ]
    without_database = [m.id for m in checks.run_checks()]
    assert "django_watcher_auth.W007" not in without_database
    assert record_exists_under_the_old_key(django_rotated)


def test_django_watcher_check_counts_the_unreadable_records(django_rotated: DjangoSite) -> None:
    from io import StringIO

    from django.core.management import call_command

    out, err = StringIO(), StringIO()
    call_command("watcher_check", stdout=out, stderr=err)
    assert "django_watcher_auth.W007: 1 stored Watcher record(s) cannot be read" in err.getvalue()


def test_django_disconnect_command_deletes_an_unreadable_record(
    django_rotated: DjangoSite,
) -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("watcher_disconnect", "portal-user", stdout=out)
    assert "Disconnected portal-user's Watcher account." in out.getvalue()
    assert not record_exists_under_the_old_key(django_rotated)


def test_django_admin_action_deletes_an_unreadable_record(django_rotated: DjangoSite) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from django_watcher_auth.models import WatcherAccount

    admin = get_user_model().objects.create_superuser("portal-admin", password="admin-pw")
    client = Client()
    client.force_login(admin)
    row = WatcherAccount.objects.get()
    answer = client.post(
        "/admin/django_watcher_auth/watcheraccount/",
        {"action": "disconnect", "_selected_action": [row.pk]},
    )
    assert answer.status_code == 302
    assert not WatcherAccount.objects.exists()
    assert not record_exists_under_the_old_key(django_rotated)


@pytest.mark.redis
@pytest.mark.django_db
def test_django_status_command_lists_an_unreadable_record_as_needing_reconnect(
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
    settings: Any,
    redis_url: str,
    redis_prefix: str,
) -> None:
    from io import StringIO

    from django.core.management import call_command

    def configure(keys: list[str]) -> None:
        options = {"url": redis_url, "prefix": redis_prefix, "encryption_keys": keys}
        settings.WATCHER_AUTH = {
            "URL": emulator.url,
            "CLOCK": fake_clock,
            "STORE": "redis",
            "STORE_OPTIONS": options,
        }

    configure([KEY_ONE])
    site = DjangoSite(emulator, fake_clock, Options(), settings)
    configure([KEY_ONE])  # the site set its own configuration: use the Redis store
    assert site.connect().status == 302
    configure([KEY_TWO])
    out = StringIO()
    call_command("watcher_status", stdout=out)
    rows = [line.split() for line in out.getvalue().splitlines()]
    assert (rows[2][:8]) == [
        "portal-user",
        "?",
        "needs",
        "reconnect",
        "(unreadable",
        "with",
        "the",
        "current",
    ]
