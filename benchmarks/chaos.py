"""watcher-auth chaos run: many workers, one truth, while everything around them fails.

    make bench                                   # runs this after run.py
    .venv/bin/python benchmarks/chaos.py         # 60 s per store, writes its section
    .venv/bin/python benchmarks/chaos.py --duration 20 --store redis

4 processes x 8 threads call Watcher (the emulator on loopback, refresh-token rotation on,
3 s access tokens) for 5 users through a shared store. Every 4 s a worker gets SIGKILL and
a new one is forked; Watcher answers bursts of 5xx, slowly, loses a rotated refresh answer
and holds two back; the Redis store's own ``redis-server`` restarts, the PostgreSQL store's
connections are terminated (``pg_terminate_backend``). The table goes into
``benchmarks/RESULTS.md`` under "Chaos run" (the rest of the file is left as it is).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "integrations"), str(HERE.parent)]

from watcher_auth import TokenManager  # noqa: E402
from watcher_auth.testing import WatcherEmulator  # noqa: E402
from watcher_auth.testing.storm import (  # noqa: E402
    RETRYABLE,
    ChaosResult,
    Fault,
    RedisServer,
    run_chaos,
    watcher_faults,
)

KEYS = ["chaos benchmark key"]
USERS = {f"key-w0{n}": (f"w0{n}", f"pw-w0{n}") for n in range(1, 6)}
LIFETIME = 3.0
REDIS_PORT = 17199
POSTGRES_DATABASE = "watcher_auth_chaos_bench"
HEADING = "## Chaos run"


def faults_for(emulator: WatcherEmulator, duration: float, store_fault: Fault) -> list[Fault]:
    """Watcher's faults every 30 s, and the store's fault 10 s into each 30 s."""
    faults: list[Fault] = []
    for offset in range(0, int(duration) - 20, 30):
        faults.extend(watcher_faults(emulator, offset))
        faults.append(Fault(offset + 10.0, store_fault.name, store_fault.action, settle=6.0))
    return faults


def run_store(
    name: str, make_store: Callable[[], Any], store_fault: Fault, duration: float
) -> dict[str, Any]:
    emulator = WatcherEmulator(access_lifetime=LIFETIME, rotate_refresh_tokens=True)
    emulator.configure(hang_seconds=1.5)
    for username, password in USERS.values():
        emulator.add_user(username, password)
    emulator.start()
    try:
        seed = TokenManager(emulator.url, store=make_store())
        for key, (username, password) in USERS.items():
            seed.login(key, username=username, password=password)
        seed.close()
        url = emulator.url

        def make_manager() -> TokenManager:
            return TokenManager(
                url, store=make_store(), lock_timeout=2.0, timeout=(1.0, 1.0), deadline=6.0
            )

        started = time.monotonic()
        result = run_chaos(
            make_manager,
            users=USERS,
            duration=duration,
            faults=faults_for(emulator, duration, store_fault),
        )
        elapsed = time.monotonic() - started
        stats = emulator.stats
        checker = TokenManager(emulator.url, store=make_store())
        lost = 0
        for key, (username, _) in USERS.items():
            try:
                served = checker.session(key).get("profile").json()["name"]
            except Exception:
                served = None
            lost += served != username
        checker.close()
    finally:
        emulator.stop()
    return row(name, result, stats, elapsed, lost)


def row(name: str, result: ChaosResult, stats: Any, elapsed: float, lost: int) -> dict[str, Any]:
    reasons = {
        reason: n
        for full, n in result.errors.items()
        if full.startswith("ReauthenticationRequired:")
        for reason in [full.split(":", 1)[1]]
    }
    retryable = {k: n for k, n in result.errors.items() if k in RETRYABLE}
    lost_rotations = stats.refreshes - result.saved_refreshes
    return {
        "store": name,
        "seconds": f"{elapsed:.0f}",
        "calls": result.calls,
        "calls/s": f"{result.calls / elapsed:.0f}",
        "SIGKILLs (mid-refresh)": f"{result.kills} ({result.kills_mid_refresh})",
        "refreshes": stats.refreshes,
        "lost rotated answers": (
            f"{lost_rotations} ({100 * lost_rotations / max(1, stats.refreshes):.1f}%)"
        ),
        "rejected refreshes": stats.rejected_refreshes,
        "asked to reconnect, by reason": ", ".join(f"{k} {n}" for k, n in sorted(reasons.items()))
        or "none",
        "cross-user answers": result.cross_user,
        "records lost": lost,
        "NotConnected until reconnected": result.errors["NotConnected"],
        "retryable errors while a dependency was down": ", ".join(
            f"{k} {n}" for k, n in sorted(retryable.items())
        )
        or "none",
        "any other error": len(result.stray_errors),
    }


def markdown(rows: list[dict[str, Any]], duration: float) -> str:
    columns = list(rows[0])
    lines = [
        HEADING,
        "",
        f"Written by `benchmarks/chaos.py` ({duration:.0f} s per store). 4 processes x 8 "
        "threads, 5 users, rotation on, 3 s access tokens; a SIGKILL every 4 s; every 30 s a "
        "5xx burst, 2 s of slow answers, one rotated refresh answer lost (Watcher rotated, the "
        "connection dropped), two refresh answers held back 1.5 s, and the store's fault.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows),
        "",
        "- A lost rotated answer is a refresh Watcher carried out whose new pair no worker "
        "stored: its answer was dropped, its worker was killed before saving, or the store was "
        "down when it came. Each costs one rejected refresh and one reconnect of that user; "
        "nobody is asked to reconnect for any other reason. A rejection beyond the lost "
        "answers is a refresh token used twice after PostgreSQL ended the lock holder's "
        "connection mid-refresh (the row lock ends with it): the holder's save or delete then "
        "fails on its dead connection, so no record is lost.",
        "- The run drops one rotated refresh answer on purpose every 30 s (2 per store); the "
        "other lost answers come from the SIGKILLs and the store's faults. A worker killed "
        "between saving a pair and counting it counts as a loss too, so the lost answers are "
        "an upper bound.",
        "- `refresh_answer_lost` is the reason when the process that lost the answer is the one "
        "that meets the rejection; another process sees `refresh_rejected`.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# watcher-auth benchmark results\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--store", choices=["redis", "postgres"])
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args(argv)
    rows = []
    if args.store in (None, "redis"):
        directory = tempfile.mkdtemp(prefix="watcher-auth-chaos-redis-")
        server = RedisServer(REDIS_PORT, directory, shutil.which("redis-server") or "redis-server")
        server.start()
        prefix = f"chaos:{uuid.uuid4().hex}:"
        try:
            from watcher_auth.stores.redis import RedisStore

            rows.append(
                run_store(
                    "Redis (own redis-server, restarted)",
                    lambda: RedisStore(url=server.url, prefix=prefix, encryption_keys=KEYS),
                    Fault(0, "Redis restart", lambda: server.restart(down_for=1.0)),
                    args.duration,
                )
            )
        finally:
            server.stop()
            shutil.rmtree(directory, ignore_errors=True)
    if args.store in (None, "postgres"):
        import psycopg

        from watcher_auth.stores.sqlalchemy import SQLAlchemyStore
        from watcher_auth.testing.services import create_postgres_database

        plain = create_postgres_database(POSTGRES_DATABASE)
        url = plain.replace("postgresql://", "postgresql+psycopg://", 1)
        table = f"tokens_{uuid.uuid4().hex[:12]}"

        def terminate() -> None:
            with psycopg.connect(plain, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )

        try:
            rows.append(
                run_store(
                    "SQLAlchemy on PostgreSQL (connections terminated)",
                    lambda: SQLAlchemyStore(url, table_name=table, encryption_keys=KEYS),
                    Fault(0, "pg_terminate_backend", terminate),
                    args.duration,
                )
            )
        finally:
            store = SQLAlchemyStore(url, table_name=table, encryption_keys=KEYS)
            store.table.drop(store.engine, checkfirst=True)
            store.close()
    section = markdown(rows, args.duration)
    print(section, flush=True)
    write_section(Path(args.output), section)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
