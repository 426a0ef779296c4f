"""Refresh storms and chaos runs: many processes and threads (or tasks) calling through
shared keys.

:func:`run_storm` and :func:`run_async_storm`: the parent moves a
:class:`~watcher_auth.testing.clock.SharedClock` past the access token's lifetime between
phases, so every phase after the first finds the token expired in every worker at once; a
correct manager and store make exactly one refresh per phase. :func:`run_storm` drives a
:class:`~watcher_auth.TokenManager` from threads, :func:`run_async_storm` an
:class:`~watcher_auth.AsyncTokenManager` from tasks.

:func:`run_chaos`: workers call on real time for many users while the parent kills them
(SIGKILL, then forks a new one) and applies faults (:class:`Fault`: a :class:`RedisServer`
restart, terminated database connections, :func:`watcher_faults`); the result says what
the callers saw, and which errors fell outside every fault's window.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from watcher_auth._events import EventType, WatcherEvent
from watcher_auth._exceptions import NotConnected, ReauthenticationRequired
from watcher_auth._manager import TokenManager
from watcher_auth.testing._emulator_server import WatcherEmulator
from watcher_auth.testing.clock import SharedClock

if TYPE_CHECKING:
    from watcher_auth._async_manager import AsyncTokenManager

__all__ = [
    "RETRYABLE",
    "ChaosResult",
    "Fault",
    "RedisServer",
    "StormResult",
    "run_async_storm",
    "run_chaos",
    "run_storm",
    "watcher_faults",
]

_PHASE_TIMEOUT = 120.0
# Seconds a key may have no record after its person was asked to connect again.
_RECONNECT_WINDOW = 10.0


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


# --- chaos: workers killed, dependencies restarted, Watcher failing -----------------------


class RedisServer:
    """A ``redis-server`` of the caller's own that chaos runs stop and restart.

    It keeps every write in an append-only file synced before each answer (``--save ''``
    turns off snapshots only), so a restart loses no record. Never point a chaos run at a
    Redis that others use.

    Args:
        port: the port to listen on (127.0.0.1).
        directory: where the append-only file lives.
        binary: the ``redis-server`` executable.
    """

    def __init__(self, port: int, directory: str, binary: str = "redis-server") -> None:
        self.port = port
        self.directory = directory
        self.binary = binary
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start the server and wait until it answers ``PING``; returns ``self``."""
        self._process = subprocess.Popen(  # noqa: S603 - our own arguments, no shell
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
                *("--dir", self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn,
            ):
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Stop the server (SIGTERM; SIGKILL when it lingers)."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down ``down_for`` seconds, start again."""
        self.stop()
        time.sleep(down_for)
        self.start()


@dataclass
class Fault:
    """Something the parent does to the run at ``at`` seconds after the start.

    ``action()`` returns when the fault is over (a restart done, a burst queued); calls may
    fail with the retryable typed errors from ``at`` until ``settle`` seconds after that.
    """

    at: float
    name: str
    action: Callable[[], object]
    settle: float = 6.0


def watcher_faults(emulator: WatcherEmulator, offset: float = 0.0) -> list[Fault]:
    """Watcher misbehaving for 20 s from ``offset``: a burst of 5xx answers (refreshes,
    logins, calls), 2 s of answers 0.4 s slow, a refresh whose answer is lost after Watcher
    rotated the token, and two refresh answers held back for ``hang_seconds``."""

    def slow_for_a_while() -> None:
        emulator.configure(latency=0.4)
        time.sleep(2.0)
        emulator.configure(latency=0.0)

    def burst() -> None:
        emulator.fail_next("refresh", 3, "503")
        emulator.fail_next("login", 2, "502_html")
        emulator.fail_next("call", 20, "500")

    return [
        Fault(offset + 4.0, "Watcher 5xx burst", burst, settle=4.0),
        Fault(offset + 7.0, "slow answers", slow_for_a_while, settle=4.0),
        Fault(
            offset + 14.0,
            "refresh answer lost",
            lambda: emulator.fail_next("refresh", 1, "process_then_drop"),
        ),
        Fault(
            offset + 17.0,
            "refresh answers held back",
            lambda: emulator.fail_next("refresh", 2, "hang"),
        ),
    ]


#: The typed errors a caller may get while a dependency is down: all of them mean "try again".
RETRYABLE = frozenset(
    {"StoreError", "StoreLockTimeout", "WatcherUnavailable", "WatcherConnectionError"}
)


@dataclass
class ChaosResult:
    """What a chaos run saw.

    Attributes:
        calls: calls answered by Watcher.
        statuses: answers by HTTP status.
        cross_user: answers that were for another Watcher account than the caller's key.
        errors: exceptions callers got, by type (``ReauthenticationRequired`` by reason).
        stray_errors: errors outside every fault's window, or of a type that never is
            retryable, as text.
        kills: workers killed with SIGKILL (and started again).
        kills_mid_refresh: kills that hit a worker while it had a refresh in flight.
        saved_refreshes: refreshes whose answer a worker stored (REFRESHED events).
        reconnects: password logins callers made after being asked to connect again.
        faults: the faults applied, by name, in order.
    """

    calls: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    cross_user: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    stray_errors: list[str] = field(default_factory=list)
    kills: int = 0
    kills_mid_refresh: int = 0
    saved_refreshes: int = 0
    reconnects: int = 0
    faults: list[str] = field(default_factory=list)


def run_chaos(
    make_manager: Callable[[], TokenManager],
    *,
    users: dict[str, tuple[str, str]],
    duration: float,
    faults: Sequence[Fault] = (),
    processes: int = 4,
    threads: int = 8,
    kill_every: float | None = 4.0,
    path: str = "profile",
    seed: int = 0,
) -> ChaosResult:
    """Run ``processes`` x ``threads`` callers on random keys of ``users`` for ``duration`` s.

    Every key must be logged in before the call. A caller asked to connect again
    (:class:`~watcher_auth.ReauthenticationRequired`) logs its key in with the password from
    ``users``, as the person would. Every ``kill_every`` seconds a random worker gets SIGKILL
    and a new one is forked; ``faults`` run at their times.

    Args:
        make_manager: builds the manager in each worker, after the fork.
        users: user key -> (Watcher username, password).
        duration: seconds the callers run.
        faults: what to break, and when.
        processes: worker processes alive at any time.
        threads: caller threads per worker.
        kill_every: seconds between SIGKILLs; ``None`` kills nobody.
        path: the API path each call GETs; its answer's ``name`` names the account.
        seed: seeds the choice of the workers to kill.
    """
    ctx = multiprocessing.get_context("fork")
    keys = sorted(users)
    # Each worker writes what its callers see to its own journal as it happens, so what a
    # killed worker saw is not lost with it.
    journals = tempfile.mkdtemp(prefix="watcher-auth-chaos-")
    # A flag in shared memory with no lock: a worker killed while it looks at it holds
    # nothing (a multiprocessing.Event's lock would stay taken and stall every other worker).
    stop: Any = ctx.Value("b", 0, lock=False)
    started = time.monotonic()
    windows: list[tuple[float, float, str]] = []
    result = ChaosResult()
    # Per worker, in shared memory so a killed one still tells: a flag per key, set while a
    # refresh of that key is between its request and its save, and the count of saved ones.
    slots: list[Any] = []
    saved: list[Any] = []

    def spawn(slot: int) -> Any:
        in_flight = ctx.Array("i", len(keys), lock=False)
        saved.append(ctx.Value("i", 0, lock=False))
        worker = ctx.Process(
            target=_chaos_worker,
            args=(
                make_manager,
                users,
                keys,
                threads,
                path,
                stop,
                os.path.join(journals, f"worker-{len(saved)}"),
                in_flight,
                saved[-1],
            ),
            daemon=True,
        )
        worker.start()
        while len(slots) <= slot:
            slots.append(None)
        slots[slot] = (worker, in_flight)
        return worker

    for slot in range(processes):
        spawn(slot)
    chooser = random.Random(seed)
    pending = sorted(faults, key=lambda fault: fault.at)
    next_kill = kill_every if kill_every else float("inf")
    while (now := time.monotonic() - started) < duration:
        if pending and pending[0].at <= now:
            fault = pending.pop(0)
            begun = time.monotonic()
            fault.action()
            windows.append((begun, time.monotonic() + fault.settle, fault.name))
            result.faults.append(fault.name)
            continue
        if now >= next_kill:
            slot = chooser.randrange(processes)
            worker, in_flight = slots[slot]
            begun = time.monotonic()
            os.kill(worker.pid, signal.SIGKILL)
            worker.join(10)
            result.kills += 1
            result.kills_mid_refresh += sum(1 for flag in in_flight if flag)
            # The dead worker's store lock stays held until its lease ends.
            windows.append((begun, time.monotonic() + 8.0, "SIGKILL"))
            spawn(slot)
            next_kill += kill_every or float("inf")
            continue
        time.sleep(0.05)
    stop.value = 1
    for worker, _ in slots:
        worker.join(_PHASE_TIMEOUT)
        if worker.exitcode != 0:
            result.stray_errors.append(f"a worker ended with exit code {worker.exitcode}")
    records: list[list[str]] = []
    for name in sorted(os.listdir(journals)):
        with open(os.path.join(journals, name), encoding="utf-8") as journal:
            records.extend(line.rstrip("\n").split("\t") for line in journal)
    shutil.rmtree(journals, ignore_errors=True)
    _merge(result, records, windows)
    result.saved_refreshes = sum(value.value for value in saved)
    return result


def _within(at: float, windows: list[tuple[float, float, str]]) -> bool:
    return any(start <= at <= end for start, end, _ in windows)


def _merge(result: ChaosResult, records: list[list[str]], windows: list[Any]) -> None:
    asked_again: dict[str, list[float]] = {}
    errors: list[tuple[float, str, str]] = []
    for kind, *fields in records:
        if kind == "call":
            result.calls += 1
            result.statuses[int(fields[0])] += 1
            result.cross_user += fields[1] == "cross"
        elif kind == "reconnect":
            result.reconnects += 1
        elif kind == "crash":
            result.stray_errors.append(fields[0])
        elif kind == "error":
            at, name, key = float(fields[0]), fields[1], fields[2]
            errors.append((at, name, key))
            if name.startswith("ReauthenticationRequired"):
                asked_again.setdefault(key, []).append(at)
    for at, name, key in errors:
        result.errors[name] += 1
        if name.startswith("ReauthenticationRequired"):
            continue  # judged by the caller against the emulator's rejected refreshes
        if name == "NotConnected" and any(
            # The rejecting caller notes it just after the record went: others may see the
            # record gone a moment before that note.
            -1.0 <= at - then <= _RECONNECT_WINDOW
            for then in asked_again.get(key, ())
        ):
            continue  # the key's record is gone until its person connects again
        if name == "NotConnected" and _within(at, windows):
            # While a fault lasts, the worker that was told to connect again may have been
            # killed before it could note it: the others still find the record gone.
            continue
        if name not in RETRYABLE or not _within(at, windows):
            result.stray_errors.append(f"{name} for {key!r} at {at:.2f}")


class _Journal:
    """One line per thing seen, written at once with ``O_APPEND`` (whole lines, no buffer)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def note(self, *fields: object) -> None:
        line = "\t".join(str(field).replace("\t", " ").replace("\n", " ") for field in fields)
        os.write(self._fd, (line + "\n").encode())


def _chaos_worker(
    make_manager: Callable[[], TokenManager],
    users: dict[str, tuple[str, str]],
    keys: list[str],
    threads: int,
    path: str,
    stop: Any,
    journal_path: str,
    in_flight: Any,
    saved: Any,
) -> None:
    lock = threading.Lock()
    journal = _Journal(journal_path)
    try:
        manager = make_manager()
    except Exception:
        journal.note("crash", traceback.format_exc())
        return
    current = threading.local()
    index = {key: n for n, key in enumerate(keys)}
    reconnecting = {key: threading.Lock() for key in keys}
    _mark_refreshes(manager, current, index, in_flight, saved, lock)

    def caller(number: int) -> None:
        chooser = random.Random(f"{os.getpid()}-{number}")
        while not stop.value:
            key = chooser.choice(keys)
            current.key = key
            try:
                response = manager.session(key).get(path)
            except NotConnected as exc:
                # The person is asked to connect (again) and does; a key may have no record
                # only just after a rejection, which run_chaos checks.
                name = type(exc).__name__
                if isinstance(exc, ReauthenticationRequired):
                    name = f"{name}:{exc.reason}"
                journal.note("error", time.monotonic(), name, key)
                in_flight[index[key]] = 0
                with reconnecting[key]:
                    _reconnect(manager, key, users[key], journal)
                continue
            except Exception as exc:
                journal.note("error", time.monotonic(), type(exc).__name__, key)
                time.sleep(0.05)
                continue
            login = response.json().get("name") if response.status_code == 200 else None
            crossed = response.status_code == 200 and login != users[key][0]
            journal.note("call", response.status_code, "cross" if crossed else "own")

    pool = [threading.Thread(target=caller, args=(n,), daemon=True) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    try:
        manager.close()
    except Exception:
        journal.note("crash", traceback.format_exc())


def _reconnect(
    manager: TokenManager, key: str, credentials: tuple[str, str], journal: _Journal
) -> None:
    """The person connects again (unless someone just did); while a dependency is down that
    may fail, so retry."""
    for _ in range(50):
        try:
            if manager.is_connected(key):
                return
            manager.login(key, username=credentials[0], password=credentials[1])
        except Exception as exc:
            journal.note("error", time.monotonic(), type(exc).__name__, key)
            time.sleep(0.1)
            continue
        journal.note("reconnect", time.monotonic(), key)
        return


def _mark_refreshes(
    manager: TokenManager,
    current: threading.local,
    index: dict[str, int],
    in_flight: Any,
    saved: Any,
    lock: threading.Lock,
) -> None:
    """Keep the key's flag in ``in_flight`` set from a refresh request that Watcher may have
    answered until its pair is saved (REFRESHED), and count the saved ones in ``saved``, so
    the parent knows whether a SIGKILL lost a rotated answer."""
    adapter = manager.adapter
    send = adapter.send

    def marking_send(request: Any, *args: Any, **kwargs: Any) -> Any:
        key: str | None = getattr(current, "key", None)
        header = str(request.headers.get("Authorization", ""))
        if key is None or not request.url.endswith("/login") or not header.startswith("Bearer"):
            return send(request, *args, **kwargs)
        in_flight[index[key]] = 1
        response = send(request, *args, **kwargs)
        if response.status_code != 200:
            in_flight[index[key]] = 0  # refused or failed: nothing was handed out
        return response

    adapter.send = marking_send  # type: ignore[method-assign]

    def on_event(event: WatcherEvent) -> None:
        if event.type is EventType.REFRESHED:
            with lock:
                saved.value += 1
            if event.key in index:
                in_flight[index[event.key]] = 0

    manager.add_listener(on_event)
