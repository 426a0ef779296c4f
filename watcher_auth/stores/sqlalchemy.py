"""A token store in a SQL database through SQLAlchemy 2 Core (no ORM, no Flask-SQLAlchemy needed).

One row per Watcher server, API and user key holds the encrypted record plus plain columns
for people and reports (Watcher username, expiry, connected and refreshed times).

The refresh lock:

- PostgreSQL (and other databases with ``SELECT ... FOR UPDATE``): a transaction holds the
  key's row lock; the lock inserts the row first when there is none, so a first login locks
  too. It is exclusive across processes and hosts, and a crashed holder's lock ends with its
  connection. On PostgreSQL ``SET LOCAL lock_timeout`` bounds the wait.
- SQLite: a lock shared by the store instances of this process. SQLite has no row locks, so
  the store is right for one process (tests, development, a single worker).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from watcher_auth._exceptions import ConfigurationError, StoreError, StoreLockTimeout
from watcher_auth._locks import KeyedLocks
from watcher_auth._tokens import StoreKey, TokenPair
from watcher_auth.crypto import TokenCipher
from watcher_auth.stores.base import TokenStore

__all__ = ["DEFAULT_TABLE_NAME", "SQLAlchemyStore", "token_table"]

DEFAULT_TABLE_NAME = "watcher_auth_tokens"

# SQLite's locks, shared by every store of this process on the same database and table.
_PROCESS_LOCKS = KeyedLocks()
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL: lock_timeout ran out


def token_table(metadata: MetaData, name: str = DEFAULT_TABLE_NAME) -> Table:
    """The store's table in ``metadata`` (defined once; returned as is when it exists).

    Pass your application's ``MetaData`` (Flask-SQLAlchemy's ``db.metadata``) so migration
    tools such as Alembic see the table.
    """
    existing = metadata.tables.get(name if metadata.schema is None else f"{metadata.schema}.{name}")
    if existing is not None:
        return existing
    return Table(
        name,
        metadata,
        # Lengths keep the primary key within MySQL's index limit.
        Column("server", String(400), primary_key=True),
        Column("api", String(16), primary_key=True),
        Column("user_key", String(255), primary_key=True),
        Column("username", String(255), nullable=True),
        Column("record", Text, nullable=True, comment="encrypted token pair"),
        Column("expires_at", DateTime(timezone=True), nullable=True),
        Column("connected_at", DateTime(timezone=True), nullable=True),
        Column("refreshed_at", DateTime(timezone=True), nullable=True),
    )


class SQLAlchemyStore(TokenStore):
    """Keeps encrypted records in a database table.

    Args:
        engine: a SQLAlchemy ``Engine`` (Flask-SQLAlchemy's ``db.engine`` works) or a
            database URL to make one from.
        cipher: encrypts the records.
        encryption_keys: keys to build a cipher from when ``cipher`` is not given (newest
            first; any secret string works). One of the two is required.
        table_name: the table's name.
        metadata: the ``MetaData`` to define the table in; a private one by default.
        create_table: create the table on first use when it does not exist. Turn it off
            when migrations create it.
        engine_options: keyword arguments for ``create_engine`` when ``engine`` is a URL.

    Raises:
        ConfigurationError: no cipher or keys, or the URL is not a database URL.
    """

    shared = True

    def __init__(
        self,
        engine: Engine | str,
        *,
        cipher: TokenCipher | None = None,
        encryption_keys: Sequence[str | bytes] | None = None,
        table_name: str = DEFAULT_TABLE_NAME,
        metadata: MetaData | None = None,
        create_table: bool = True,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        if cipher is None:
            if not encryption_keys:
                raise ConfigurationError(
                    "SQLAlchemyStore needs a cipher or encryption_keys: "
                    "records are always encrypted"
                )
            cipher = TokenCipher(encryption_keys, setting="SQLAlchemyStore(encryption_keys=...)")
        self.cipher = cipher
        self._owns_engine = isinstance(engine, str)
        self.engine = _make_engine(engine, engine_options) if isinstance(engine, str) else engine
        self.table = token_table(metadata if metadata is not None else MetaData(), table_name)
        self._dialect = self.engine.dialect.name
        self._create_table = create_table
        self._table_ready = not create_table
        self._table_guard = threading.Lock()
        self._held = threading.local()
        self._where = self.engine.url.render_as_string(hide_password=True)
        if self._owns_engine:
            _dispose_after_fork(self.engine)

    # --- the contract -------------------------------------------------------------------

    def load(self, key: StoreKey) -> TokenPair | None:
        with self._connection(key, "read a record") as conn:
            row = conn.execute(select(self.table.c.record).where(self._match(key))).first()
        if row is None or row.record is None:
            return None
        return self.cipher.loads(row.record, key)

    def save(self, key: StoreKey, pair: TokenPair) -> None:
        values = {
            "username": pair.username,
            "record": self.cipher.dumps(pair, key).decode("ascii"),
            "expires_at": _datetime(pair.local_expires_at),
            "connected_at": _datetime(pair.connected_at),
            "refreshed_at": _datetime(pair.refreshed_at),
        }
        with self._connection(key, "save a record") as conn:
            self._upsert(conn, key, values)

    def delete(self, key: StoreKey) -> None:
        with self._connection(key, "delete a record") as conn:
            conn.execute(delete(self.table).where(self._match(key)))

    @contextmanager
    def lock(self, key: StoreKey, *, timeout: float) -> Iterator[None]:
        self._ensure_table()
        if self._dialect == "sqlite":
            with _PROCESS_LOCKS.hold((self._where, self.table.fullname, key), timeout) as ok:
                if not ok:
                    raise StoreLockTimeout(
                        f"lock for user key {key.user!r} not acquired in {timeout}s"
                    )
                yield
            return
        held = self._held_connections()
        if key in held:
            raise StoreError(f"the lock for user key {key.user!r} is already held by this thread")
        with self._errors("connect to the database"):
            conn = self.engine.connect()
        try:
            with self._errors("take a row lock"):
                self._lock_row(conn, key, timeout)
            held[key] = conn
            try:
                yield
            except BaseException:
                # What was saved or deleted under the lock stands (a rejected refresh token
                # is deleted, then the error is raised); commit unless the database failed.
                self._finish(conn, key, quiet=True)
                raise
            self._finish(conn, key, quiet=False)
        finally:
            held.pop(key, None)
            conn.close()

    def iter_keys(self, *, server: str | None = None, api: str | None = None) -> Iterator[StoreKey]:
        t = self.table
        query = select(t.c.server, t.c.api, t.c.user_key).where(t.c.record.is_not(None))
        if server is not None:
            query = query.where(t.c.server == server)
        if api is not None:
            query = query.where(t.c.api == api)
        query = query.order_by(t.c.server, t.c.api, t.c.user_key)
        with self._connection(None, "list records") as conn:
            rows = conn.execute(query).all()
        for row in rows:
            yield StoreKey(server=row.server, user=row.user_key, api=row.api)

    def create_table(self) -> None:
        """Create the table if it does not exist (``create_table=True`` does it on first use)."""
        with self._errors("create the table"):
            self.table.create(self.engine, checkfirst=True)
        self._table_ready = True

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    # --- locking ------------------------------------------------------------------------

    def _lock_row(self, conn: Connection, key: StoreKey, timeout: float) -> None:
        """Lock ``key``'s row in a new transaction, inserting a placeholder row if needed.

        The placeholder (no record) exists only inside the transaction: :meth:`_finish`
        removes it before committing. A waiter whose row was removed that way finds no row
        after the wait and tries again.
        """
        conn.begin()
        if self._dialect == "postgresql":
            conn.execute(text(f"SET LOCAL lock_timeout = '{max(1, round(timeout * 1000))}ms'"))
        locked = select(self.table.c.user_key).where(self._match(key)).with_for_update()
        try:
            for _ in range(100):
                if conn.execute(locked).first() is not None:
                    return
                self._insert_placeholder(conn, key)
        except OperationalError as exc:
            if _sqlstate(exc) == _LOCK_NOT_AVAILABLE:
                raise StoreLockTimeout(
                    f"row lock for user key {key.user!r} not acquired in {timeout}s"
                ) from None
            raise
        raise StoreError(f"the row lock for user key {key.user!r} kept disappearing")

    def _insert_placeholder(self, conn: Connection, key: StoreKey) -> None:
        row = self._key_values(key)
        if self._dialect == "postgresql":
            conn.execute(postgresql.insert(self.table).values(row).on_conflict_do_nothing())
            return
        try:
            with conn.begin_nested():
                conn.execute(insert(self.table).values(row))
        except IntegrityError:
            pass  # Another transaction made the row first; the next SELECT waits for it.

    def _finish(self, conn: Connection, key: StoreKey, *, quiet: bool) -> None:
        try:
            conn.execute(
                delete(self.table).where(and_(self._match(key), self.table.c.record.is_(None)))
            )
            conn.commit()
        except SQLAlchemyError as exc:
            conn.rollback()
            if not quiet:
                raise StoreError(
                    f"the database at {self._where} failed to commit ({_describe(exc)})"
                ) from None

    # --- helpers ------------------------------------------------------------------------

    @contextmanager
    def _connection(self, key: StoreKey | None, action: str) -> Iterator[Connection]:
        """The lock's connection when this thread holds ``key``'s lock, else a new transaction."""
        held = self._held_connections().get(key) if key is not None else None
        if held is not None:
            with self._errors(action):
                yield held
            return
        self._ensure_table()
        with self._errors(action), self.engine.begin() as conn:
            yield conn

    def _upsert(self, conn: Connection, key: StoreKey, values: dict[str, Any]) -> None:
        row = {**self._key_values(key), **values}
        index = [self.table.c.server, self.table.c.api, self.table.c.user_key]
        if self._dialect == "postgresql":
            statement = postgresql.insert(self.table).values(row)
            conn.execute(statement.on_conflict_do_update(index_elements=index, set_=values))
        elif self._dialect == "sqlite":
            statement_lite = sqlite.insert(self.table).values(row)
            conn.execute(statement_lite.on_conflict_do_update(index_elements=index, set_=values))
        elif conn.execute(update(self.table).where(self._match(key)).values(values)).rowcount == 0:
            conn.execute(insert(self.table).values(row))

    def _match(self, key: StoreKey) -> Any:
        t = self.table
        return and_(t.c.server == key.server, t.c.api == key.api, t.c.user_key == key.user)

    @staticmethod
    def _key_values(key: StoreKey) -> dict[str, Any]:
        return {"server": key.server, "api": key.api, "user_key": key.user}

    def _held_connections(self) -> dict[StoreKey, Connection]:
        held: dict[StoreKey, Connection] | None = getattr(self._held, "connections", None)
        if held is None:
            held = self._held.connections = {}
        return held

    def _ensure_table(self) -> None:
        if self._table_ready:
            return
        with self._table_guard:
            if not self._table_ready:
                self.create_table()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(
                f"the database at {self._where} failed to {action} ({_describe(exc)})"
            ) from None

    def __repr__(self) -> str:
        return f"SQLAlchemyStore({self._where!r}, table={self.table.fullname!r})"


def _make_engine(url: str, options: dict[str, Any] | None) -> Engine:
    kwargs: dict[str, Any] = {"pool_pre_ping": True, **(options or {})}
    try:
        if url.startswith("sqlite") and url.split("?")[0] in ("sqlite://", "sqlite:///:memory:"):
            # One shared connection, so every thread sees the same in-memory database.
            kwargs.setdefault("poolclass", StaticPool)
            kwargs.setdefault("connect_args", {"check_same_thread": False})
            kwargs.pop("pool_pre_ping")
        return create_engine(url, **kwargs)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigurationError(f"SQLAlchemyStore cannot use database URL: {exc}") from None


def _dispose_after_fork(engine: Engine) -> None:
    # Pooled connections inherited through fork belong to the parent; a child must not use them.
    ref = weakref.ref(engine)

    def reset() -> None:
        alive = ref()
        if alive is not None:
            alive.dispose(close=False)

    os.register_at_fork(after_in_child=reset)


def _datetime(timestamp: float | None) -> datetime | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def _sqlstate(exc: SQLAlchemyError) -> str | None:
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state if isinstance(state, str) else None


def _describe(exc: SQLAlchemyError) -> str:
    # str(exc) would include the statement's parameters; the driver's message does not.
    orig = getattr(exc, "orig", None)
    source = orig if orig is not None else exc
    first_line = (str(source).strip().splitlines() or [""])[0][:200]
    return f"{type(source).__name__}: {first_line}" if first_line else type(source).__name__
