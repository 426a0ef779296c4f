"""Refresh storms that guard what the benchmarks measure: one password login however many
workers, even when Watcher allows a user a single session; one store lock per process and
expiry, however many threads wait; and no store round trip while the access token is fresh.

Storms of 4 processes x 8 threads on every shared store are in tests/core, tests/django and
tests/flask; the one-process storm on the memory store is in tests/core/test_manager.py. The
async manager's storms (tasks, processes of tasks, several event loops, a sync and an async
manager on one key) are in tests/asyncio/test_async_storms.py.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from watcher_auth.stores.redis import _RELEASE_SCRIPT
from watcher_auth.testing import SharedClock
from watcher_auth.testing.pytest_plugin import EmulatorFactory
from watcher_auth.testing.storm import run_storm

pytestmark = [pytest.mark.redis, pytest.mark.multiprocess]

LIFETIME = 300.0
EXPIRIES = 3


def log_in_once(make_manager: Any, url: str, clock: SharedClock, key: str = "storm") -> None:
    """The portal's one password login, from the parent process before the workers start."""
    manager = make_manager(url, clock=clock)
    manager.login(key, username="alice", password="secret")
    manager.close()
    manager.store.close()


def test_with_one_session_allowed_eight_processes_share_it_and_nothing_is_evicted(
    watcher_emulator_factory: EmulatorFactory, make_manager: Any
) -> None:
    clock = SharedClock()
    emulator = watcher_emulator_factory(
        clock=clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True, max_sessions=1
    )
    log_in_once(make_manager, emulator.url, clock)

    result = run_storm(
        lambda: make_manager(emulator.url, clock=clock),
        clock=clock,
        lifetime=LIFETIME,
        processes=8,
        threads=8,
        expiries=EXPIRIES,
    )

    stats = emulator.stats
    assert result.errors == []
    assert result.calls == 8 * 8 * (EXPIRIES + 1) * 3
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, EXPIRIES, 0)
    assert (stats.evicted_sessions, stats.unauthorized) == (0, 0)


def test_threads_waiting_for_a_refresh_take_the_store_lock_once_per_process(
    watcher_emulator_factory: EmulatorFactory, make_manager: Any, prefix: str, redis_commands: Any
) -> None:
    clock = SharedClock()
    emulator = watcher_emulator_factory(
        clock=clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True
    )
    log_in_once(make_manager, emulator.url, clock)

    with redis_commands(prefix + "lock:") as commands:
        result = run_storm(
            lambda: make_manager(emulator.url, clock=clock),
            clock=clock,
            lifetime=LIFETIME,
            processes=2,
            threads=8,
            expiries=EXPIRIES,
        )

    stats = emulator.stats
    assert result.errors == []
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, EXPIRIES, 0)
    # Per expiry each process takes the lock at most once (not at all when it reads the other
    # process's new pair first); its other threads wait in the process and use that result.
    # Each lock taken is released once, by the compare-and-delete script.
    release = hashlib.sha1(_RELEASE_SCRIPT.encode()).hexdigest()
    released = [command for command in commands if command.startswith(f"EVALSHA {release}")]
    assert EXPIRIES <= len(released) <= 2 * EXPIRIES, commands


def test_calls_with_a_fresh_access_token_send_redis_nothing(
    watcher_emulator: Any, make_manager: Any, prefix: str, redis_commands: Any
) -> None:
    manager = make_manager(watcher_emulator.url)
    manager.login("steady", username="alice", password="secret")
    session = manager.session("steady")

    with redis_commands(prefix) as commands:
        statuses = [session.get("profile").status_code for _ in range(50)]

    assert statuses == [200] * 50
    assert commands == []
    manager.close()
    manager.store.close()
