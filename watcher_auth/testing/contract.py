"""The contracts every :class:`~watcher_auth.TokenStore` and
:class:`~watcher_auth.stores.AsyncTokenStore` must pass.

Subclass :class:`TokenStoreContract` in a test module and give it a ``store`` fixture that
returns a fresh, empty store::

    class TestMyStore(TokenStoreContract):
        @pytest.fixture
        def store(self):
            return MyStore(...)

``other_store`` (by default the same object) may return a second instance over the same
backend, to check that records and locks are seen through another client, as another
process would see them.

:class:`AsyncTokenStoreContract` is the same for async stores, with no async test plugin
needed: each test runs its coroutines on an event loop of its own, which the ``arun``
fixture drives (use it to close the store when the fixture ends)::

    class TestMyAsyncStore(AsyncTokenStoreContract):
        @pytest.fixture
        def store(self, arun):
            store = MyAsyncStore(...)
            yield store
            arun(store.aclose())
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from watcher_auth._exceptions import StoreLockTimeout
from watcher_auth._tokens import StoreKey, TokenPair
from watcher_auth.stores.base import AsyncTokenStore, TokenStore

__all__ = ["AsyncTokenStoreContract", "RunCoroutine", "TokenStoreContract", "sample_pair"]

T = TypeVar("T")

#: The longest a change may take to reach a watcher.
CHANGE_DELIVERY = 1.0


def _next_change_to(key: StoreKey, get: Callable[..., StoreKey | None], within: float) -> bool:
    """Whether a change of ``key`` (or of everything) arrives within ``within`` seconds."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            changed = get(timeout=left)
        except queue.Empty:
            return False
        if changed is None or changed == key:
            return True
    return False


#: Runs a coroutine to its end on the test's event loop (the ``arun`` fixture).
RunCoroutine = Callable[[Coroutine[Any, Any, T]], T]


def sample_pair(n: int = 1, **changes: object) -> TokenPair:
    """A pair with every field set, distinct for each ``n``."""
    pair = TokenPair(
        access_token=f"eyJhbGciOiJSUzI1NiJ9.access-{n}.sig",
        refresh_token=f"3637e790-5530-11ed-bdc3-{n:012d}",
        expires_at=1_900_000_000.0 + n,
        issued_at=1_899_999_700.0 + n,
        clock_offset=-12.5,
        username=f"alice{n}",
        connected_at=1_800_000_000.25,
        refreshed_at=None,
        scheme="jwt",
    )
    return pair.replace(**changes) if changes else pair


class TokenStoreContract:
    """Behaviour every token store shares. Subclasses provide the ``store`` fixture."""

    @pytest.fixture
    def other_store(self, store: TokenStore) -> TokenStore:
        """A second client of the same backend; override where the backend allows one."""
        return store

    @pytest.fixture
    def key(self) -> StoreKey:
        return StoreKey(server="https://watcher.test", user=f"user-{uuid.uuid4().hex[:8]}")

    def test_a_missing_key_loads_as_none(self, store: TokenStore, key: StoreKey) -> None:
        assert store.load(key) is None

    def test_a_saved_pair_loads_back_with_every_field(
        self, store: TokenStore, other_store: TokenStore, key: StoreKey
    ) -> None:
        pair = sample_pair(refreshed_at=1_800_000_100.5)
        store.save(key, pair)
        assert store.load(key) == pair
        assert other_store.load(key) == pair

    def test_optional_fields_survive_as_none(self, store: TokenStore, key: StoreKey) -> None:
        pair = TokenPair(access_token="opaque-session-id", scheme="session")
        store.save(key, pair)
        assert store.load(key) == pair

    def test_save_replaces_the_previous_pair(self, store: TokenStore, key: StoreKey) -> None:
        store.save(key, sample_pair(1))
        store.save(key, sample_pair(2))
        loaded = store.load(key)
        assert loaded is not None and loaded.access_token == sample_pair(2).access_token

    def test_delete_forgets_and_is_idempotent(
        self, store: TokenStore, other_store: TokenStore, key: StoreKey
    ) -> None:
        store.save(key, sample_pair())
        store.delete(key)
        assert other_store.load(key) is None
        store.delete(key)

    def test_keys_are_kept_apart_per_user_server_and_api(
        self, store: TokenStore, key: StoreKey
    ) -> None:
        neighbours = [
            StoreKey(server=key.server, user=key.user + "-2", api=key.api),
            StoreKey(server="https://other-watcher.test", user=key.user, api=key.api),
            StoreKey(server=key.server, user=key.user, api="v2"),
        ]
        store.save(key, sample_pair(1))
        for n, neighbour in enumerate(neighbours, start=2):
            assert store.load(neighbour) is None
            store.save(neighbour, sample_pair(n))
        loaded = store.load(key)
        assert loaded is not None and loaded.access_token == sample_pair(1).access_token
        store.delete(neighbours[0])
        assert store.load(key) is not None

    def test_unusual_characters_in_keys_are_fine(self, store: TokenStore) -> None:
        key = StoreKey(server="http://[::1]:8080/sub path", user="ünïcode|user:1/2 %s")
        store.save(key, sample_pair())
        assert store.load(key) == sample_pair()

    def test_the_lock_excludes_a_second_holder(
        self, store: TokenStore, other_store: TokenStore, key: StoreKey
    ) -> None:
        with store.lock(key, timeout=5):
            outcome: list[object] = []

            def contender() -> None:
                try:
                    with other_store.lock(key, timeout=0.3):
                        outcome.append("acquired")
                except StoreLockTimeout as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=contender)
            thread.start()
            thread.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], StoreLockTimeout)

    def test_a_waiter_gets_the_lock_once_it_is_released(
        self, store: TokenStore, other_store: TokenStore, key: StoreKey
    ) -> None:
        released = threading.Event()
        acquired_after: list[bool] = []

        def waiter() -> None:
            with other_store.lock(key, timeout=10):
                acquired_after.append(released.is_set())

        with store.lock(key, timeout=5):
            thread = threading.Thread(target=waiter)
            thread.start()
            time.sleep(0.2)
            released.set()
        thread.join(15)
        assert acquired_after == [True]

    def test_the_lock_is_released_when_the_block_raises(
        self, store: TokenStore, key: StoreKey
    ) -> None:
        with pytest.raises(RuntimeError), store.lock(key, timeout=5):
            raise RuntimeError("boom")
        with store.lock(key, timeout=1):
            pass

    def test_locks_on_different_keys_do_not_block_each_other(
        self, store: TokenStore, other_store: TokenStore, key: StoreKey
    ) -> None:
        other = StoreKey(server=key.server, user=key.user + "-other", api=key.api)
        with store.lock(key, timeout=5), other_store.lock(other, timeout=0.5):
            pass

    def test_save_and_delete_work_while_holding_the_lock(
        self, store: TokenStore, key: StoreKey
    ) -> None:
        with store.lock(key, timeout=5):
            store.save(key, sample_pair(1))
            assert store.load(key) is not None
            store.delete(key)
            assert store.load(key) is None

    def test_a_change_channel_tells_of_every_save_and_delete_by_another_client(
        self, store: TokenStore, other_store: TokenStore, key: StoreKey
    ) -> None:
        changes: queue.Queue[StoreKey | None] = queue.Queue()
        watch = store.watch(changes.put)
        if watch is None:
            # No channel: copies are trusted for a bounded time instead.
            assert 0 < store.staleness_bound < float("inf")
            return
        try:
            assert watch.healthy
            other_store.save(key, sample_pair())
            assert _next_change_to(key, changes.get, CHANGE_DELIVERY)
            other_store.delete(key)
            assert _next_change_to(key, changes.get, CHANGE_DELIVERY)
        finally:
            watch.close()
        assert not watch.healthy


class AsyncTokenStoreContract:
    """Behaviour every async token store shares. Subclasses provide the ``store`` fixture.

    Besides the promises of :class:`TokenStoreContract`, a waiting lock must leave the event
    loop free: a ticker on the same loop is never held up for more than
    :attr:`max_loop_stall` seconds.
    """

    #: The longest pause of the event loop tolerated while the store waits.
    max_loop_stall = 0.02

    @pytest.fixture
    def arun(self) -> Iterator[RunCoroutine[Any]]:
        """Runs coroutines on an event loop that lives as long as the test."""
        loop = asyncio.new_event_loop()
        yield loop.run_until_complete
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    @pytest.fixture
    def other_store(self, store: AsyncTokenStore) -> AsyncTokenStore:
        """A second client of the same backend; override where the backend allows one."""
        return store

    @pytest.fixture
    def key(self) -> StoreKey:
        return StoreKey(server="https://watcher.test", user=f"user-{uuid.uuid4().hex[:8]}")

    def test_a_missing_key_loads_as_none(
        self, store: AsyncTokenStore, key: StoreKey, arun: RunCoroutine[Any]
    ) -> None:
        assert arun(store.load(key)) is None

    def test_a_saved_pair_loads_back_with_every_field(
        self,
        store: AsyncTokenStore,
        other_store: AsyncTokenStore,
        key: StoreKey,
        arun: RunCoroutine[Any],
    ) -> None:
        pair = sample_pair(refreshed_at=1_800_000_100.5)
        arun(store.save(key, pair))
        assert arun(store.load(key)) == pair
        assert arun(other_store.load(key)) == pair

    def test_optional_fields_survive_as_none(
        self, store: AsyncTokenStore, key: StoreKey, arun: RunCoroutine[Any]
    ) -> None:
        pair = TokenPair(access_token="opaque-session-id", scheme="session")
        arun(store.save(key, pair))
        assert arun(store.load(key)) == pair

    def test_save_replaces_the_previous_pair(
        self, store: AsyncTokenStore, key: StoreKey, arun: RunCoroutine[Any]
    ) -> None:
        arun(store.save(key, sample_pair(1)))
        arun(store.save(key, sample_pair(2)))
        loaded = arun(store.load(key))
        assert loaded is not None and loaded.access_token == sample_pair(2).access_token

    def test_delete_forgets_and_is_idempotent(
        self,
        store: AsyncTokenStore,
        other_store: AsyncTokenStore,
        key: StoreKey,
        arun: RunCoroutine[Any],
    ) -> None:
        arun(store.save(key, sample_pair()))
        arun(store.delete(key))
        assert arun(other_store.load(key)) is None
        arun(store.delete(key))

    def test_keys_are_kept_apart_per_user_server_and_api(
        self, store: AsyncTokenStore, key: StoreKey, arun: RunCoroutine[Any]
    ) -> None:
        neighbours = [
            StoreKey(server=key.server, user=key.user + "-2", api=key.api),
            StoreKey(server="https://other-watcher.test", user=key.user, api=key.api),
            StoreKey(server=key.server, user=key.user, api="v2"),
        ]
        arun(store.save(key, sample_pair(1)))
        for n, neighbour in enumerate(neighbours, start=2):
            assert arun(store.load(neighbour)) is None
            arun(store.save(neighbour, sample_pair(n)))
        loaded = arun(store.load(key))
        assert loaded is not None and loaded.access_token == sample_pair(1).access_token
        arun(store.delete(neighbours[0]))
        assert arun(store.load(key)) is not None

    def test_unusual_characters_in_keys_are_fine(
        self, store: AsyncTokenStore, arun: RunCoroutine[Any]
    ) -> None:
        key = StoreKey(server="http://[::1]:8080/sub path", user="ünïcode|user:1/2 %s")
        arun(store.save(key, sample_pair()))
        assert arun(store.load(key)) == sample_pair()

    def test_the_lock_excludes_a_second_holder(
        self,
        store: AsyncTokenStore,
        other_store: AsyncTokenStore,
        key: StoreKey,
        arun: RunCoroutine[Any],
    ) -> None:
        async def scenario() -> None:
            async with store.lock(key, timeout=5):
                started = time.monotonic()
                with pytest.raises(StoreLockTimeout):
                    async with other_store.lock(key, timeout=0.3):
                        pass
                assert 0.25 <= time.monotonic() - started < 2

        arun(scenario())

    def test_a_waiter_gets_the_lock_once_it_is_released(
        self,
        store: AsyncTokenStore,
        other_store: AsyncTokenStore,
        key: StoreKey,
        arun: RunCoroutine[Any],
    ) -> None:
        async def scenario() -> list[bool]:
            released = asyncio.Event()
            acquired_after: list[bool] = []

            async def waiter() -> None:
                async with other_store.lock(key, timeout=10):
                    acquired_after.append(released.is_set())

            async with store.lock(key, timeout=5):
                task = asyncio.ensure_future(waiter())
                await asyncio.sleep(0.2)
                released.set()
            await asyncio.wait_for(task, 15)
            return acquired_after

        assert arun(scenario()) == [True]

    def test_the_lock_is_released_when_the_block_raises(
        self, store: AsyncTokenStore, key: StoreKey, arun: RunCoroutine[Any]
    ) -> None:
        async def scenario() -> None:
            with pytest.raises(RuntimeError):
                async with store.lock(key, timeout=5):
                    raise RuntimeError("boom")
            async with store.lock(key, timeout=1):
                pass

        arun(scenario())

    def test_a_cancelled_waiter_leaves_the_lock_free(
        self,
        store: AsyncTokenStore,
        other_store: AsyncTokenStore,
        key: StoreKey,
        arun: RunCoroutine[Any],
    ) -> None:
        async def scenario() -> None:
            async with store.lock(key, timeout=5):
                # Cancelled at different moments: while sleeping between attempts, and in
                # the middle of an attempt.
                for delay in (0.1, 0, 0.001, 0.002, 0.003, 0.005, 0.008, 0.013, 0.021, 0.034):
                    waiter = asyncio.ensure_future(other_store.lock(key, timeout=3).__aenter__())
                    await asyncio.sleep(delay)
                    waiter.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await waiter
            async with other_store.lock(key, timeout=2):
                pass

        arun(scenario())

    def test_locks_on_different_keys_do_not_block_each_other(
        self,
        store: AsyncTokenStore,
        other_store: AsyncTokenStore,
        key: StoreKey,
        arun: RunCoroutine[Any],
    ) -> None:
        other = StoreKey(server=key.server, user=key.user + "-other", api=key.api)

        async def scenario() -> None:
            async with store.lock(key, timeout=5), other_store.lock(other, timeout=0.5):
                pass

        arun(scenario())

    def test_save_and_delete_work_while_holding_the_lock(
        self, store: AsyncTokenStore, key: StoreKey, arun: RunCoroutine[Any]
    ) -> None:
        async def scenario() -> None:
            async with store.lock(key, timeout=5):
                await store.save(key, sample_pair(1))
                assert await store.load(key) == sample_pair(1)
                await store.delete(key)
                assert await store.load(key) is None

        arun(scenario())

    def test_a_change_channel_tells_of_every_save_and_delete_by_another_client(
        self,
        store: AsyncTokenStore,
        other_store: AsyncTokenStore,
        key: StoreKey,
        arun: RunCoroutine[Any],
    ) -> None:
        async def scenario() -> bool:
            changes: asyncio.Queue[StoreKey | None] = asyncio.Queue()
            watch = await store.watch(changes.put_nowait)
            if watch is None:
                # No channel: copies are trusted for a bounded time instead.
                assert 0 < store.staleness_bound < float("inf")
                return True

            async def next_change() -> bool:
                while True:
                    changed = await changes.get()
                    if changed is None or changed == key:
                        return True

            try:
                assert watch.healthy
                await other_store.save(key, sample_pair())
                await asyncio.wait_for(next_change(), CHANGE_DELIVERY)
                await other_store.delete(key)
                await asyncio.wait_for(next_change(), CHANGE_DELIVERY)
            finally:
                watch.close()
            return not watch.healthy

        assert arun(scenario())

    def test_the_event_loop_keeps_running_while_a_lock_waits(
        self,
        store: AsyncTokenStore,
        other_store: AsyncTokenStore,
        key: StoreKey,
        arun: RunCoroutine[Any],
    ) -> None:
        async def longest_gap(wait: Callable[[], Coroutine[Any, Any, None]]) -> float:
            """The ticker's longest pause beyond its 5 ms while ``wait()`` runs."""
            stop = asyncio.Event()
            gaps: list[float] = []

            async def ticker() -> None:
                last = time.monotonic()
                while not stop.is_set():
                    await asyncio.sleep(0.005)
                    now = time.monotonic()
                    gaps.append(now - last - 0.005)
                    last = now

            ticking = asyncio.ensure_future(ticker())
            await asyncio.sleep(0.05)  # the ticker is running before the wait starts
            await wait()
            stop.set()
            await ticking
            assert len(gaps) > 20
            return max(gaps)

        async def lock_wait() -> None:
            with pytest.raises(StoreLockTimeout):
                async with other_store.lock(key, timeout=1):
                    pass

        async def idle() -> None:
            await asyncio.sleep(0.3)

        async def attempt() -> tuple[float, float]:
            async with store.lock(key, timeout=5):
                return await longest_gap(idle), await longest_gap(lock_wait)

        # A wait that blocks the loop stalls it for the whole second, every time. A machine
        # busy with other work stalls it now and then whatever the loop does, as much as
        # the same ticker shows with nothing to wait for: that much is allowed on top.
        attempts = []  # rounded, for the message; the verdict is on the measured gaps
        kept_running = False
        for _ in range(10):
            idle_gap, waiting_gap = arun(attempt())
            attempts.append((round(idle_gap, 3), round(waiting_gap, 3)))
            if waiting_gap < self.max_loop_stall + idle_gap:
                kept_running = True
                break
        assert kept_running, attempts
