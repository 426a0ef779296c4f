"""Faults across worker processes: a lock holder killed mid-refresh, a refresh answer that
drips in slower than the read timeout, and two hosts whose clocks are a minute apart."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from watcher_auth import StoreError, StoreLockTimeout, TokenManager
from watcher_auth.stores.redis import RedisStore
from watcher_auth.testing import WatcherEmulator
from watcher_auth.testing.storm import RedisServer

from .conftest import ACCOUNTS, KEYS

KEY = "portal-user-3"
LEASE = 5.0  # the Redis store's lock lease


@pytest.fixture
def make_store(own_redis: RedisServer) -> Callable[[], RedisStore]:
    prefix = f"faults:{uuid.uuid4().hex}:"
    return lambda: RedisStore(url=own_redis.url, prefix=prefix, encryption_keys=KEYS)


def connect(emulator: WatcherEmulator, store: RedisStore, username: str = "w03") -> None:
    manager = TokenManager(emulator.url, store=store)
    manager.login(KEY, username=username, password=ACCOUNTS[username])
    manager.close()


def refresh_and_report(make: Callable[[], TokenManager], result: Any) -> None:
    """In a forked worker: ask for a fresh pair, report (seconds taken, outcome)."""
    manager = make()
    started = time.monotonic()
    try:
        manager.current_tokens(KEY)
    except Exception as exc:
        result.put((time.monotonic() - started, type(exc).__name__))
    else:
        result.put((time.monotonic() - started, "ok"))
    manager.close()


def wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def start(target: Callable[..., None], *args: Any) -> Any:
    process = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    process.start()
    return process


@pytest.mark.redis
@pytest.mark.multiprocess
def test_a_killed_lock_holder_holds_the_others_up_for_one_lease_not_the_lock_timeout(
    accounts_emulator: Callable[..., WatcherEmulator], make_store: Callable[[], RedisStore]
) -> None:
    emulator = accounts_emulator(access_lifetime=2.0, hang_seconds=60.0)
    connect(emulator, make_store())
    time.sleep(2.1)  # the access token is stale: the next call refreshes
    emulator.fail_next("refresh", 1, "hang")  # the holder's refresh never comes back

    def make() -> TokenManager:
        return TokenManager(emulator.url, store=make_store(), lock_timeout=30.0, deadline=60.0)

    result: Any = multiprocessing.get_context("fork").Queue()
    holder = start(refresh_and_report, make, result)
    wait_until(lambda: emulator.stats.injected_failures == 1)  # its refresh hangs at Watcher
    others = [start(refresh_and_report, make, result) for _ in range(3)]
    time.sleep(0.5)  # the others are waiting for the lock
    os.kill(holder.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    holder.join(5)
    outcomes = [result.get(timeout=40) for _ in others]
    waited = time.monotonic() - killed_at
    assert [outcome for _, outcome in outcomes] == ["ok"] * 3
    assert waited < LEASE + 2.0
    assert emulator.stats.refreshes == 1  # one of the others refreshed; the rest reused it


def threads_behind_a_dead_holder(make: Callable[[], TokenManager], result: Any) -> None:
    """In a forked worker: 8 threads ask at once; report each outcome and its wait, and how
    many threads are left once they have all returned."""
    manager = make()
    baseline = _callers()
    outcomes: list[tuple[float, str]] = []

    def ask() -> None:
        started = time.monotonic()
        try:
            manager.current_tokens(KEY)
        except Exception as exc:
            outcomes.append((time.monotonic() - started, type(exc).__name__))
        else:
            outcomes.append((time.monotonic() - started, "ok"))

    pool = [threading.Thread(target=ask) for _ in range(8)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(30)
    result.put((outcomes, _callers() - baseline))
    manager.close()


def _callers() -> int:
    # The store's change listener starts with the first call and stays: it is not a caller.
    return sum(1 for t in threading.enumerate() if not t.name.startswith("watcher-auth-watch"))


@pytest.mark.redis
@pytest.mark.multiprocess
def test_with_a_short_lock_timeout_callers_behind_a_killed_holder_get_a_retryable_error(
    accounts_emulator: Callable[..., WatcherEmulator], make_store: Callable[[], RedisStore]
) -> None:
    emulator = accounts_emulator(access_lifetime=2.0, hang_seconds=60.0)
    connect(emulator, make_store())
    time.sleep(2.1)
    emulator.fail_next("refresh", 1, "hang")

    def make() -> TokenManager:
        return TokenManager(emulator.url, store=make_store(), lock_timeout=1.0, deadline=60.0)

    result: Any = multiprocessing.get_context("fork").Queue()
    holder = start(refresh_and_report, make, result)
    wait_until(lambda: emulator.stats.injected_failures == 1)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(5)
    start(threads_behind_a_dead_holder, make, result)
    outcomes, extra_threads = result.get(timeout=30)
    assert [name for _, name in outcomes] == ["StoreLockTimeout"] * 8
    # lock_timeout (1 s) plus room for a loaded machine; far from the lease or 30 s.
    assert max(waited for waited, _ in outcomes) < 1.0 + 2.0
    assert extra_threads == 0
    assert issubclass(StoreLockTimeout, StoreError)  # what callers retry on
    # Once the lease has run out, the next caller refreshes.
    time.sleep(LEASE)
    start(refresh_and_report, make, result)
    assert result.get(timeout=30)[1] == "ok"
    assert emulator.stats.refreshes == 1


@pytest.mark.redis
@pytest.mark.multiprocess
def test_a_refresh_answer_dripping_slower_than_the_read_timeout_is_waited_for(
    accounts_emulator: Callable[..., WatcherEmulator], make_store: Callable[[], RedisStore]
) -> None:
    # The answer's pieces come 1 s apart, twice the read timeout, 3 s in all; the deadline
    # is 10 s. With rotation on, a second refresh with the spent token would be rejected.
    emulator = accounts_emulator(access_lifetime=2.0, rotate_refresh_tokens=True, hang_seconds=3)
    store = make_store()
    connect(emulator, store)
    time.sleep(2.1)
    emulator.fail_next("refresh", 1, "drip")

    def make() -> TokenManager:
        return TokenManager(emulator.url, store=make_store(), timeout=(1.0, 0.5), deadline=10.0)

    result: Any = multiprocessing.get_context("fork").Queue()
    workers = [start(refresh_and_report, make, result) for _ in range(3)]
    outcomes = [result.get(timeout=30) for _ in workers]
    assert [outcome for _, outcome in outcomes] == ["ok"] * 3
    assert max(waited for waited, _ in outcomes) >= 3.0  # the drip was really waited for
    stats = emulator.stats
    assert (stats.refreshes, stats.rejected_refreshes) == (1, 0)
    assert store.load(TokenManager(emulator.url).store_key(KEY)) is not None
    manager = make()
    assert manager.session(KEY).get("profile").json()["name"] == "w03"
    manager.close()


def call_for(
    clock: Callable[[], float],
    make_store: Callable[[], RedisStore],
    url: str,
    after: float,
    until: float,
    result: Any,
) -> None:
    """In a forked worker on ``clock``: call every 20 ms from ``after`` until ``until``
    (``time.monotonic()`` values)."""
    time.sleep(max(0.0, after - time.monotonic()))
    manager = TokenManager(url, store=make_store(), clock=clock)
    session = manager.session(KEY)
    statuses: dict[int, int] = {}
    errors = 0
    while time.monotonic() < until:
        try:
            status = session.get("profile").status_code
        except Exception:
            errors += 1
        else:
            statuses[status] = statuses.get(status, 0) + 1
        time.sleep(0.02)
    result.put((statuses, errors))
    manager.close()


def ahead() -> float:
    return time.time() + 30.0


def behind() -> float:
    return time.time() - 30.0


@pytest.mark.redis
@pytest.mark.multiprocess
def test_two_hosts_a_minute_apart_share_tokens_without_401s_or_extra_refreshes(
    accounts_emulator: Callable[..., WatcherEmulator], make_store: Callable[[], RedisStore]
) -> None:
    # The host behind calls alone first, so it refreshes too: a pair it stores must not look
    # expired to the host ahead, nor the ahead host's pairs fresh to it past their expiry.
    lifetime, alone, together = 5.0, 6.0, 10.0
    emulator = accounts_emulator(access_lifetime=lifetime, rotate_refresh_tokens=True)
    connect(emulator, make_store())
    emulator.reset_stats()
    result: Any = multiprocessing.get_context("fork").Queue()
    now = time.monotonic()
    end = now + alone + together
    hosts = [
        start(call_for, behind, make_store, emulator.url, now, end, result),
        start(call_for, ahead, make_store, emulator.url, now + alone, end, result),
    ]
    reports = [result.get(timeout=60) for _ in hosts]
    stats = emulator.stats
    calls = sum(sum(statuses.values()) for statuses, _ in reports)
    assert all(errors == 0 for _, errors in reports)
    assert calls > 200
    assert stats.unauthorized == 0
    # About one refresh per expiry (due 10% before it), not one per host and expiry.
    expiries = (alone + together) / (lifetime * 0.9)
    assert expiries - 1 <= stats.refreshes <= expiries + 1
    assert stats.rejected_refreshes == 0


@pytest.mark.redis
def test_a_refresh_whose_pair_the_store_could_not_keep_is_not_announced_and_explains_the_rejection(
    accounts_emulator: Callable[..., WatcherEmulator],
    own_redis: RedisServer,
    make_store: Callable[[], RedisStore],
) -> None:
    from watcher_auth import EventType, ReauthenticationRequired, WatcherEvent

    emulator = accounts_emulator(access_lifetime=2.0, rotate_refresh_tokens=True, hang_seconds=1)
    connect(emulator, make_store())
    time.sleep(2.1)
    manager = TokenManager(emulator.url, store=make_store(), lock_timeout=2.0)
    events: list[WatcherEvent] = []
    manager.add_listener(events.append)
    emulator.fail_next("refresh", 1, "hang")
    failures: list[BaseException] = []

    def ask() -> None:
        try:
            manager.current_tokens(KEY)
        except BaseException as exc:
            failures.append(exc)

    caller = threading.Thread(target=ask)
    caller.start()
    # Redis goes down while Watcher is answering the refresh (its lock is already taken).
    wait_until(lambda: emulator.stats.injected_failures == 1)
    own_redis.stop()
    caller.join(30)
    own_redis.start()
    assert [type(exc) for exc in failures] == [StoreError]
    assert emulator.stats.refreshes == 1  # Watcher rotated the refresh token
    assert EventType.REFRESHED not in [event.type for event in events]
    time.sleep(LEASE)  # the lock taken before Redis went down has run out
    with pytest.raises(ReauthenticationRequired) as raised:
        manager.current_tokens(KEY)
    assert raised.value.reason == "refresh_answer_lost"
    manager.close()
