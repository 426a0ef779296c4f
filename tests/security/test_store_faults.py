"""Faults in the stores: a lock holder killed, Redis restarted, PostgreSQL connections dropped.

What a portal relies on: a dead worker never blocks the others for longer than the store's
bound, a store outage is a clear :class:`StoreError` (never a deleted pair or a new password
login), and everything written before the outage is there after it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from watcher_auth import (
    StoreError,
    StoreLockTimeout,
    TokenManager,
    WatcherAuthError,
)
from watcher_auth.stores.redis import RedisStore
from watcher_auth.testing import FakeClock, WatcherEmulator
from watcher_auth.testing.services import require_postgres

KEY = "portal-user-7"
LIFETIME = 300.0
LEASE = 2.0


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True
    )


def assert_one_login_and(emulator: WatcherEmulator, refreshes: int, logins: int = 1) -> None:
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (
        logins,
        refreshes,
        0,
    )


# --- a worker killed while it holds the refresh lock ---------------------------------------


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("django_cache", marks=pytest.mark.redis),
    ]
)
def make_leased_store(request: pytest.FixtureRequest):
    """Stores whose lock is a lease in Redis: RedisStore and Django's cache store."""
    make = request.getfixturevalue(f"make_{request.param}_store")
    lease = {"redis": "lock_lease", "django_cache": "lease"}[request.param]
    return lambda: make(**{lease: LEASE})


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param(
            "django_postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.django_db(databases=["postgres"], transaction=True),
            ],
        ),
    ]
)
def make_row_locked_store(request: pytest.FixtureRequest):
    """Stores whose lock is a PostgreSQL row lock: SQLAlchemyStore and Django's model store."""
    return request.getfixturevalue(f"make_{request.param}_store")


@pytest.mark.multiprocess
def test_a_killed_lock_holder_blocks_others_only_until_its_lease_ends(
    make_leased_store, kill_lock_holder, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = TokenManager(
        emulator.url, store=make_leased_store(), clock=fake_clock, lock_timeout=0.2
    )
    manager.login(KEY, username="alice", password="secret")
    stored = manager.tokens(KEY)
    fake_clock.advance(LIFETIME)

    def refresh_while_held() -> None:
        with pytest.raises(StoreLockTimeout):
            manager.session(KEY).get("profile")

    kill_lock_holder(make_leased_store, manager.store_key(KEY), while_held=refresh_while_held)
    # The holder is dead but its lease runs on: a short wait still times out, cleanly.
    refresh_while_held()
    assert manager.tokens(KEY) == stored

    manager.lock_timeout = LEASE + 5  # long enough for the lease to end
    assert manager.session(KEY).get("profile").json()["name"] == "alice"
    assert manager.tokens(KEY) != stored
    assert_one_login_and(emulator, refreshes=1)


@pytest.mark.multiprocess
def test_a_killed_row_lock_holder_frees_the_lock_with_its_connection(
    make_row_locked_store, kill_lock_holder, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    manager = TokenManager(
        emulator.url, store=make_row_locked_store(), clock=fake_clock, lock_timeout=0.2
    )
    manager.login(KEY, username="alice", password="secret")
    stored = manager.tokens(KEY)
    fake_clock.advance(LIFETIME)

    def refresh_while_held() -> None:
        with pytest.raises(StoreLockTimeout):
            manager.session(KEY).get("profile")
        assert manager.tokens(KEY) == stored

    kill_lock_holder(make_row_locked_store, manager.store_key(KEY), while_held=refresh_while_held)
    # PostgreSQL ends the transaction when the dead worker's socket closes; lock_timeout
    # bounds the wait should that take long.
    manager.lock_timeout = 10
    assert manager.session(KEY).get("profile").json()["name"] == "alice"
    assert_one_login_and(emulator, refreshes=1)


# --- Redis restarted -----------------------------------------------------------------------


def test_a_redis_restart_gives_store_errors_meanwhile_and_keeps_every_pair(
    private_redis, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = RedisStore(url=private_redis.url, encryption_keys=["k"], lock_lease=LEASE)
    manager = TokenManager(emulator.url, store=store, clock=fake_clock, lock_timeout=1)
    manager.login("a", username="alice", password="secret")
    manager.login("b", username="bob", password="hunter2")
    before = {key: manager.tokens(key) for key in ("a", "b")}
    alice = manager.session("a")
    assert alice.get("profile").status_code == 200

    private_redis.stop()
    # A fresh pair this process already holds keeps serving calls...
    assert alice.get("profile").status_code == 200
    # ...anything that needs Redis is a StoreError naming where Redis is.
    where = f"127.0.0.1:{private_redis.port}"
    with pytest.raises(StoreError, match=where):
        manager.tokens("a")
    with pytest.raises(StoreError, match=where):
        manager.session("c").get("profile")
    with pytest.raises(StoreError, match=where):
        manager.login("c", username="alice", password="secret")
    with pytest.raises(StoreError, match=where):
        manager.logout("b")
    fake_clock.advance(LIFETIME)
    with pytest.raises(StoreError, match=where):
        alice.get("profile")
    assert_one_login_and(emulator, refreshes=0, logins=3)

    private_redis.start()
    assert {key: manager.tokens(key) for key in ("a", "b")} == before
    assert manager.tokens("c") is None
    assert alice.get("profile").json()["name"] == "alice"
    assert manager.session("b").get("profile").json()["name"] == "bob"
    assert_one_login_and(emulator, refreshes=2, logins=3)
    store.close()


# --- PostgreSQL connections dropped --------------------------------------------------------


@pytest.fixture
def admin() -> Iterator[psycopg.Connection]:
    """A connection to the maintenance database, for killing the store's connections."""
    conn = psycopg.connect(require_postgres(), autocommit=True)
    yield conn
    conn.close()


def terminate(admin: psycopg.Connection, application_name: str) -> int:
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (application_name,),
    ).fetchall()
    return len(rows)


@pytest.mark.postgres
def test_dropped_postgres_connections_are_replaced_without_losing_a_pair(
    make_postgres_store,
    admin: psycopg.Connection,
    application_name: str,
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
) -> None:
    manager = TokenManager(emulator.url, store=make_postgres_store(), clock=fake_clock)
    manager.login("a", username="alice", password="secret")
    manager.login("b", username="bob", password="hunter2")
    before = {key: manager.tokens(key) for key in ("a", "b")}

    assert terminate(admin, application_name) >= 1
    # The pool notices the dead connections before using them (pre-ping).
    assert {key: manager.tokens(key) for key in ("a", "b")} == before
    terminate(admin, application_name)
    fake_clock.advance(LIFETIME)
    assert manager.session("a").get("profile").json()["name"] == "alice"
    assert manager.session("b").get("profile").json()["name"] == "bob"
    assert_one_login_and(emulator, refreshes=2, logins=2)


@pytest.mark.postgres
def test_a_connection_dropped_during_a_refresh_is_a_store_error_and_the_next_call_recovers(
    make_postgres_store,
    admin: psycopg.Connection,
    application_name: str,
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
) -> None:
    # With rotation on, a refresh Watcher answered but the store could not save is the
    # lost-answer case (tested in test_faults); here the old refresh token stays valid.
    emulator.configure(rotate_refresh_tokens=False, refresh_latency=0.5)
    manager = TokenManager(emulator.url, store=make_postgres_store(), clock=fake_clock)
    manager.login(KEY, username="alice", password="secret")
    stored = manager.tokens(KEY)
    fake_clock.advance(LIFETIME)

    # Watcher takes half a second to answer the refresh; meanwhile the lock's connection
    # (and every other of the store) is killed.
    killer = threading.Timer(0.25, terminate, args=(admin, application_name))
    killer.start()
    with pytest.raises(StoreError, match="watcher_auth_security_test"):
        manager.session(KEY).get("profile")
    killer.join()
    assert manager.tokens(KEY) == stored

    emulator.configure(refresh_latency=0.0)
    assert manager.session(KEY).get("profile").json()["name"] == "alice"
    assert_one_login_and(emulator, refreshes=2)


@pytest.mark.postgres
def test_a_database_refusing_connections_gives_store_errors_until_it_is_back(
    make_postgres_store,
    admin: psycopg.Connection,
    application_name: str,
    emulator: WatcherEmulator,
    fake_clock: FakeClock,
) -> None:
    manager = TokenManager(emulator.url, store=make_postgres_store(), clock=fake_clock)
    manager.login(KEY, username="alice", password="secret")
    stored = manager.tokens(KEY)
    session = manager.session(KEY)
    assert session.get("profile").status_code == 200
    database = manager.store.engine.url.database  # type: ignore[attr-defined]

    admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        terminate(admin, application_name)
        assert session.get("profile").status_code == 200  # the fresh pair held here
        errors: list[WatcherAuthError] = []
        for attempt in (
            lambda: manager.tokens(KEY),
            lambda: manager.logout(KEY),
            lambda: manager.login("other", username="bob", password="hunter2"),
            lambda: (fake_clock.advance(LIFETIME), session.get("profile")),
        ):
            with pytest.raises(StoreError, match=database) as info:
                attempt()
            errors.append(info.value)
    finally:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

    assert all("secret" not in str(e) and "hunter2" not in str(e) for e in errors)
    assert manager.tokens(KEY) == stored
    assert manager.tokens("other") is None
    assert session.get("profile").json()["name"] == "alice"
    assert_one_login_and(emulator, refreshes=1, logins=2)
