"""The same decisions carried out by the async driver: AsyncTokenManager over httpx."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from watcher_auth import (
    AsyncTokenManager,
    EventType,
    NotConnected,
    ReauthenticationRequired,
    StoreLockTimeout,
    WatcherEvent,
    WatcherUnavailable,
)
from watcher_auth.testing import FakeClock, WatcherEmulator

KEY = "async-user-1"
LIFETIME = 300.0
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _no_ca_bundle_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CA bundle from the environment reaches httpx as a path, which httpx deprecates.
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(clock=fake_clock, access_lifetime=LIFETIME)


def run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


def test_an_async_manager_logs_in_calls_and_refreshes_once_per_expiry(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    async def main() -> list[int]:
        async with AsyncTokenManager(emulator.url, clock=fake_clock, timeout=5.0) as manager:
            await manager.login(KEY, username="alice", password="secret")
            statuses = []
            async with manager.session(KEY) as client:
                for _ in range(3):
                    statuses.append((await client.get("profile")).status_code)
                    fake_clock.advance(LIFETIME)
            return statuses

    assert run(main) == [200, 200, 200]
    stats = emulator.stats
    assert (stats.password_logins, stats.refreshes, stats.unauthorized) == (1, 2, 0)


def test_async_tasks_that_get_a_401_at_once_share_one_refresh(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=0.3
    )
    events: list[WatcherEvent] = []

    async def main() -> list[int]:
        async with AsyncTokenManager(emulator.url, clock=fake_clock, timeout=5.0) as manager:
            await manager.login(KEY, username="alice", password="secret")
            manager.add_listener(events.append)
            emulator.revoke_access_tokens("alice")
            async with manager.session(KEY) as client:
                answers = await asyncio.gather(*(client.get("profile") for _ in range(3)))
            return [a.status_code for a in answers]

    assert run(main) == [200, 200, 200]
    assert (emulator.stats.unauthorized, emulator.stats.refreshes) == (3, 1)
    assert [e.type for e in events].count(EventType.LOCK_WAITED) == 2


def test_an_async_provider_logs_in_again_after_a_rejected_refresh(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    async def provide(key: str) -> tuple[str, str]:
        return ("alice", "secret")

    async def main() -> int:
        async with AsyncTokenManager(
            emulator.url, clock=fake_clock, timeout=5.0, credentials=provide
        ) as manager:
            await manager.login(KEY, username="alice", password="secret")
            emulator.revoke("alice")
            fake_clock.advance(LIFETIME)
            async with manager.session(KEY) as client:
                return (await client.get("profile")).status_code

    assert run(main) == 200
    assert emulator.stats.password_logins == 2


def test_an_async_rejected_refresh_without_a_provider_asks_to_connect_again(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    async def main() -> Any:
        async with AsyncTokenManager(emulator.url, clock=fake_clock, timeout=5.0) as manager:
            await manager.login(KEY, username="alice", password="secret")
            emulator.revoke("alice")
            fake_clock.advance(LIFETIME)
            with pytest.raises(ReauthenticationRequired):
                await manager.current_tokens(KEY)
            return await manager.tokens(KEY)

    assert run(main) is None


def test_an_async_manager_without_tokens_is_not_connected_and_logout_says_so(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    async def main() -> tuple[bool, bool]:
        async with AsyncTokenManager(emulator.url, clock=fake_clock) as manager:
            with pytest.raises(NotConnected):
                await manager.current_tokens(KEY)
            await manager.login(KEY, username="alice", password="secret")
            first = await manager.logout(KEY)
            return first, await manager.logout(KEY)

    assert run(main) == (True, False)


def test_an_async_refresh_waits_for_its_answer_past_the_timeout_until_the_deadline(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=1.0
    )

    async def main() -> None:
        async with AsyncTokenManager(
            emulator.url, clock=fake_clock, timeout=0.4, deadline=5.0
        ) as manager:
            await manager.login(KEY, username="alice", password="secret")
            fake_clock.advance(LIFETIME)
            await manager.current_tokens(KEY)

    run(main)
    assert emulator.stats.refreshes == 1


def test_an_async_refresh_without_an_answer_by_the_deadline_is_unavailable(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=2.0
    )

    async def main() -> None:
        async with AsyncTokenManager(
            emulator.url, clock=fake_clock, timeout=5.0, deadline=0.5
        ) as manager:
            await manager.login(KEY, username="alice", password="secret")
            fake_clock.advance(LIFETIME)
            with pytest.raises(WatcherUnavailable, match=r"0\.5s"):
                await manager.current_tokens(KEY)
            assert await manager.tokens(KEY) is not None  # the pair is kept

    run(main)


def test_an_async_task_waiting_past_lock_timeout_gets_store_lock_timeout(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=1.0
    )

    async def main() -> None:
        async with AsyncTokenManager(
            emulator.url, clock=fake_clock, timeout=5.0, lock_timeout=0.2
        ) as manager:
            await manager.login(KEY, username="alice", password="secret")
            fake_clock.advance(LIFETIME)
            slow = asyncio.ensure_future(manager.current_tokens(KEY))
            await asyncio.sleep(0.1)
            with pytest.raises(StoreLockTimeout, match="held for over"):
                await manager.current_tokens(KEY)
            await slow

    run(main)
    assert emulator.stats.refreshes == 1


def test_one_async_task_more_than_max_waiters_is_refused_at_once(
    watcher_emulator_factory, fake_clock: FakeClock
) -> None:
    emulator = watcher_emulator_factory(
        clock=fake_clock, access_lifetime=LIFETIME, refresh_latency=0.6
    )

    async def main() -> None:
        async with AsyncTokenManager(
            emulator.url, clock=fake_clock, timeout=5.0, max_waiters=1
        ) as manager:
            await manager.login(KEY, username="alice", password="secret")
            fake_clock.advance(LIFETIME)
            first = asyncio.ensure_future(manager.current_tokens(KEY))
            await asyncio.sleep(0.1)
            second = asyncio.ensure_future(manager.current_tokens(KEY))
            await asyncio.sleep(0.1)
            with pytest.raises(StoreLockTimeout, match="too many callers"):
                await manager.current_tokens(KEY)
            await asyncio.gather(first, second)

    run(main)


def test_an_async_store_failure_reaches_the_caller_and_is_reported_as_an_event(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    from watcher_auth import StoreError, StoreKey, TokenPair
    from watcher_auth.stores.memory import AsyncMemoryStore

    class FailingStore(AsyncMemoryStore):
        async def load(self, key: StoreKey) -> TokenPair | None:
            raise StoreError("the token store is unreachable")

    events: list[WatcherEvent] = []

    async def main() -> None:
        async with AsyncTokenManager(emulator.url, store=FailingStore(), clock=fake_clock) as m:
            m.add_listener(events.append)
            with pytest.raises(StoreError):
                await m.current_tokens(KEY)

    run(main)
    assert [(e.type, e.error) for e in events] == [(EventType.STORE_ERROR, "StoreError")]
