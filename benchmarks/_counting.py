"""Counting what reaches a store: Redis commands (seen by the server) and SQL statements.

Each counter is a context manager yielding a list that holds, once the block has ended, one
entry per round trip made inside it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

Counter = Callable[[], AbstractContextManager[list[str]]]


@contextmanager
def redis_commands(url: str) -> Iterator[list[str]]:
    """Commands Redis executed on ``url``'s database while the block ran, from ``MONITOR``.

    The server reports every command of every client, so this counts what the store really
    sent, pipelines and scripts included (a script counts once; the commands it runs inside
    Redis are not round trips).
    """
    import redis

    client = redis.Redis.from_url(url)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    start, end = f"start-{uuid.uuid4().hex}", f"end-{uuid.uuid4().hex}"
    seen: list[dict[str, Any]] = []
    watching, finished = threading.Event(), threading.Event()
    monitor_client = redis.Redis.from_url(url)

    def watch() -> None:
        with monitor_client.monitor() as monitor:
            watching.set()
            for command in monitor.listen():
                seen.append(command)
                if end in command["command"]:
                    finished.set()
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    watching.wait(5)
    client.echo(start)
    commands: list[str] = []
    try:
        yield commands
    finally:
        client.echo(end)
        finished.wait(10)
        thread.join(5)
        client.close()
        monitor_client.close()
        inside = False
        for command in seen:
            text = command["command"]
            if start in text:
                inside = True
            elif end in text:
                break
            elif inside and command["db"] == db and command.get("client_type") != "lua":
                commands.append(text)


@contextmanager
def sql_statements(engine: Any) -> Iterator[list[str]]:
    """Statements a SQLAlchemy engine sent while the block ran."""
    from sqlalchemy import event

    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@contextmanager
def django_statements(alias: str, table: str | None = None) -> Iterator[list[str]]:
    """Statements this thread sent to Django database ``alias`` (only those on ``table``)."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    statements: list[str] = []
    with CaptureQueriesContext(connections[alias]) as captured:
        yield statements
    statements.extend(
        q["sql"] for q in captured.captured_queries if table is None or table in q["sql"]
    )


def round_trips(counter: Counter, call: Callable[[], Any], n: int = 100) -> tuple[str, str]:
    """Round trips of the first ``call()``, and per call over the ``n`` after it."""
    with counter() as first:
        call()
    with counter() as after:
        for _ in range(n):
            call()
    return str(len(first)), f"{len(after) / n:g}"
