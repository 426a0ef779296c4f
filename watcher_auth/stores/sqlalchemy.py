"""Token stores in a SQL database through SQLAlchemy 2 Core (no ORM, no Flask-SQLAlchemy needed).

:class:`SQLAlchemyStore` runs on an ``Engine``, :class:`AsyncSQLAlchemyStore` on an
``AsyncEngine`` (psycopg 3 for PostgreSQL, aiosqlite for SQLite); both use the same table and
statements. One row per Watcher server, API and user key holds the encrypted record plus plain
columns for people and reports (Watcher username, expiry, connected and refreshed times).

The refresh lock:

- PostgreSQL (and other databases with ``SELECT ... FOR UPDATE``): a transaction holds the
  key's row lock; the lock inserts the row first when there is none, so a first login locks
  too. It is exclusive across processes and hosts, and a crashed holder's lock ends with its
  connection. On PostgreSQL ``SET LOCAL lock_timeout`` bounds the wait.
- SQLite: a lock shared by the store instances of this process. SQLite has no row locks, so
  the store is right for one process (tests, development, a single worker).

Change channel: on PostgreSQL with psycopg 3 every save and delete sends ``pg_notify`` with
the key's text in its own transaction, and :meth:`SQLAlchemyStore.watch` listens on a
dedicated connection. Other databases have none; copies are then trusted for
``staleness_bound`` seconds.

After ``fork()`` the child drops the engine's inherited pool (``dispose(close=False)``, the
parent's connections stay open for the parent) and the watches it inherited.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
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
    func,
    insert,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import Executable

from watcher_auth._exceptions import ConfigurationError, StoreError, StoreLockTimeout
from watcher_auth._tokens import StoreKey, TokenPair
from watcher_auth.crypto import TokenCipher
from watcher_auth.stores._waiting import ProcessKeyLocks
from watcher_auth.stores._watch import after_fork_in_child
from watcher_auth.stores.base import AsyncTokenStore, ChangeListener, StoreWatch, TokenStore
from watcher_auth.stores.postgres import AsyncPostgresListener, PostgresListener, channel_name

__all__ = ["DEFAULT_TABLE_NAME", "AsyncSQLAlchemyStore", "SQLAlchemyStore", "token_table"]

DEFAULT_TABLE_NAME = "watcher_auth_tokens"
WATCH_CONNECT_WAIT = 2.0  # how long watch() waits for LISTEN before returning unhealthy

# SQLite's locks, shared by every store of this process (sync or async) on the same
# database and table.
_PROCESS_LOCKS = ProcessKeyLocks()
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL: lock_timeout ran out
_PLACEHOLDER_ATTEMPTS = 100

# The row locks the current task holds: (store id, key) -> the lock's connection.
_ASYNC_HELD: ContextVar[dict[tuple[int, StoreKey], AsyncConnection] | None] = ContextVar(
    "watcher_auth_sqlalchemy_held", default=None
)


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


class _TokenRows:
    """The statements both stores run on the table: data in, statements out, no I/O."""

    def __init__(
        self,
        store_name: str,
        cipher: TokenCipher | None,
        encryption_keys: Sequence[str | bytes] | None,
        table: Table,
        dialect: str,
        driver: str,
    ) -> None:
        if cipher is None:
            if not encryption_keys:
                raise ConfigurationError(
                    f"{store_name} needs a cipher or encryption_keys: records are always encrypted"
                )
            cipher = TokenCipher(encryption_keys, setting=f"{store_name}(encryption_keys=...)")
        self.cipher = cipher
        self.table = table
        self.dialect = dialect
        # psycopg 3 is the driver whose connections can LISTEN for the change channel.
        self.notifies = dialect == "postgresql" and driver in ("psycopg", "psycopg_async")
        self.channel = channel_name(table.fullname)

    def values(self, pair: TokenPair, key: StoreKey) -> dict[str, Any]:
        return {
            "username": pair.username,
            "record": self.cipher.dumps(pair, key).decode("ascii"),
            "expires_at": _datetime(pair.local_expires_at),
            "connected_at": _datetime(pair.connected_at),
            "refreshed_at": _datetime(pair.refreshed_at),
        }

    def pair(self, record: str | None, key: StoreKey) -> TokenPair | None:
        return None if record is None else self.cipher.loads(record, key)

    def match(self, key: StoreKey) -> Any:
        t = self.table
        return and_(t.c.server == key.server, t.c.api == key.api, t.c.user_key == key.user)

    @staticmethod
    def key_values(key: StoreKey) -> dict[str, Any]:
        return {"server": key.server, "api": key.api, "user_key": key.user}

    def read(self, key: StoreKey) -> Executable:
        return select(self.table.c.record).where(self.match(key))

    def upsert(self, key: StoreKey, values: dict[str, Any]) -> Executable | None:
        """One statement that inserts or replaces, or ``None`` where the database has none."""
        row = {**self.key_values(key), **values}
        index = [self.table.c.server, self.table.c.api, self.table.c.user_key]
        if self.dialect == "postgresql":
            statement = postgresql.insert(self.table).values(row)
            return statement.on_conflict_do_update(index_elements=index, set_=values)
        if self.dialect == "sqlite":
            statement_lite = sqlite.insert(self.table).values(row)
            return statement_lite.on_conflict_do_update(index_elements=index, set_=values)
        return None

    def update(self, key: StoreKey, values: dict[str, Any]) -> Executable:
        return update(self.table).where(self.match(key)).values(values)

    def insert(self, key: StoreKey, values: dict[str, Any]) -> Executable:
        return insert(self.table).values({**self.key_values(key), **values})

    def remove(self, key: StoreKey) -> Executable:
        return delete(self.table).where(self.match(key))

    def notify(self, key: StoreKey) -> Executable | None:
        """Tell listeners of the change to ``key`` when the transaction commits."""
        if not self.notifies:
            return None
        return select(func.pg_notify(self.channel, str(key)))

    def list_keys(self, server: str | None, api: str | None) -> Executable:
        t = self.table
        query = select(t.c.server, t.c.api, t.c.user_key).where(t.c.record.is_not(None))
        if server is not None:
            query = query.where(t.c.server == server)
        if api is not None:
            query = query.where(t.c.api == api)
        return query.order_by(t.c.server, t.c.api, t.c.user_key)

    # The row lock: lock the key's row in a new transaction, inserting a placeholder row
    # (no record) first when there is none. The placeholder exists only inside the
    # transaction: it is removed before the commit, and a waiter whose row vanished that way
    # finds no row after its wait and tries again.

    def lock_timeout(self, timeout: float) -> Executable | None:
        if self.dialect != "postgresql":
            return None
        return text(f"SET LOCAL lock_timeout = '{max(1, round(timeout * 1000))}ms'")

    def lock_row(self, key: StoreKey) -> Executable:
        return select(self.table.c.user_key).where(self.match(key)).with_for_update()

    def placeholder(self, key: StoreKey) -> Executable:
        if self.dialect == "postgresql":
            return (
                postgresql.insert(self.table).values(self.key_values(key)).on_conflict_do_nothing()
            )
        return insert(self.table).values(self.key_values(key))

    def drop_placeholder(self, key: StoreKey) -> Executable:
        return delete(self.table).where(and_(self.match(key), self.table.c.record.is_(None)))

    def timed_out(
        self, exc: OperationalError, key: StoreKey, timeout: float
    ) -> StoreLockTimeout | None:
        """The timeout error if ``exc`` is PostgreSQL's ``lock_timeout`` running out."""
        if _sqlstate(exc) != _LOCK_NOT_AVAILABLE:
            return None
        return StoreLockTimeout(f"row lock for user key {key.user!r} not acquired in {timeout}s")

    def vanishing(self, key: StoreKey) -> StoreError:
        return StoreError(f"the row lock for user key {key.user!r} kept disappearing")

    def process_lock_timeout(self, key: StoreKey, timeout: float) -> StoreLockTimeout:
        return StoreLockTimeout(f"lock for user key {key.user!r} not acquired in {timeout}s")


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
        staleness_bound: seconds a per-process copy is trusted without a change channel
            (databases other than PostgreSQL with psycopg 3) or while it is down.

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
        staleness_bound: float = 1.0,
    ) -> None:
        self._owns_engine = isinstance(engine, str)
        self.engine = _make_engine(engine, engine_options) if isinstance(engine, str) else engine
        self.table = token_table(metadata if metadata is not None else MetaData(), table_name)
        self._rows = _TokenRows(
            "SQLAlchemyStore",
            cipher,
            encryption_keys,
            self.table,
            self.engine.dialect.name,
            self.engine.dialect.driver,
        )
        self.cipher = self._rows.cipher
        self.staleness_bound = staleness_bound
        self._dialect = self.engine.dialect.name
        self._create_table = create_table
        self._table_ready = not create_table
        self._table_guard = threading.Lock()
        self._held = threading.local()
        self._where = self.engine.url.render_as_string(hide_password=True)
        self._watches: weakref.WeakSet[PostgresListener] = weakref.WeakSet()
        after_fork_in_child(self, SQLAlchemyStore._reset_after_fork)

    # --- the contract -------------------------------------------------------------------

    def load(self, key: StoreKey) -> TokenPair | None:
        with self._connection(key, "read a record") as conn:
            row = conn.execute(self._rows.read(key)).first()
        return None if row is None else self._rows.pair(row.record, key)

    def save(self, key: StoreKey, pair: TokenPair) -> None:
        values = self._rows.values(pair, key)
        with self._connection(key, "save a record") as conn:
            upsert = self._rows.upsert(key, values)
            if upsert is not None:
                conn.execute(upsert)
            elif conn.execute(self._rows.update(key, values)).rowcount == 0:
                conn.execute(self._rows.insert(key, values))
            self._notify(conn, key)

    def delete(self, key: StoreKey) -> None:
        with self._connection(key, "delete a record") as conn:
            conn.execute(self._rows.remove(key))
            self._notify(conn, key)

    @contextmanager
    def lock(self, key: StoreKey, *, timeout: float) -> Iterator[None]:
        self._ensure_table()
        if self._dialect == "sqlite":
            with _PROCESS_LOCKS.hold((self._where, self.table.fullname, key), timeout) as ok:
                if not ok:
                    raise self._rows.process_lock_timeout(key, timeout)
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

    def watch(self, on_change: ChangeListener) -> StoreWatch | None:
        """Listen for changes (PostgreSQL with psycopg 3); ``None`` on other databases.

        ``on_change`` runs on the listener's thread.
        """
        if not self._rows.notifies:
            return None
        listener = PostgresListener(
            self._listen_connection, self._rows.channel, on_change, repr(self)
        )
        self._watches.add(listener)
        return listener.start(WATCH_CONNECT_WAIT)

    def iter_keys(self, *, server: str | None = None, api: str | None = None) -> Iterator[StoreKey]:
        with self._connection(None, "list records") as conn:
            rows = conn.execute(self._rows.list_keys(server, api)).all()
        for row in rows:
            yield StoreKey(server=row.server, user=row.user_key, api=row.api)

    def create_table(self) -> None:
        """Create the table if it does not exist (``create_table=True`` does it on first use)."""
        with self._errors("create the table"):
            self.table.create(self.engine, checkfirst=True)
        self._table_ready = True

    def close(self) -> None:
        for listener in list(self._watches):
            listener.close()
        if self._owns_engine:
            self.engine.dispose()

    # --- locking ------------------------------------------------------------------------

    def _lock_row(self, conn: Connection, key: StoreKey, timeout: float) -> None:
        conn.begin()
        limit = self._rows.lock_timeout(timeout)
        if limit is not None:
            conn.execute(limit)
        try:
            for _ in range(_PLACEHOLDER_ATTEMPTS):
                if conn.execute(self._rows.lock_row(key)).first() is not None:
                    return
                self._insert_placeholder(conn, key)
        except OperationalError as exc:
            timed_out = self._rows.timed_out(exc, key, timeout)
            if timed_out is not None:
                raise timed_out from None
            raise
        raise self._rows.vanishing(key)

    def _insert_placeholder(self, conn: Connection, key: StoreKey) -> None:
        if self._dialect == "postgresql":
            conn.execute(self._rows.placeholder(key))
            return
        try:
            with conn.begin_nested():
                conn.execute(self._rows.placeholder(key))
        except IntegrityError:
            pass  # Another transaction made the row first; the next SELECT waits for it.

    def _finish(self, conn: Connection, key: StoreKey, *, quiet: bool) -> None:
        try:
            conn.execute(self._rows.drop_placeholder(key))
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

    def _notify(self, conn: Connection, key: StoreKey) -> None:
        notify = self._rows.notify(key)
        if notify is not None:
            conn.execute(notify)

    def _listen_connection(self) -> Any:
        # A new connection with the engine's own settings (URL, connect_args). Never one
        # from the pool: after the listener's connection was killed, a pooled one may be
        # about to die with it, and a channel that seems back for an instant makes every
        # watcher forget its copies.
        creator = getattr(self.engine.pool, "_creator", None)
        if callable(creator):
            return creator()
        proxied = self.engine.raw_connection()
        driver_connection = proxied.driver_connection
        proxied.detach()
        return driver_connection

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

    def _reset_after_fork(self) -> None:
        # Pooled connections inherited through fork belong to the parent; a child must not
        # use them (nor close them, which would end the parent's sessions).
        self.engine.dispose(close=False)
        for listener in list(self._watches):
            listener.forget_after_fork()
        self._watches = weakref.WeakSet()
        self._held = threading.local()

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


class AsyncSQLAlchemyStore(AsyncTokenStore):
    """The async twin of :class:`SQLAlchemyStore` on an ``AsyncEngine``: the same table, rows,
    row lock and change channel, every call a coroutine.

    A lock holds its row lock in one transaction on one connection for the lock's whole
    life; ``load``, ``save`` and ``delete`` of that key by the holding task run in that
    transaction. On SQLite the lock is this process's (shared with :class:`SQLAlchemyStore`).

    Args:
        engine: an ``AsyncEngine``, or a database URL: ``postgresql+psycopg://...`` (psycopg
            3 async) or ``sqlite+aiosqlite:///...``; ``postgresql://`` and ``sqlite://``
            URLs get those drivers.
        cipher, encryption_keys, table_name, metadata, create_table, staleness_bound: as for
            :class:`SQLAlchemyStore`.
        engine_options: keyword arguments for ``create_async_engine`` when ``engine`` is a
            URL.

    Raises:
        ConfigurationError: no cipher or keys, or the URL is not a database URL.
    """

    shared = True

    def __init__(
        self,
        engine: AsyncEngine | str,
        *,
        cipher: TokenCipher | None = None,
        encryption_keys: Sequence[str | bytes] | None = None,
        table_name: str = DEFAULT_TABLE_NAME,
        metadata: MetaData | None = None,
        create_table: bool = True,
        engine_options: dict[str, Any] | None = None,
        staleness_bound: float = 1.0,
    ) -> None:
        self._owns_engine = isinstance(engine, str)
        if isinstance(engine, str):
            engine = _make_async_engine(engine, engine_options)
        self.engine = engine
        self.table = token_table(metadata if metadata is not None else MetaData(), table_name)
        self._rows = _TokenRows(
            "AsyncSQLAlchemyStore",
            cipher,
            encryption_keys,
            self.table,
            engine.dialect.name,
            engine.dialect.driver,
        )
        self.cipher = self._rows.cipher
        self.staleness_bound = staleness_bound
        self._dialect = engine.dialect.name
        self._table_ready = not create_table
        self._where = engine.url.render_as_string(hide_password=True)
        self._watches: weakref.WeakSet[AsyncPostgresListener] = weakref.WeakSet()
        after_fork_in_child(self, AsyncSQLAlchemyStore._reset_after_fork)

    # --- the contract -------------------------------------------------------------------

    async def load(self, key: StoreKey) -> TokenPair | None:
        async with self._connection(key, "read a record") as conn:
            row = (await conn.execute(self._rows.read(key))).first()
        return None if row is None else self._rows.pair(row.record, key)

    async def save(self, key: StoreKey, pair: TokenPair) -> None:
        values = self._rows.values(pair, key)
        async with self._connection(key, "save a record") as conn:
            upsert = self._rows.upsert(key, values)
            if upsert is not None:
                await conn.execute(upsert)
            elif (await conn.execute(self._rows.update(key, values))).rowcount == 0:
                await conn.execute(self._rows.insert(key, values))
            await self._notify(conn, key)

    async def delete(self, key: StoreKey) -> None:
        async with self._connection(key, "delete a record") as conn:
            await conn.execute(self._rows.remove(key))
            await self._notify(conn, key)

    @asynccontextmanager
    async def lock(self, key: StoreKey, *, timeout: float) -> AsyncIterator[None]:
        await self._ensure_table()
        if self._dialect == "sqlite":
            where = (self._where, self.table.fullname, key)
            async with _PROCESS_LOCKS.hold_async(where, timeout) as ok:
                if not ok:
                    raise self._rows.process_lock_timeout(key, timeout)
                yield
            return
        # A lock released by a task of its own (a shielded release runs in a copy of this
        # context) leaves its entry here: its connection is closed by then.
        held_before = {k: c for k, c in (_ASYNC_HELD.get() or {}).items() if not c.closed}
        if (id(self), key) in held_before:
            raise StoreError(f"the lock for user key {key.user!r} is already held by this task")
        with self._errors("connect to the database"):
            conn = await self.engine.connect()
        try:
            with self._errors("take a row lock"):
                await self._lock_row(conn, key, timeout)
            _ASYNC_HELD.set({**held_before, (id(self), key): conn})
            try:
                yield
            except BaseException:
                await self._finish(conn, key, quiet=True)
                raise
            finally:
                _ASYNC_HELD.set(held_before)
            await self._finish(conn, key, quiet=False)
        finally:
            with contextlib.suppress(SQLAlchemyError):
                await asyncio.shield(conn.close())

    async def watch(self, on_change: ChangeListener) -> StoreWatch | None:
        """Listen for changes (PostgreSQL with psycopg 3); ``None`` on other databases.

        ``on_change`` runs on the event loop.
        """
        if not self._rows.notifies:
            return None
        listener = AsyncPostgresListener(
            self._listen_connection, self._rows.channel, on_change, repr(self)
        )
        self._watches.add(listener)
        return await listener.start(WATCH_CONNECT_WAIT)

    async def iter_keys(
        self, *, server: str | None = None, api: str | None = None
    ) -> AsyncIterator[StoreKey]:
        async with self._connection(None, "list records") as conn:
            rows = (await conn.execute(self._rows.list_keys(server, api))).all()
        for row in rows:
            yield StoreKey(server=row.server, user=row.user_key, api=row.api)

    async def create_table(self) -> None:
        """Create the table if it does not exist (``create_table=True`` does it on first use)."""
        with self._errors("create the table"):
            async with self.engine.begin() as conn:
                await conn.run_sync(self.table.create, checkfirst=True)
        self._table_ready = True

    async def aclose(self) -> None:
        for listener in list(self._watches):
            await listener.aclose()
        if self._owns_engine:
            await self.engine.dispose()

    # --- locking ------------------------------------------------------------------------

    async def _lock_row(self, conn: AsyncConnection, key: StoreKey, timeout: float) -> None:
        await conn.begin()
        limit = self._rows.lock_timeout(timeout)
        if limit is not None:
            await conn.execute(limit)
        try:
            for _ in range(_PLACEHOLDER_ATTEMPTS):
                if (await conn.execute(self._rows.lock_row(key))).first() is not None:
                    return
                await conn.execute(self._rows.placeholder(key))
        except OperationalError as exc:
            timed_out = self._rows.timed_out(exc, key, timeout)
            if timed_out is not None:
                raise timed_out from None
            raise
        raise self._rows.vanishing(key)

    async def _finish(self, conn: AsyncConnection, key: StoreKey, *, quiet: bool) -> None:
        try:
            await conn.execute(self._rows.drop_placeholder(key))
            await conn.commit()
        except SQLAlchemyError as exc:
            await conn.rollback()
            if not quiet:
                raise StoreError(
                    f"the database at {self._where} failed to commit ({_describe(exc)})"
                ) from None

    # --- helpers ------------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(
        self, key: StoreKey | None, action: str
    ) -> AsyncIterator[AsyncConnection]:
        held = (_ASYNC_HELD.get() or {}).get((id(self), key)) if key is not None else None
        if held is not None and not held.closed:
            with self._errors(action):
                yield held
            return
        await self._ensure_table()
        with self._errors(action):
            async with self.engine.begin() as conn:
                yield conn

    async def _notify(self, conn: AsyncConnection, key: StoreKey) -> None:
        notify = self._rows.notify(key)
        if notify is not None:
            await conn.execute(notify)

    async def _listen_connection(self) -> Any:
        proxied = await self.engine.raw_connection()
        driver_connection = proxied.driver_connection
        proxied.detach()
        return driver_connection

    async def _ensure_table(self) -> None:
        if not self._table_ready:
            await self.create_table()

    def _reset_after_fork(self) -> None:
        self.engine.sync_engine.dispose(close=False)
        for listener in list(self._watches):
            listener.forget_after_fork()
        self._watches = weakref.WeakSet()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(
                f"the database at {self._where} failed to {action} ({_describe(exc)})"
            ) from None

    def __repr__(self) -> str:
        return f"AsyncSQLAlchemyStore({self._where!r}, table={self.table.fullname!r})"


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


_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
}


def _make_async_engine(url: str, options: dict[str, Any] | None) -> AsyncEngine:
    kwargs: dict[str, Any] = {"pool_pre_ping": True, **(options or {})}
    try:
        parsed = make_url(url)
        parsed = parsed.set(drivername=_ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername))
        if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
            # One shared connection, so every task sees the same in-memory database.
            kwargs.setdefault("poolclass", StaticPool)
            kwargs.pop("pool_pre_ping")
        return create_async_engine(parsed, **kwargs)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigurationError(f"AsyncSQLAlchemyStore cannot use database URL: {exc}") from None


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
