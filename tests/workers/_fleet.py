"""A fleet of forked worker processes calling Watcher through one user key, and one of them
acting on command (disconnect, reconnect as another account, delete the portal user).

Each worker builds its own manager after the fork (as a web server's worker does), calls
``GET profile`` in a loop and notes, with the time, which Watcher account each answer was
for. The parent marks a moment and asks every worker what it served after it.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from watcher_auth import TokenManager

_WAIT = 60.0
# Pause between calls: enough calls to catch a stale copy, little enough CPU on a shared box.
_PAUSE = 0.01

Action = Callable[[TokenManager], object]


@dataclass
class Served:
    """What one worker answered from a moment on: accounts seen, errors by type."""

    accounts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


class Fleet:
    """``count`` forked workers calling through ``key``; worker 0 also runs ``actions``."""

    def __init__(
        self,
        make_manager: Callable[[], TokenManager],
        key: str,
        *,
        count: int = 3,
        actions: Mapping[str, Action] | None = None,
        before_fork: Callable[[], None] | None = None,
    ) -> None:
        ctx = multiprocessing.get_context("fork")
        self._commands: list[Any] = [ctx.Queue() for _ in range(count)]
        self._replies: Any = ctx.Queue()
        if before_fork is not None:
            before_fork()
        self._workers = [
            ctx.Process(
                target=_serve,
                args=(make_manager, key, dict(actions or {}), self._commands[n], self._replies, n),
                daemon=True,
            )
            for n in range(count)
        ]
        for worker in self._workers:
            worker.start()
        self._expect("serving", count)

    def run(self, action: str) -> None:
        """Have worker 0 run ``action`` and wait until it has returned."""
        self._commands[0].put(("act", action, 0.0))
        (reply,) = self._expect("done", 1)
        if reply[2] is not None:
            raise AssertionError(f"action {action!r} failed in the worker:\n{reply[2]}")

    def served_since(self, mark: float) -> list[Served]:
        """What each worker answered since ``mark`` (``time.monotonic()`` in any process)."""
        for commands in self._commands:
            commands.put(("report", "", mark))
        replies = sorted(self._expect("report", len(self._commands)), key=lambda r: r[1])
        return [reply[2] for reply in replies]

    def stop(self) -> None:
        for commands in self._commands:
            commands.put(("stop", "", 0.0))
        for worker in self._workers:
            worker.join(_WAIT)
            if worker.is_alive():
                worker.kill()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _expect(self, what: str, count: int) -> list[tuple[Any, ...]]:
        got: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + _WAIT
        while len(got) < count:
            try:
                reply = self._replies.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the workers did not report {what!r} in time") from None
            if reply[0] == "crashed":
                raise AssertionError(f"worker {reply[1]} failed:\n{reply[2]}")
            if reply[0] == what:
                got.append(reply)
        return got


def _serve(
    make_manager: Callable[[], TokenManager],
    key: str,
    actions: dict[str, Action],
    commands: Any,
    replies: Any,
    index: int,
) -> None:
    try:
        manager = make_manager()
        session = manager.session(key)
    except Exception:
        replies.put(("crashed", index, traceback.format_exc()))
        return
    # (monotonic time, account or "!ErrorType") of every call, in order.
    log: list[tuple[float, str]] = []
    serving = False
    while True:
        try:
            command, name, mark = commands.get_nowait()
        except queue.Empty:
            command = ""
        if command == "stop":
            break
        if command == "report":
            since = Served()
            for at, what in log:
                if at >= mark:
                    if what.startswith("!"):
                        since.errors[what[1:]] += 1
                    else:
                        since.accounts[what] += 1
            replies.put(("report", index, since))
        elif command == "act":
            try:
                actions[name](manager)
            except Exception:
                replies.put(("done", index, traceback.format_exc()))
            else:
                replies.put(("done", index, None))
        started = time.monotonic()
        try:
            response = session.get("profile")
        except Exception as exc:
            log.append((started, "!" + type(exc).__name__))
        else:
            if response.status_code == 200:
                log.append((started, str(response.json()["name"])))
                if not serving:
                    serving = True
                    replies.put(("serving", index))
            else:
                log.append((started, f"!HTTP {response.status_code}"))
        time.sleep(_PAUSE)
    manager.close()
