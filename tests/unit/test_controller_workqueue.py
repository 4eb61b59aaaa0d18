"""The controller's work queue: one entry per key, the earliest due time wins, and a key is
never processed by two workers at once (added while in flight, it runs once more afterwards).

Each test runs its own event loop with `asyncio.run`. Waits are for events, with generous
deadlines, and the asserts are about order and counts, so a loaded machine only makes a test
slower, never wrong; the one timing assert is a lower bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from pkcs11_issuer.controller.workqueue import WorkQueue

DEADLINE = 10.0  # how long a test may wait for something that should happen at once
QUIET = 0.1  # how long to watch for something that should not happen


def run(test: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(test, DEADLINE * 2))


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.005)


class Workers:
    """`count` workers on `queue`, recording what they process; stopped on exit."""

    def __init__(
        self,
        queue: WorkQueue[str],
        count: int = 1,
        process: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.queue = queue
        self.count = count
        self.processed: list[str] = []
        self._process = process
        self._tasks: list[asyncio.Task[None]] = []

    async def _record(self, key: str) -> None:
        self.processed.append(key)
        if self._process is not None:
            await self._process(key)

    async def __aenter__(self) -> Workers:
        self._tasks = [
            asyncio.create_task(self.queue.worker(self._record)) for _ in range(self.count)
        ]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results


def test_a_key_added_many_times_is_processed_once() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        for _ in range(5):
            queue.add("a")
        queue.add("b")
        assert len(queue) == 2
        async with Workers(queue) as workers:
            await until(lambda: len(workers.processed) == 2, "both keys are processed")
            await asyncio.sleep(QUIET)
            assert sorted(workers.processed) == ["a", "b"]
            assert len(queue) == 0

    run(test())


def test_keys_due_together_are_processed_in_the_order_added() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        for key in "cab":
            queue.add(key)
        queue.add("c")  # already queued: keeps its place
        queue.add("d", delay=-5)  # a negative delay is "now", not "ahead of the others"
        async with Workers(queue) as workers:
            await until(lambda: len(workers.processed) == 4, "all keys are processed")
            assert workers.processed == ["c", "a", "b", "d"]

    run(test())


def test_a_delayed_key_waits_for_its_time_and_others_go_first() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        started = time.monotonic()
        queue.add("later", delay=0.2)
        queue.add("now")
        seen: dict[str, float] = {}

        async def stamp(key: str) -> None:
            seen[key] = time.monotonic()

        async with Workers(queue, process=stamp) as workers:
            await until(lambda: len(workers.processed) == 2, "both keys are processed")
            assert workers.processed == ["now", "later"]
            assert seen["later"] - started >= 0.2

    run(test())


def test_a_worker_waiting_for_a_delayed_key_takes_a_key_added_meanwhile() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("hour", delay=3600)
        async with Workers(queue) as workers:
            await asyncio.sleep(0.05)  # the worker is asleep until the hour is up
            queue.add("now")
            await until(lambda: workers.processed == ["now"], "the new key is processed")
            assert queue.pending("hour") is not None

    run(test())


def test_the_earliest_due_time_wins() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        assert queue.pending("a") is None
        queue.add("a", delay=100)
        first = queue.pending("a")
        assert first is not None and 99 < first <= 100
        queue.add("a", delay=10)
        sooner = queue.pending("a")
        assert sooner is not None and 9 < sooner <= 10
        queue.add("a", delay=50)  # later than what is queued: ignored
        still = queue.pending("a")
        assert still is not None and still <= sooner
        queue.add("a", delay=-5)  # a negative delay is "now"
        assert queue.pending("a") == 0.0
        assert len(queue) == 1
        async with Workers(queue) as workers:
            await until(lambda: workers.processed == ["a"], "the key is processed")
            # The superseded entries (100 s, 10 s) do not come back as further runs.
            await asyncio.sleep(QUIET)
            assert workers.processed == ["a"]
            assert queue.pending("a") is None
            assert len(queue) == 0

    run(test())


def test_a_superseded_due_time_does_not_run_the_key_again() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a", delay=0.15)
        queue.add("a")
        async with Workers(queue) as workers:
            await until(lambda: workers.processed == ["a"], "the key is processed")
            await asyncio.sleep(0.3)  # the 0.15 s entry is long due now
            assert workers.processed == ["a"]
            assert len(queue) == 0

    run(test())


def test_an_earlier_due_time_wakes_a_sleeping_worker() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a", delay=3600)
        async with Workers(queue) as workers:
            await asyncio.sleep(0.05)
            queue.add("a", delay=0.01)
            await until(lambda: workers.processed == ["a"], "the key is processed")

    run(test())


def test_a_key_added_while_in_flight_runs_again_afterwards_never_concurrently() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        release = asyncio.Event()
        active: dict[str, int] = {}
        most = 0
        finished: list[str] = []

        async def slow(key: str) -> None:
            nonlocal most
            active[key] = active.get(key, 0) + 1
            most = max(most, active[key])
            if len(finished) == 0:
                await release.wait()
            active[key] -= 1
            finished.append(key)

        queue.add("a")
        async with Workers(queue, count=3, process=slow) as workers:
            await until(lambda: workers.processed == ["a"], "the first run starts")
            assert queue.pending("a") is None  # in flight, nothing more asked for
            assert len(queue) == 1  # but counted
            queue.add("a")
            queue.add("a")  # several adds in flight are one more run
            queue.add("a", delay=3600)  # later than asked for already: changes nothing
            assert queue.pending("a") == 0.0
            assert len(queue) == 1
            await asyncio.sleep(QUIET)  # two idle workers, yet "a" is not taken twice
            assert workers.processed == ["a"]
            release.set()
            await until(lambda: len(finished) == 2, "the second run finishes")
            await asyncio.sleep(QUIET)
            assert workers.processed == ["a", "a"]
            assert most == 1
            assert len(queue) == 0

    run(test())


def test_a_key_re_added_with_a_delay_while_in_flight_keeps_that_delay() -> None:
    """What a reconcile does: it asks to look again in a while, from inside the pass."""

    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        finished: list[str] = []

        async def recheck(key: str) -> None:
            queue.add(key, delay=3600)
            assert queue.pending(key) is not None  # asked for, though still in flight
            finished.append(key)

        queue.add("a")
        async with Workers(queue, count=2, process=recheck) as workers:
            await until(lambda: finished == ["a"], "the first pass is over")
            await asyncio.sleep(QUIET)
            assert workers.processed == ["a"]  # not run again at once
            assert len(queue) == 1
            pending = queue.pending("a")
            assert pending is not None and 3500 < pending <= 3600
            # A change seen meanwhile (a watch event) brings it forward.
            queue.add("a")
            await until(lambda: workers.processed == ["a", "a"], "the key runs again")

    run(test())


def test_several_workers_process_different_keys_at_once() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()
        gate = asyncio.Event()
        running: set[str] = set()
        done: list[str] = []

        async def blocked(key: str) -> None:
            running.add(key)
            await gate.wait()
            running.discard(key)
            done.append(key)

        keys = [f"k{i}" for i in range(6)]
        for key in keys:
            queue.add(key)
        async with Workers(queue, count=3, process=blocked) as workers:
            await until(lambda: len(running) == 3, "three keys are in flight")
            await asyncio.sleep(QUIET)
            assert len(running) == 3  # a fourth waits for a free worker
            assert workers.processed == keys[:3]
            assert len(queue) == 6
            gate.set()
            await until(lambda: len(done) == 6, "every key is processed")
            assert sorted(workers.processed) == keys
            assert len(queue) == 0

    run(test())


def test_a_failing_or_cancelled_pass_releases_its_key() -> None:
    async def test() -> None:
        queue: WorkQueue[str] = WorkQueue()

        async def fail(key: str) -> None:
            queue.add(key)  # asked for again while in flight
            raise RuntimeError("boom")

        queue.add("a")
        with pytest.raises(RuntimeError, match="boom"):
            await queue.worker(fail)
        # Not stuck in flight: the add made during the pass is queued.
        assert queue.pending("a") == 0.0
        assert len(queue) == 1

        started = asyncio.Event()

        async def hang(key: str) -> None:
            started.set()
            await asyncio.Event().wait()

        worker = asyncio.create_task(queue.worker(hang))
        await started.wait()
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
        assert len(queue) == 0
        queue.add("a")
        assert queue.pending("a") == 0.0

    run(test())
