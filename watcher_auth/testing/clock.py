"""Clocks that tests move by hand instead of sleeping."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

__all__ = ["FakeClock", "SharedClock"]


class FakeClock:
    """A wall clock that only moves when told to.

    Pass it as ``clock=`` to :class:`~watcher_auth.TokenManager` and to the emulator so both
    agree on the time, then call :meth:`advance` to jump past a token's expiry.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward and return the new time."""
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        """Put the clock at ``now`` (unix seconds)."""
        with self._lock:
            self._now = now

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"


class SharedClock(FakeClock):
    """A :class:`FakeClock` kept in shared memory, so worker processes see one time.

    Create it in the parent before starting the workers (fork or spawn); every process that
    holds it reads and moves the same value.
    """

    def __init__(self, start: float | None = None) -> None:
        self._value: Any = multiprocessing.Value("d", time.time() if start is None else start)

    def __call__(self) -> float:
        return float(self._value.value)

    def advance(self, seconds: float) -> float:
        with self._value.get_lock():
            self._value.value += seconds
            return float(self._value.value)

    def set(self, now: float) -> None:
        with self._value.get_lock():
            self._value.value = now

    def __repr__(self) -> str:
        return f"SharedClock({self()!r})"
