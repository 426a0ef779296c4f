"""watcher-auth benchmarks: prints one table per section and writes benchmarks/RESULTS.md.

    make bench                                    # everything, 10 to 25 minutes
    .venv/bin/python benchmarks/run.py --quick    # under 2 minutes, to a temporary file

Sections: refresh storms (watcher-auth on each store, and the peers: a client written from
the docs, Authlib and requests-oauthlib), per-call overhead against a fair floor (a bare
``requests.Session`` configured like ours) with the peers interleaved in the same run, store
round trips per web request in the steady state, and scale. PostgreSQL and Redis are the
local servers (``WATCHER_TEST_POSTGRES_URL`` and ``WATCHER_TEST_REDIS_URL`` move them); rows
whose service is missing say so and are skipped. The peers come with the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.metadata
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import requests

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "integrations"), str(HERE.parent)]

import _async  # noqa: E402
import _coherence  # noqa: E402
import _django  # noqa: E402
import _flask  # noqa: E402
import _stores  # noqa: E402
from _counting import (  # noqa: E402
    Counter,
    django_statements,
    redis_commands,
    round_trips,
    sql_statements,
)
from _naive import NaiveClient  # noqa: E402
from _peers import (  # noqa: E402
    TIMEOUT,
    OAuthPeer,
    authlib_session,
    fair_floor,
    oauth_token,
    oauthlib_session,
    password_login,
    typical_client,
)
from _stores import STORES, StoreUnavailable  # noqa: E402
from _timed_storm import (  # noqa: E402
    StormOutcome,
    StormRow,
    managed_callers,
    percentiles,
    timed_storm,
)

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

#: The peers' refresh lead, matched to the manager's default margin (10% of the lifetime).
PEER_LEEWAY = 0.1 * LIFETIME

PEERS: dict[str, str] = {
    "naive (docs only)": "naive",
    "Authlib `OAuth2Session`": "authlib",
    "requests-oauthlib `OAuth2Session`": "requests-oauthlib",
}

STORM_HEADER = [
    "client and store",
    "PxT",
    "logins",
    "refreshes",
    "minimum",
    "expiries",
    "rejected",
    "401s",
    "caller errors",
    "calls/s",
    "p50 ms",
    "p99 ms",
    "calls at a refresh",
    "their p99 ms",
    "goal: 1 login, refreshes = minimum (±1), 0 rejected",
]


def storm_section(
    shapes: list[tuple[int, int]],
    duration: float,
    only: str | None = None,
    stores: list[str] | None = None,
) -> Section:
    rows: list[list[str]] = []
    notes = [
        f"Emulator: access lifetime {LIFETIME:g} s, refresh-token rotation on, {duration:g} s "
        "of calls per row, every call a GET of `profile`. watcher-auth rows: one manager per "
        "process, `manager.session(key)` per thread. Peer rows: one client per process "
        "shared by its threads, started from one password login made before the workers "
        "(as ours are), keeping its tokens in the process.",
        "`expiries`: how often a token's 2 s lifetime ran out between the login and the end "
        "of the row. `minimum`: the fewest refreshes with which no call carries an expired "
        "token. They differ because Watcher's `exp` claim is whole seconds: a token obtained "
        "at t expires at ⌊t + 2⌋, so a refresh made any time before the current token's `exp` "
        "E yields a token expiring at E + 1, not E + 2. Refreshing ahead therefore costs one "
        "refresh per second with a 2 s lifetime (one per 299 s with Watcher's usual 300 s), "
        "and `minimum` is the physical limit for a client that sees no 401s.",
        "Peers: `benchmarks/_naive.py` (log in, refresh on 401, log in again when the refresh "
        "is rejected); Authlib's `OAuth2Session` (auto-refresh "
        f"{PEER_LEEWAY:g} s before expiry, our default margin) and requests-oauthlib's "
        "(`auto_refresh_url`, refreshes once expired), both adapted to Watcher's login by "
        "compliance hooks and given the same retry on 401 and login after a rejected "
        "refresh (`benchmarks/_peers.py`). None of them coordinates threads or processes.",
        "`calls at a refresh`: calls in flight when a login or refresh request (of any "
        "process) answered, which includes every call held back by it; `their p99 ms` is the "
        "99th percentile of their latency, what a user feels at an expiry. Calls that were "
        "only on the wire then count too, for every client alike, and lower the figure.",
        "calls/s and latencies are bounded by the emulator (one Python process answering "
        "every call) and the machine's cores, not by the client.",
    ]
    for shape in shapes:
        for name, kind in PEERS.items():
            if only is None or only.lower() in name.lower():
                rows.append(_cells(peer_row(name, kind, shape, duration)))
    for name, spec in STORES.items():
        if only is not None and only.lower() not in name.lower():
            continue
        if stores is not None and name not in stores:
            continue
        for processes, threads in shapes:
            if processes > 1 and not spec.shared:
                continue
            try:
                prepared = spec.prepare()
            except StoreUnavailable as exc:
                notes.append(f"{name}: skipped ({exc})")
                break
            rows.append(_cells(store_row(name, prepared, (processes, threads), duration)))
    if (only is None or only.lower() in "redis store") and stores is None:
        # The other side of the trade-off: refreshing at expiry instead of before it.
        try:
            shape = shapes[-1]
            row = store_row(
                "Redis store, `refresh_margin=0`",
                STORES["Redis store"].prepare(),
                shape,
                duration,
                refresh_margin=0,
            )
            rows.append(_cells(row))
            notes.append(
                "`refresh_margin=0` refreshes only once the token has expired by our clock: "
                "refreshes fall to the expiries, but every call in flight at an expiry gets a "
                "401 (and is retried once after the refresh). The default margin trades those "
                "401s for refreshes, as above."
            )
        except StoreUnavailable as exc:
            notes.append(f"Redis store, refresh_margin=0: skipped ({exc})")
    notes.append(
        "memory and Django-on-SQLite rows run one process only: a memory store is not shared "
        "between processes, and SQLite has no row lock to hold a refresh across them."
    )
    return Section("Refresh storm", STORM_HEADER, rows, notes)


def storm_goal(row: StormRow) -> str:
    missed = []
    if row.logins != 1:
        missed.append(f"{row.logins} logins")
    if abs(row.refreshes - row.minimum) > 1:
        missed.append(f"{row.refreshes} refreshes for {row.minimum}")
    if row.rejected:
        missed.append(f"{row.rejected} rejected")
    if row.errors:
        missed.append(f"{row.errors} caller errors")
    return "held" if not missed else "not held: " + ", ".join(missed)


def _cells(row: StormRow) -> list[str]:
    store = f"{row.store} ({row.note})" if row.note else row.store
    return [
        store,
        row.shape,
        str(row.logins),
        str(row.refreshes),
        str(row.minimum),
        str(row.expiries),
        str(row.rejected),
        str(row.unauthorized),
        str(row.errors),
        f"{row.calls_per_s:.0f}",
        f"{row.p50_ms:.1f}",
        f"{row.p99_ms:.1f}",
        str(row.at_refresh),
        f"{row.p99_at_refresh_ms:.1f}",
        storm_goal(row),
    ]


def _new_emulator() -> WatcherEmulator:
    emulator = WatcherEmulator(access_lifetime=LIFETIME, rotate_refresh_tokens=True)
    emulator.add_user(USER, PASSWORD)
    return emulator.start()


def _row(
    name: str,
    shape: tuple[int, int],
    emulator: WatcherEmulator,
    outcome: StormOutcome,
    duration: float,
    since: float,
    first_expiry: float,
    note: str = "",
) -> StormRow:
    stats = emulator.stats
    p50, p99 = percentiles(outcome.latencies)
    _, p99_at_refresh = percentiles(outcome.at_refresh)
    return StormRow(
        name,
        f"{shape[0]}x{shape[1]}",
        stats.password_logins,
        stats.refreshes,
        stats.rejected_refreshes,
        stats.unauthorized,
        outcome.errors,
        len(outcome.latencies) / duration,
        p50,
        p99,
        int((outcome.ended - since) // LIFETIME),
        minimum_refreshes(first_expiry, outcome.started, outcome.ended),
        len(outcome.at_refresh),
        p99_at_refresh,
        outcome.failure or note,
    )


def minimum_refreshes(first_expiry: float, started: float, ended: float) -> int:
    """The fewest refreshes that keep every call between ``started`` and ``ended`` on a
    token that has not expired, given that Watcher gives ``exp`` in whole seconds."""
    expiry, count = first_expiry, 0
    if expiry <= started:  # the login's token expired before the first call
        expiry, count = math.floor(started + LIFETIME), 1
    while expiry < ended:
        # The latest refresh that beats the expiry E happens just before E: ⌊E - ε + L⌋.
        expiry = math.floor(expiry - 1e-6 + LIFETIME)
        count += 1
    return count


def peer_row(name: str, kind: str, shape: tuple[int, int], duration: float) -> StormRow:
    """A client without watcher-auth, one per process, from one login made beforehand."""
    emulator = _new_emulator()
    try:
        since = time.time()
        answer = password_login(emulator.url, USER, PASSWORD)

        def factory() -> Callable[[], Callable[[], bool]]:
            if kind == "naive":
                return NaiveClient(emulator.url, USER, PASSWORD, answer).caller
            return OAuthPeer(kind, emulator.url, answer, (USER, PASSWORD), PEER_LEEWAY).caller

        outcome = timed_storm(factory, processes=shape[0], threads=shape[1], duration=duration)
        expiry = oauth_token(answer)["expires_at"]
        return _row(name, shape, emulator, outcome, duration, since, expiry)
    finally:
        emulator.stop()


def store_row(
    name: str,
    prepared: _stores.Prepared,
    shape: tuple[int, int],
    duration: float,
    **options: Any,
) -> StormRow:
    make_manager_for, before_fork, note = prepared
    emulator = _new_emulator()
    key = f"bench-{shape[0]}x{shape[1]}-{time.time_ns()}"
    try:
        since = time.time()
        first = make_manager_for(emulator.url, time.time, **options)
        pair = first.login(key, username=USER, password=PASSWORD)
        first.close()

        def factory() -> Callable[[], Callable[[], bool]]:
            return managed_callers(
                lambda: make_manager_for(emulator.url, time.time, **options), key
            )

        outcome = timed_storm(
            factory,
            processes=shape[0],
            threads=shape[1],
            duration=duration,
            before_fork=before_fork,
        )
        first.logout(key)
        first.store.close()
        expiry = pair.expires_at if pair.expires_at is not None else since + LIFETIME
        return _row(
            f"watcher-auth, {name}", shape, emulator, outcome, duration, since, expiry, note
        )
    finally:
        emulator.stop()


# --- per-call overhead ------------------------------------------------------------------------


@contextlib.contextmanager
def trivial_server() -> Iterator[str]:
    """A loopback server answering ``{}`` to every GET, in its own process; yields its URL.

    In a thread of this process its work would share the interpreter lock with the client
    under test, which a portal calling Watcher never does.
    """
    script = Path(__file__).with_name("_trivial.py")
    server = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        yield server.stdout.readline().strip()
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _fresh_token() -> tuple[str, TokenPair]:
    now = time.time()
    token = jwt.encode({"exp": now + 3600, "iat": now}, "benchmark-signing-key-32-bytes!!", "HS256")
    return token, TokenPair(token, "r", now + 3600, now, username=USER)


FLOOR = "floor"
#: Our per-call goal against the fair floor.
CALL_GOAL = 1.02


@dataclass
class Timings:
    """Per row, one entry per block: the median seconds of its calls, CPU seconds per call,
    and the same for the floor's block run next to it."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]
    floor_wall: dict[str, list[float]]
    floor_cpu: dict[str, list[float]]

    def ratios(self, name: str, of: str = "wall") -> list[float]:
        mine = getattr(self, of)[name]
        floor = getattr(self, "floor_" + of)[name]
        return [a / b for a, b in zip(mine, floor, strict=True) if b > 0]


def _block(call: Callable[[], Any], n: int) -> tuple[float, float]:
    """The median wall seconds of ``n`` calls, each timed alone, and CPU seconds per call."""
    clock = time.perf_counter
    each = []
    c0 = time.process_time()
    for _ in range(n):
        t0 = clock()
        call()
        each.append(clock() - t0)
    return statistics.median(each), (time.process_time() - c0) / n


def interleaved(
    calls: dict[str, Any],
    rounds: int,
    per_round: int,
    block: Callable[[Any, int], tuple[float, float]] = _block,
) -> Timings:
    """Time every row against the floor (``calls[FLOOR]``) in adjacent blocks, ``rounds`` times.

    In each round every row runs a block of ``per_round`` calls right next to a block of the
    floor's, the floor going first in one round and second in the next; the rows' order
    rotates from round to round. A row's ratio in a round is over the floor block next to it,
    which ran under the same conditions, so a burst of other work on the machine spoils a
    pair or two rather than one row. Each call is timed alone and a block keeps the median
    of its calls, which a few calls preempted by other processes do not move. ``block``
    times ``n`` calls of one row (the async rows await theirs on an event loop).
    """
    floor = calls[FLOOR]
    names = [name for name in calls if name != FLOOR]
    for call in calls.values():  # warm up connections and caches
        block(call, per_round)
    timings = Timings(*({name: [] for name in calls} for _ in range(4)))
    for turn in range(rounds):
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            if turn % 2:
                mine, base = block(calls[name], per_round), block(floor, per_round)
            else:
                base, mine = block(floor, per_round), block(calls[name], per_round)
            timings.wall[name].append(mine[0])
            timings.cpu[name].append(mine[1])
            timings.floor_wall[name].append(base[0])
            timings.floor_cpu[name].append(base[1])
            timings.wall[FLOOR].append(base[0])
    return timings


def _spread(values: list[float]) -> str:
    deciles = statistics.quantiles(values, n=10)
    return f"{deciles[0]:.3f} to {deciles[-1]:.3f}"


def overhead_cells(timings: Timings, name: str) -> list[str]:
    """µs per call, median ratio to the floor, its p10 to p90 spread, difference, CPU ratio."""
    wall = timings.wall[name]
    if name == FLOOR:
        return [f"{statistics.median(wall) * 1e6:.0f}", "1 (the floor)", "", "", ""]
    ratios = timings.ratios(name)
    diffs = [a - b for a, b in zip(wall, timings.floor_wall[name], strict=True)]
    return [
        f"{statistics.median(wall) * 1e6:.0f}",
        f"{statistics.median(ratios):.3f}",
        _spread(ratios),
        f"{statistics.median(diffs) * 1e6:+.1f}",
        f"{statistics.median(timings.ratios(name, 'cpu')):.3f}",
    ]


OVERHEAD_HEADER = [
    "path",
    "µs per call",
    "ratio to the fair floor (median)",
    "spread of the ratio (p10 to p90)",
    "difference µs",
    "CPU ratio",
    "goal",
]

OURS_MEMORY = "watcher-auth: `manager.session(key).get`, memory store"
OURS_REDIS = "watcher-auth: `manager.session(key).get`, Redis store"
AUTHLIB = "Authlib `OAuth2Session`, auto-refresh armed"
OAUTHLIB = "requests-oauthlib `OAuth2Session`, `auto_refresh_url` set"
NAIVE = "naive client (docs only, `benchmarks/_naive.py`)"
TYPICAL = "a typical hand-written client: `requests.Session()` as it comes, header set once"
FLOOR_LABEL = (
    "**fair floor**: `requests.Session`, `trust_env = False`, the manager's pool, "
    "fixed `Authorization` header"
)


def core_overhead(url: str, token: str, pair: TokenPair, rounds: int) -> list[list[str]]:
    """Every client against the same loopback server, interleaved in one run."""
    target = url + "/watcher/client-api/v3/streams"
    floor = fair_floor(token)
    answer = {"access_token": token, "refresh_token": pair.refresh_token}
    oauth = oauth_token(answer)
    # Armed, with the manager's margin for an hour-long token, far from expiry.
    authlib = authlib_session(url, dict(oauth), leeway=60)
    oauthlib = oauthlib_session(url, dict(oauth))
    naive = NaiveClient(url, USER, PASSWORD, answer).caller("streams")
    typical = typical_client(token)
    managers = []
    calls: dict[str, Callable[[], Any]] = {FLOOR: lambda: floor.get(target, timeout=TIMEOUT)}
    skipped = []
    for label, store in ((OURS_MEMORY, MemoryStore), (OURS_REDIS, _stores.redis_store)):
        try:
            manager = TokenManager(url, store=store())
        except StoreUnavailable as exc:
            skipped.append([label, "skipped", str(exc), "", "", "", ""])
            continue
        manager.store.save(manager.store_key("k"), pair)
        managers.append(manager)
        calls[label] = functools.partial(manager.session("k").get, "streams")
    calls[AUTHLIB] = lambda: authlib.get(target, timeout=TIMEOUT)
    calls[OAUTHLIB] = lambda: oauthlib.get(target, timeout=TIMEOUT)
    calls[NAIVE] = naive
    calls[TYPICAL] = lambda: typical.get(target)
    try:
        timings = interleaved(calls, rounds, 20)
    finally:
        for manager in managers:
            manager.store.delete(manager.store_key("k"))
            manager.close()
            manager.store.close()
    authlib_ratio = statistics.median(timings.ratios(AUTHLIB))
    rows = []
    for name in calls:
        if name == FLOOR:
            goal = "the floor"
        elif name in (OURS_MEMORY, OURS_REDIS):
            ratio = statistics.median(timings.ratios(name))
            held = ratio <= CALL_GOAL and ratio <= authlib_ratio
            goal = f"≤ {CALL_GOAL} and ≤ Authlib ({authlib_ratio:.3f}): " + (
                "held" if held else "not held"
            )
        else:
            goal = "reference"
        rows.append([FLOOR_LABEL if name == FLOOR else name, *overhead_cells(timings, name), goal])
    return rows + skipped


def web_overhead(
    framework: str, portal: Any, paths: dict[str, str], rounds: int
) -> list[list[str]]:
    """Views of one app behind the same middleware, interleaved with its floor view."""
    calls = {name: functools.partial(portal.get, path) for name, path in paths.items()}
    timings = interleaved(calls, rounds, 10)
    rows = []
    for name in calls:
        if name == FLOOR:
            label = f"{framework}: **fair floor**, the same view on a plain session"
            goal = "the floor"
        elif "no watcher-auth" in name:
            label, goal = f"{framework}: {name}", "reference"
        else:
            ratio = statistics.median(timings.ratios(name))
            label = f"{framework}: {name}"
            goal = f"≤ {CALL_GOAL}: " + ("held" if ratio <= CALL_GOAL else "not held")
        rows.append([label, *overhead_cells(timings, name), goal])
    return rows


def django_overhead(url: str, token: str, pair: TokenPair, rounds: int) -> list[list[str]]:
    paths = {
        FLOOR: "/plain/",
        "`request.watcher.get` in a view, model store (SQLite)": "/ours/",
        "the same behind `@watcher_required`": "/required/",
    }
    with _django.portal(url, token, pair, STORE="db") as portal:
        return web_overhead("Django", portal, paths, rounds)


def flask_overhead(url: str, token: str, pair: TokenPair, rounds: int) -> list[list[str]]:
    paths = {
        FLOOR: "/plain",
        "`current_watcher.get` in a view, memory store": "/ours",
        "the same behind `@watcher_required`": "/required",
        "no watcher-auth, a `requests.Session` of the view's own per request": "/fresh",
    }
    with _flask.portal(url, token, pair, WATCHER_STORE="memory") as portal:
        return web_overhead("Flask", portal, paths, rounds)


def overhead_section(rounds: int, part_calls: int) -> Section:
    rows = []
    token, pair = _fresh_token()
    with trivial_server() as url:
        rows += core_overhead(url, token, pair, rounds)
        for measure in (django_overhead, flask_overhead):
            try:
                rows += measure(url, token, pair, rounds)
            except StoreUnavailable as exc:
                rows.append([measure.__name__, "skipped", str(exc), "", "", "", ""])
        rows += _parts(url, pair, part_calls)
    return Section(
        "Per-call overhead",
        OVERHEAD_HEADER,
        rows,
        [
            f"{rounds} rounds against one trivial loopback server running in a process of its "
            "own (as Watcher runs on another machine: in a thread of the benchmark process its "
            "work would take turns with the client's on one interpreter lock), all rows of a "
            "group in the same run. In each round every row makes a block of 20 calls (core) or 10 "
            "test-client requests (web) right next to a block of its group's floor, the floor "
            "first in one round and second in the next, the rows' order rotating. Each call "
            "is timed alone and a block counts the median of its calls; a row's ratio in a "
            "round is over the floor block next to it. The table gives medians over the "
            "rounds and, as the spread, the 10th to 90th percentile of the rounds' ratios. "
            "The CPU ratio is the same over the benchmark process's CPU time per call (the "
            "client's), which other processes on the machine disturb less.",
            "The fair floor is configured like a manager: `trust_env = False` (`requests` "
            "otherwise scans the environment for proxies, a CA bundle and netrc on every "
            "call), the CA bundle a manager reads from the environment once (if one is set, "
            "`requests` checks on every call whether its path is a folder), an `HTTPAdapter` "
            "with the same pool sizes, and the manager's 10 s timeout on every call; so are "
            "the peers (`benchmarks/_peers.py`). The typical "
            "hand-written client keeps `requests`' defaults, `trust_env` on, and no timeout.",
            "A watcher-auth session refuses the cookies of Watcher's answers, so while neither "
            "the session nor the call holds a cookie it prepares and sends requests without "
            "`requests`' cookie jars (making and reading empty jars, wrapping each answer to "
            "hand its `Set-Cookie` headers to a jar that would refuse them), and looks for a "
            "redirect only on a redirect; the floor and the peers do that work on every call, "
            "which is why watcher-auth's core rows can come in at or below the floor.",
            "The web layers do not build a session per request: Flask's `current_watcher` "
            "and Django's `request.watcher` send a request's calls on the manager's shared "
            "session for the key (`shared_session`), and lend the request a session of its "
            "own only when the view uses more than its calls, given back after the response "
            "and lent again only if the request left it as it was made (`SessionLoan`).",
            "Authlib's and requests-oauthlib's sessions hold an hour-long token with a refresh "
            "token and the token endpoint set (Watcher's `/login`), so each call checks expiry "
            "as it would in production; no refresh happens during the timed loop.",
            f"Goals: a watcher-auth call costs at most {CALL_GOAL} times the fair floor and no "
            "more than Authlib's ratio; a web request through watcher-auth at most "
            f"{CALL_GOAL} times the same app's floor view.",
            "Web rows compare views of one app behind the same middleware (sessions, "
            "authentication, login required): the floor view calls Watcher on a module-level "
            "session configured as above with the header set once.",
            f"The `part` rows time pieces of the path on their own (best of 5 runs of "
            f"{part_calls:,} calls): what a call adds before it reaches `requests`, and what "
            "a web request adds by borrowing its session.",
        ],
    )


def async_section(rounds: int) -> Section:
    """The asyncio manager's per-call overhead against a bare ``httpx.AsyncClient``."""
    token, pair = _fresh_token()
    with trivial_server() as url:
        rows = _async.async_overhead(url, token, pair, rounds, overhead_cells)
    return Section(
        "Async per-call overhead",
        OVERHEAD_HEADER,
        rows,
        [
            f"{rounds} rounds against one trivial loopback server on one event loop, "
            "interleaved as the sync rows are (blocks of 20 awaited calls next to a block of "
            "the floor's). The floor is an `httpx.AsyncClient` with `trust_env=False`, the "
            "manager's pool limits (100 connections, 32 kept alive), TLS settings and timeout, "
            "and the `Authorization` header set once; ours reuses one `manager.session(key)`. "
            f"Goal: at most {_async.ASYNC_CALL_GOAL} times the floor.",
        ],
    )


def async_storm_section() -> Section:
    """Refresh storms of tasks through each async store."""
    rows, skipped = _async.async_storm_rows()
    return Section(
        "Async refresh storm",
        _async.ASYNC_STORM_HEADER,
        rows,
        [
            "`watcher_auth.testing.storm.run_async_storm`: "
            f"{_async.EXPIRIES} expiries of one key's token (the emulator's clock moved past "
            f"the {_async.LIFETIME:g} s lifetime between phases, refresh-token rotation on), "
            "every task calling twice per phase; 4 processes for a shared store, 1 for "
            "AsyncMemoryStore (it is not shared). `minimum`: one refresh per expiry. "
            "`calls held at a refresh`: each task's first call after an expiry, which waits "
            "for that expiry's refresh; p50 and p99 of their latency.",
            *skipped,
        ],
    )


def coherence_section(trials: int) -> Section:
    """Per shared store: how long after a disconnect another process still uses the token."""
    rows, skipped = _coherence.coherence_rows(trials)
    return Section(
        "Coherence",
        _coherence.COHERENCE_HEADER,
        rows,
        [
            f"{trials} trials per store. A worker process calls `profile` in a loop through "
            "its own manager and `manager.session(key)`, its pair in its local cache; the "
            "parent's manager disconnects the key (`logout`). The old token's last use is "
            "when the worker sent its last call that carried it, counted from the moment "
            "the parent's `logout` returned (0: no call went out after it; Watcher still "
            "accepts the token, so only the library stops it). `first call refused`: when "
            "the worker's first call raised `NotConnected`.",
            "Goal: no use of the old token later than the store's staleness bound, the "
            "longest a copy is trusted without a change notice.",
            *skipped,
        ],
    )


def _alone(call: Callable[[], Any], n: int) -> str:
    """Microseconds per call of ``call``, the best of five runs."""
    # With the garbage collector on, as in a running program: sessions hold reference cycles.
    best = min(timeit.repeat(call, "gc.enable()", number=n, repeat=5)) / n
    return f"{best * 1e6:.1f}"


def _parts(url: str, pair: TokenPair, n: int) -> list[list[str]]:
    manager = TokenManager(url)
    manager.store.save(manager.store_key("k"), pair)
    prepared = requests.Request("GET", manager.api_root + "streams").prepare()
    auth = manager.auth("k")

    def fresh() -> requests.PreparedRequest:
        # copy() shares the hooks dict: each copy gets its own, as a prepared request has,
        # or every run adds its hook to one list that the garbage collector then walks.
        copy = prepared.copy()
        copy.hooks = {"response": []}
        return copy

    bare = _alone(fresh, n)
    with_auth = float(_alone(lambda: auth(fresh()), n)) - float(bare)
    rows = [
        [
            "part: `manager.current_tokens(key)`, fresh pair",
            _alone(lambda: manager.current_tokens("k"), n),
        ],
        ["part: the bearer auth on one request (token, header, 401 hook)", f"{with_auth:.1f}"],
        [
            "part: `manager.session(key)`, building a session",
            _alone(lambda: manager.session("k"), n),
        ],
        ["part: `requests.Session()`, for comparison", _alone(requests.Session, n)],
        [
            "part: `manager.lend(key)` and `loan.end()`, a web request's session",
            _alone(lambda: manager.lend("k").end(), n),
        ],
        [
            "part: `manager.shared_session(key)`, the key's shared session",
            _alone(lambda: manager.shared_session("k"), n),
        ],
    ]
    manager.close()
    return [[label, value, "", "", "", "", ""] for label, value in rows]


# --- steady-state store round trips -----------------------------------------------------------


def _django_steady(path: str, counter: Callable[[], Counter], **watcher_auth: Any) -> Any:
    def measure(url: str, token: str, pair: TokenPair) -> tuple[str, str]:
        count = counter()
        with _django.portal(url, token, pair, **watcher_auth) as portal:
            return round_trips(count, lambda: portal.get(path))

    return measure


def _flask_steady(
    path: str,
    counter: Callable[[Any], Counter],
    config: Callable[[], dict[str, Any]],
    **extra: Any,
) -> Any:
    def measure(url: str, token: str, pair: TokenPair) -> tuple[str, str]:
        from flask_watcher_auth import get_state

        with _flask.portal(url, token, pair, **config(), **extra) as portal:
            count = counter(get_state(portal.app).store)
            return round_trips(count, lambda: portal.get(path))

    return measure


def _on_django(alias: str) -> Callable[[], Counter]:
    def counter() -> Counter:
        _django.ready(alias)
        return lambda: django_statements(alias, _django.TABLE)

    return counter


def _on_redis(_store: Any = None) -> Counter:
    url = _stores.redis_url()
    return lambda: redis_commands(url)


def _on_engine(store: Any) -> Counter:
    return lambda: sql_statements(store.engine)


def _flask_redis() -> dict[str, Any]:
    return {
        "WATCHER_STORE": "redis",
        "WATCHER_REDIS_URL": _stores.redis_url(),
        "WATCHER_STORE_OPTIONS": {"prefix": f"{_stores.PREFIX}_flask:"},
    }


def _flask_postgres() -> dict[str, Any]:
    return {
        "WATCHER_STORE": "sqlalchemy",
        "WATCHER_SQLALCHEMY_URL": _stores.sqlalchemy_url(),
        "WATCHER_STORE_OPTIONS": {"table_name": f"{_stores.PREFIX}_flask_tokens"},
    }


SERVICE = {"USERNAME": "service", "PASSWORD": "service-password"}
PG = {"STORE": "db", "STORE_OPTIONS": {"using": "postgres"}}
DJANGO_REDIS = {
    "STORE": "cache",
    "CACHE_ALIAS": "redis",
    "CACHE_KEY_PREFIX": f"{_stores.PREFIX}_dj",
}


STEADY: dict[str, Callable[[str, str, TokenPair], tuple[str, str]]] = {
    "Django `request.watcher`, model store on SQLite (SQL statements)": _django_steady(
        "/ours/", _on_django("default"), STORE="db"
    ),
    "Django `request.watcher`, model store on PostgreSQL (SQL statements)": _django_steady(
        "/ours/", _on_django("postgres"), **PG
    ),
    "Django `@watcher_required`, model store on PostgreSQL (SQL statements)": _django_steady(
        "/required/", _on_django("postgres"), **PG
    ),
    "Django `request.watcher`, cache store on Redis (Redis commands)": _django_steady(
        "/ours/", _on_redis, **DJANGO_REDIS
    ),
    "Django `@watcher_required`, cache store on Redis (Redis commands)": _django_steady(
        "/required/", _on_redis, **DJANGO_REDIS
    ),
    "Flask `current_watcher`, Redis store (Redis commands)": _flask_steady(
        "/ours", _on_redis, _flask_redis
    ),
    "Flask `@watcher_required`, Redis store (Redis commands)": _flask_steady(
        "/required", _on_redis, _flask_redis
    ),
    "Flask `@watcher_required`, SQLAlchemy on PostgreSQL (SQL statements)": _flask_steady(
        "/required", _on_engine, _flask_postgres
    ),
    "Django `@watcher_required` with a service account configured, PostgreSQL": _django_steady(
        "/required/", _on_django("postgres"), SERVICE_ACCOUNT=SERVICE, **PG
    ),
    "Flask `@watcher_required` with a service account configured, Redis": _flask_steady(
        "/required",
        _on_redis,
        _flask_redis,
        WATCHER_SERVICE_USERNAME=SERVICE["USERNAME"],
        WATCHER_SERVICE_PASSWORD=SERVICE["PASSWORD"],
    ),
}


def steady_section() -> Section:
    rows = []
    token, pair = _fresh_token()
    with trivial_server() as url:
        for label, measure in STEADY.items():
            try:
                first, steady = measure(url, token, pair)
                rows.append([label, first, steady])
            except StoreUnavailable as exc:
                rows.append([label, "skipped", str(exc)])
    return Section(
        "Store round trips per web request",
        ["path and store", "first request", "per request after (goal 0)"],
        rows,
        [
            "A signed-in test client GETs a view that makes one Watcher call, 1 + 100 times, "
            "with a fresh access token (valid for an hour) already in the store.",
            "Redis commands are counted by the Redis server (`MONITOR`, the benchmark's "
            "database only); SQL statements as the driver sends them (Django's "
            "`CaptureQueriesContext`, only statements on the token table; SQLAlchemy's "
            "`before_cursor_execute`).",
        ],
    )


# --- scale ----------------------------------------------------------------------------------


def _lookup_time(load: Callable[[Any], Any], keys: list[Any], repeat: int) -> float:
    """The median over ``repeat`` passes of the mean lookup time of ``keys``."""
    passes = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for k in keys:
            load(k)
        passes.append((time.perf_counter() - t0) / len(keys))
    return statistics.median(passes)


def memory_scale(sizes: tuple[int, ...]) -> list[list[str]]:
    rows = []
    _, pair = _fresh_token()
    for n in sizes:
        gc.collect()
        tracemalloc.start()
        store = MemoryStore(maxsize=n)
        before = tracemalloc.get_traced_memory()[0]
        tokens = 0
        for i in range(n):
            # Distinct strings per key, as real tokens are.
            filled = pair.replace(
                access_token=pair.access_token + str(i),
                refresh_token=f"3637e790-5530-11ed-bdc3-{i:012d}",
            )
            tokens += sys.getsizeof(filled.access_token) + sys.getsizeof(filled.refresh_token)
            store.save(StoreKey("https://w.test", str(i)), filled)
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        keys = [StoreKey("https://w.test", str(i)) for i in random.sample(range(n), min(n, 2000))]
        lookup = _lookup_time(store.load, keys, 25)
        rows.append(
            [
                f"MemoryStore, {n:,} keys",
                f"{used / n:.0f} B ({tokens / n:.0f} B of it the two tokens)",
                f"{lookup * 1e6:.2f} µs",
                "",
            ]
        )
    return rows


def django_model_scale(alias: str, label: str, sizes: tuple[int, ...]) -> list[list[str]]:
    _django.ready(alias)
    from django.db import connections

    from django_watcher_auth.models import WatcherAccount
    from django_watcher_auth.stores import DjangoModelStore

    _, pair = _fresh_token()
    store = DjangoModelStore(using=alias)
    server = "https://scale.test"
    accounts = WatcherAccount.objects.using(alias)
    rows = []
    made = 0
    try:
        for n in sizes:
            accounts.bulk_create(
                (
                    WatcherAccount(
                        user_key=str(i),
                        server=server,
                        api="v3",
                        username=f"user{i}",
                        status=WatcherAccount.Status.CONNECTED,
                        # Each record is sealed to its own key: a copied one would not decrypt.
                        record=store.cipher.dumps(pair, StoreKey(server, str(i))).decode("ascii"),
                    )
                    for i in range(made, n)
                ),
                batch_size=5000,
            )
            made = n
            with connections[alias].cursor() as cursor:
                cursor.execute("ANALYZE")
            keys = [StoreKey(server, str(i)) for i in random.sample(range(n), min(n, 500))]
            with django_statements(alias) as statements:
                store.load(keys[0])
            lookup = _lookup_time(store.load, keys, 5)

            def query(key: StoreKey) -> Any:
                rows = accounts.filter(server=key.server, user_key=key.user, api=key.api)
                return rows.values_list("record", flat=True)[:1]

            # The same SELECTs, compiled beforehand: what the database and driver take.
            compiled = [query(key).query.sql_with_params() for key in keys]
            with connections[alias].cursor() as cursor:
                raw = _lookup_time(
                    lambda sql_params: cursor.execute(*sql_params).fetchone(), compiled, 5
                )
            plan = query(keys[0]).explain()
            rows.append(
                [
                    f"DjangoModelStore on {label}, {n:,} rows",
                    "",
                    f"{lookup * 1e6:.0f} µs ({raw * 1e6:.0f} µs of it the SELECT)",
                    f"{len(statements)} query: {_index_line(plan)}",
                ]
            )
    finally:
        accounts.filter(server=server).delete()
    return rows


def _index_line(plan: str) -> str:
    """The line of a query plan naming the index, without costs or row ids."""
    line = next((line for line in plan.splitlines() if "INDEX" in line.upper()), plan)
    line = re.sub(r"\(cost=[^)]*\)", "", line)
    return " ".join(line.replace("->", "").split()).lstrip("0123456789 ")


def scale_section(sizes: tuple[int, ...], databases: tuple[str, ...]) -> Section:
    rows = memory_scale(sizes)
    for alias, label in (("default", "SQLite"), ("postgres", "PostgreSQL")):
        if alias not in databases:
            continue
        try:
            rows += django_model_scale(alias, label, sizes)
        except StoreUnavailable as exc:
            rows.append([f"DjangoModelStore on {label}", "skipped", str(exc), ""])
    return Section(
        "Scale",
        ["case", "memory per key", "lookup", "queries and plan"],
        rows,
        [
            "Memory measured with tracemalloc, including the token strings (a real JWT "
            "of this size is about 150 bytes; Watcher's are a few hundred); the rest is the "
            "key and pair objects and the LRU cache's bookkeeping.",
            "Lookups: random keys, median of several passes. A DjangoModelStore lookup is "
            "`store.load(key)`: Django building the query, one SELECT on the unique index of "
            "(user key, server, API) over a local connection, and decryption; the SELECT "
            "alone is timed from the same statements compiled beforehand. A manager makes "
            "such a lookup only when its per-process cache has no fresh pair for the key.",
        ],
    )


# --- summary --------------------------------------------------------------------------------


def _column(section: Section, name: str) -> int:
    return next(i for i, title in enumerate(section.header) if title.startswith(name))


def _number(text: str) -> float | None:
    match = re.match(r"[-+]?\d[\d,]*(\.\d+)?", text.strip())
    return float(match.group().replace(",", "")) if match else None


def summary(sections: list[Section]) -> Section:
    """Each goal against what this run measured."""
    found = {section.title: section for section in sections}
    rows: list[list[str]] = []
    notes: list[str] = []
    storm = found.get("Refresh storm")
    if storm is not None:
        ours = [
            r
            for r in storm.rows
            if r[0].startswith("watcher-auth") and "refresh_margin" not in r[0]
        ]
        peers = [r for r in storm.rows if not r[0].startswith("watcher-auth")]

        def count(test: Callable[[list[str]], bool]) -> str:
            misses = [f"{r[0]} {r[1]}" for r in ours if not test(r)]
            held = f"{len(ours) - len(misses)} of {len(ours)} watcher-auth rows"
            if misses and len(misses) == len(ours):
                return held + " (see the notes)"
            return held + (f"; not: {', '.join(misses)}" if misses else "")

        def value(r: list[str], name: str) -> float:
            return float(r[_column(storm, name)])

        rows += [
            ["storm: 1 password login", count(lambda r: value(r, "logins") == 1)],
            [
                "storm: refreshes = the fewest possible (±1)",
                count(lambda r: abs(value(r, "refreshes") - value(r, "minimum")) <= 1),
            ],
            ["storm: 0 rejected refreshes", count(lambda r: value(r, "rejected") == 0)],
            ["storm: 0 errors seen by callers", count(lambda r: value(r, "caller errors") == 0)],
            ["storm: 0 401s", count(lambda r: value(r, "401s") == 0)],
        ]
        if ours:
            p99s = sorted(value(r, "their p99") for r in ours)
            rows.append(
                [
                    "storm: p99 latency of the calls at a refresh (watcher-auth)",
                    f"{p99s[0]:.1f} to {p99s[-1]:.1f} ms",
                ]
            )
        for name in PEERS:
            mine = [r for r in peers if r[0] == name]
            if not mine:
                continue

            def span(label: str, rs: list[list[str]] = mine) -> str:
                got = sorted(value(r, label) for r in rs)
                return f"{got[0]:g}" if got[0] == got[-1] else f"{got[0]:g} to {got[-1]:g}"

            rows.append(
                [
                    f"storm, for contrast: {name}",
                    f"{span('logins')} logins, {span('refreshes')} refreshes, "
                    f"{span('rejected')} rejected, {span('401s')} 401s per row; p99 at a "
                    f"refresh {span('their p99')} ms",
                ]
            )
        if any(value(r, "401s") > 0 for r in ours):
            notes.append(
                "401s in a watcher-auth row: a call took a token that still had more than the "
                "0.2 s margin to live and reached the emulator only after it expired, which "
                "happens when the machine has more busy threads than cores; the call was "
                "retried once after the refresh, as the caller errors show. With 300 s tokens "
                "the margin is 30 s."
            )
    overhead = found.get("Per-call overhead")
    if overhead is not None:
        goal = _column(overhead, "goal")
        ratio = _column(overhead, "ratio")
        for r in overhead.rows:
            if "held" in r[goal]:
                rows.append([f"per call: {r[0]}", f"{r[goal]} ({r[ratio]})"])
            elif r[goal] == "reference":
                rows.append([f"per call, for contrast: {r[0]}", r[ratio]])
    steady = found.get("Store round trips per web request")
    if steady is not None:
        service_missed = False
        for r in steady.rows:
            measured = _number(r[2])
            if measured is not None:
                verdict = "held" if measured == 0 else "not held"
                service_missed = service_missed or (measured > 0 and "service account" in r[0])
                rows.append([f"0 store round trips: {r[0]}", f"{verdict} ({r[2]} per request)"])
        if service_missed:
            notes.append(
                "With a service account configured, both web layers decide per request "
                "whether the signed-in user has tokens of their own by reading the store "
                "directly (`manager.tokens(key)` / `manager.is_connected(key)`, which bypass "
                "the per-process cache): one store read per request."
            )
    scale = found.get("Scale")
    if scale is not None:
        lookups = {r[0]: _number(r[2]) for r in scale.rows}
        memory = [r for r in scale.rows if r[0].startswith("MemoryStore")]
        if len(memory) >= 2:
            small, large = lookups[memory[0][0]], lookups[memory[-1][0]]
            if small and large:
                few, many = (r[0].split(", ")[-1] for r in (memory[0], memory[-1]))
                rows.append(
                    [
                        f"MemoryStore lookup flat from {few} to {many}",
                        f"{large / small:.2f} times ({memory[0][2]} → {memory[-1][2]}); "
                        f"{memory[-1][1]} per key at {many}",
                    ]
                )

        def size(r: list[str]) -> float:
            return _number(r[0].split(", ")[-1]) or 0

        largest = max((size(r) for r in scale.rows), default=0)
        for r in scale.rows:
            if r[0].startswith("DjangoModelStore") and size(r) == largest:
                rows.append([f"{r[0]}: indexed, one query", f"{r[3]}; {r[2]}"])
    return Section("Goals", ["goal", "this run"], rows, notes)


def parse_sections(text: str) -> tuple[str, list[Section]]:
    """The text before the first section, and the sections of a results file."""
    head, *parts = text.split("\n## ")
    sections = []
    for part in parts:
        title, _, body = part.partition("\n")
        table = [line for line in body.splitlines() if line.startswith("| ")]
        cells = [line[2:-2].split(" | ") for line in table]
        notes = [line[2:] for line in body.splitlines() if line.startswith("- ")]
        sections.append(Section(title, cells[0] if cells else [], cells[1:], notes))
    return head + "\n", sections


def rewrite_goals(path: Path) -> None:
    """Replace the Goals section of the results at ``path`` with one made from its tables."""
    head, sections = parse_sections(path.read_text())
    measured = [s for s in sections if s.title != "Goals"]
    path.write_text(head + "\n".join(s.markdown() for s in [summary(measured), *measured]))


# --- main -----------------------------------------------------------------------------------


def machine() -> str:
    versions = []
    for dist in (
        "watcher-auth",
        "requests",
        "PyJWT",
        "cryptography",
        "Django",
        "Flask",
        "Flask-Login",
        "redis",
        "SQLAlchemy",
        "psycopg",
        "Authlib",
        "requests-oauthlib",
        "oauthlib",
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
    servers = []
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(_stores.redis_url())
        servers.append(f"Redis {client.info('server')['redis_version']}")
        client.close()
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(_stores.postgres_url()) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            servers.append(f"PostgreSQL {version[0] if version else '?'}")
    return (
        f"- CPU: {cpu}, {os.cpu_count()} cores\n- Python {platform.python_version()} on "
        f"{platform.system()} {platform.release()}\n- "
        + ", ".join(versions)
        + ("\n- Servers on loopback: " + ", ".join(servers) if servers else "")
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="for development, under 2 minutes on an otherwise idle machine: 3 s storms of "
        "the peers and the memory and Redis stores, 15 rounds, small scale on SQLite only; "
        "written to a temporary file",
    )
    parser.add_argument(
        "--goals",
        metavar="RESULTS",
        help="measure nothing: rewrite the Goals section of a results file from its tables",
    )
    section_names = ["storm", "overhead", "async", "async-storm", "coherence", "steady", "scale"]
    parser.add_argument("--only", choices=section_names)
    parser.add_argument("--store", help="storm rows only of clients and stores whose name has this")
    parser.add_argument("--shapes", help="storm shapes, e.g. 1x32,4x8")
    parser.add_argument("--output", help="where to write the results (default: RESULTS.md)")
    args = parser.parse_args(argv)
    if args.goals:
        rewrite_goals(Path(args.goals))
        return 0
    shapes = [(1, 32), (4, 8)] if args.quick else [(1, 32), (4, 8), (8, 8)]
    if args.shapes:
        shapes = [(int(p), int(t)) for p, t in (s.split("x") for s in args.shapes.split(","))]
    duration = 3.0 if args.quick else 10.0
    stores = ["memory", "Redis store"] if args.quick else None
    output = args.output or (
        os.path.join(tempfile.gettempdir(), "watcher-auth-bench-quick.md")
        if args.quick
        else str(HERE / "RESULTS.md")
    )
    sections = []
    runners: dict[str, Callable[[], Section]] = {
        "storm": lambda: storm_section(shapes, duration, args.store, stores),
        "overhead": lambda: (
            overhead_section(15, 1_000) if args.quick else overhead_section(300, 20_000)
        ),
        "async": lambda: async_section(15 if args.quick else 300),
        "async-storm": async_storm_section,
        "coherence": lambda: coherence_section(5 if args.quick else 30),
        "steady": steady_section,
        "scale": lambda: (
            scale_section((1_000, 5_000), ("default",))
            if args.quick
            else scale_section((10_000, 100_000), ("default", "postgres"))
        ),
    }
    started = time.time()
    about = machine()
    try:
        for name, run in runners.items():
            if args.only and name != args.only:
                continue
            began = time.time()
            section = run()
            print(section.markdown(), flush=True)
            print(f"({name}: {time.time() - began:.0f} s)\n", file=sys.stderr, flush=True)
            sections.append(section)
    finally:
        _stores.cleanup()
    command = (
        "make bench"
        if not (args.quick or args.only)
        else " ".join(["run.py", *(argv or sys.argv[1:])])
    )
    # Other work on the machine slows every row and widens the spreads: say how much there was.
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    text = (
        "# watcher-auth benchmark results\n\n"
        + f"Written by `{command}` in {time.time() - started:.0f} s on:\n\n"
        + about
        + f"- Load average (1, 5, 15 min) when the run ended: {load}\n"
        + "\n"
        + "\n".join(s.markdown() for s in [summary(sections), *sections])
    )
    Path(output).write_text(text)
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
