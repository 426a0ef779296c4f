"""What a call leaves behind: nothing that only the cycle collector can free.

A web portal makes a call or more per request; a reference cycle per call (a request whose
answer hook holds the request) keeps the request, its headers and the answer alive until the
next collection and makes collections more frequent. These tests run with the collector off
and check that a finished call's request is freed as soon as its answer is dropped.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from watcher_auth import AsyncTokenManager, MemoryStore, StoreKey, TokenManager, TokenPair
from watcher_auth.stores import AsyncMemoryStore
from watcher_auth.testing import FakeClock, WatcherEmulator

KEY = "portal-user-4"


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(clock=fake_clock, access_lifetime=60)


@pytest.fixture
def manager(emulator: WatcherEmulator, fake_clock: FakeClock) -> Iterator[TokenManager]:
    manager = TokenManager(emulator.url, store=MemoryStore(), clock=fake_clock, timeout=5.0)
    manager.login(KEY, username="alice", password="secret")
    yield manager
    manager.close()


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _request_freed_with_its_answer(manager: TokenManager) -> bool:
    response = manager.session(KEY).get("streams")
    assert response.status_code == 200
    request = weakref.ref(response.request)
    first = weakref.ref(response.history[0].request) if response.history else None
    del response
    return request() is None and (first is None or first() is None)


def test_a_call_with_a_fresh_pair_leaves_no_reference_cycle(
    manager: TokenManager, emulator: WatcherEmulator, no_collector: None
) -> None:
    assert _request_freed_with_its_answer(manager)
    assert emulator.stats.refreshes == 0


def test_a_call_that_refreshes_first_leaves_no_reference_cycle(
    manager: TokenManager, emulator: WatcherEmulator, fake_clock: FakeClock, no_collector: None
) -> None:
    fake_clock.advance(59)  # inside the refresh margin: the flow refreshes before sending
    assert _request_freed_with_its_answer(manager)
    assert emulator.stats.refreshes == 1


def test_a_call_retried_after_a_401_leaves_no_reference_cycle(
    manager: TokenManager, emulator: WatcherEmulator, no_collector: None
) -> None:
    emulator.revoke_access_tokens("alice")
    assert _request_freed_with_its_answer(manager)
    assert (emulator.stats.unauthorized, emulator.stats.refreshes) == (1, 1)


@pytest.mark.parametrize("path", ["streams", "/streams", "streams?limit=1"])
def test_every_client_resolves_a_relative_path_under_the_api_root(
    manager: TokenManager, emulator: WatcherEmulator, fake_clock: FakeClock, path: str
) -> None:
    expected = manager.api_root + path.lstrip("/")
    assert manager.session(KEY).get(path).url == expected
    with manager.httpx_client(KEY) as client:
        answer = client.get(path)
        assert (answer.status_code, str(answer.url)) == (200, expected)

    async def from_the_async_client() -> tuple[int, str]:
        async_manager = AsyncTokenManager(emulator.url, clock=fake_clock, timeout=5.0)
        try:
            await async_manager.login(KEY, username="alice", password="secret")
            answer = await async_manager.session(KEY).get(path)
            return answer.status_code, str(answer.url)
        finally:
            await async_manager.aclose()

    assert asyncio.run(from_the_async_client()) == (200, expected)


class _CountingSharedStore(MemoryStore):
    """Stands in for a shared store with no change channel, counting reads."""

    shared = True

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def load(self, key: StoreKey) -> TokenPair | None:
        self.loads += 1
        return super().load(key)


def test_the_per_process_cache_keeps_the_most_recently_used_copies(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    store = _CountingSharedStore()
    manager = TokenManager(emulator.url, store=store, clock=fake_clock, local_cache_size=2)
    for key in ("a", "b", "c"):
        manager.login(key, username="alice", password="secret")  # copies of b and c kept
    store.loads = 0
    manager.session("b").get("streams")  # b's copy, now the most recently used
    manager.session("a").get("streams")  # a store read; c's copy makes room
    manager.session("b").get("streams")  # b's copy again
    assert store.loads == 1
    manager.close()


class _SharedWithoutCopies(MemoryStore):
    """Stands in for a shared store; with ``local_cache_size=0`` every call runs the flow."""

    shared = True


@pytest.mark.parametrize("client", ["requests", "httpx", "async"])
@pytest.mark.parametrize("copies", ["fresh copy", "no copies"])
def test_every_client_learns_watchers_clock_from_the_date_of_an_ordinary_answer(
    watcher_emulator_factory: Any, client: str, copies: str
) -> None:
    # A whole second, so a Date header is Watcher's exact time.
    fake_clock = FakeClock(1_800_000_000.0)
    emulator = watcher_emulator_factory(clock=fake_clock)
    behind = 10.0

    def here() -> float:  # this host's clock, 10 s behind Watcher's
        return fake_clock() - behind

    options: dict[str, Any] = {"clock": here, "timeout": 5.0}
    if copies == "no copies":
        options.update(local_cache_size=0)
    if client == "async":

        async def offset_after_a_call() -> float | None:
            store = AsyncMemoryStore() if copies == "fresh copy" else _AsyncSharedWithoutCopies()
            async with AsyncTokenManager(emulator.url, store=store, **options) as manager:
                await store.save(manager.store_key(KEY), _pair(emulator, here))
                assert manager.clock_offset is None
                assert (await manager.session(KEY).get("profile")).status_code == 200
                return manager.clock_offset

        assert asyncio.run(offset_after_a_call()) == behind + 0.5
        return
    store = MemoryStore() if copies == "fresh copy" else _SharedWithoutCopies()
    manager = TokenManager(emulator.url, store=store, **options)
    store.save(manager.store_key(KEY), _pair(emulator, here))
    assert manager.clock_offset is None
    if client == "requests":
        assert manager.session(KEY).get("profile").status_code == 200
    else:
        with manager.httpx_client(KEY) as httpx_client:
            assert httpx_client.get("profile").status_code == 200
    # Watcher's second began 10 s ahead of this host; on average it is half over.
    assert manager.clock_offset == behind + 0.5
    manager.close()


class _AsyncSharedWithoutCopies(AsyncMemoryStore):
    shared = True


def _pair(emulator: WatcherEmulator, here: Any) -> TokenPair:
    """A fresh pair for alice, obtained elsewhere (no clock offset known to this host)."""
    elsewhere = TokenManager(emulator.url, timeout=5.0, clock=here)
    elsewhere.login(KEY, username="alice", password="secret")
    pair = elsewhere.tokens(KEY)
    elsewhere.close()
    assert pair is not None
    return pair


def test_a_date_header_from_another_origin_does_not_move_watchers_clock(
    watcher_emulator_factory: Any, recording_server: Any
) -> None:
    fake_clock = FakeClock(1_800_000_000.0)  # years away from the other server's real clock
    emulator = watcher_emulator_factory(clock=fake_clock)
    for store in (MemoryStore(), _SharedWithoutCopies()):
        manager = TokenManager(
            emulator.url, store=store, clock=fake_clock, timeout=5.0, local_cache_size=0
        )
        manager.login(KEY, username="alice", password="secret")
        learned = manager.clock_offset  # from Watcher's own answers
        assert manager.session(KEY).get(recording_server.url + "/page").status_code == 200
        assert manager.clock_offset == learned
        manager.close()


def test_an_answer_to_a_call_that_ran_the_flow_is_read_under_the_size_limit(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    from watcher_auth import ResponseTooLarge, WatcherSession

    manager = TokenManager(
        emulator.url, store=_SharedWithoutCopies(), clock=fake_clock, local_cache_size=0
    )
    manager.login(KEY, username="alice", password="secret")
    session = WatcherSession(
        base_url=manager.api_root, auth=manager.auth(KEY), timeout=5.0, max_response_bytes=8
    )
    with pytest.raises(ResponseTooLarge):
        session.get("profile")
    manager.close()


def test_a_memory_store_that_changes_loading_is_read_through_the_flow(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    from watcher_auth import EventType, StoreError

    class Failing(MemoryStore):
        broken = False

        def load(self, key: StoreKey) -> TokenPair | None:
            if self.broken:
                raise StoreError("the disk is full")
            return super().load(key)

    store = Failing()
    manager = TokenManager(emulator.url, store=store, clock=fake_clock, timeout=5.0)
    errors: list[Any] = []
    manager.add_listener(
        lambda event: errors.append(event) if event.type is EventType.STORE_ERROR else None
    )
    manager.login(KEY, username="alice", password="secret")
    assert manager.session(KEY).get("profile").status_code == 200
    store.broken = True
    for call in (lambda: manager.session(KEY).get("profile"), lambda: manager.current_tokens(KEY)):
        with pytest.raises(StoreError):
            call()
    assert [event.error for event in errors] == ["StoreError", "StoreError"]
    manager.close()
