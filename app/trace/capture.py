"""Recording a run's trace while the graph streams.

The graph is driven with ``stream_mode=["tasks", "values"]``: LangGraph emits a "tasks" event when a node's task
starts (with its input: the state, or a ``DraftTask`` for each parallel ``draft`` branch) and one when it ends
(with its writes, or its error), and a "values" event with the full state after each superstep. Start time and
duration of a finished step come from the ``NodeTiming`` the node itself wrote (``graphs/nodes/_bind.py``), so the
trace and ``timings`` in the result agree. A failed node writes no timing: its step starts when the step before
it ended and ends when the error arrived.

:class:`TraceRecorder` consumes events from any driver; :func:`run_traced` (``stream``) and :func:`arun_traced`
(``astream``, for an asyncio server) drive the graph and save the trace, on success and on failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Overwrite

from app.trace.model import RunTrace, Step, new_run_id, validate_run_id
from app.trace.store import TraceStore
from app.trace.summary import summarize_reads, summarize_writes
from graphs.context import Context
from graphs.result import RunResult, to_result
from graphs.state import InputState, NodeTiming, State

STREAM_MODES: list[Any] = ["tasks", "values"]

EventCallback = Callable[[str, Any], None]
"""Receives each ``(mode, payload)`` stream item of a traced run (e.g. to report progress)."""

log = logging.getLogger(__name__)


class RunTimeoutError(TimeoutError):
    """A run did not finish within its time limit (:func:`arun_traced` ``timeout_s``)."""


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def one_line(exc: BaseException) -> str:
    """``ErrorType: message`` on one line."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@dataclass
class _Open:
    """A task that has started: its step index, node, input and when its start event arrived."""

    index: int
    node: str
    task_input: Any
    seen: float


@dataclass
class TraceRecorder:
    """Builds a :class:`RunTrace` from LangGraph stream events.

    Args:
        graph: Graph name (``compiled.name``).
        question: The question.
        context: The run's context.
        run_id: 32 hex digits; a fresh uuid4 when empty.
        thread_id: The thread, when the run belongs to one.
    """

    graph: str
    question: str
    context: Context
    run_id: str = ""
    thread_id: str | None = None
    started: float = field(default_factory=time.time)
    steps: list[Step] = field(default_factory=list)
    values: dict[str, Any] | None = None
    failed_node: str | None = None
    _open: dict[str, _Open] = field(default_factory=dict)
    _started_tasks: int = 0
    _clock: float = 0.0

    def __post_init__(self) -> None:
        self.run_id = validate_run_id(self.run_id) if self.run_id else new_run_id()
        self._clock = self.started

    def observe(self, mode: str, payload: Any) -> None:
        """Feed one ``(mode, payload)`` item of ``stream(..., stream_mode=STREAM_MODES)``."""
        now = time.time()
        if mode == "values" and isinstance(payload, Mapping):
            self.values = dict(payload)
        elif mode == "tasks" and isinstance(payload, Mapping):
            if "result" in payload or "error" in payload:
                self._finish_task(payload, now)
            else:
                self._start_task(payload, now)

    def _start_task(self, payload: Mapping[str, Any], now: float) -> None:
        node = str(payload.get("name", "?"))
        self._open[str(payload.get("id", ""))] = _Open(self._started_tasks, node, payload.get("input"), now)
        self._started_tasks += 1

    def _finish_task(self, payload: Mapping[str, Any], now: float) -> None:
        task = self._open.pop(str(payload.get("id", "")), None)
        if task is None:
            return
        error = payload.get("error")
        update = payload.get("result") or {}
        timing = _timing_of(update)
        if error is None and timing is not None:
            start, seconds = timing.start, timing.seconds
        else:
            start, seconds = min(self._clock, now), max(0.0, now - min(self._clock, now))
        round_ = timing.round if timing else _round_of(task.task_input)
        self._clock = max(self._clock, start + seconds)
        message = None
        if error is not None:
            message = one_line(error) if isinstance(error, BaseException) else " ".join(str(error).split())
            self.failed_node = self.failed_node or task.node
        self.steps.append(
            Step(
                index=task.index,
                node=task.node,
                round=round_,
                task_id=str(payload.get("id", "")),
                started_at=_utc(start),
                ended_at=_utc(start + seconds),
                seconds=round(seconds, 6),
                reads=summarize_reads(task.node, task.task_input),
                writes=summarize_writes(task.node, task.task_input, update) if error is None else {},
                error=message,
            )
        )

    def final_state(self) -> State | None:
        """The state after the last superstep (``None`` before the first "values" event)."""
        return State(**self.values) if self.values is not None else None

    def finish(self, *, result: RunResult | None = None, error: BaseException | None = None) -> RunTrace:
        """The trace so far: ``status`` 'ok' with ``result``, or 'error' naming the failing node.

        Tasks that started but never reported (e.g. parallel branches cut short by a sibling's failure) are
        recorded as steps with ``error`` 'did not finish'.
        """
        ended = time.time()
        for task_id, task in list(self._open.items()):
            start = min(self._clock, task.seen)
            self.steps.append(
                Step(
                    index=task.index,
                    node=task.node,
                    round=_round_of(task.task_input),
                    task_id=task_id,
                    started_at=_utc(start),
                    ended_at=_utc(ended),
                    seconds=round(ended - start, 6),
                    reads=summarize_reads(task.node, task.task_input),
                    error="did not finish",
                )
            )
            self.failed_node = self.failed_node or (task.node if error is not None else None)
        self._open.clear()
        self.steps.sort(key=lambda s: s.index)
        status_error = None
        if error is not None:
            where = self.failed_node or "run"
            status_error = f"{where}: {one_line(error)}"
        return RunTrace(
            run_id=self.run_id,
            thread_id=self.thread_id,
            graph=self.graph,
            question=self.question,
            context=self.context.model_dump(mode="json"),
            started_at=_utc(self.started),
            ended_at=_utc(ended),
            status="error" if error is not None else "ok",
            error=status_error,
            failed_node=self.failed_node if error is not None else None,
            steps=self.steps,
            result=result,
        )


def _timing_of(update: Mapping[str, Any]) -> NodeTiming | None:
    timings = update.get("timings")
    if isinstance(timings, Overwrite):
        timings = timings.value
    if isinstance(timings, list) and timings and isinstance(timings[-1], NodeTiming):
        return timings[-1]
    return None


def round_of(task_input: Any) -> int:
    """The retrieval round a task works on (from its input: the state or a ``DraftTask``)."""
    return _round_of(task_input)


def _round_of(task_input: Any) -> int:
    if isinstance(task_input, Mapping):
        return int(task_input.get("round", 0))
    return int(getattr(task_input, "round", 0))


def run_traced(
    compiled: CompiledStateGraph[State, Context, InputState, State],
    question: str,
    context: Context,
    *,
    traces: TraceStore | None,
    run_id: str = "",
    thread_id: str | None = None,
    config: RunnableConfig | None = None,
    input: InputState | None = None,
    on_event: EventCallback | None = None,
) -> RunTrace:
    """Run ``question`` through ``compiled``, recording (and, with ``traces``, saving) its trace.

    Args:
        compiled: The compiled graph.
        question: The question (already validated).
        context: The run's context.
        traces: Where to save the trace; ``None`` records without saving.
        run_id: The run id to use (a fresh one when empty).
        thread_id: Recorded with the trace and passed as ``configurable.thread_id`` (needs a checkpointer).
        config: Extra run config (merged with the thread id).
        input: The graph input (default ``InputState(question=question)``); a chat run passes its new
            ``messages`` here and the user's last message as ``question`` (what the trace records).
        on_event: Called with every ``(mode, payload)`` stream item after the recorder saw it (progress
            reporting); it must not block.

    Returns:
        The trace; ``trace.result`` is the run's result with ``run_id`` set.

    Raises:
        BaseException: Whatever the graph raised, after the partial trace (status 'error') was saved; a note
            ``run id: ... (specrag trace ...)`` is added to the exception.
    """
    recorder, run_config = _begin(compiled, question, context, run_id, thread_id, config)
    t0 = time.perf_counter()
    try:
        for mode, payload in compiled.stream(
            input or InputState(question=question), run_config, context=context, stream_mode=STREAM_MODES
        ):
            recorder.observe(mode, payload)
            if on_event is not None:
                on_event(mode, payload)
    except BaseException as exc:
        _failed(recorder, exc, traces)
        raise
    return _succeeded(recorder, compiled.name, time.perf_counter() - t0, traces)


async def arun_traced(
    compiled: CompiledStateGraph[State, Context, InputState, State],
    question: str,
    context: Context,
    *,
    traces: TraceStore | None,
    run_id: str = "",
    thread_id: str | None = None,
    config: RunnableConfig | None = None,
    input: InputState | None = None,
    on_event: EventCallback | None = None,
    timeout_s: float | None = None,
) -> RunTrace:
    """:func:`run_traced` for asyncio callers (``astream``); same arguments, result and errors.

    With ``timeout_s``, a run still going after that many seconds is cancelled and raises
    :class:`RunTimeoutError`; its trace (status 'error') names the node that was running. A node blocked in a
    synchronous call keeps its worker thread until the call returns (a thread cannot be killed).
    """
    recorder, run_config = _begin(compiled, question, context, run_id, thread_id, config)
    t0 = time.perf_counter()
    try:
        async with _deadline(timeout_s):
            async for mode, payload in compiled.astream(
                input or InputState(question=question), run_config, context=context, stream_mode=STREAM_MODES
            ):
                recorder.observe(mode, payload)
                if on_event is not None:
                    on_event(mode, payload)
    except BaseException as exc:
        _failed(recorder, exc, traces)
        raise
    return _succeeded(recorder, compiled.name, time.perf_counter() - t0, traces)


@asynccontextmanager
async def _deadline(timeout_s: float | None) -> AsyncIterator[None]:
    """Cancel the body after ``timeout_s`` seconds and raise :class:`RunTimeoutError` (no limit when ``None``)."""
    if timeout_s is None:
        yield
        return
    limit = asyncio.timeout(timeout_s)
    try:
        async with limit:
            yield
    except TimeoutError:
        if limit.expired():
            raise RunTimeoutError(f"the run did not finish within {timeout_s:g} s") from None
        raise


def _begin(
    compiled: CompiledStateGraph[State, Context, InputState, State],
    question: str,
    context: Context,
    run_id: str,
    thread_id: str | None,
    config: RunnableConfig | None,
) -> tuple[TraceRecorder, RunnableConfig]:
    recorder = TraceRecorder(
        graph=compiled.name, question=question, context=context, run_id=run_id, thread_id=thread_id
    )
    run_config: RunnableConfig = {**(config or {})}
    # This driver records the trace itself: the node wrapper's live recording (app.trace.live) stays off.
    run_config["configurable"] = {**run_config.get("configurable", {}), "specrag_traced": True}
    if thread_id is not None:
        run_config["configurable"]["thread_id"] = thread_id
    return recorder, run_config


def _failed(recorder: TraceRecorder, exc: BaseException, traces: TraceStore | None) -> None:
    trace = recorder.finish(error=exc)
    if _save(traces, trace):
        exc.add_note(f"run id: {trace.run_id} (specrag trace {trace.run_id})")


def _succeeded(recorder: TraceRecorder, graph: str, seconds: float, traces: TraceStore | None) -> RunTrace:
    state = recorder.final_state()
    if state is None:
        error = RuntimeError(f"graph {graph} produced no state")
        _failed(recorder, error, traces)
        raise error
    result = to_result(state, graph=graph, seconds=seconds)
    result.run_id = recorder.run_id
    trace = recorder.finish(result=result)
    if not _save(traces, trace):
        result.run_id = None
    return trace


def _save(traces: TraceStore | None, trace: RunTrace) -> bool:
    """Save ``trace``; a failure to save is logged, never raised (it must not hide the run's own outcome)."""
    if traces is None:
        return False
    try:
        traces.save(trace)
    except Exception as exc:
        log.warning("could not save the trace of run %s: %s", trace.run_id, one_line(exc))
        return False
    return True
