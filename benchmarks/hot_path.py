"""Where a call through watcher-auth spends its time, next to the fair floor's.

    .venv/bin/python benchmarks/hot_path.py                 # core, memory and Redis stores
    .venv/bin/python benchmarks/hot_path.py django flask    # the web layers' hot paths
    .venv/bin/python benchmarks/hot_path.py --pyinstrument core

Each case runs the same number of calls through watcher-auth and through the fair floor (see
``_peers.py``) against one loopback server under cProfile, and prints, per function, the
microseconds of CPU per call that watcher-auth's run spends in it beyond the floor's run (own
time, and time including callees). ``core`` reuses one session as the per-call table does;
``core-new-session`` builds ``manager.session(key)`` for every call (the web layers call on
``manager.shared_session(key)`` instead, or borrow one with ``manager.lend(key)``).
cProfile inflates small functions several times over, so its figures rank the costs rather
than measure them; the last table times each piece of the core path alone with ``timeit``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
import timeit
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "integrations"), str(HERE.parent)]

import _stores  # noqa: E402
import requests  # noqa: E402
from _peers import TIMEOUT, fair_floor  # noqa: E402
from run import _fresh_token, trivial_server  # noqa: E402

from watcher_auth import MemoryStore, TokenManager, TokenPair  # noqa: E402

Case = Callable[[str, str, TokenPair, ExitStack], tuple[Callable[[], Any], Callable[[], Any]]]


def _core(store: Callable[[], Any], per_call: bool) -> Case:
    def make(
        url: str, token: str, pair: TokenPair, stack: ExitStack
    ) -> tuple[Callable[[], Any], Callable[[], Any]]:
        manager = TokenManager(url, store=store())
        stack.callback(manager.store.close)
        stack.callback(manager.close)
        manager.store.save(manager.store_key("k"), pair)
        stack.callback(manager.store.delete, manager.store_key("k"))
        floor = fair_floor(token)
        target = manager.api_root + "streams"
        if per_call:
            return (
                lambda: manager.session("k").get("streams"),
                lambda: floor.get(target, timeout=TIMEOUT),
            )
        session = manager.session("k")
        return lambda: session.get("streams"), lambda: floor.get(target, timeout=TIMEOUT)

    return make


def _django(
    url: str, token: str, pair: TokenPair, stack: ExitStack
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import _django

    portal = stack.enter_context(_django.portal(url, token, pair, STORE="db"))
    return lambda: portal.get("/ours/"), lambda: portal.get("/plain/")


def _flask(
    url: str, token: str, pair: TokenPair, stack: ExitStack
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import _flask

    portal = stack.enter_context(_flask.portal(url, token, pair, WATCHER_STORE="memory"))
    return lambda: portal.get("/ours"), lambda: portal.get("/plain")


CASES: dict[str, Case] = {
    "core": _core(MemoryStore, per_call=False),
    "core-redis": _core(_stores.redis_store, per_call=False),
    "core-new-session": _core(MemoryStore, per_call=True),
    "django": _django,
    "flask": _flask,
}


def _where(key: tuple[str, int, str]) -> str:
    path, line, name = key
    for marker in ("site-packages/", "watcher-auth/", "bench/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({Path(path).name}:{line})" if line else name


def _profile(
    call: Callable[[], Any], calls: int
) -> dict[tuple[str, int, str], tuple[float, float]]:
    # This thread's CPU time: the loopback server's thread and waits on the socket do not
    # count, so other processes on the machine disturb the figures less.
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return {key: (row[2], row[3], row[1]) for key, row in stats.items()}


def compare(name: str, calls: int, top: int) -> None:
    token, pair = _fresh_token()
    with trivial_server() as url, ExitStack() as stack:
        ours, floor = CASES[name](url, token, pair, stack)
        for _ in range(200):  # warm up
            ours()
            floor()
        mine = _profile(ours, calls)
        base = _profile(floor, calls)
        wall_ours = min(timeit.repeat(ours, "gc.enable()", number=calls // 5, repeat=3)) / (
            calls // 5
        )
        wall_floor = min(timeit.repeat(floor, "gc.enable()", number=calls // 5, repeat=3)) / (
            calls // 5
        )
    extra = []
    none = (0.0, 0.0, 0)
    for key in mine.keys() | base.keys():
        a, b = mine.get(key, none), base.get(key, none)
        own = (a[0] - b[0]) / calls * 1e6
        total = (a[1] - b[1]) / calls * 1e6
        extra.append((own, total, (a[2] - b[2]) / calls, key))
    print(f"\n## {name}: {calls} calls, best of 3 without the profiler:")
    print(
        f"ours {wall_ours * 1e6:.0f} µs, floor {wall_floor * 1e6:.0f} µs, "
        f"difference {(wall_ours - wall_floor) * 1e6:+.0f} µs ({wall_ours / wall_floor:.3f})"
    )
    print("\nown µs/call beyond the floor | incl. callees | times called per call | function")
    for own, total, times, key in sorted(extra, key=lambda e: -e[0])[:top]:
        print(f"{own:8.2f} | {total:8.2f} | {times:+6.1f} | {_where(key)}")
    print("\nincl. callees µs/call beyond the floor | own | times called per call | function")
    for own, total, times, key in sorted(extra, key=lambda e: -e[1])[:top]:
        print(f"{total:8.2f} | {own:8.2f} | {times:+6.1f} | {_where(key)}")


def suspects() -> None:
    """The pieces of the core path, each timed alone (best of 25 runs), in µs."""
    import os

    from watcher_auth._session import origin_of

    _, pair = _fresh_token()
    memory = TokenManager("http://127.0.0.1:9", store=MemoryStore())
    shared = TokenManager("http://127.0.0.1:9", store=_stores.redis_store())
    for manager in (memory, shared):
        manager.store.save(manager.store_key("k"), pair)
    skey = shared.store_key("k")
    prepared = requests.Request("GET", memory.api_root + "streams").prepare()
    auth = memory.auth("k")
    session = memory.session("k")
    response = requests.Response()
    response.status_code = 200

    def fresh() -> requests.PreparedRequest:
        # copy() shares the hooks dict: each copy gets its own, as a prepared request has.
        copy = prepared.copy()
        copy.hooks = {"response": []}
        return copy

    hooked = auth(fresh())
    n = 2_000

    def alone(label: str, call: Callable[[], Any]) -> None:
        # Many short runs: on a busy machine some of them run undisturbed. The garbage of
        # the previous line is collected first, so that it is not counted here.
        gc.collect()
        best = min(timeit.repeat(call, "gc.enable()", number=n, repeat=25)) / n
        print(f"{best * 1e6:8.2f} µs  {label}")

    print("\n## the pieces alone")
    print("per request, web layers:")
    alone("manager.lend(key) and loan.end(): a kept session", lambda: memory.lend("k").end())
    alone(
        "manager.shared_session(key): the key's shared session", lambda: memory.shared_session("k")
    )
    alone("manager.session(key): a WatcherSession", lambda: memory.session("k"))
    alone("  for comparison: requests.Session() (it builds two HTTPAdapters)", requests.Session)
    alone("  HTTPAdapter() (each makes a PoolManager and a Retry)", requests.adapters.HTTPAdapter)
    alone("  manager.auth(key): a WatcherBearerAuth", lambda: memory.auth("k"))
    print("per call:")
    alone("WatcherBearerAuth(request), memory store, with a copy", lambda: auth(fresh()))
    alone("  copying the request (subtract from the line above)", fresh)
    alone("  origin_of(url): urlsplit, .port, .hostname", lambda: origin_of(prepared.url or ""))
    alone(
        "  manager.current_tokens(key), memory store (no cache)", lambda: memory.current_tokens("k")
    )
    alone(
        "  manager.current_tokens(key), Redis store, cached pair",
        lambda: shared.current_tokens("k"),
    )
    alone("    manager.store_key(key): a StoreKey", lambda: memory.store_key("k"))
    alone(
        "    lifecycle.cached(skey): the local cache's rules", lambda: shared.lifecycle.cached(skey)
    )
    alone(
        "    manager.needs_refresh(pair): clock, margin, lifetime",
        lambda: memory.needs_refresh(pair),
    )
    alone(
        "  register_hook of a new closure",
        lambda: fresh().register_hook("response", lambda r, **k: r),
    )
    alone(
        "dispatching the 401 hook on a 200 answer",
        lambda: requests.hooks.dispatch_hook("response", hooked.hooks, response),
    )
    alone("session.url_for('streams')", lambda: session.url_for("streams"))
    verify = os.environ.get("REQUESTS_CA_BUNDLE")
    if verify:
        alone(
            "os.path.isdir(CA bundle): requests, per call, when verify is a path",
            lambda: os.path.isdir(verify),
        )
    for manager in (memory, shared):
        manager.store.delete(manager.store_key("k"))
        manager.store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"of {', '.join(CASES)}; default: the core's")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--pyinstrument", action="store_true", help="a call tree of ours instead")
    args = parser.parse_args(argv)
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    for name in args.cases or ["core", "core-redis"]:
        if args.pyinstrument:
            from pyinstrument import Profiler

            token, pair = _fresh_token()
            with trivial_server() as url, ExitStack() as stack:
                ours, _ = CASES[name](url, token, pair, stack)
                profiler = Profiler(interval=0.0001)
                with profiler:
                    for _ in range(args.calls):
                        ours()
                print(profiler.output_text(unicode=True, show_all=False))
        else:
            compare(name, args.calls, args.top)
    if not args.pyinstrument and any(c.startswith("core") for c in args.cases or ["core"]):
        suspects()
    _stores.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
