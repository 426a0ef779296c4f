"""SQLAlchemyStore on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, inspect, select, text

from watcher_auth import (
    ConfigurationError,
    StoreError,
    StoreKey,
    StoreLockTimeout,
    TokenDecryptionError,
    TokenManager,
    resolve_store,
)
from watcher_auth.stores.sqlalchemy import SQLAlchemyStore, token_table
from watcher_auth.testing import SharedClock
from watcher_auth.testing.contract import TokenStoreContract, sample_pair
from watcher_auth.testing.pytest_plugin import EmulatorFactory
from watcher_auth.testing.storm import run_storm

KEYS = ["first secret key", "an older secret key"]
POSTGRES_DATABASE = "watcher_auth_sqlalchemy_test"

MakeStore = Callable[..., SQLAlchemyStore]


@pytest.fixture
def key() -> StoreKey:
    return StoreKey(server="https://watcher.test", user="42")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tokens.sqlite3'}"


@pytest.fixture(scope="module")
def postgres_database(run_postgres_database: Callable[[str], str]) -> str:
    return run_postgres_database(POSTGRES_DATABASE)


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    return postgres_database


@pytest.fixture
def table_name() -> str:
    return f"tokens_{uuid.uuid4().hex[:12]}"


def _store_factory(url: str, table_name: str) -> Iterator[MakeStore]:
    stores: list[SQLAlchemyStore] = []

    def make(**options: object) -> SQLAlchemyStore:
        options.setdefault("encryption_keys", KEYS)
        store = SQLAlchemyStore(url, table_name=table_name, **options)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    if stores:
        stores[0].table.drop(stores[0].engine, checkfirst=True)
    for store in stores:
        store.close()


@pytest.fixture
def make_sqlite_store(sqlite_url: str, table_name: str) -> Iterator[MakeStore]:
    yield from _store_factory(sqlite_url, table_name)


@pytest.fixture
def make_postgres_store(postgres_url: str, table_name: str) -> Iterator[MakeStore]:
    yield from _store_factory(postgres_url, table_name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_store(request: pytest.FixtureRequest) -> MakeStore:
    factory: MakeStore = request.getfixturevalue(f"make_{request.param}_store")
    return factory


class TestSQLiteStoreContract(TokenStoreContract):
    @pytest.fixture
    def store(self, make_sqlite_store: MakeStore) -> SQLAlchemyStore:
        return make_sqlite_store()

    @pytest.fixture
    def other_store(self, make_sqlite_store: MakeStore) -> SQLAlchemyStore:
        return make_sqlite_store()


@pytest.mark.postgres
class TestPostgresStoreContract(TokenStoreContract):
    @pytest.fixture
    def store(self, make_postgres_store: MakeStore) -> SQLAlchemyStore:
        return make_postgres_store()

    @pytest.fixture
    def other_store(self, make_postgres_store: MakeStore) -> SQLAlchemyStore:
        return make_postgres_store()


def test_the_row_holds_no_token_but_readable_facts(make_store: MakeStore, key: StoreKey) -> None:
    store = make_store()
    pair = sample_pair(refreshed_at=1_800_000_100.0)
    store.save(key, pair)
    with store.engine.connect() as conn:
        row = conn.execute(select(store.table)).mappings().one()
    flat = repr(dict(row))
    for secret in (pair.access_token, pair.refresh_token, "access-1", "3637e790"):
        assert secret is not None and secret not in flat
    assert (row["server"], row["api"], row["user_key"]) == ("https://watcher.test", "v3", "42")
    assert row["username"] == "alice1"
    assert row["expires_at"].timestamp() == pair.local_expires_at
    assert row["refreshed_at"].timestamp() == 1_800_000_100.0


def test_locking_a_key_without_a_record_leaves_no_row_behind(
    make_store: MakeStore, key: StoreKey
) -> None:
    store = make_store()
    with store.lock(key, timeout=5):
        pass
    store.save(StoreKey(server=key.server, user="other"), sample_pair())
    with store.lock(key, timeout=5):
        store.save(key, sample_pair())
        store.delete(key)
    assert list(store.iter_keys()) == [StoreKey(server=key.server, user="other")]


def test_records_written_with_an_old_key_are_read_after_rotation(
    make_store: MakeStore, key: StoreKey
) -> None:
    make_store(encryption_keys=["old key"]).save(key, sample_pair())
    assert make_store(encryption_keys=["new key", "old key"]).load(key) == sample_pair()
    with pytest.raises(TokenDecryptionError, match=r"SQLAlchemyStore\(encryption_keys"):
        make_store(encryption_keys=["new key"]).load(key)


def test_the_store_refuses_to_keep_records_unencrypted(sqlite_url: str) -> None:
    with pytest.raises(ConfigurationError, match="encrypt"):
        SQLAlchemyStore(sqlite_url)


def test_keys_are_listed_by_server_and_api(make_store: MakeStore) -> None:
    store = make_store()
    a = StoreKey(server="https://a.test", user="1")
    b = StoreKey(server="https://b.test", user="1")
    c = StoreKey(server="https://a.test", user="2", api="v2")
    for n, skey in enumerate((a, b, c)):
        store.save(skey, sample_pair(n))
    assert list(store.iter_keys(server="https://a.test", api="v3")) == [a]
    assert set(store.iter_keys()) == {a, b, c}


def test_the_table_lives_in_the_applications_metadata(
    sqlite_url: str, table_name: str, key: StoreKey
) -> None:
    engine = create_engine(sqlite_url)
    metadata = MetaData()
    token_table(metadata, table_name)
    metadata.create_all(engine)
    store = SQLAlchemyStore(
        engine, metadata=metadata, table_name=table_name, create_table=False, encryption_keys=KEYS
    )
    store.save(key, sample_pair())
    assert store.table is metadata.tables[table_name]
    assert store.load(key) == sample_pair()
    store.close()  # the engine is the caller's: it stays usable
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table_name}")).scalar() == 1
    engine.dispose()


def test_the_table_is_created_on_first_use(sqlite_url: str, table_name: str) -> None:
    store = SQLAlchemyStore(sqlite_url, table_name=table_name, encryption_keys=KEYS)
    assert table_name not in inspect(store.engine).get_table_names()
    assert store.load(StoreKey(server="https://w.test", user="1")) is None
    assert table_name in inspect(store.engine).get_table_names()
    store.close()


def test_an_in_memory_sqlite_database_is_one_database_for_every_thread(key: StoreKey) -> None:
    store = SQLAlchemyStore("sqlite://", encryption_keys=KEYS)
    thread = threading.Thread(target=store.save, args=(key, sample_pair()))
    thread.start()
    thread.join()
    assert store.load(key) == sample_pair()
    store.close()


def test_a_database_outage_is_a_store_error(key: StoreKey) -> None:
    # Nothing listens on port 1: the real driver gets a real connection refusal.
    store = SQLAlchemyStore(
        "postgresql+psycopg://portal:hunter2@127.0.0.1:1/db", encryption_keys=KEYS
    )
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


@pytest.mark.postgres
def test_a_postgres_row_lock_times_out_as_a_store_lock_timeout(
    make_postgres_store: MakeStore, key: StoreKey
) -> None:
    first, second = make_postgres_store(), make_postgres_store()
    first.save(key, sample_pair())
    with first.lock(key, timeout=5), pytest.raises(StoreLockTimeout), second.lock(key, timeout=0.2):
        pass
    with second.lock(key, timeout=1):
        assert second.load(key) == sample_pair()


def test_a_failure_under_the_lock_keeps_what_was_saved_there(
    make_store: MakeStore, key: StoreKey
) -> None:
    store = make_store()
    store.save(key, sample_pair(1))
    with pytest.raises(RuntimeError), store.lock(key, timeout=5):
        store.delete(key)
        raise RuntimeError("a rejected refresh token is deleted, then reported")
    assert make_store().load(key) is None


def test_the_store_is_found_by_its_short_name(sqlite_url: str) -> None:
    store = resolve_store("sqlalchemy", engine=sqlite_url, encryption_keys=KEYS)
    assert isinstance(store, SQLAlchemyStore)
    store.close()


@pytest.mark.postgres
@pytest.mark.multiprocess
def test_four_processes_of_eight_threads_share_one_login_and_one_refresh_per_expiry(
    postgres_url: str, table_name: str, watcher_emulator_factory: EmulatorFactory
) -> None:
    clock = SharedClock()
    emulator = watcher_emulator_factory(
        clock=clock, access_lifetime=300, rotate_refresh_tokens=True
    )

    def make_store() -> SQLAlchemyStore:
        return SQLAlchemyStore(postgres_url, table_name=table_name, encryption_keys=KEYS)

    def make_manager() -> TokenManager:
        return TokenManager(emulator.url, store=make_store(), clock=clock)

    parent_store = make_store()
    TokenManager(emulator.url, store=parent_store, clock=clock).login(
        "storm", username="alice", password="secret"
    )
    try:
        result = run_storm(
            make_manager,
            clock=clock,
            lifetime=300,
            processes=4,
            threads=8,
            before_fork=parent_store.engine.dispose,
        )
    finally:
        parent_store.table.drop(parent_store.engine)
        parent_store.close()

    stats = emulator.stats
    assert result.errors == []
    assert result.calls == 4 * 8 * 4 * 3
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 3, 0)
