"""Coalesce concurrent calls into batched runs (leader/follower, no background thread).

LangGraph runs parallel branches in threads, each asking for one completion. ``Coalescer.submit``
collects the jobs that arrive within a short window (or until ``max_items`` items are pending) and
hands them to one ``run`` call; every caller gets its own results, and an exception raised by
``run`` reaches every caller of that batch. The first waiting caller acts as the leader and runs
the batch itself, so nothing is started at import time and no thread outlives its caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(eq=False)
class _Job(Generic[Item, Result]):
    items: list[Item]
    arrived: float
    done: bool = False
    results: list[Result] = field(default_factory=list)
    error: BaseException | None = None


class Coalescer(Generic[Item, Result]):
    """Merge concurrent ``submit`` calls into batched ``run`` calls.

    Args:
        run: Processes a flat list of items and returns one result per item, in order.
        window_s: How long the leader waits for more jobs after the oldest pending one arrived.
        max_items: Run as soon as this many items are pending (a larger single job runs alone).
    """

    def __init__(self, run: Callable[[list[Item]], list[Result]], *, window_s: float, max_items: int) -> None:
        self._run = run
        self._window_s = window_s
        self._max_items = max(1, max_items)
        self._cond = threading.Condition()
        self._pending: list[_Job[Item, Result]] = []
        self._leader_active = False
        self.runs = 0
        self.jobs = 0

    def submit(self, items: Sequence[Item]) -> list[Result]:
        """Process ``items`` (possibly together with other callers' items) and return their results.

        Raises:
            BaseException: whatever ``run`` raised for the batch this job was part of.
        """
        job: _Job[Item, Result] = _Job(items=list(items), arrived=time.monotonic())
        with self._cond:
            self.jobs += 1
            self._pending.append(job)
            self._cond.notify_all()
            while not job.done:
                if self._leader_active:
                    self._cond.wait()
                else:
                    self._lead()
        if job.error is not None:
            raise job.error
        return job.results

    def _pending_items(self) -> int:
        return sum(len(j.items) for j in self._pending)

    def _take_batch(self) -> list[_Job[Item, Result]]:
        """Pop pending jobs in arrival order while they fit in ``max_items`` (at least one job)."""
        batch = [self._pending.pop(0)]
        total = len(batch[0].items)
        while self._pending and total + len(self._pending[0].items) <= self._max_items:
            total += len(self._pending[0].items)
            batch.append(self._pending.pop(0))
        return batch

    def _lead(self) -> None:
        """Collect a batch, run it outside the lock, publish the results. Called with the lock held."""
        self._leader_active = True
        try:
            deadline = self._pending[0].arrived + self._window_s
            while self._pending_items() < self._max_items:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = self._take_batch()
            flat = [item for job in batch for item in job.items]
            self.runs += 1
            self._cond.release()
            try:
                results, error = self._call(flat)
            finally:
                self._cond.acquire()
            self._publish(batch, results, error)
        finally:
            self._leader_active = False
            self._cond.notify_all()

    def _call(self, flat: list[Item]) -> tuple[list[Result], BaseException | None]:
        try:
            results = self._run(flat)
        except BaseException as exc:  # handed to every caller of this batch
            return [], exc
        if len(results) != len(flat):
            return [], RuntimeError(f"batched run returned {len(results)} results for {len(flat)} items")
        return results, None

    @staticmethod
    def _publish(batch: list[_Job[Item, Result]], results: list[Result], error: BaseException | None) -> None:
        start = 0
        for job in batch:
            if error is None:
                job.results = results[start : start + len(job.items)]
                start += len(job.items)
            job.error = error
            job.done = True
