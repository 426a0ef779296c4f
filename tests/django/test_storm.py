"""4 processes x 8 threads of one portal user through several token expiries, with refresh
token rotation on, sharing the PostgreSQL-backed and the Redis-backed store: Watcher sees one
password login, one refresh per expiry, and no rejected refresh."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connections

from django_watcher_auth.conf import get_manager, reset_manager, user_key
from watcher_auth import TokenManager
from watcher_auth.testing import SharedClock
from watcher_auth.testing.pytest_plugin import EmulatorFactory
from watcher_auth.testing.storm import run_storm

LIFETIME = 300.0
EXPIRIES = 3


def storm_through_django(
    settings: Any, factory: EmulatorFactory, user: Any, **watcher_auth: Any
) -> Any:
    clock = SharedClock()
    emulator = factory(clock=clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True)
    settings.WATCHER_AUTH = {"URL": emulator.url, "CLOCK": clock, **watcher_auth}
    key = user_key(user)
    get_manager().login(key, username="alice", password="secret")

    def before_fork() -> None:
        connections.close_all()
        reset_manager()

    def make_manager() -> TokenManager:
        return get_manager()  # built in the worker from the inherited settings

    result = run_storm(
        make_manager,
        clock=clock,
        lifetime=LIFETIME,
        processes=4,
        threads=8,
        expiries=EXPIRIES,
        key=key,
        before_fork=before_fork,
    )
    return emulator, result


@pytest.mark.postgres
@pytest.mark.multiprocess
@pytest.mark.django_db(transaction=True, databases=["postgres"])
def test_a_refresh_storm_on_the_postgresql_store(
    settings: Any, watcher_emulator_factory: EmulatorFactory, postgres_alias: str
) -> None:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.db_manager(postgres_alias).create_user("storm-pg")
    emulator, result = storm_through_django(
        settings,
        watcher_emulator_factory,
        user,
        STORE="db",
        STORE_OPTIONS={"using": postgres_alias},
    )
    assert result.errors == []
    assert result.calls == 4 * 8 * 3 * (EXPIRIES + 1)
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, EXPIRIES, 0)
    assert stats.unauthorized == 0


@pytest.mark.redis
@pytest.mark.multiprocess
@pytest.mark.django_db
def test_a_refresh_storm_on_the_redis_cache_store(
    settings: Any, watcher_emulator_factory: EmulatorFactory, make_user: Any, redis_prefix: str
) -> None:
    emulator, result = storm_through_django(
        settings,
        watcher_emulator_factory,
        make_user("storm-redis"),
        STORE="cache",
        CACHE_ALIAS="redis",
        CACHE_KEY_PREFIX=redis_prefix,
    )
    assert result.errors == []
    assert result.calls == 4 * 8 * 3 * (EXPIRIES + 1)
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, EXPIRIES, 0)
    assert stats.unauthorized == 0
