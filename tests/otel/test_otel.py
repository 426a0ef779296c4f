"""OpenTelemetry metrics and spans of real flows against the Watcher emulator over loopback.

The OpenTelemetry SDK's in-memory reader and exporter collect what an operator's collector
would receive; the test reads them as it would.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from tests.otel.telemetry import Telemetry
from watcher_auth import (
    AsyncTokenManager,
    ConfigurationError,
    MemoryStore,
    ReauthenticationRequired,
    StoreError,
    StoreKey,
    TokenManager,
    TokenPair,
)
from watcher_auth.otel import user_key_hash
from watcher_auth.stores import AsyncMemoryStore
from watcher_auth.testing import FakeClock
from watcher_auth.testing.emulator import WatcherEmulator

KEY = "portal-user-42"
SERVICE = "service:reports"
LIFETIME = 300.0
PASSWORDS = {"alice": "secret", "bob": "hunter2"}
WAITERS = 3
HOLD = 0.2


class DiskFull(StoreError):
    """What the broken stores below raise."""


# A store that fails on demand: what is under test is how a StoreError is counted, which
# is the same whatever backend raised it, and a switch makes it fail at one exact step.
class BreakableStore(MemoryStore):
    broken = False

    def load(self, key: StoreKey) -> TokenPair | None:
        if self.broken:
            raise DiskFull("the disk is full")
        return super().load(key)


class AsyncBreakableStore(AsyncMemoryStore):
    broken = False

    async def load(self, key: StoreKey) -> TokenPair | None:
        if self.broken:
            raise DiskFull("the disk is full")
        return await super().load(key)


def provider(key: str) -> tuple[str, str] | None:
    return ("bob", PASSWORDS["bob"]) if key == SERVICE else None


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry.create()
    yield telemetry
    telemetry.shutdown()


@pytest.fixture
def emulator(watcher_emulator_factory: Any, fake_clock: FakeClock) -> WatcherEmulator:
    return watcher_emulator_factory(clock=fake_clock, access_lifetime=LIFETIME)


# What one run of the scenario below records, whichever manager ran it.
EXPECTED_COUNTS = {
    # alice twice, the service account through the provider, and the waiting logins.
    "watcher_auth.logins": 3 + WAITERS,
    "watcher_auth.login.duration": 3 + WAITERS,
    "watcher_auth.refreshes": 2,
    "watcher_auth.refresh.duration": 2,
    "watcher_auth.unauthorized_retries": 2,
    "watcher_auth.refresh_rejections": 1,
    "watcher_auth.reauthentications": 1,
    "watcher_auth.disconnects": 1,
    "watcher_auth.store_errors": 1,
}


def assert_recorded(telemetry: Telemetry, emulator: WatcherEmulator, server: str) -> None:
    counts = telemetry.counts()
    # A lock taken without contention can still count as a wait on a busy machine: only the
    # key whose lock the test held has an exact number.
    assert counts.pop("watcher_auth.lock.wait_time") >= WAITERS
    assert counts == EXPECTED_COUNTS
    points = telemetry.points()

    (store_error,) = points["watcher_auth.store_errors"]
    assert store_error.attributes["error.type"] == "DiskFull"
    (waits,) = (
        p
        for p in points["watcher_auth.lock.wait_time"]
        if p.attributes["watcher.user_key_hash"] == user_key_hash("waiting")
    )
    assert waits.count == WAITERS and waits.sum >= HOLD
    alice = {
        "watcher.server": server,
        "watcher.api": "v3",
        "watcher.user_key_hash": user_key_hash(KEY),
    }
    (refreshes,) = points["watcher_auth.refreshes"]
    assert dict(refreshes.attributes) == alice and refreshes.value == 2

    spans = telemetry.spans()
    assert Counter((s.name, s.status.status_code) for s in spans) == {
        ("watcher_auth.login", StatusCode.UNSET): 3 + WAITERS,
        ("watcher_auth.refresh", StatusCode.UNSET): 2,
        ("watcher_auth.refresh", StatusCode.ERROR): 1,
    }
    for span in spans:
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
        assert span.attributes is not None and span.attributes["watcher.server"] == server

    assert_no_secret_in(telemetry, emulator)


def assert_no_secret_in(telemetry: Telemetry, emulator: WatcherEmulator) -> None:
    """No password, token, username or raw user key in any name, attribute or status."""
    texts: list[str] = []
    for name, points in telemetry.points().items():
        texts.append(name)
        for point in points:
            texts.extend(f"{k}={v}" for k, v in point.attributes.items())
    for span in telemetry.spans():
        texts.append(span.name)
        texts.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        texts.append(span.status.description or "")
        texts.extend(event.name for event in span.events)
    secrets = {*emulator.issued_secrets(), *PASSWORDS.values(), *PASSWORDS, KEY, SERVICE, "waiting"}
    assert len(emulator.issued_secrets()) >= 8  # logins and refreshes did issue tokens
    leaked = {secret for secret in secrets for text in texts if secret in text}
    assert leaked == set()


def test_a_sync_managers_flows_become_exact_metrics_and_spans(
    emulator: WatcherEmulator, fake_clock: FakeClock, telemetry: Telemetry
) -> None:
    store = BreakableStore()
    manager = TokenManager(
        emulator.url, store=store, clock=fake_clock, credentials=provider, deadline=5.0
    )
    telemetry.instrument(manager)

    manager.login(KEY, username="alice", password=PASSWORDS["alice"])
    assert manager.session(SERVICE).get("profile").json()["name"] == "bob"
    fake_clock.advance(LIFETIME + 1)
    assert manager.session(KEY).get("profile").status_code == 200  # refreshed first
    emulator.revoke_access_tokens("alice")
    assert manager.session(KEY).get("profile").status_code == 200  # a 401, refreshed, retried
    emulator.revoke("alice")
    with pytest.raises(ReauthenticationRequired):
        manager.session(KEY).get("profile")  # a 401, and the refresh token is refused
    manager.login(KEY, username="alice", password=PASSWORDS["alice"])
    assert manager.logout(KEY)

    store.broken = True
    with pytest.raises(DiskFull):
        manager.current_tokens(KEY)
    store.broken = False

    # Logins that find the key's lock held wait for it; each wait is measured.
    skey = manager.store_key("waiting")
    logins_before = emulator.stats.password_logins
    with store.lock(skey, timeout=5):
        threads = [
            threading.Thread(
                target=manager.login,
                args=("waiting",),
                kwargs={"username": "alice", "password": PASSWORDS["alice"]},
            )
            for _ in range(WAITERS)
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: emulator.stats.password_logins == logins_before + WAITERS)
        time.sleep(HOLD)
    for thread in threads:
        thread.join(10)

    assert_recorded(telemetry, emulator, manager.server)
    manager.close()


def test_an_async_managers_flows_become_the_same_metrics_and_spans(
    emulator: WatcherEmulator, fake_clock: FakeClock, telemetry: Telemetry
) -> None:
    store = AsyncBreakableStore()

    async def scenario() -> str:
        async with AsyncTokenManager(
            emulator.url, store=store, clock=fake_clock, credentials=provider, deadline=5.0
        ) as manager:
            telemetry.instrument(manager)

            await manager.login(KEY, username="alice", password=PASSWORDS["alice"])
            async with manager.session(SERVICE) as service:
                assert (await service.get("profile")).json()["name"] == "bob"
            fake_clock.advance(LIFETIME + 1)
            async with manager.session(KEY) as client:
                assert (await client.get("profile")).status_code == 200
                emulator.revoke_access_tokens("alice")
                assert (await client.get("profile")).status_code == 200
                emulator.revoke("alice")
                with pytest.raises(ReauthenticationRequired):
                    await client.get("profile")
            await manager.login(KEY, username="alice", password=PASSWORDS["alice"])
            assert await manager.logout(KEY)

            store.broken = True
            with pytest.raises(DiskFull):
                await manager.current_tokens(KEY)
            store.broken = False

            skey = manager.store_key("waiting")
            logins_before = emulator.stats.password_logins
            async with store.lock(skey, timeout=5):
                tasks = [
                    asyncio.create_task(
                        manager.login("waiting", username="alice", password=PASSWORDS["alice"])
                    )
                    for _ in range(WAITERS)
                ]
                while emulator.stats.password_logins < logins_before + WAITERS:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(HOLD)
            await asyncio.gather(*tasks)
            return manager.server

    server = asyncio.run(scenario())
    assert_recorded(telemetry, emulator, server)


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_span_covers_the_refresh_request_and_is_a_child_of_the_current_span(
    watcher_emulator_factory: Any, telemetry: Telemetry
) -> None:
    emulator = watcher_emulator_factory(refresh_latency=0.2)
    manager = TokenManager(emulator.url, store=MemoryStore())
    telemetry.instrument(manager)
    manager.login(KEY, username="alice", password=PASSWORDS["alice"])
    tracer = telemetry.tracer_provider.get_tracer("portal")
    with tracer.start_as_current_span("GET /cameras/") as request_span:
        manager.refresh(KEY)
    (refresh,) = (s for s in telemetry.spans() if s.name == "watcher_auth.refresh")
    assert refresh.start_time is not None and refresh.end_time is not None
    assert 0.2 <= (refresh.end_time - refresh.start_time) / 1e9 < 5
    assert refresh.parent is not None
    assert refresh.parent.span_id == request_span.get_span_context().span_id
    (duration,) = telemetry.points()["watcher_auth.refresh.duration"]
    assert duration.count == 1 and duration.sum >= 0.2
    # Buckets in seconds, not the SDK's default ones made for milliseconds.
    assert list(duration.explicit_bounds)[:3] == [0.005, 0.01, 0.025]
    assert sum(duration.bucket_counts[:5]) == 0 and sum(duration.bucket_counts) == 1
    manager.close()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"watcher.user_key_hash": user_key_hash(KEY)}),
        ({"user_key": "raw"}, {"watcher.user_key": KEY}),
        ({"user_key": "omit"}, {}),
        (
            {"user_key_salt": "pepper"},
            {"watcher.user_key_hash": user_key_hash(KEY, "pepper")},
        ),
    ],
)
def test_the_user_key_is_hashed_unless_told_otherwise(
    emulator: WatcherEmulator,
    telemetry: Telemetry,
    options: dict[str, Any],
    expected: dict[str, str],
) -> None:
    manager = TokenManager(emulator.url, store=MemoryStore())
    telemetry.instrument(manager, **options)
    manager.login(KEY, username="alice", password=PASSWORDS["alice"])
    (login,) = telemetry.points()["watcher_auth.logins"]
    assert dict(login.attributes) == {
        "watcher.server": manager.server,
        "watcher.api": "v3",
        **expected,
    }
    (span,) = telemetry.spans()
    assert dict(span.attributes or {}) == dict(login.attributes)
    manager.close()


def test_a_salted_hash_differs_from_the_plain_one_and_both_are_16_hex_digits() -> None:
    plain, salted = user_key_hash("42"), user_key_hash("42", b"pepper")
    assert plain != salted
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in (plain, salted))
    assert plain == "73475cb40a568e8d"  # sha256("42"), so an operator can compute it


def test_uninstrument_stops_recording(emulator: WatcherEmulator, telemetry: Telemetry) -> None:
    manager = TokenManager(emulator.url, store=MemoryStore())
    instrumentation = telemetry.instrument(manager)
    manager.login(KEY, username="alice", password=PASSWORDS["alice"])
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    manager.login(KEY, username="alice", password=PASSWORDS["alice"])
    assert telemetry.counts()["watcher_auth.logins"] == 1
    assert len(telemetry.spans()) == 1
    manager.close()


def test_an_unknown_user_key_mode_is_a_configuration_error(telemetry: Telemetry) -> None:
    with pytest.raises(ConfigurationError, match="'hash', 'raw' or 'omit'"):
        telemetry.instrument(TokenManager("https://watcher.test"), user_key="plain")


def test_without_opentelemetry_the_module_imports_and_instrument_names_the_extra() -> None:
    # OpenTelemetry is installed here; a child process blocks its import to be without it.
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None
        import watcher_auth.otel as otel
        from watcher_auth import ConfigurationError, TokenManager
        try:
            otel.instrument(TokenManager("https://watcher.test"))
        except ConfigurationError as exc:
            print("refused:", exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == (
        "refused: OpenTelemetry is not installed: pip install 'watcher-auth[otel]'"
    )
