"""Django workers forked from one portal share the Django stores: when a portal user is
deleted in one worker, or ``manage.py watcher_disconnect`` runs as a process of its own, no
worker calls Watcher with that user's tokens one second later; the Django model store on
PostgreSQL keeps that bound with its LISTEN connection cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connections

from django_watcher_auth.conf import get_manager, reset_manager, user_key
from watcher_auth import TokenManager
from watcher_auth.testing import WatcherEmulator
from watcher_auth.testing.services import require_postgres, require_redis

from ._fleet import Fleet
from .conftest import ACCOUNTS
from .test_coherence import ChannelCut, act_and_count, check

ROOT = Path(__file__).resolve().parents[2]
PORTAL_USER = "portal-person"

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.multiprocess,
    pytest.mark.django_db(transaction=True, databases=["default", "postgres"]),
]


def delete_portal_user(manager: TokenManager) -> None:
    """The actor worker deletes the person; ``post_delete`` forgets their Watcher records."""
    get_user_model().objects.db_manager("postgres").get(username=PORTAL_USER).delete()


@pytest.fixture(params=["db", "cache"])
def watcher_auth(
    request: pytest.FixtureRequest, accounts_emulator: Callable[..., WatcherEmulator]
) -> Iterator[tuple[WatcherEmulator, dict[str, Any]]]:
    require_postgres()
    emulator = accounts_emulator()
    if request.param == "db":
        yield emulator, {"URL": emulator.url, "STORE": "db", "STORE_OPTIONS": {"using": "postgres"}}
        return
    require_redis(14)
    prefix = f"workers-{uuid.uuid4().hex[:12]}"
    yield (
        emulator,
        {
            "URL": emulator.url,
            "STORE": "cache",
            "CACHE_ALIAS": "redis",
            "CACHE_KEY_PREFIX": prefix,
        },
    )


def django_fleet(settings: Any, config: dict[str, Any]) -> tuple[Fleet, str]:
    settings.WATCHER_AUTH = config
    user = get_user_model().objects.db_manager("postgres").create_user(PORTAL_USER)
    key = user_key(user)
    get_manager().login(key, username="w03", password=ACCOUNTS["w03"])

    def before_fork() -> None:
        connections.close_all()
        reset_manager()

    fleet = Fleet(get_manager, key, actions={"delete": delete_portal_user}, before_fork=before_fork)
    return fleet, key


def test_deleting_the_portal_user_in_one_worker_stops_every_worker_within_a_second(
    settings: Any, watcher_auth: tuple[WatcherEmulator, dict[str, Any]]
) -> None:
    emulator, config = watcher_auth
    fleet, _ = django_fleet(settings, config)
    with fleet:
        served, answered = act_and_count(fleet, emulator, "delete")
    check("disconnect", served, answered)


def test_watcher_disconnect_run_as_its_own_process_stops_every_worker_within_a_second(
    settings: Any, watcher_auth: tuple[WatcherEmulator, dict[str, Any]]
) -> None:
    emulator, config = watcher_auth
    fleet, _ = django_fleet(settings, config)

    def run_command() -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.workers.django_command_settings",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "integrations"), str(ROOT)]),
            "WATCHER_AUTH_JSON": json.dumps(config),
        }
        done = subprocess.run(
            [sys.executable, "-m", "django", "watcher_disconnect", PORTAL_USER],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "Disconnected" in done.stdout

    with fleet:
        served, answered = act_and_count(fleet, emulator, run_command)
    check("disconnect", served, answered)


def test_the_model_store_keeps_the_bound_with_its_listen_connection_cut(
    settings: Any, accounts_emulator: Callable[..., WatcherEmulator]
) -> None:
    emulator = accounts_emulator()
    fleet, _ = django_fleet(
        settings, {"URL": emulator.url, "STORE": "db", "STORE_OPTIONS": {"using": "postgres"}}
    )
    database = connections["postgres"].settings_dict["NAME"]
    url = f"postgresql://{settings.DATABASES['postgres']['USER']}@127.0.0.1:5432/{database}"
    with fleet, ChannelCut("postgres", url):
        served, answered = act_and_count(fleet, emulator, "delete")
    check("disconnect", served, answered)
