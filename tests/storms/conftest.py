"""Redis for the storm tests: database 10 under a fresh key prefix, and a count of the commands
the Redis server executed for that prefix (seen with ``MONITOR``, so nothing is stubbed)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest

from watcher_auth import TokenManager
from watcher_auth.testing.services import require_redis

REDIS_DB = 10
KEYS = ["storm suite key"]

CommandWatch = Callable[[str], AbstractContextManager[list[str]]]
MakeManager = Callable[..., TokenManager]


@pytest.fixture
def redis_url() -> str:
    return require_redis(REDIS_DB)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the test's own; its keys are removed afterwards."""
    import redis

    prefix = f"watcher_auth_storm_test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for name in client.scan_iter(match=prefix + "*"):
        client.delete(name)
    client.close()


@pytest.fixture
def make_manager(redis_url: str, prefix: str) -> MakeManager:
    """``make_manager(watcher_url, **manager_options)``: a manager on the test's Redis store,
    with its own connection (call it in each worker process)."""

    from watcher_auth.stores.redis import RedisStore

    def make(watcher_url: str, **options: Any) -> TokenManager:
        store = RedisStore(url=redis_url, prefix=prefix, encryption_keys=KEYS)
        return TokenManager(watcher_url, store=store, **options)

    return make


@pytest.fixture
def redis_commands(redis_url: str) -> CommandWatch:
    """``with redis_commands(prefix) as seen:`` fills ``seen`` with the commands Redis ran on
    keys starting with ``prefix`` while the block ran, one string per command."""

    import redis

    @contextmanager
    def watch(prefix: str) -> Iterator[list[str]]:
        start, end = f"start-{uuid.uuid4().hex}", f"end-{uuid.uuid4().hex}"
        received: list[dict[str, Any]] = []
        listening, finished = threading.Event(), threading.Event()
        watcher, client = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)

        def listen() -> None:
            with watcher.monitor() as monitor:
                listening.set()
                for command in monitor.listen():
                    received.append(command)
                    if end in command["command"]:
                        finished.set()
                        return

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        assert listening.wait(5)
        client.echo(start)
        seen: list[str] = []
        try:
            yield seen
        finally:
            client.echo(end)
            assert finished.wait(10), "MONITOR did not report the end marker"
            thread.join(5)
            watcher.close()
            client.close()
            # Commands a script runs inside Redis are not round trips: only clients' count.
            texts = [c["command"] for c in received if c.get("client_type") != "lua"]
            first = next(i for i, text in enumerate(texts) if start in text)
            seen.extend(text for text in texts[first + 1 : -1] if prefix in text)

    return watch
