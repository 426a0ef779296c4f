"""A refresh storm on the real clock: P processes x T threads calling for a fixed time."""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from watcher_auth import TokenManager, WatcherAuthError


@dataclass
class StormRow:
    store: str
    shape: str
    logins: int
    refreshes: int
    rejected: int
    unauthorized: int
    errors: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    expiries: int
    minimum: int
    note: str = ""


# A caller is built once per thread: it returns a function making one call, which returns
# whether the call succeeded.
CallerFactory = Callable[[], Callable[[], bool]]


def _worker(
    make_caller_factory: Callable[[], CallerFactory],
    threads: int,
    start: float,
    end: float,
    queue: Any,
) -> None:
    try:
        make_caller = make_caller_factory()
    except Exception as exc:  # reported, not raised: the parent prints the row as failed
        queue.put(([], 1, f"{type(exc).__name__}: {exc}"))
        return
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def run() -> None:
        nonlocal errors
        call = make_caller()
        mine: list[float] = []
        failed = 0
        while time.time() < start:
            time.sleep(0.001)
        while time.time() < end:
            t0 = time.perf_counter()
            try:
                ok = call()
            except (WatcherAuthError, requests.RequestException):
                ok = False
            mine.append(time.perf_counter() - t0)
            failed += not ok
        with lock:
            latencies.extend(mine)
            errors += failed

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    queue.put((latencies, errors, ""))


def timed_storm(
    make_caller_factory: Callable[[], CallerFactory],
    *,
    processes: int,
    threads: int,
    duration: float,
    before_fork: Callable[[], None] | None = None,
) -> tuple[list[float], int, str, float, float]:
    """Run the callers.

    Returns latencies in seconds, failed calls, the first worker failure, and the times the
    calls started and ended.
    """
    ctx = multiprocessing.get_context("fork")
    queue: Any = ctx.Queue()
    start = time.time() + 1.0 + 0.2 * processes
    end = start + duration
    if before_fork is not None:
        before_fork()
    workers = [
        ctx.Process(target=_worker, args=(make_caller_factory, threads, start, end, queue))
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    latencies: list[float] = []
    errors = 0
    failure = ""
    for _ in workers:
        lat, err, fail = queue.get(timeout=duration + 120)
        latencies.extend(lat)
        errors += err
        failure = failure or fail
    for w in workers:
        w.join(30)
    return latencies, errors, failure, start, end


def managed_callers(make_manager: Callable[[], TokenManager], key: str) -> CallerFactory:
    """Callers going through watcher-auth: one manager per process, a session per thread."""
    manager = make_manager()

    def make_caller() -> Callable[[], bool]:
        session = manager.session(key)
        return lambda: session.get("profile").status_code == 200

    return make_caller


def percentiles(latencies: list[float]) -> tuple[float, float]:
    if not latencies:
        return 0.0, 0.0
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000
