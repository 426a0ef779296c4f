"""PostgreSQL change channels for the database stores (SQLAlchemy's, Django's).

A store sends ``pg_notify(channel, key text)`` in the transaction that writes the record, so
the message leaves exactly when the change commits and never for a rolled-back one. A
listener holds one dedicated psycopg 3 connection in autocommit mode that ``LISTEN``\\ s on
the channel, and reconnects (then reports ``None``) when it is dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from watcher_auth.stores._watch import AsyncChannelListener, ChannelListener
from watcher_auth.stores.base import ChangeListener

if TYPE_CHECKING:
    import psycopg

__all__ = ["AsyncPostgresListener", "PostgresListener", "channel_name"]

_MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1


def channel_name(table: str) -> str:
    """The ``NOTIFY`` channel of a token table (always a valid PostgreSQL identifier)."""
    name = f"watcher_auth:{table}"
    if len(name.encode()) <= _MAX_IDENTIFIER:
        return name
    return "watcher_auth:" + hashlib.sha256(table.encode()).hexdigest()[:40]


def _listen_statement(channel: str) -> psycopg.sql.Composed:
    from psycopg import sql

    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


class PostgresListener(ChannelListener):
    """Listens on ``channel`` in a thread; ``connect()`` opens a new psycopg connection."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[object]],
        channel: str,
        on_change: ChangeListener,
        description: str,
    ) -> None:
        super().__init__(on_change, description)
        self._open = connect
        self._channel = channel
        self._conn: psycopg.Connection[object] | None = None

    def _connect(self) -> None:
        conn = self._conn = self._open()
        if not conn.autocommit:
            conn.rollback()
            conn.autocommit = True
        conn.execute(_listen_statement(self._channel))

    def _receive(self, timeout: float) -> Iterator[str | bytes]:
        assert self._conn is not None
        for notice in self._conn.notifies(timeout=timeout):
            yield notice.payload

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception), warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                conn.close()

    def _connection(self) -> object:
        return self._conn


class AsyncPostgresListener(AsyncChannelListener):
    """Listens on ``channel`` in a task; ``connect()`` opens a new psycopg async connection."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[object]]],
        channel: str,
        on_change: ChangeListener,
        description: str,
    ) -> None:
        super().__init__(on_change, description)
        self._open = connect
        self._channel = channel
        self._conn: psycopg.AsyncConnection[object] | None = None

    async def _connect(self) -> None:
        conn = self._conn = await self._open()
        if not conn.autocommit:
            await conn.rollback()
            await conn.set_autocommit(True)
        await conn.execute(_listen_statement(self._channel))

    async def _receive(self, timeout: float) -> AsyncIterator[str | bytes]:
        assert self._conn is not None
        async for notice in self._conn.notifies(timeout=timeout):
            yield notice.payload

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    def _connection(self) -> object:
        return self._conn
