"""A refresh storm on the real clock: P processes x T threads calling for a fixed time.

Each worker process watches its own login requests (password logins and refreshes alike, all
``POST .../login``) by wrapping ``HTTPAdapter.send`` after the fork: the requests still go to
the emulator; the wrapper only notes when each one answered. A call *waited for a refresh*
when it was in flight at the moment a login request of any worker answered: that holds for
every call held back by a refresh (it can only finish after the refresh does), whichever
thread or process made it, and for the call that made it. It also holds for calls that were
merely on the wire at that moment, for every client alike; they only lower the figure.
"""

from __future__ import annotations

import bisect
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from watcher_auth import TokenManager, WatcherAuthError

LOGIN_SUFFIX = "/login"


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
    at_refresh: int = 0
    p99_at_refresh_ms: float = 0.0
    note: str = ""


@dataclass
class StormOutcome:
    """What the workers measured."""

    latencies: list[float]
    errors: int
    failure: str
    started: float
    ended: float
    #: Latencies of the calls that waited for a refresh (see the module's docstring).
    at_refresh: list[float] = field(default_factory=list)


# A caller is built once per thread: it returns a function making one call, which returns
# whether the call succeeded.
CallerFactory = Callable[[], Callable[[], bool]]


def _watch_logins(answered: list[float]) -> None:
    """Note when each login request of this process answered, in ``answered``."""
    send = HTTPAdapter.send

    def watched(
        self: HTTPAdapter, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> Any:
        if not (request.url or "").endswith(LOGIN_SUFFIX):
            return send(self, request, *args, **kwargs)
        try:
            return send(self, request, *args, **kwargs)
        finally:
            answered.append(time.time())

    HTTPAdapter.send = watched  # type: ignore[method-assign]


def _worker(
    make_caller_factory: Callable[[], CallerFactory],
    threads: int,
    start: float,
    end: float,
    queue: Any,
) -> None:
    answered: list[float] = []
    _watch_logins(answered)
    try:
        make_caller = make_caller_factory()
    except Exception as exc:  # reported, not raised: the parent prints the row as failed
        queue.put(([], 1, f"{type(exc).__name__}: {exc}", []))
        return
    calls: list[tuple[float, float]] = []
    errors = 0
    lock = threading.Lock()

    def run() -> None:
        nonlocal errors
        call = make_caller()
        mine: list[tuple[float, float]] = []
        failed = 0
        while time.time() < start:
            time.sleep(0.001)
        while True:
            began = time.time()
            if began >= end:
                break
            t0 = time.perf_counter()
            try:
                ok = call()
            except (WatcherAuthError, requests.RequestException):
                ok = False
            mine.append((began, time.perf_counter() - t0))
            failed += not ok
        with lock:
            calls.extend(mine)
            errors += failed

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    queue.put((calls, errors, "", answered))


def timed_storm(
    make_caller_factory: Callable[[], CallerFactory],
    *,
    processes: int,
    threads: int,
    duration: float,
    before_fork: Callable[[], None] | None = None,
) -> StormOutcome:
    """Run the callers in ``processes`` forked workers of ``threads`` threads each."""
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
    calls: list[tuple[float, float]] = []
    answered: list[float] = []
    errors = 0
    failure = ""
    for _ in workers:
        got, err, fail, seen = queue.get(timeout=duration + 120)
        calls.extend(got)
        answered.extend(seen)
        errors += err
        failure = failure or fail
    for w in workers:
        w.join(30)
    answered.sort()
    at_refresh = []
    for began, latency in calls:
        # The first login answer at or after the call began: did it come before the call ended?
        i = bisect.bisect_left(answered, began)
        if i < len(answered) and answered[i] <= began + latency:
            at_refresh.append(latency)
    return StormOutcome([c[1] for c in calls], errors, failure, start, end, at_refresh)


def managed_callers(make_manager: Callable[[], TokenManager], key: str) -> CallerFactory:
    """Callers going through watcher-auth: one manager per process, a session per thread."""
    manager = make_manager()

    def make_caller() -> Callable[[], bool]:
        session = manager.session(key)
        return lambda: session.get("profile").status_code == 200

    return make_caller


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """Median and 99th percentile, in milliseconds."""
    if not latencies:
        return 0.0, 0.0
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000
