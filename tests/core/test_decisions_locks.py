"""KeyedLocks: one holder per key among the threads and tasks of a process, handed on in
order, with bounded waits and nothing left behind."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from watcher_auth import KeyedLocks
from watcher_auth._locks import TooManyWaiters


def test_one_holder_per_key_and_the_lock_goes_to_the_longest_waiter_first() -> None:
    locks = KeyedLocks()
    assert locks.acquire("k") is True
    order: list[int] = []

    def wait(n: int) -> None:
        assert locks.acquire("k", 5) is True
        order.append(n)
        locks.release("k")

    threads = []
    for n in range(3):
        threads.append(threading.Thread(target=wait, args=(n,)))
        threads[-1].start()
        time.sleep(0.05)
    assert order == []
    locks.release("k")
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2]
    assert len(locks) == 0


def test_two_keys_never_wait_for_each_other() -> None:
    locks = KeyedLocks()
    with locks.hold("a") as first:
        started = time.monotonic()
        with locks.hold("b", 1) as second:
            assert first and second
        assert time.monotonic() - started < 0.5
    assert len(locks) == 0


def test_a_wait_longer_than_its_timeout_gives_up_and_leaves_nothing_behind() -> None:
    locks = KeyedLocks()
    locks.acquire("k")
    started = time.monotonic()
    with locks.hold("k", 0.2) as acquired:
        assert acquired is False
    assert 0.15 < time.monotonic() - started < 2
    locks.release("k")
    assert len(locks) == 0
    assert locks.acquire("k", 0) is True  # free again at once
    locks.release("k")


def test_one_waiter_more_than_max_waiters_is_refused_at_once() -> None:
    locks = KeyedLocks(max_waiters=1)
    locks.acquire("k")
    waiter = threading.Thread(target=lambda: (locks.acquire("k", 5), locks.release("k")))
    waiter.start()
    time.sleep(0.1)
    with pytest.raises(TooManyWaiters):
        locks.acquire("k", 5)
    locks.release("k")
    waiter.join(5)
    assert len(locks) == 0
    unbounded = KeyedLocks()
    unbounded.acquire("k")
    others = [threading.Thread(target=lambda: (unbounded.acquire("k", 5), unbounded.release("k")))]
    others[0].start()
    time.sleep(0.05)
    assert unbounded.acquire("k", 0.05) is False  # waits (and times out) instead of refusing
    unbounded.release("k")
    others[0].join(5)


def test_a_task_waits_without_blocking_its_loop_and_gets_the_lock_from_a_thread() -> None:
    locks = KeyedLocks()
    locks.acquire("k")

    async def main() -> tuple[bool, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        threading.Timer(0.3, locks.release, args=("k",)).start()
        acquired = await locks.acquire_async("k", 5)
        ticker.cancel()
        locks.release("k")
        return acquired, ticks

    acquired, ticks = asyncio.run(main())
    assert acquired is True and ticks >= 5
    assert len(locks) == 0


def test_a_task_waiting_longer_than_its_timeout_gives_up_and_leaves_nothing_behind() -> None:
    locks = KeyedLocks()
    locks.acquire("k")

    async def main() -> bool:
        return await locks.acquire_async("k", 0.1)

    assert asyncio.run(main()) is False
    locks.release("k")
    assert len(locks) == 0


def test_a_cancelled_waiting_task_leaves_the_queue_and_the_next_waiter_gets_the_lock() -> None:
    locks = KeyedLocks()
    locks.acquire("k")

    async def main() -> bool:
        cancelled = asyncio.ensure_future(locks.acquire_async("k", 5))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(locks.acquire_async("k", 5))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        locks.release("k")
        got = await second
        locks.release("k")
        return got

    assert asyncio.run(main()) is True
    assert len(locks) == 0


def test_a_task_cancelled_just_as_the_lock_is_handed_to_it_passes_it_on() -> None:
    locks = KeyedLocks()
    locks.acquire("k")

    async def main() -> bool:
        first = asyncio.ensure_future(locks.acquire_async("k", 5))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(locks.acquire_async("k", 5))
        await asyncio.sleep(0.05)
        locks.release("k")  # handed to the first task, which is cancelled before it runs
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        got = await asyncio.wait_for(second, 2)
        locks.release("k")
        return got

    assert asyncio.run(main()) is True
    assert len(locks) == 0


def test_a_waiter_whose_event_loop_is_gone_is_skipped() -> None:
    locks = KeyedLocks()
    locks.acquire("k")
    loop = asyncio.new_event_loop()
    abandoned = loop.create_task(locks.acquire_async("k", 30))
    loop.run_until_complete(asyncio.sleep(0.05))  # the task is queued for the lock
    loop.close()  # ...and its loop is gone, with the task still waiting
    del abandoned
    got: list[bool] = []

    def wait() -> None:
        got.append(locks.acquire("k", 2))
        if got[-1]:
            locks.release("k")

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    started = time.monotonic()
    locks.release("k")
    waiter.join(5)
    assert got == [True] and time.monotonic() - started < 1
    assert len(locks) == 0


def test_reset_forgets_every_holder() -> None:
    locks = KeyedLocks()
    locks.acquire("k")
    locks.reset()
    assert len(locks) == 0
    assert locks.acquire("k", 0) is True


def test_a_zero_timeout_on_a_held_lock_gives_up_at_once() -> None:
    locks = KeyedLocks()
    locks.acquire("k")
    started = time.monotonic()
    assert locks.acquire("k", 0) is False

    async def main() -> bool:
        return await locks.acquire_async("k", 0)

    assert asyncio.run(main()) is False
    assert time.monotonic() - started < 1
    locks.release("k")
    assert len(locks) == 0


def test_a_task_handed_the_lock_just_as_its_wait_runs_out_keeps_it() -> None:
    locks = KeyedLocks()

    async def main() -> tuple[bool, bool]:
        locks.acquire("k")
        waiting = asyncio.ensure_future(locks.acquire_async("k", 0.05))
        await asyncio.sleep(0)  # the task is queued for the lock
        time.sleep(0.2)  # the loop is busy past the task's deadline...
        await asyncio.sleep(0)
        locks.release("k")  # ...when the holder hands the lock on, as the wait times out
        got = await waiting
        if got:
            locks.release("k")
        return got, locks.acquire("k", 0)

    got, free_again = asyncio.run(main())
    assert got is True  # it holds the lock: nobody else would ever release it
    assert free_again is True
    locks.release("k")
    assert len(locks) == 0
