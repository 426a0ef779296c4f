"""The database and cache stores: the store contract on every backend, encryption at rest,
key rotation, locks across connections, and failures that never delete."""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from typing import Any

import psycopg
import pytest
from django.core.cache import caches
from django.db import connection, connections

from django_watcher_auth.models import WatcherAccount
from django_watcher_auth.stores import (
    AsyncDjangoCacheStore,
    AsyncDjangoModelStore,
    DjangoCacheStore,
    DjangoModelStore,
)
from watcher_auth import StoreError, StoreKey, StoreLockTimeout, TokenDecryptionError
from watcher_auth.testing.contract import (
    AsyncTokenStoreContract,
    RunCoroutine,
    TokenStoreContract,
    sample_pair,
)

KEY = StoreKey(server="https://watcher.test", user="42")


def raw_rows(alias: str = "default") -> list[tuple[Any, ...]]:
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT * FROM {WatcherAccount._meta.db_table}")
        return list(cursor.fetchall())


def assert_no_secret(blob: object) -> None:
    text = repr(blob)
    pair = sample_pair()
    assert pair.access_token not in text
    assert pair.refresh_token is not None and pair.refresh_token not in text


# --- the contract -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
class TestDjangoModelStoreOnSQLite(TokenStoreContract):
    @pytest.fixture
    def store(self) -> DjangoModelStore:
        return DjangoModelStore()

    @pytest.fixture
    def other_store(self) -> DjangoModelStore:
        return DjangoModelStore()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["postgres"])
class TestDjangoModelStoreOnPostgreSQL(TokenStoreContract):
    @pytest.fixture
    def store(self, postgres_alias: str) -> DjangoModelStore:
        return DjangoModelStore(using=postgres_alias)

    @pytest.fixture
    def other_store(self, postgres_alias: str) -> DjangoModelStore:
        return DjangoModelStore(using=postgres_alias)


@pytest.mark.redis
class TestDjangoCacheStoreOnRedis(TokenStoreContract):
    @pytest.fixture
    def store(self, redis_prefix: str) -> DjangoCacheStore:
        return DjangoCacheStore(alias="redis", key_prefix=redis_prefix)

    @pytest.fixture
    def other_store(self, redis_prefix: str) -> DjangoCacheStore:
        return DjangoCacheStore(alias="redis", key_prefix=redis_prefix)


class TestDjangoCacheStoreOnLocMem(TokenStoreContract):
    @pytest.fixture
    def store(self) -> Any:
        yield DjangoCacheStore(alias="default", key_prefix="contract")
        caches["default"].clear()

    @pytest.fixture
    def other_store(self) -> DjangoCacheStore:
        return DjangoCacheStore(alias="default", key_prefix="contract")


# --- the async contract -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
class TestAsyncDjangoModelStoreOnSQLite(AsyncTokenStoreContract):
    @pytest.fixture
    def store(self) -> AsyncDjangoModelStore:
        return AsyncDjangoModelStore()

    @pytest.fixture
    def other_store(self) -> AsyncDjangoModelStore:
        return AsyncDjangoModelStore()

    def test_locks_on_different_keys_do_not_block_each_other(
        self,
        store: AsyncDjangoModelStore,
        other_store: AsyncDjangoModelStore,
        key: StoreKey,
        arun: RunCoroutine[None],
    ) -> None:
        """SQLite takes one writer at a time, and each async lock holds its own connection's
        transaction: a second key's lock while one is held is a clear StoreError on the
        tests' in-memory database (a file database waits up to its busy timeout instead).
        PostgreSQL runs the contract's version of this test."""
        other = StoreKey(server=key.server, user=key.user + "-other", api=key.api)

        async def scenario() -> None:
            async with store.lock(key, timeout=5):
                with pytest.raises(StoreError, match="'default' failed to lock"):
                    async with other_store.lock(other, timeout=0.5):
                        pass
            async with other_store.lock(other, timeout=0.5):
                pass

        arun(scenario())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["postgres"])
class TestAsyncDjangoModelStoreOnPostgreSQL(AsyncTokenStoreContract):
    @pytest.fixture
    def store(self, postgres_alias: str, arun: RunCoroutine[None]) -> Any:
        store = AsyncDjangoModelStore(using=postgres_alias)
        yield store
        arun(store.aclose())

    @pytest.fixture
    def other_store(self, postgres_alias: str) -> AsyncDjangoModelStore:
        return AsyncDjangoModelStore(using=postgres_alias)


@pytest.mark.redis
class TestAsyncDjangoCacheStoreOnRedis(AsyncTokenStoreContract):
    @pytest.fixture
    def store(self, redis_prefix: str) -> AsyncDjangoCacheStore:
        return AsyncDjangoCacheStore(alias="redis", key_prefix=redis_prefix)

    @pytest.fixture
    def other_store(self, redis_prefix: str) -> AsyncDjangoCacheStore:
        return AsyncDjangoCacheStore(alias="redis", key_prefix=redis_prefix)


class TestAsyncDjangoCacheStoreOnLocMem(AsyncTokenStoreContract):
    @pytest.fixture
    def store(self, arun: RunCoroutine[None]) -> Any:
        yield AsyncDjangoCacheStore(alias="default", key_prefix="async-contract")
        caches["default"].clear()


# --- encryption at rest -------------------------------------------------------------------


@pytest.mark.django_db
def test_the_database_row_holds_no_token() -> None:
    DjangoModelStore().save(KEY, sample_pair())
    rows = raw_rows()
    assert len(rows) == 1
    assert_no_secret(rows)
    assert "alice1" in repr(rows)  # the Watcher username is a plain column


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["postgres"])
def test_the_postgresql_row_holds_no_token(postgres_alias: str) -> None:
    DjangoModelStore(using=postgres_alias).save(KEY, sample_pair())
    assert_no_secret(raw_rows(postgres_alias))


@pytest.mark.redis
def test_the_redis_value_holds_no_token(redis_prefix: str, redis_client: Any) -> None:
    DjangoCacheStore(alias="redis", key_prefix=redis_prefix).save(KEY, sample_pair())
    keys = list(redis_client.scan_iter(match=f"*{redis_prefix}*"))
    assert len(keys) == 1
    assert_no_secret(redis_client.get(keys[0]))


def test_the_locmem_value_holds_no_token() -> None:
    store = DjangoCacheStore(alias="default", key_prefix="at-rest")
    store.save(KEY, sample_pair())
    raw = caches["default"].get(store._key("record", KEY))
    assert isinstance(raw, str) and raw.startswith("v2:")
    assert_no_secret(raw)
    caches["default"].clear()


# --- keys and rotation --------------------------------------------------------------------


@pytest.mark.django_db
def test_by_default_the_key_comes_from_secret_key_and_its_fallbacks(settings: Any) -> None:
    DjangoModelStore().save(KEY, sample_pair())
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-brand-new-secret-key"
    assert DjangoModelStore().load(KEY) == sample_pair()
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(TokenDecryptionError, match="SECRET_KEY"):
        DjangoModelStore().load(KEY)


@pytest.mark.django_db
def test_encryption_keys_rotate_with_the_old_key_kept_second(settings: Any) -> None:
    settings.WATCHER_AUTH = {"URL": "https://watcher.test", "ENCRYPTION_KEYS": ["old-key"]}
    DjangoModelStore().save(KEY, sample_pair(1))
    settings.WATCHER_AUTH = {"URL": "https://watcher.test", "ENCRYPTION_KEYS": ["new", "old-key"]}
    store = DjangoModelStore()
    assert store.load(KEY) == sample_pair(1)
    store.save(KEY, sample_pair(2))
    settings.WATCHER_AUTH = {"URL": "https://watcher.test", "ENCRYPTION_KEYS": ["new"]}
    assert DjangoModelStore().load(KEY) == sample_pair(2)
    settings.WATCHER_AUTH = {"URL": "https://watcher.test", "ENCRYPTION_KEYS": ["old-key"]}
    with pytest.raises(TokenDecryptionError, match=r"WATCHER_AUTH\['ENCRYPTION_KEYS'\]"):
        DjangoModelStore().load(KEY)


# --- what the rows say --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_row_belongs_to_its_portal_user_and_goes_with_them(make_user: Any) -> None:
    user = make_user("carol")
    key = StoreKey(server="https://watcher.test", user=str(user.pk))
    DjangoModelStore().save(key, sample_pair())
    account = WatcherAccount.objects.get()
    assert account.user == user
    assert account.username == "alice1"
    assert account.status == WatcherAccount.Status.CONNECTED
    assert account.access_expires_at is not None
    user.delete()
    assert not WatcherAccount.objects.exists()


@pytest.mark.django_db
def test_a_deleted_pair_leaves_a_row_that_needs_a_new_login() -> None:
    store = DjangoModelStore()
    store.save(KEY, sample_pair())
    store.delete(KEY)
    assert store.load(KEY) is None
    account = WatcherAccount.objects.get()
    assert account.status == WatcherAccount.Status.NEEDS_RELOGIN
    assert account.record == ""
    assert list(store.iter_keys()) == []


@pytest.mark.django_db
def test_a_lock_on_a_key_that_saves_nothing_leaves_no_row() -> None:
    store = DjangoModelStore()
    with store.lock(KEY, timeout=5):
        assert store.load(KEY) is None
    assert not WatcherAccount.objects.exists()


@pytest.mark.django_db
def test_what_was_saved_under_the_lock_stays_when_the_block_raises() -> None:
    store = DjangoModelStore()
    with pytest.raises(RuntimeError), store.lock(KEY, timeout=5):
        store.save(KEY, sample_pair(1))
        raise RuntimeError("after the save")
    assert store.load(KEY) == sample_pair(1)


@pytest.mark.django_db
def test_the_stores_list_their_keys_by_server() -> None:
    store = DjangoModelStore()
    other = StoreKey(server="https://other.test", user="42")
    store.save(KEY, sample_pair(1))
    store.save(other, sample_pair(2))
    assert list(store.iter_keys(server=KEY.server)) == [KEY]


# --- failures -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_database_failure_is_a_store_error_and_deletes_nothing() -> None:
    store = DjangoModelStore()
    store.save(KEY, sample_pair())
    table = WatcherAccount._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        for action in (lambda: store.load(KEY), lambda: store.save(KEY, sample_pair(2))):
            with pytest.raises(StoreError, match="nothing was deleted"):
                action()
        with pytest.raises(StoreError), store.lock(KEY, timeout=1):
            pass
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
    assert store.load(KEY) == sample_pair()


def test_an_unreachable_cache_is_a_store_error(settings: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "closed": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        },
    }
    store = DjangoCacheStore(alias="closed")
    with pytest.raises(StoreError, match="nothing was deleted"):
        store.load(KEY)
    with pytest.raises(StoreError), store.lock(KEY, timeout=1):
        pass


# --- locks across connections -------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["postgres"])
def test_a_postgresql_row_lock_held_elsewhere_times_out_then_frees(postgres_alias: str) -> None:
    store = DjangoModelStore(using=postgres_alias)
    store.save(KEY, sample_pair())
    params = connections[postgres_alias].get_connection_params()
    with psycopg.connect(**params) as other:
        other.execute(
            f"SELECT 1 FROM {WatcherAccount._meta.db_table} WHERE user_key = %s FOR UPDATE",
            [KEY.user],
        )
        started = time.monotonic()
        with pytest.raises(StoreLockTimeout), store.lock(KEY, timeout=0.3):
            pass
        assert time.monotonic() - started < 3
        releaser = threading.Timer(0.2, other.rollback)
        releaser.start()
        with store.lock(KEY, timeout=5):
            assert store.load(KEY) == sample_pair()
        releaser.join()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["postgres"])
def test_a_first_lock_on_postgresql_waits_for_another_first_lock(postgres_alias: str) -> None:
    """Two connections locking a key that has no row yet still exclude each other."""
    params = connections[postgres_alias].get_connection_params()
    table = WatcherAccount._meta.db_table
    with psycopg.connect(**params) as other:
        other.execute(
            f"INSERT INTO {table} (user_key, server, api, username, status, record, updated_at)"
            " VALUES (%s, %s, %s, '', 'needs_relogin', '', now())",
            [KEY.user, KEY.server, KEY.api],
        )
        with (
            pytest.raises(StoreLockTimeout),
            DjangoModelStore(using=postgres_alias).lock(KEY, timeout=0.3),
        ):
            pass
        other.rollback()
    with DjangoModelStore(using=postgres_alias).lock(KEY, timeout=5):
        pass


@pytest.mark.redis
def test_a_cache_lock_is_released_only_by_its_owner(redis_prefix: str) -> None:
    store = DjangoCacheStore(alias="redis", key_prefix=redis_prefix, lease=1)
    cache = caches["redis"]
    with store.lock(KEY, timeout=1):
        # The lease ran out and someone else took the lock: leaving must not free theirs.
        cache.set(store._key("lock", KEY), 12345, 30)
    assert cache.get(store._key("lock", KEY)) == 12345
    with pytest.raises(StoreLockTimeout), store.lock(KEY, timeout=0.2):
        pass


@pytest.mark.redis
def test_a_dead_holders_cache_lock_frees_itself_after_the_lease(redis_prefix: str) -> None:
    store = DjangoCacheStore(alias="redis", key_prefix=redis_prefix, lease=1)
    caches["redis"].add(store._key("lock", KEY), 999, 1)  # a holder that never comes back
    started = time.monotonic()
    with store.lock(KEY, timeout=5):
        pass
    assert time.monotonic() - started < 3


# --- change channels ------------------------------------------------------------------------


def _save_then_delete(make_store: Any, go: Any, written: Any) -> None:
    """In a forked worker: save, then delete KEY, each when told, reporting when it began."""
    store = make_store()
    for action in ("save", "delete"):
        go.wait(30)
        go.clear()
        written.put((action, time.monotonic()))
        if action == "save":
            store.save(KEY, sample_pair())
        else:
            store.delete(KEY)


def assert_changes_in_a_worker_reach(store: Any, make_store: Any) -> None:
    """A forked worker's save and delete reach ``store``'s watcher within a second each."""
    arrivals: queue.Queue[tuple[float, StoreKey | None]] = queue.Queue()
    watch = store.watch(lambda key: arrivals.put((time.monotonic(), key)))
    assert watch is not None and watch.healthy
    connections.close_all()  # the worker opens its own
    ctx = multiprocessing.get_context("fork")
    go, written = ctx.Event(), ctx.Queue()
    worker = ctx.Process(target=_save_then_delete, args=(make_store, go, written), daemon=True)
    worker.start()
    delays = []
    try:
        for expected in ("save", "delete"):
            go.set()
            action, started = written.get(timeout=30)
            arrived, key = arrivals.get(timeout=5)
            assert (action, key) == (expected, KEY)
            delays.append(arrived - started)
    finally:
        worker.join(30)
        watch.close()
    assert worker.exitcode == 0
    assert max(delays) < 1.0, delays


@pytest.mark.postgres
@pytest.mark.multiprocess
@pytest.mark.django_db(transaction=True, databases=["postgres"])
def test_a_change_in_another_process_reaches_the_model_stores_watcher(postgres_alias: str) -> None:
    assert_changes_in_a_worker_reach(
        DjangoModelStore(using=postgres_alias), lambda: DjangoModelStore(using=postgres_alias)
    )


@pytest.mark.redis
@pytest.mark.multiprocess
def test_a_change_in_another_process_reaches_the_redis_cache_stores_watcher(
    redis_prefix: str,
) -> None:
    store = DjangoCacheStore(alias="redis", key_prefix=redis_prefix)
    assert_changes_in_a_worker_reach(
        store, lambda: DjangoCacheStore(alias="redis", key_prefix=redis_prefix)
    )
    assert store.load(KEY) is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["postgres"])
def test_a_terminated_listen_connection_of_the_model_store_reconnects_and_says_so(
    postgres_alias: str,
) -> None:
    store = DjangoModelStore(using=postgres_alias)
    arrivals: queue.Queue[StoreKey | None] = queue.Queue()
    watch = store.watch(arrivals.put)
    assert watch is not None and watch.healthy
    with connections[postgres_alias].cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert len(cursor.fetchall()) == 1
    assert arrivals.get(timeout=5) is None
    assert watch.healthy
    store.save(KEY, sample_pair())
    assert arrivals.get(timeout=1) == KEY
    store.close()
    assert not watch.healthy


@pytest.mark.django_db
def test_the_stores_without_a_channel_say_so() -> None:
    assert DjangoModelStore().watch(lambda key: None) is None  # SQLite
    locmem = DjangoCacheStore(alias="default", staleness_bound=3.0)
    assert locmem.watch(lambda key: None) is None
    assert locmem.staleness_bound == 3.0


def test_an_async_manager_gets_the_django_twin_of_a_django_store() -> None:
    from watcher_auth.stores import resolve_async_store

    cache_store = DjangoCacheStore(alias="default")
    twin = resolve_async_store(cache_store)
    assert isinstance(twin, AsyncDjangoCacheStore) and twin.store is cache_store
    model_twin = resolve_async_store("django_watcher_auth.stores.DjangoModelStore")
    assert isinstance(model_twin, AsyncDjangoModelStore)
