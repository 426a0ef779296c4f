"""A task can take a store's lock again and again: logging in, refreshing, calling from the
tasks it starts and logging out, all from one task, through every async store that ties a
lock's reads and writes to its holder (the adapter's lock thread, the database transaction).

The lock is released in a shielded task of its own (so a cancelled caller still releases
it), which runs in a copy of the caller's context: what the store noted in the caller's
context about the held lock must not outlive the lock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from watcher_auth import AsyncTokenManager, EventType, WatcherEvent
from watcher_auth.stores import AsyncStoreAdapter
from watcher_auth.testing import FakeClock
from watcher_auth.testing.pytest_plugin import EmulatorFactory

KEY = "portal-user-42"
LIFETIME = 300.0


@pytest.fixture(
    params=[
        "adapter over SQLAlchemyStore",
        pytest.param("async postgres", marks=pytest.mark.postgres),
        "async sqlite",
        pytest.param("async redis", marks=pytest.mark.redis),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "adapter over SQLAlchemyStore":
        from watcher_auth.stores.sqlalchemy import SQLAlchemyStore

        url = f"sqlite:///{tmp_path / 'sync.sqlite3'}"
        return AsyncStoreAdapter(SQLAlchemyStore(url, encryption_keys=["tasks key"]))
    fixture = {
        "async postgres": "async_postgres_store",
        "async sqlite": "async_sqlite_store",
        "async redis": "async_redis_store",
    }[request.param]
    return request.getfixturevalue(fixture)()


def test_one_task_logs_in_refreshes_calls_and_logs_out_through_the_store(
    watcher_emulator_factory: EmulatorFactory, fake_clock: FakeClock, store: Any
) -> None:
    emulator = watcher_emulator_factory(clock=fake_clock, access_lifetime=LIFETIME)
    events: list[WatcherEvent] = []

    async def scenario() -> list[int]:
        async with AsyncTokenManager(emulator.url, store=store, clock=fake_clock) as manager:
            manager.add_listener(events.append)
            await manager.login(KEY, username="alice", password="secret")
            await manager.refresh(KEY)
            await manager.refresh(KEY)
            fake_clock.advance(LIFETIME)
            session = manager.session(KEY)
            # Tasks started by this task inherit its context.
            replies = await asyncio.gather(*(session.get("profile") for _ in range(10)))
            assert await manager.logout(KEY)
            assert await manager.tokens(KEY) is None
            await store.aclose()
            return [reply.status_code for reply in replies]

    assert asyncio.run(scenario()) == [200] * 10
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes) == (1, 3)
    # Taking a lock through a thread or a database may count as waiting for it.
    assert [e.type for e in events if e.type != EventType.LOCK_WAITED] == [
        EventType.CONNECTED,
        EventType.REFRESHED,
        EventType.REFRESHED,
        EventType.REFRESHED,
        EventType.DISCONNECTED,
    ]
