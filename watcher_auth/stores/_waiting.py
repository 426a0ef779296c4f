"""Waiting for a held lock: bounded exponential backoff with jitter, ending at a deadline."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """The pauses of one waiter between attempts to take a lock held by someone else.

    Pauses double from ``first`` up to ``cap`` and each is drawn from the upper half of its
    range, so many waiters released at once spread out instead of retrying in step. The
    last pause ends exactly at the deadline, where the waiter makes one final attempt and
    then gives up.
    """

    __slots__ = ("_clock", "_next", "cap", "deadline")

    def __init__(
        self,
        timeout: float,
        *,
        first: float = 0.002,
        cap: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.deadline = clock() + max(0.0, timeout)
        self.cap = max(first, cap)
        self._next = first

    def pause(self) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when the deadline has passed."""
        remaining = self.deadline - self._clock()
        if remaining <= 0:
            return None
        pause = random.uniform(self._next / 2, self._next)
        self._next = min(self._next * 2, self.cap)
        return min(pause, remaining)

    @property
    def remaining(self) -> float:
        """Seconds left until the deadline (never negative)."""
        return max(0.0, self.deadline - self._clock())
