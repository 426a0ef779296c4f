"""Coherence: how long after a disconnect in one process another process still calls Watcher
with the old token.

A worker process calls ``profile`` in a loop through its own manager on a shared store, with
a fresh copy of the pair in its local cache; the parent's manager disconnects the key. The
worker notes when it sent the last call that carried the old token (Watcher still accepts it:
a disconnect deletes the record, it does not revoke the token) and stops at the first call
that finds no record. One trial is that delay; the row gives its p50 and p99.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

from _stores import STORES, StoreUnavailable

from watcher_auth import NotConnected
from watcher_auth.testing.emulator import WatcherEmulator

COHERENCE_HEADER = [
    "shared store",
    "trials",
    "old token's last use after the disconnect, p50 ms",
    "p99 ms",
    "max ms",
    "first call refused, p50 ms",
    "its p99 ms",
    "staleness bound s",
    "goal: the old token's last use within the staleness bound",
]
SHARED = [
    "Redis store",
    "SQLAlchemy, PostgreSQL",
    "Django model, PostgreSQL",
    "Django cache, Redis",
]
USER, PASSWORD = "alice", "secret"
# Successful calls a worker makes with a pair before the parent disconnects it: the copy is
# in its cache by then.
WARM = 5


def _worker(make: Callable[..., Any], url: str, key: str, commands: Any, results: Any) -> None:
    manager = make(url, time.time)
    session = manager.session(key)
    while commands.get() is not None:
        ok, last, noticed = 0, 0.0, 0.0
        while True:
            sent = time.time()
            try:
                status = session.get("profile").status_code
            except NotConnected:
                if ok >= WARM:
                    noticed = time.time()
                    break
                time.sleep(0.005)  # the parent's login is not visible here yet
                continue
            if status == 200:
                last = sent
                ok += 1
                if ok == WARM:
                    results.put("calling")
        results.put((last, noticed))
    manager.close()
    manager.store.close()


def coherence_row(name: str, trials: int) -> list[str]:
    """``trials`` disconnects of one key, each timed in a worker process."""
    make, before_fork, _ = STORES[name].prepare()
    emulator = WatcherEmulator()
    emulator.add_user(USER, PASSWORD)
    emulator.start()
    key = f"bench-coherence-{time.time_ns()}"
    ctx = multiprocessing.get_context("fork")
    commands: Any = ctx.Queue()
    results: Any = ctx.Queue()
    if before_fork is not None:
        before_fork()
    worker = ctx.Process(
        target=_worker, args=(make, emulator.url, key, commands, results), daemon=True
    )
    worker.start()
    parent = make(emulator.url, time.time)
    delays, notices = [], []
    try:
        for _ in range(trials):
            parent.login(key, username=USER, password=PASSWORD)
            commands.put("go")
            results.get(timeout=60)
            parent.logout(key)
            disconnected = time.time()
            last_old, noticed = results.get(timeout=60)
            # A call sent before the disconnect finished is not a stale use: 0.
            delays.append(max(0.0, last_old - disconnected))
            notices.append(max(0.0, noticed - disconnected))
        commands.put(None)
        worker.join(30)
    finally:
        if worker.is_alive():
            worker.terminate()
        bound = parent.store.staleness_bound
        parent.close()
        parent.store.close()
        emulator.stop()
    ordered = sorted(delays)
    return [
        name,
        str(trials),
        f"{statistics.median(delays) * 1000:.1f}",
        f"{_p99(delays) * 1000:.1f}",
        f"{ordered[-1] * 1000:.1f}",
        f"{statistics.median(notices) * 1000:.1f}",
        f"{_p99(notices) * 1000:.1f}",
        f"{bound:g}",
        "held" if ordered[-1] <= bound else "not held",
    ]


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def coherence_rows(trials: int) -> tuple[list[list[str]], list[str]]:
    """One row per shared store; a store that cannot be reached is noted, not measured."""
    rows, notes = [], []
    for name in SHARED:
        try:
            rows.append(coherence_row(name, trials))
        except StoreUnavailable as exc:
            notes.append(f"{name}: skipped ({exc})")
    return rows, notes
