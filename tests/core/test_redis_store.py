"""RedisStore against a real Redis server: the store contract, encryption at rest, the lock."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
import redis

from watcher_auth import (
    ConfigurationError,
    NotConnected,
    StoreError,
    StoreKey,
    TokenDecryptionError,
    TokenManager,
    resolve_store,
)
from watcher_auth.crypto import TokenCipher
from watcher_auth.stores.redis import RedisStore
from watcher_auth.testing import SharedClock, WatcherEmulator
from watcher_auth.testing.contract import TokenStoreContract, sample_pair
from watcher_auth.testing.pytest_plugin import EmulatorFactory
from watcher_auth.testing.services import require_redis
from watcher_auth.testing.storm import run_storm

pytestmark = pytest.mark.redis

MakeStore = Callable[..., RedisStore]

REDIS_DB = 13
KEYS = ["first secret key", "an older secret key"]


@pytest.fixture
def redis_url() -> str:
    return require_redis(REDIS_DB)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(raw: redis.Redis) -> Iterator[str]:
    prefix = f"watcher_auth_test:{uuid.uuid4().hex}:"
    yield prefix
    for name in raw.scan_iter(match=prefix + "*"):
        raw.delete(name)


@pytest.fixture
def make_store(redis_url: str, prefix: str) -> Iterator[MakeStore]:
    stores: list[RedisStore] = []

    def make(**options: object) -> RedisStore:
        options.setdefault("encryption_keys", KEYS)
        store = RedisStore(url=redis_url, prefix=prefix, **options)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def key() -> StoreKey:
    return StoreKey(server="https://watcher.test", user="42")


class TestRedisStoreContract(TokenStoreContract):
    @pytest.fixture
    def store(self, make_store: MakeStore) -> RedisStore:
        return make_store()

    @pytest.fixture
    def other_store(self, make_store: MakeStore) -> RedisStore:
        return make_store()


def test_the_raw_redis_value_and_key_names_hold_no_token(
    make_store: MakeStore, raw: redis.Redis, prefix: str, key: StoreKey
) -> None:
    pair = sample_pair()
    make_store().save(key, pair)
    names = list(raw.scan_iter(match=prefix + "*"))
    assert names == [f"{prefix}pair:v3|https://watcher.test|42".encode()]
    stored = raw.get(names[0])
    assert stored is not None
    for secret in (pair.access_token, pair.refresh_token, "access-1", "3637e790"):
        assert secret is not None and secret.encode() not in stored


def test_records_written_with_an_old_key_are_read_after_rotation(
    make_store: MakeStore, key: StoreKey
) -> None:
    make_store(encryption_keys=["old key"]).save(key, sample_pair())
    assert make_store(encryption_keys=["new key", "old key"]).load(key) == sample_pair()


def test_a_record_under_an_unknown_key_fails_to_decrypt_without_deleting_it(
    make_store: MakeStore, key: StoreKey
) -> None:
    make_store(encryption_keys=["old key"]).save(key, sample_pair())
    with pytest.raises(TokenDecryptionError, match=r"RedisStore\(encryption_keys"):
        make_store(encryption_keys=["new key"]).load(key)
    assert make_store(encryption_keys=["old key"]).load(key) == sample_pair()


def test_the_store_refuses_to_keep_records_unencrypted(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="encrypt"):
        RedisStore(url=redis_url)


def test_records_have_no_expiry_unless_a_ttl_is_set(
    make_store: MakeStore, raw: redis.Redis, prefix: str, key: StoreKey
) -> None:
    make_store().save(key, sample_pair())
    assert raw.pttl(f"{prefix}pair:{key}") == -1
    make_store(ttl=30 * 86400).save(key, sample_pair(2))
    assert 0 < raw.pttl(f"{prefix}pair:{key}") <= 30 * 86400 * 1000


def test_a_lock_expires_by_itself_after_its_lease(
    make_store: MakeStore, raw: redis.Redis, prefix: str, key: StoreKey
) -> None:
    with make_store(lock_lease=7).lock(key, timeout=1):
        assert 0 < raw.pttl(f"{prefix}lock:{key}") <= 7000


def test_a_lock_is_released_only_by_its_owner(
    make_store: MakeStore, raw: redis.Redis, prefix: str, key: StoreKey
) -> None:
    first, second = make_store(), make_store()
    lock_name = f"{prefix}lock:{key}"
    with ExitStack() as second_holds:
        with first.lock(key, timeout=1):
            raw.delete(lock_name)  # as if the first holder's lease ran out
            second_holds.enter_context(second.lock(key, timeout=1))
        assert raw.exists(lock_name) == 1
    assert raw.exists(lock_name) == 0


def test_keys_are_listed_by_server_and_api(make_store: MakeStore) -> None:
    store = make_store()
    a = StoreKey(server="https://a.test", user="1")
    b = StoreKey(server="https://b.test", user="1")
    c = StoreKey(server="https://a.test", user="2", api="v2")
    for n, skey in enumerate((a, b, c)):
        store.save(skey, sample_pair(n))
    assert list(store.iter_keys(server="https://a.test", api="v3")) == [a]
    assert set(store.iter_keys()) == {a, b, c}


def test_a_redis_outage_is_a_store_error(key: StoreKey) -> None:
    # Nothing listens on port 1: the real client gets a real connection refusal.
    store = RedisStore(url="redis://:hunter2@127.0.0.1:1/0", encryption_keys=KEYS)
    for attempt in (
        lambda: store.load(key),
        lambda: store.save(key, sample_pair()),
        lambda: store.delete(key),
        lambda: store.lock(key, timeout=1).__enter__(),
    ):
        with pytest.raises(StoreError) as info:
            attempt()
        assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(store)


def test_a_watch_started_while_redis_is_down_answers_unhealthy_after_about_two_seconds() -> None:
    """Start-up waits a little for the change channel, then goes on without it."""
    store = RedisStore(url="redis://127.0.0.1:1/0", encryption_keys=KEYS)
    started = time.monotonic()
    watch = store.watch(lambda changed: None)
    waited = time.monotonic() - started
    assert not watch.healthy
    assert 1.9 <= waited < 3.5, waited
    store.close()


def test_the_store_is_found_by_its_short_name(redis_url: str, prefix: str) -> None:
    store = resolve_store("redis", url=redis_url, prefix=prefix, cipher=TokenCipher(KEYS))
    assert isinstance(store, RedisStore)
    store.close()


@pytest.mark.multiprocess
def test_four_processes_of_eight_threads_share_one_login_and_one_refresh_per_expiry(
    redis_url: str, prefix: str, watcher_emulator_factory: EmulatorFactory
) -> None:
    clock = SharedClock()
    emulator = watcher_emulator_factory(
        clock=clock, access_lifetime=300, rotate_refresh_tokens=True
    )

    def make_manager() -> TokenManager:
        store = RedisStore(url=redis_url, prefix=prefix, encryption_keys=KEYS)
        return TokenManager(emulator.url, store=store, clock=clock)

    parent = make_manager()
    parent.login("storm", username="alice", password="secret")
    parent.close()
    parent.store.close()

    result = run_storm(make_manager, clock=clock, lifetime=300, processes=4, threads=8)

    stats = emulator.stats
    assert result.errors == []
    assert result.calls == 4 * 8 * 4 * 3
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 3, 0)


def test_a_session_stops_sending_a_pair_another_process_disconnected_at_its_change_notice(
    watcher_emulator: WatcherEmulator, make_store: MakeStore
) -> None:
    """A steady call sends this process's fresh copy without reading the store; the change
    channel is what ends that copy. The copies here are trusted for a minute without the
    channel, so only the change notice can stop the old token within two seconds."""
    ours = TokenManager(watcher_emulator.url, store=make_store(staleness_bound=60.0))
    theirs = TokenManager(watcher_emulator.url, store=make_store(staleness_bound=60.0))
    ours.login("k", username="alice", password="secret")
    session = ours.session("k")
    for _ in range(3):
        assert session.get("profile").status_code == 200

    theirs.logout("k")
    deadline = time.monotonic() + 2.0
    while True:
        try:
            session.get("profile")
        except NotConnected:
            break
        assert time.monotonic() < deadline, "the old token was still sent 2 s after logout"
        time.sleep(0.01)

    watcher_emulator.reset_stats()
    with pytest.raises(NotConnected):
        ours.session("k").get("profile")
    assert watcher_emulator.call_log == []
    ours.close()
    theirs.close()
