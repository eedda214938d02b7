"""The call coalescer (no model)."""

from __future__ import annotations

import threading

import pytest

from app.llm.batching import Coalescer


def _square_all(batches: list[list[int]]) -> Coalescer[int, int]:
    def run(items: list[int]) -> list[int]:
        batches.append(list(items))
        if any(i < 0 for i in items):
            raise ValueError("negative")
        return [i * i for i in items]

    return Coalescer(run, window_s=0.2, max_items=4)


def _submit_concurrently(co: Coalescer[int, int], jobs: list[list[int]]) -> list[object]:
    out: list[object] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def worker(k: int) -> None:
        barrier.wait()
        try:
            out[k] = co.submit(jobs[k])
        except ValueError as exc:
            out[k] = exc

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_single_call() -> None:
    batches: list[list[int]] = []
    assert _square_all(batches).submit([1, 2, 3]) == [1, 4, 9]
    assert batches == [[1, 2, 3]]


def test_concurrent_calls_are_merged_and_results_routed() -> None:
    batches: list[list[int]] = []
    co = _square_all(batches)
    out = _submit_concurrently(co, [[k] for k in range(1, 9)])
    assert out == [[k * k] for k in range(1, 9)]
    assert co.runs == len(batches) < 8
    assert all(len(b) <= 4 for b in batches)


def test_error_reaches_the_callers_of_its_batch() -> None:
    batches: list[list[int]] = []
    co = _square_all(batches)
    out = _submit_concurrently(co, [[-1], [2]])
    assert isinstance(out[0], ValueError)
    assert len(batches) in (1, 2)
    if len(batches) == 2:  # not merged: the good call succeeds on its own
        assert out[1] == [4]
    assert co.submit([3]) == [9]


def test_large_job_runs_alone() -> None:
    batches: list[list[int]] = []
    co = _square_all(batches)
    assert co.submit(list(range(10))) == [i * i for i in range(10)]
    assert batches == [list(range(10))]


class _RecordingCondition(threading.Condition):
    """A condition variable that records every ``wait`` (its timeout): the coalescer's only way to wait."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return super().wait(timeout)


def _recording(co: Coalescer[int, int]) -> _RecordingCondition:
    cond = _RecordingCondition()
    co._cond = cond  # the coalescer waits for its window on this condition and nowhere else
    return cond


@pytest.mark.timeout(10)  # a regression that waits the 60 s window fails here, not at the suite's 1,800 s limit
@pytest.mark.parametrize("n", [1, 3])
def test_no_window_wait_when_full(n: int) -> None:
    co: Coalescer[int, int] = Coalescer(lambda items: items, window_s=60.0, max_items=n)
    cond = _recording(co)
    assert co.submit(list(range(n))) == list(range(n))
    assert cond.waits == []  # a full batch runs at once: the leader never waited for its window


def test_a_batch_that_is_not_full_waits_for_its_window() -> None:
    """The counterpart: the recording condition sees the window wait when the batch is not full."""
    co: Coalescer[int, int] = Coalescer(lambda items: items, window_s=0.05, max_items=4)
    cond = _recording(co)
    assert co.submit([1, 2]) == [1, 2]
    assert cond.waits and all(t is not None and 0 < t <= 0.05 for t in cond.waits)
