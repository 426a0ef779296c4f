"""How a waiter for a held store lock paces itself: pauses that grow to a cap, drawn from the
upper half of each step, the last one ending at the deadline; and the process's key locks."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from watcher_auth.stores._waiting import Backoff, ProcessKeyLocks
from watcher_auth.testing import FakeClock


def test_pauses_double_to_the_cap_each_from_the_upper_half_of_its_step() -> None:
    clock = FakeClock(1000.0)
    wait = Backoff(60, first=0.002, cap=0.05, clock=clock)
    steps = [0.002, 0.004, 0.008, 0.016, 0.032, 0.05, 0.05, 0.05]
    for step in steps:
        pause = wait.pause()
        assert pause is not None and step / 2 <= pause <= step
    assert wait.remaining == 60


def test_the_last_pause_ends_at_the_deadline_and_then_the_waiter_gives_up() -> None:
    clock = FakeClock(1000.0)
    wait = Backoff(1.0, first=0.5, cap=0.5, clock=clock)
    clock.advance(0.9)
    assert wait.pause() == pytest.approx(0.1)  # cut to what is left
    assert wait.remaining == pytest.approx(0.1)
    clock.advance(0.1)
    assert wait.pause() is None
    clock.advance(5)
    assert wait.pause() is None and wait.remaining == 0.0


def test_a_negative_timeout_gives_up_at_once_and_a_cap_below_the_first_pause_is_raised() -> None:
    clock = FakeClock(1000.0)
    assert Backoff(-1, clock=clock).pause() is None
    wait = Backoff(10, first=0.2, cap=0.01, clock=clock)
    assert wait.cap == 0.2
    pause = wait.pause()
    assert pause is not None and 0.1 <= pause <= 0.2


def test_process_key_locks_exclude_threads_and_time_out() -> None:
    locks = ProcessKeyLocks()
    held = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with locks.hold("k", 1) as acquired:
            assert acquired
            held.set()
            done.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    started = time.monotonic()
    with locks.hold("k", 0.2) as acquired:
        assert acquired is False
    assert 0.15 < time.monotonic() - started < 0.8
    with locks.hold("k", 0) as acquired:
        assert acquired is False  # a caller that gave up released nothing of the holder's
    with locks.hold("other", 0) as acquired:
        assert acquired is True
    done.set()
    holder.join(5)
    with locks.hold("k", 0) as acquired:
        assert acquired is True
    assert len(locks) == 0


def test_a_task_waits_for_a_process_key_lock_on_its_loop_and_gives_up_at_its_timeout() -> None:
    locks = ProcessKeyLocks()

    async def main() -> tuple[bool, bool, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        async with locks.hold_async("k", 1) as first, locks.hold_async("k", 0.3) as second:
            pass
        async with locks.hold_async("k", 1) as third:
            pass
        ticker.cancel()
        return first and third, second, ticks

    both, second, ticks = asyncio.run(main())
    assert both is True and second is False
    assert ticks >= 10  # the loop kept running while the task waited
    assert len(locks) == 0


def test_a_task_waiting_on_a_key_a_thread_holds_takes_it_as_soon_as_the_thread_leaves() -> None:
    locks = ProcessKeyLocks()

    async def main() -> bool:
        async def waiter() -> bool:
            async with locks.hold_async("k", 10) as acquired:
                return acquired

        with locks.hold("k", 1) as held:
            assert held
            waiting = asyncio.ensure_future(waiter())
            await asyncio.sleep(0)  # it found the key held and polls it
            assert not waiting.done()
        return await waiting

    assert asyncio.run(main()) is True


def test_a_task_that_gave_up_on_a_key_frees_nothing_and_its_holder_hands_it_on() -> None:
    locks = ProcessKeyLocks()

    async def main() -> tuple[bool, bool, bool]:
        async def waiter() -> bool:
            async with locks.hold_async("k", 10) as acquired:
                return acquired

        async with locks.hold_async("k", 1) as first:
            assert first
            waiting = asyncio.ensure_future(waiter())
            await asyncio.sleep(0)  # it found the key held and polls it
            async with locks.hold_async("k", 0) as gave_up:
                pass
            async with locks.hold_async("k", 0) as still_held:
                pass
        return gave_up, still_held, await waiting

    gave_up, still_held, next_waiter = asyncio.run(main())
    assert gave_up is False
    assert still_held is False  # the one that gave up did not release the holder's lock
    assert next_waiter is True
    assert len(locks) == 0
