"""A server that answers too much: decompression bombs, and lists that never end.

A loopback server plays a broken or hostile Watcher (the emulator answers correctly, so it
cannot): a gzip answer that inflates far past ``max_response_bytes`` on a login, a refresh and
an API call, a cursor that comes back again, an offset that is ignored.
"""

from __future__ import annotations

import asyncio
import gzip
import http.server
import json
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from watcher_auth import (
    AsyncTokenManager,
    MemoryStore,
    ResponseTooLarge,
    TokenManager,
    TokenPair,
    WatcherPaginationError,
)

KEY = "portal-user-9"
LIMIT = 1024 * 1024
BOMB = gzip.compress(b"\0" * (24 * LIMIT), compresslevel=9)  # ~24 KiB that inflate to 24 MiB


class Hostile(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.endswith("/v3/streams"):
            # Every page says there is a next one, with the same cursor.
            self._json({"streams": [{"name": "cam"}], "next": "JTI0cG9zaXRpb25fZ3Q9MQ=="})
        elif path.endswith("/v3/users"):
            # A new cursor every time: only max_pages ends it.
            page = self.path.count("cursor") + time.monotonic_ns()
            self._json({"users_list": [{"login": "u"}], "next": f"c{page}"})
        elif path.endswith("/v2/cameras"):
            # The offset is ignored: the first page forever.
            self._json([{"name": f"cam{i}"} for i in range(2)])
        else:
            self._bomb()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._bomb()

    def _bomb(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(BOMB)))
        self.end_headers()
        self.wfile.write(BOMB)

    def _json(self, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def hand_made_pair(expires_in: float = 300.0) -> TokenPair:
    now = time.time()
    token = jwt.encode({"exp": int(now + expires_in), "iat": int(now)}, "k" * 32, "HS256")
    return TokenPair(access_token=token, refresh_token="r-token", expires_at=now + expires_in)


def peak_while(action: Any) -> int:
    tracemalloc.start()
    try:
        action()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_a_login_answer_that_inflates_past_the_limit_is_refused_and_nothing_is_stored(
    hostile: str,
) -> None:
    manager = TokenManager(hostile, max_response_bytes=LIMIT)

    def log_in() -> None:
        with pytest.raises(ResponseTooLarge):
            manager.login(KEY, username="alice", password="secret")

    assert peak_while(log_in) < 8 * LIMIT  # reading stopped: the 24 MiB were never held
    assert manager.tokens(KEY) is None


def test_a_refresh_answer_that_inflates_past_the_limit_keeps_the_stored_pair(
    hostile: str,
) -> None:
    store = MemoryStore()
    manager = TokenManager(hostile, store=store, max_response_bytes=LIMIT)
    pair = hand_made_pair()
    store.save(manager.store_key(KEY), pair)
    with pytest.raises(ResponseTooLarge):
        manager.refresh(KEY)
    assert manager.tokens(KEY) == pair


def test_an_api_answer_that_inflates_past_the_limit_raises_a_typed_error(hostile: str) -> None:
    store = MemoryStore()
    manager = TokenManager(hostile, store=store, max_response_bytes=LIMIT)
    store.save(manager.store_key(KEY), hand_made_pair())

    def call() -> None:
        with pytest.raises(ResponseTooLarge):
            manager.session(KEY).get("profile")

    assert peak_while(call) < 8 * LIMIT
    # A caller who streams the answer reads it as it likes.
    response = manager.session(KEY).get("profile", stream=True)
    assert response.status_code == 200 and len(next(response.iter_content(1024))) == 1024
    response.close()


def test_the_async_manager_bounds_logins_and_calls_alike(hostile: str) -> None:
    async def scenario() -> None:
        async with AsyncTokenManager(hostile, max_response_bytes=LIMIT) as manager:
            with pytest.raises(ResponseTooLarge):
                await manager.login(KEY, username="alice", password="secret")
            await manager.store.save(manager.store_key(KEY), hand_made_pair())
            with pytest.raises(ResponseTooLarge):
                await manager.session(KEY).get("profile")

    asyncio.run(scenario())


def test_a_repeated_cursor_ends_pagination_with_a_typed_error(hostile: str) -> None:
    store = MemoryStore()
    manager = TokenManager(hostile, store=store)
    store.save(manager.store_key(KEY), hand_made_pair())
    seen = []
    with pytest.raises(WatcherPaginationError):
        for stream in manager.session(KEY).paginate("streams"):
            seen.append(stream)
    assert len(seen) == 1  # the first page; the second repeated its cursor


def test_an_ignored_offset_ends_v2_pagination_with_a_typed_error(hostile: str) -> None:
    manager = TokenManager(hostile)
    session = manager.v2_system_session("system-key-for-tests")
    with pytest.raises(WatcherPaginationError):
        list(session.paginate("cameras", limit=2))


def test_max_pages_stops_a_list_that_never_ends(hostile: str) -> None:
    store = MemoryStore()
    manager = TokenManager(hostile, store=store)
    store.save(manager.store_key(KEY), hand_made_pair())
    users = list(manager.session(KEY).paginate("users", max_pages=3))
    assert len(users) == 3


def test_the_async_client_pages_with_the_same_rules(hostile: str) -> None:
    async def scenario() -> tuple[int, int]:
        async with AsyncTokenManager(hostile) as manager:
            await manager.store.save(manager.store_key(KEY), hand_made_pair())
            client = manager.session(KEY)
            capped = [user async for user in client.paginate("users", max_pages=4)]
            seen = 0
            with pytest.raises(WatcherPaginationError):
                async for _ in client.paginate("streams"):
                    seen += 1
            return len(capped), seen

    assert asyncio.run(scenario()) == (4, 1)
