"""The asyncio rows: :class:`~watcher_auth.AsyncTokenManager`'s per-call overhead against a bare
``httpx.AsyncClient``, and refresh storms of tasks through each async store.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _stores
import httpx
from _peers import TIMEOUT, VERIFY
from _stores import StoreUnavailable

from watcher_auth import AsyncTokenManager, TokenPair
from watcher_auth.stores import AsyncMemoryStore, AsyncTokenStore
from watcher_auth.testing.clock import SharedClock
from watcher_auth.testing.emulator import WatcherEmulator
from watcher_auth.testing.storm import run_async_storm

#: Our per-call goal against the bare ``httpx.AsyncClient``.
ASYNC_CALL_GOAL = 1.05

OURS = "watcher-auth: `AsyncTokenManager.session(key).get`, memory store"
FLOOR_LABEL = (
    "**async floor**: `httpx.AsyncClient`, `trust_env=False`, the manager's pool limits and "
    "timeout, fixed `Authorization` header"
)


async def _block(call: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    """The median wall seconds of ``n`` awaited calls, each timed alone, and CPU per call."""
    clock = time.perf_counter
    each = []
    c0 = time.process_time()
    for _ in range(n):
        t0 = clock()
        await call()
        each.append(clock() - t0)
    return statistics.median(each), (time.process_time() - c0) / n


def async_overhead(
    url: str, token: str, pair: TokenPair, rounds: int, cells: Callable[..., list[str]]
) -> list[list[str]]:
    """Our async session against the floor client, interleaved as the sync rows are."""
    from run import FLOOR, interleaved

    loop = asyncio.new_event_loop()
    manager = AsyncTokenManager(url, store=AsyncMemoryStore(), timeout=TIMEOUT)

    async def clients() -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
        # Made on the loop that runs the calls: the manager's pool belongs to it.
        await manager.store.save(manager.store_key("k"), pair)
        # The manager's pool limits and TLS settings, on a transport of the floor's own.
        floor = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(
                verify=VERIFY if isinstance(VERIFY, bool) else httpx.create_ssl_context(VERIFY),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=32),
            ),
            trust_env=False,
            timeout=TIMEOUT,
            headers={"Authorization": f"Bearer {token}"},
        )
        return floor, manager.session("k")

    floor, session = loop.run_until_complete(clients())
    target = url + "/watcher/client-api/v3/streams"
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        FLOOR: lambda: floor.get(target),
        OURS: lambda: session.get("streams"),
    }
    try:
        timings = interleaved(
            calls, rounds, 20, lambda call, n: loop.run_until_complete(_block(call, n))
        )
    finally:
        for closing in (session.aclose(), floor.aclose(), manager.aclose()):
            loop.run_until_complete(closing)
        loop.close()
    ratio = statistics.median(timings.ratios(OURS))
    return [
        [FLOOR_LABEL, *cells(timings, FLOOR), "the floor"],
        [
            OURS,
            *cells(timings, OURS),
            f"≤ {ASYNC_CALL_GOAL}: " + ("held" if ratio <= ASYNC_CALL_GOAL else "not held"),
        ],
    ]


# --- async storms -----------------------------------------------------------------------------

ASYNC_STORM_HEADER = [
    "async store",
    "processes x tasks",
    "logins",
    "refreshes",
    "minimum",
    "rejected",
    "401s",
    "calls",
    "caller errors",
    "calls held at a refresh",
    "their p50 ms",
    "their p99 ms",
    "goal: 1 login, refreshes = minimum, 0 rejected",
]
LIFETIME = 300.0
EXPIRIES = 3


def _async_redis() -> Callable[[], AsyncTokenStore]:
    from watcher_auth.stores.redis import AsyncRedisStore

    url = _stores.redis_url()
    return lambda: AsyncRedisStore(
        url=url, prefix=f"{_stores.PREFIX}:async:", encryption_keys=_stores.ENCRYPTION_KEYS
    )


def _async_postgres() -> Callable[[], AsyncTokenStore]:
    from watcher_auth.stores.sqlalchemy import AsyncSQLAlchemyStore

    url = _stores.sqlalchemy_url()

    def make() -> AsyncTokenStore:
        return AsyncSQLAlchemyStore(
            url,
            table_name=f"{_stores.PREFIX}_async_tokens",
            encryption_keys=_stores.ENCRYPTION_KEYS,
        )

    async def create() -> None:
        store = make()
        await store.create_table()  # type: ignore[attr-defined]
        await store.aclose()

    asyncio.run(create())
    return make


#: name: (store factory maker, shared between processes)
ASYNC_STORES: dict[str, tuple[Callable[[], Callable[[], AsyncTokenStore]], bool]] = {
    "AsyncMemoryStore": (lambda: AsyncMemoryStore, False),
    "AsyncRedisStore": (_async_redis, True),
    "AsyncSQLAlchemyStore, PostgreSQL": (_async_postgres, True),
}


def async_storm_row(
    name: str, make_store: Callable[[], AsyncTokenStore], shared: bool
) -> list[str]:
    """``EXPIRIES`` expiries of one key under many tasks (and processes, for a shared store)."""
    clock = SharedClock()
    emulator = WatcherEmulator(clock=clock, access_lifetime=LIFETIME, rotate_refresh_tokens=True)
    emulator.add_user("alice", "secret")
    emulator.start()
    key = f"bench-async-{time.time_ns()}"
    processes, tasks = (4, 32) if shared else (1, 128)
    try:
        if shared:

            def make() -> AsyncTokenManager:
                return AsyncTokenManager(
                    emulator.url, store=make_store(), clock=clock, max_waiters=256
                )

        else:
            only = AsyncTokenManager(emulator.url, store=make_store(), clock=clock, max_waiters=256)

            def make() -> AsyncTokenManager:
                return only

        async def log_in() -> None:
            manager = make()
            await manager.login(key, username="alice", password="secret")
            if shared:
                await manager.aclose()
                await manager.store.aclose()

        asyncio.run(log_in())
        result = run_async_storm(
            make,
            clock=clock,
            lifetime=LIFETIME,
            processes=processes,
            tasks=tasks,
            expiries=EXPIRIES,
            calls_per_phase=2,
            key=key,
        )
        stats = emulator.stats
        missed = []
        if stats.password_logins != 1:
            missed.append(f"{stats.password_logins} logins")
        if stats.refreshes != EXPIRIES:
            missed.append(f"{stats.refreshes} refreshes for {EXPIRIES}")
        if stats.rejected_refreshes:
            missed.append(f"{stats.rejected_refreshes} rejected")
        if result.errors:
            missed.append(f"{len(result.errors)} caller errors")
        return [
            name,
            f"{processes}x{tasks}",
            str(stats.password_logins),
            str(stats.refreshes),
            str(EXPIRIES),
            str(stats.rejected_refreshes),
            str(stats.unauthorized),
            str(result.calls),
            str(len(result.errors)),
            str(len(result.waited)),
            f"{result.percentile(0.5) * 1000:.1f}",
            f"{result.percentile(0.99) * 1000:.1f}",
            "held" if not missed else "not held: " + ", ".join(missed),
        ]
    finally:
        emulator.stop()


def async_storm_rows() -> tuple[list[list[str]], list[str]]:
    """One row per async store; a store that cannot be reached is noted, not measured."""
    rows, notes = [], []
    for name, (prepare, shared) in ASYNC_STORES.items():
        try:
            make_store = prepare()
        except StoreUnavailable as exc:
            notes.append(f"{name}: skipped ({exc})")
            continue
        rows.append(async_storm_row(name, make_store, shared))
    return rows, notes
