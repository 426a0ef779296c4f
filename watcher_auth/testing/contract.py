"""The contract every :class:`~watcher_auth.TokenStore` must pass.

Subclass :class:`TokenStoreContract` in a test module and give it a ``store`` fixture that
returns a fresh, empty store::

    class TestMyStore(TokenStoreContract):
        @pytest.fixture
        def store(self):
            return MyStore(...)

``other_store`` (by default the same object) may return a second instance over the same
backend, to check that records and locks are seen through another client, as another
process would see them.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from watcher_auth._exceptions import StoreLockTimeout
from watcher_auth._tokens import StoreKey, TokenPair
from watcher_auth.stores.base import TokenStore

__all__ = ["TokenStoreContract", "sample_pair"]


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
