"""watcher-auth benchmarks: prints one table per section and writes benchmarks/RESULTS.md.

    make bench                      # everything (about 5 minutes)
    .venv/bin/python benchmarks/run.py --quick    # shorter storms, fewer shapes

Sections: refresh storms per store (and the uncoordinated baseline), per-call overhead against
a bare ``requests`` call, store round trips per call in the steady state, and scale.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.server
import importlib.metadata
import os
import platform
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import requests

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "integrations"), str(HERE.parent)]


from _naive import NaiveClient  # noqa: E402
from _stores import STORES, StoreUnavailable  # noqa: E402
from _timed_storm import StormRow, managed_callers, percentiles, timed_storm  # noqa: E402

from watcher_auth import MemoryStore, StoreKey, TokenManager, TokenPair  # noqa: E402
from watcher_auth.testing.emulator import WatcherEmulator  # noqa: E402

LIFETIME = 2.0
USER, PASSWORD = "alice", "secret"


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str]

    def markdown(self) -> str:
        lines = [
            f"## {self.title}",
            "",
            "| " + " | ".join(self.header) + " |",
            "|" + "---|" * len(self.header),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


# --- storms ---------------------------------------------------------------------------------


def storm_section(shapes: list[tuple[int, int]], duration: float) -> Section:
    rows: list[list[str]] = []
    notes = [
        f"Emulator: access lifetime {LIFETIME:g} s, refresh-token rotation on, {duration:g} s per "
        "row. Goal: 1 login, refreshes = expiries (±1), 0 rejected, 0 errors, 401s near 0.",
    ]
    for shape in shapes:
        rows.append(baseline_row(shape, duration).cells())
    for name, spec in STORES.items():
        for processes, threads in shapes:
            if processes > 1 and not spec.shared:
                continue
            try:
                make_manager_for, before_fork, note = spec.prepare()
            except StoreUnavailable as exc:
                notes.append(f"{name}: skipped ({exc})")
                break
            rows.append(
                store_row(
                    name, make_manager_for, before_fork, note, (processes, threads), duration
                ).cells()
            )
    notes.append(
        "memory and Django-on-SQLite rows run one process only: neither store is "
        "shared (memory) or locked (SQLite) across processes."
    )
    return Section(
        "Refresh storm",
        [
            "store",
            "PxT",
            "logins",
            "refreshes",
            "rejected",
            "401s",
            "caller errors",
            "calls/s",
            "p50 ms",
            "p99 ms",
            "expiries",
        ],
        rows,
        notes,
    )


def _cells(row: StormRow) -> list[str]:
    return [
        row.store,
        row.shape,
        str(row.logins),
        str(row.refreshes),
        str(row.rejected),
        str(row.unauthorized),
        str(row.errors),
        f"{row.calls_per_s:.0f}",
        f"{row.p50_ms:.1f}",
        f"{row.p99_ms:.1f}",
        str(row.expiries),
    ]


StormRow.cells = _cells  # type: ignore[attr-defined]


def _new_emulator() -> WatcherEmulator:
    emulator = WatcherEmulator(access_lifetime=LIFETIME, rotate_refresh_tokens=True)
    emulator.add_user(USER, PASSWORD)
    return emulator.start()


def _row(
    name: str,
    shape: tuple[int, int],
    emulator: WatcherEmulator,
    latencies: list[float],
    errors: int,
    duration: float,
    since: float,
    note: str = "",
) -> StormRow:
    # Expiries count from the first login to the end of the storm.
    stats = emulator.stats
    p50, p99 = percentiles(latencies)
    expiries = int((time.time() - since) // LIFETIME)
    return StormRow(
        name,
        f"{shape[0]}x{shape[1]}",
        stats.password_logins,
        stats.refreshes,
        stats.rejected_refreshes,
        stats.unauthorized,
        errors,
        len(latencies) / duration,
        p50,
        p99,
        expiries,
        note,
    )


def baseline_row(shape: tuple[int, int], duration: float) -> StormRow:
    emulator = _new_emulator()
    try:

        def factory() -> Callable[[], Callable[[], bool]]:
            return NaiveClient(emulator.url, USER, PASSWORD).caller

        since = time.time()
        latencies, errors, failure = timed_storm(
            factory, processes=shape[0], threads=shape[1], duration=duration
        )
        return _row(
            "baseline (docs only)", shape, emulator, latencies, errors, duration, since, failure
        )
    finally:
        emulator.stop()


def store_row(
    name: str,
    make_manager_for: Callable[[str, Callable[[], float]], TokenManager],
    before_fork: Callable[[], None] | None,
    note: str,
    shape: tuple[int, int],
    duration: float,
) -> StormRow:
    emulator = _new_emulator()
    key = f"bench-{name}-{shape[0]}x{shape[1]}-{time.time_ns()}"
    try:
        since = time.time()
        make_manager_for(emulator.url, time.time).login(key, username=USER, password=PASSWORD)

        def factory() -> Callable[[], Callable[[], bool]]:
            return managed_callers(lambda: make_manager_for(emulator.url, time.time), key)

        latencies, errors, failure = timed_storm(
            factory,
            processes=shape[0],
            threads=shape[1],
            duration=duration,
            before_fork=before_fork,
        )
        return _row(name, shape, emulator, latencies, errors, duration, since, failure or note)
    finally:
        emulator.stop()


# --- per-call overhead ------------------------------------------------------------------------


class _Trivial(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def trivial_server() -> tuple[str, http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trivial)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def _fresh_token() -> tuple[str, TokenPair]:
    now = time.time()
    token = jwt.encode({"exp": now + 3600, "iat": now}, "benchmark-signing-key-32-bytes!!", "HS256")
    return token, TokenPair(token, "r", now + 3600, now, username=USER)


def _interleaved(
    ours: Callable[[], Any], plain: Callable[[], Any], rounds: int, per_round: int
) -> tuple[float, float, float]:
    ratios, a_all, b_all = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per_round):
            ours()
        a = (time.perf_counter() - t0) / per_round
        t0 = time.perf_counter()
        for _ in range(per_round):
            plain()
        b = (time.perf_counter() - t0) / per_round
        ratios.append(a / b)
        a_all.append(a)
        b_all.append(b)
    return statistics.median(a_all), statistics.median(b_all), statistics.median(ratios)


def overhead_section(rounds: int) -> Section:
    url, server = trivial_server()
    rows = []
    try:
        token, pair = _fresh_token()
        manager = TokenManager(url)
        manager.store.save(manager.store_key("k"), pair)
        session = manager.session("k")
        plain = requests.Session()
        plain.headers["Authorization"] = f"Bearer {token}"
        target = manager.api_root + "streams"
        ours, bare, ratio = _interleaved(
            lambda: session.get("streams"), lambda: plain.get(target), rounds, 200
        )
        rows.append(
            [
                "core: manager.session(key).get",
                f"{ours * 1e6:.0f}",
                f"{bare * 1e6:.0f}",
                f"{ratio:.3f}",
            ]
        )
        for label, measure in EXTRA_OVERHEAD.items():
            try:
                rows.append([label, *measure(url, token, pair, rounds)])
            except StoreUnavailable as exc:
                rows.append([label, "skipped", str(exc), ""])
    finally:
        server.shutdown()
        server.server_close()
    return Section(
        "Per-call overhead",
        ["path", "ours µs", "bare µs", "median ratio (goal ≤ 1.05)"],
        rows,
        ["Interleaved rounds of 200 GETs against a trivial loopback server."],
    )


EXTRA_OVERHEAD: dict[str, Callable[[str, str, TokenPair, int], list[str]]] = {}

# --- steady-state store round trips -----------------------------------------------------------

STEADY: dict[str, Callable[[str, TokenPair], tuple[str, str]]] = {}


def steady_section() -> Section:
    url, server = trivial_server()
    rows = []
    try:
        _, pair = _fresh_token()
        for label, measure in STEADY.items():
            try:
                first, steady = measure(url, pair)
                rows.append([label, first, steady])
            except StoreUnavailable as exc:
                rows.append([label, "skipped", str(exc)])
    finally:
        server.shutdown()
        server.server_close()
    return Section(
        "Store round trips per call",
        ["store", "first call", "per call after (goal 0)"],
        rows,
        [
            "Counted at the server side of each store (SQL statements, Redis "
            "commands) over 100 calls with a fresh access token."
        ],
    )


# --- scale ----------------------------------------------------------------------------------


def scale_section(sizes: tuple[int, ...]) -> Section:
    rows = []
    _, pair = _fresh_token()
    for n in sizes:
        gc.collect()
        tracemalloc.start()
        store = MemoryStore(maxsize=n)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            # Distinct strings per key, as real tokens are.
            store.save(
                StoreKey("https://w.test", str(i)),
                pair.replace(
                    access_token=pair.access_token + str(i),
                    refresh_token=f"3637e790-5530-11ed-bdc3-{i:012d}",
                ),
            )
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        keys = [StoreKey("https://w.test", str(i)) for i in range(0, n, max(1, n // 1000))]
        t0 = time.perf_counter()
        for _ in range(20):
            for k in keys:
                store.load(k)
        lookup = (time.perf_counter() - t0) / (20 * len(keys))
        rows.append([f"MemoryStore, {n:,} keys", f"{used / n:.0f} B/key", f"{lookup * 1e6:.2f} µs"])
    for label, measure in EXTRA_SCALE.items():
        try:
            rows.append([label, *measure()])
        except StoreUnavailable as exc:
            rows.append([label, "skipped", str(exc)])
    return Section(
        "Scale",
        ["case", "memory", "lookup"],
        rows,
        [
            "Memory measured with tracemalloc, including the token strings (a real JWT "
            "of this size is about 150 bytes; Watcher's are a few hundred)."
        ],
    )


EXTRA_SCALE: dict[str, Callable[[], list[str]]] = {}


# --- main -----------------------------------------------------------------------------------


def machine() -> str:
    versions = []
    for dist in (
        "watcher-auth",
        "requests",
        "PyJWT",
        "cachetools",
        "Django",
        "Flask",
        "redis",
        "SQLAlchemy",
        "psycopg",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"- CPU: {cpu}, {os.cpu_count()} cores\n- Python {platform.python_version()} on "
        f"{platform.system()} {platform.release()}\n- " + ", ".join(versions) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s storms, 1x32 and 4x8 only")
    parser.add_argument("--only", choices=["storm", "overhead", "steady", "scale"])
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args(argv)
    shapes = [(1, 32), (4, 8)] if args.quick else [(1, 32), (4, 8), (8, 8)]
    duration = 3.0 if args.quick else 10.0
    sections = []
    runners: dict[str, Callable[[], Section]] = {
        "storm": lambda: storm_section(shapes, duration),
        "overhead": lambda: overhead_section(15 if args.quick else 40),
        "steady": steady_section,
        "scale": lambda: scale_section((10_000, 100_000)),
    }
    for name, run in runners.items():
        if args.only and name != args.only:
            continue
        section = run()
        print(section.markdown(), flush=True)
        sections.append(section)
    text = (
        "# watcher-auth benchmark results\n\n"
        + machine()
        + "\n"
        + "\n".join(s.markdown() for s in sections)
    )
    Path(args.output).write_text(text)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
