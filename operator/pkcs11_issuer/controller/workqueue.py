"""A keyed work queue with delays, as controller-runtime has it: a key is queued once however
often it is added, the earliest due time wins, and one key is never processed by two workers
at once (added while in flight, it runs again afterwards)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()
        self._in_flight: set[K] = set()
        self._again: dict[K, float] = {}
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due) + len(self._in_flight)

    def add(self, key: K, delay: float = 0.0) -> None:
        due = time.monotonic() + max(delay, 0.0)
        if key in self._in_flight:
            self._again[key] = min(due, self._again.get(key, due))
            return
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._order), key))
        self._changed.set()

    def pending(self, key: K) -> float | None:
        """Seconds until `key` is due, or None when it is not queued."""
        due = self._due.get(key, self._again.get(key))
        return None if due is None else max(due - time.monotonic(), 0.0)

    async def _take(self) -> K:
        while True:
            while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                heapq.heappop(self._heap)  # superseded by an earlier due time
            wait = self._heap[0][0] - time.monotonic() if self._heap else None
            if wait is not None and wait <= 0:
                _due, _order, key = heapq.heappop(self._heap)
                del self._due[key]
                self._in_flight.add(key)
                return key
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)

    def _done(self, key: K) -> None:
        self._in_flight.discard(key)
        again = self._again.pop(key, None)
        if again is not None:
            self.add(key, again - time.monotonic())

    async def worker(self, process: Callable[[K], Awaitable[None]]) -> None:
        """Process keys forever; `process` handles its own errors and re-queues."""
        while True:
            key = await self._take()
            try:
                await process(key)
            finally:
                self._done(key)
