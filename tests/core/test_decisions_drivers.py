"""What the drivers do with the lifecycle's own requests, the logins and refreshes: how much of
an answer they read and for how long, where the requests go, and that a store's lock is released
whatever happens to the task holding it.

Logins and refreshes are carried out by one driver per manager class, so the tests that take
``drivers`` run through :class:`~watcher_auth.TokenManager` (``requests``) and
:class:`~watcher_auth.AsyncTokenManager` (``httpx``); a TokenManager's ``httpx.Client`` logs in
like its ``requests`` sessions.
"""

from __future__ import annotations

import asyncio
import http.client
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.asyncio.drivers import V2_KINDS, Drivers, drivers_fixture
from watcher_auth import (
    AsyncTokenManager,
    ResponseTooLarge,
    StoreKey,
    StoreLockTimeout,
    TokenManager,
    WatcherProtocolError,
    WatcherUnavailable,
)
from watcher_auth.stores import AsyncMemoryStore
from watcher_auth.testing import FakeClock, WatcherEmulator

KEY = "driver-user-3"
LIFETIME = 300.0
#: ``max_response_bytes`` when none is given: 16 MiB, as documented.
DEFAULT_LIMIT = 16 * 1024 * 1024

drivers = drivers_fixture(V2_KINDS)


@pytest.fixture
def emulator(watcher_emulator_factory, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(clock=fake_clock, access_lifetime=LIFETIME)


@pytest.fixture(autouse=True)
def _no_environment_proxies_or_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    # Managers read proxies and a CA bundle from the environment; the tests set their own.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


# --- a server in front of the emulator -------------------------------------------------------

_NOT_FORWARDED = {"host", "connection", "content-length", "transfer-encoding", "accept-encoding"}


@dataclass
class Front:
    """A loopback HTTP server in front of the emulator, usable as its HTTP proxy too.

    It records each request's method and target in ``seen`` (the target is an absolute URL when
    the request came to it as a proxy) and forwards it to the emulator; the emulator's answer
    goes back padded with trailing spaces to ``size`` bytes when ``size`` is set. A request for
    a path in ``redirects`` is answered ``307`` to the location given there instead. ``answered``
    is set when an answer has been sent, or the client hung up on it.
    """

    url: str = ""
    seen: list[str] = field(default_factory=list)
    size: int | None = None
    redirects: dict[str, str] = field(default_factory=dict)
    #: Connections accepted, and bytes of the last answer's body sent before it ended.
    connections: int = 0
    sent: int = 0
    answered: threading.Event = field(default_factory=threading.Event)


@contextmanager
def front_of(emulator: WatcherEmulator) -> Iterator[Front]:
    front = Front()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            front.connections += 1

        def do_GET(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            front.seen.append(f"{self.command} {self.path}")
            target = urlsplit(self.path)
            if target.path in front.redirects:
                self._answer(307, [("Location", front.redirects[target.path])], b"")
                return
            upstream = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
                path = target.path + (f"?{target.query}" if target.query else "")
                upstream.request(self.command, path, body=body, headers=headers)
                answer = upstream.getresponse()
                content = answer.read()
                kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in _NOT_FORWARDED]
            finally:
                upstream.close()
            padding = 0 if front.size is None else front.size - len(content)
            self._answer(answer.status, kept, content, padding)

        do_POST = do_PUT = do_DELETE = do_GET

        def _answer(
            self, status: int, headers: list[tuple[str, str]], content: bytes, padding: int = 0
        ) -> None:
            self.send_response_only(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content) + padding))
            self.end_headers()
            front.sent = 0
            try:
                self.wfile.write(content)
                front.sent += len(content)
                while padding > 0:
                    piece = min(padding, 64 * 1024)
                    self.wfile.write(b" " * piece)
                    front.sent += piece
                    padding -= piece
            except OSError:
                self.close_connection = True
            finally:
                front.answered.set()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    front.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield front
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def unanswering_server() -> Iterator[str]:
    """The URL of a loopback server whose queue of connections is full: a connection to it
    is never set up (the kernel drops the attempt), like a host behind a firewall."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    queued: list[socket.socket] = []
    try:
        for _ in range(64):
            filler = socket.socket()
            filler.settimeout(0.2)
            queued.append(filler)
            try:
                filler.connect(address)
            except TimeoutError:
                break
        else:
            pytest.fail("this kernel sets up every connection to a full queue")
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        for filler in queued:
            filler.close()
        listener.close()


# --- how much of an answer is read, and for how long -----------------------------------------


def test_a_login_answer_of_exactly_max_response_bytes_is_read_and_one_byte_more_is_refused(
    drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    with front_of(emulator) as front:
        manager = drivers(front.url, clock=fake_clock, timeout=5.0, max_response_bytes=4096)
        front.size = 4096
        assert manager.login(KEY, username="alice", password="secret").access_token
        front.size = 4097
        with pytest.raises(ResponseTooLarge):
            manager.login(KEY, username="alice", password="secret")
    assert emulator.stats.password_logins == 2


def test_an_oversized_login_answer_is_refused_without_being_read_to_its_end(
    drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    with front_of(emulator) as front:
        manager = drivers(front.url, clock=fake_clock, timeout=5.0, max_response_bytes=4096)
        front.size = 256 * 1024 * 1024
        with pytest.raises(ResponseTooLarge):
            manager.login(KEY, username="alice", password="secret")
        assert front.answered.wait(30)
        # What the connection's buffers held when the client hung up, not the whole answer.
        assert front.sent < front.size // 4


_NEW_PROCESS = """
import asyncio, sys
from watcher_auth import AsyncTokenManager, ResponseTooLarge, TokenManager

url = sys.argv[1]


def outcome(login):
    try:
        login()
    except ResponseTooLarge:
        return "refused"
    return "read"


async def async_login():
    async with AsyncTokenManager(url, timeout=10.0) as manager:
        await manager.login("k", username="alice", password="secret")


manager = TokenManager(url, timeout=10.0)
sync = outcome(lambda: manager.login("k", username="alice", password="secret"))
print(sync, outcome(lambda: asyncio.run(async_login())))
"""


def test_a_new_process_reads_a_16_mib_login_answer_by_default_and_refuses_one_byte_more(
    watcher_emulator_factory,
) -> None:
    # A portal's worker process as it starts: the library imported afresh, no option given.
    emulator = watcher_emulator_factory(access_lifetime=LIFETIME)
    outcomes = []
    with front_of(emulator) as front:
        for size in (DEFAULT_LIMIT, DEFAULT_LIMIT + 1):
            front.size = size
            done = subprocess.run(
                [sys.executable, "-c", _NEW_PROCESS, front.url],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            outcomes.append(done.stdout.split())
    assert outcomes == [["read", "read"], ["refused", "refused"]]
    assert emulator.stats.password_logins == 4


def test_a_login_answer_that_drips_in_past_the_deadline_is_given_up(
    drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    # Each piece comes well within the read timeout; only the whole answer is late.
    emulator.configure(hang_seconds=3.0)
    emulator.fail_next("login", 1, "drip")
    manager = drivers(emulator.url, clock=fake_clock, timeout=5.0, deadline=2.0)
    with pytest.raises(WatcherUnavailable, match=r"within 2\.0s"):
        manager.login(KEY, username="alice", password="secret")
    assert manager.tokens(KEY) is None


def test_a_login_to_a_watcher_that_takes_no_connection_gives_up_at_the_deadline(
    drivers: Drivers, fake_clock: FakeClock
) -> None:
    # A connect timeout 40 times the deadline; a bound halfway tells the two apart on a busy
    # machine.
    with unanswering_server() as url:
        manager = drivers(url, clock=fake_clock, timeout=(20.0, 5.0), deadline=0.5)
        started = time.monotonic()
        with pytest.raises(WatcherUnavailable):
            manager.login(KEY, username="alice", password="secret")
        assert time.monotonic() - started < 10.0


# --- where the requests go -------------------------------------------------------------------


def test_a_login_and_the_calls_after_it_share_one_connection_to_watcher(
    drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    with front_of(emulator) as front:
        manager = drivers(front.url, clock=fake_clock, timeout=5.0)
        manager.login(KEY, username="alice", password="secret")
        session = manager.session(KEY)
        assert [session.get("profile").status_code for _ in range(2)] == [200, 200]
        assert front.connections == 1


def test_a_login_answered_with_a_redirect_is_not_followed(
    drivers: Drivers, emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    with front_of(emulator) as front:
        # Watcher under /old answers that its login moved to the root, on the same host.
        front.redirects["/old/watcher/client-api/v3/login"] = "/watcher/client-api/v3/login"
        manager = drivers(front.url + "/old", clock=fake_clock, timeout=5.0)
        with pytest.raises(WatcherProtocolError):
            manager.login(KEY, username="alice", password="secret")
        assert front.seen == ["POST /old/watcher/client-api/v3/login"]
    assert emulator.stats.password_logins == 0


def test_a_login_goes_through_the_proxy_the_environment_named_when_the_manager_was_made(
    emulator: WatcherEmulator, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with front_of(emulator) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        manager = TokenManager("http://watcher.invalid", clock=fake_clock, timeout=5.0)
        monkeypatch.delenv("HTTP_PROXY")
        manager.login(KEY, username="alice", password="secret")
        manager.close()
        assert proxy.seen == ["POST http://watcher.invalid/watcher/client-api/v3/login"]
    assert emulator.stats.password_logins == 1


def test_a_proxy_named_in_the_environment_after_the_manager_was_made_is_not_used(
    emulator: WatcherEmulator, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with front_of(emulator) as proxy:
        manager = TokenManager(emulator.url, clock=fake_clock, timeout=5.0)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        manager.login(KEY, username="alice", password="secret")
        manager.close()
        assert proxy.seen == []
    assert emulator.stats.password_logins == 1


def test_every_client_goes_through_the_proxy_the_environment_named_when_the_manager_was_made(
    emulator: WatcherEmulator, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = "http://watcher.invalid/watcher/client-api/v3/"
    with front_of(emulator) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        manager = TokenManager("http://watcher.invalid", clock=fake_clock, timeout=5.0)
        async_manager = AsyncTokenManager("http://watcher.invalid", clock=fake_clock, timeout=5.0)
        monkeypatch.delenv("HTTP_PROXY")
        manager.login(KEY, username="alice", password="secret")
        with manager.httpx_client(KEY) as client:
            assert client.get("profile").json()["name"] == "alice"

        async def through_the_async_manager() -> str:
            async with async_manager:
                await async_manager.login(KEY, username="alice", password="secret")
                answer = await async_manager.session(KEY).get("profile")
                return str(answer.json()["name"])

        assert asyncio.run(through_the_async_manager()) == "alice"
        manager.close()
        assert proxy.seen == [
            f"POST {api}login",
            f"GET {api}profile",
            f"POST {api}login",
            f"GET {api}profile",
        ]


def test_no_client_uses_a_proxy_for_a_host_the_environment_exempts(
    emulator: WatcherEmulator, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with front_of(emulator) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async_manager = AsyncTokenManager(emulator.url, clock=fake_clock, timeout=5.0)

        async def login() -> None:
            async with async_manager:
                await async_manager.login(KEY, username="alice", password="secret")

        asyncio.run(login())
        assert proxy.seen == []
    assert emulator.stats.password_logins == 1


# --- the store's lock ------------------------------------------------------------------------


class SlowReleaseStore(AsyncMemoryStore):
    """An async memory store whose lock release takes a round trip, as a networked store's
    does: it says when a release starts (``releasing``) and ends it when ``go_on`` is set.

    A real store's release cannot be held at one instant on cue, so this one stands in for it.
    Its locks are plain ``asyncio.Lock``s, released only by a completed release.
    """

    def __init__(self) -> None:
        super().__init__()
        self.releasing = asyncio.Event()
        self.go_on = asyncio.Event()
        self._held: dict[StoreKey, asyncio.Lock] = {}

    def lock(self, key: StoreKey, *, timeout: float) -> Any:
        return _SlowRelease(self, self._held.setdefault(key, asyncio.Lock()), timeout)


class _SlowRelease:
    def __init__(self, store: SlowReleaseStore, lock: asyncio.Lock, timeout: float) -> None:
        self.store, self.lock, self.timeout = store, lock, timeout

    async def __aenter__(self) -> None:
        try:
            await asyncio.wait_for(self.lock.acquire(), self.timeout)
        except TimeoutError:
            raise StoreLockTimeout(f"not acquired in {self.timeout}s") from None

    async def __aexit__(self, *exc_info: object) -> None:
        self.store.releasing.set()
        await self.store.go_on.wait()
        self.lock.release()


def test_a_task_cancelled_while_it_releases_the_stores_lock_still_releases_it(
    emulator: WatcherEmulator, fake_clock: FakeClock
) -> None:
    async def main() -> None:
        store = SlowReleaseStore()
        async with AsyncTokenManager(
            emulator.url, store=store, clock=fake_clock, timeout=5.0, lock_timeout=2.0
        ) as manager:
            first = asyncio.ensure_future(manager.login(KEY, username="alice", password="secret"))
            await asyncio.wait_for(store.releasing.wait(), 10)
            first.cancel()
            with suppress(asyncio.CancelledError):
                await first
            assert first.cancelled()
            store.go_on.set()
            await manager.login(KEY, username="alice", password="secret")

    asyncio.run(main())
    assert emulator.stats.password_logins == 2
