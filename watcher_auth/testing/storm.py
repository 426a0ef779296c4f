"""Refresh storms: many processes and threads (or tasks) calling through one key across
expiries.

The parent moves a :class:`~watcher_auth.testing.clock.SharedClock` past the access token's
lifetime between phases, so every phase after the first finds the token expired in every
worker at once; a correct manager and store make exactly one refresh per phase.
:func:`run_storm` drives a :class:`~watcher_auth.TokenManager` from threads,
:func:`run_async_storm` an :class:`~watcher_auth.AsyncTokenManager` from tasks.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from watcher_auth._manager import TokenManager
from watcher_auth.testing.clock import SharedClock

if TYPE_CHECKING:
    from watcher_auth._async_manager import AsyncTokenManager

__all__ = ["StormResult", "run_async_storm", "run_storm"]

_PHASE_TIMEOUT = 120.0


@dataclass
class StormResult:
    """What the workers saw: how many calls they made, and every error (as text).

    ``waited`` (async storms only) holds the seconds each caller's first call of each phase
    after an expiry took: the calls that waited for that expiry's refresh.
    """

    calls: int = 0
    errors: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    waited: list[float] = field(default_factory=list)

    def percentile(self, fraction: float) -> float:
        """The ``fraction`` quantile of :attr:`waited` (0.99 for the p99), 0 without data."""
        if not self.waited:
            return 0.0
        ordered = sorted(self.waited)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_storm(
    make_manager: Callable[[], TokenManager],
    *,
    clock: SharedClock,
    lifetime: float,
    processes: int = 4,
    threads: int = 8,
    expiries: int = 3,
    calls_per_phase: int = 3,
    key: str = "storm",
    path: str = "profile",
    before_fork: Callable[[], None] | None = None,
) -> StormResult:
    """Run ``processes`` times ``threads`` callers through ``expiries + 1`` phases.

    Args:
        make_manager: builds the manager in each worker (after the fork, so it opens its own
            connections); it must use ``clock`` and a store shared across processes.
        clock: the clock shared by the emulator and the managers.
        lifetime: the emulator's access-token lifetime; each phase moves the clock this far.
        processes: worker processes (1 runs the threads in this process, no fork).
        threads: threads per worker.
        expiries: how many times the token expires during the run.
        calls_per_phase: calls each thread makes in each phase.
        key: the user key every caller uses (log it in before calling this).
        path: the API path each call GETs.
        before_fork: run in this process before forking (close inherited connections).
    """
    ctx = multiprocessing.get_context("fork")
    parties = processes * threads + 1
    barrier: Any = ctx.Barrier(parties) if processes > 1 else threading.Barrier(parties)
    queue: Any = ctx.Queue()
    args = (make_manager, barrier, queue, threads, expiries, calls_per_phase, key, path)
    workers: list[Any] = []
    if processes > 1:
        if before_fork is not None:
            before_fork()
        workers = [ctx.Process(target=_worker, args=args, daemon=True) for _ in range(processes)]
    else:
        workers = [threading.Thread(target=_worker, args=args, daemon=True)]
    for worker in workers:
        worker.start()
    errors: list[str] = []
    try:
        for phase in range(expiries + 1):
            if phase:
                clock.advance(lifetime)
            barrier.wait(_PHASE_TIMEOUT)  # start of the phase
            barrier.wait(_PHASE_TIMEOUT)  # every caller done with it
    except threading.BrokenBarrierError:
        errors.append("a worker did not reach the end of a phase in time")
    result = StormResult(errors=errors)
    for _ in workers:
        calls, worker_errors, statuses = queue.get(timeout=_PHASE_TIMEOUT)
        result.calls += calls
        result.errors.extend(worker_errors)
        for status, count in statuses.items():
            result.statuses[status] = result.statuses.get(status, 0) + count
    for worker in workers:
        worker.join(_PHASE_TIMEOUT)
    return result


def _worker(
    make_manager: Callable[[], TokenManager],
    barrier: Any,
    queue: Any,
    threads: int,
    expiries: int,
    calls_per_phase: int,
    key: str,
    path: str,
) -> None:
    errors: list[str] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    calls = 0
    try:
        manager = make_manager()
    except Exception:
        queue.put((0, [traceback.format_exc()], {}))
        barrier.abort()
        return

    def caller() -> None:
        nonlocal calls
        session = manager.session(key)
        for _phase in range(expiries + 1):
            barrier.wait(_PHASE_TIMEOUT)
            for _ in range(calls_per_phase):
                try:
                    status = session.get(path).status_code
                except Exception as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    calls += 1
                    statuses[status] = statuses.get(status, 0) + 1
                    if status != 200:
                        errors.append(f"HTTP {status}")
            barrier.wait(_PHASE_TIMEOUT)

    pool = [threading.Thread(target=caller, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    manager.close()
    queue.put((calls, errors, statuses))


def run_async_storm(
    make_manager: Callable[[], AsyncTokenManager],
    *,
    clock: SharedClock,
    lifetime: float,
    processes: int = 4,
    loops: int = 1,
    tasks: int = 64,
    expiries: int = 3,
    calls_per_phase: int = 3,
    key: str = "storm",
    path: str = "profile",
    before_fork: Callable[[], None] | None = None,
) -> StormResult:
    """Run ``processes`` times ``loops`` event loops (one thread each) of ``tasks`` tasks
    through ``expiries + 1`` phases, every task calling through one
    :class:`~watcher_auth.AsyncTokenManager` per process.

    Args:
        make_manager: builds the manager in each worker (after the fork); it must use
            ``clock`` and, with more than one process, a store shared across processes.
            Its store is closed at the end when there is one loop (a store that belongs
            to one loop cannot serve several: give those a thread-safe store).
        clock, lifetime, processes, expiries, calls_per_phase, key, path, before_fork: as
            for :func:`run_storm`.
        loops: event loops per process, each in its own thread, all sharing the manager.
        tasks: tasks per event loop.
    """
    ctx = multiprocessing.get_context("fork")
    barrier: Any = ctx.Barrier(processes + 1) if processes > 1 else threading.Barrier(2)
    queue: Any = ctx.Queue()
    args = (make_manager, barrier, queue, loops, tasks, expiries, calls_per_phase, key, path)
    workers: list[Any]
    if processes > 1:
        if before_fork is not None:
            before_fork()
        workers = [
            ctx.Process(target=_async_worker, args=args, daemon=True) for _ in range(processes)
        ]
    else:
        workers = [threading.Thread(target=_async_worker, args=args, daemon=True)]
    for worker in workers:
        worker.start()
    errors: list[str] = []
    try:
        for phase in range(expiries + 1):
            if phase:
                clock.advance(lifetime)
            barrier.wait(_PHASE_TIMEOUT)  # start of the phase
            barrier.wait(_PHASE_TIMEOUT)  # every task done with it
    except threading.BrokenBarrierError:
        errors.append("a worker did not reach the end of a phase in time")
    result = StormResult(errors=errors)
    for _ in workers:
        calls, worker_errors, statuses, waited = queue.get(timeout=_PHASE_TIMEOUT)
        result.calls += calls
        result.errors.extend(worker_errors)
        result.waited.extend(waited)
        for status, count in statuses.items():
            result.statuses[status] = result.statuses.get(status, 0) + count
    for worker in workers:
        worker.join(_PHASE_TIMEOUT)
    return result


def _async_worker(
    make_manager: Callable[[], AsyncTokenManager],
    barrier: Any,
    queue: Any,
    loops: int,
    tasks: int,
    expiries: int,
    calls_per_phase: int,
    key: str,
    path: str,
) -> None:
    errors: list[str] = []
    statuses: dict[int, int] = {}
    waited: list[float] = []
    lock = threading.Lock()
    calls = 0
    try:
        manager = make_manager()
    except Exception:
        queue.put((0, [traceback.format_exc()], {}, []))
        barrier.abort()
        return
    # This process's loops meet the process's coordinator (this thread) at each phase.
    local = threading.Barrier(loops + 1)

    async def call(session: Any, phase: int) -> None:
        nonlocal calls
        for number in range(calls_per_phase):
            started = time.monotonic()
            try:
                status = (await session.get(path)).status_code
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                calls += 1
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200:
                    errors.append(f"HTTP {status}")
                if phase and number == 0:
                    waited.append(time.monotonic() - started)

    async def loop_main() -> None:
        session = manager.session(key)
        try:
            for phase in range(expiries + 1):
                # The barriers block: waited for in a thread, so the loop keeps running.
                await asyncio.to_thread(local.wait, _PHASE_TIMEOUT)
                await asyncio.gather(*(call(session, phase) for _ in range(tasks)))
                await asyncio.to_thread(local.wait, _PHASE_TIMEOUT)
        finally:
            await session.aclose()
            await manager.aclose()
            if loops == 1:
                await manager.store.aclose()

    def run_loop() -> None:
        try:
            asyncio.run(loop_main())
        except Exception:
            with lock:
                errors.append(traceback.format_exc())
            local.abort()

    threads = [threading.Thread(target=run_loop, daemon=True) for _ in range(loops)]
    for thread in threads:
        thread.start()
    try:
        for _phase in range(expiries + 1):
            barrier.wait(_PHASE_TIMEOUT)
            local.wait(_PHASE_TIMEOUT)  # let the loops start the phase
            local.wait(_PHASE_TIMEOUT)  # every loop done with it
            barrier.wait(_PHASE_TIMEOUT)
    except threading.BrokenBarrierError:
        errors.append("an event loop did not reach the end of a phase in time")
        barrier.abort()
        local.abort()
    for thread in threads:
        thread.join(_PHASE_TIMEOUT)
    queue.put((calls, errors, statuses, waited))
