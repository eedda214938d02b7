"""Traces of runs that no driver records: LangGraph Studio / ``langgraph dev`` call the graph directly.

The node wrapper (``graphs/nodes/_bind.py``) reports each node's start and end here when the run's config does
not carry :data:`TRACED_KEY` (set by :func:`app.trace.capture.run_traced` for the runs it records itself). The
events feed the same :class:`~app.trace.capture.TraceRecorder` as a streamed run, keyed by thread (else run id),
so a run interrupted before ``verify`` and resumed is one trace. The trace is saved when ``answer`` finishes or a
node fails.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from langchain_core.runnables import RunnableConfig

from app.trace.capture import TraceRecorder, _save
from app.trace.store import TraceStore
from graphs.context import Context
from graphs.result import to_result
from graphs.state import State

TRACED_KEY = "specrag_traced"
"""``configurable`` key marking a run whose trace a driver already records."""


def run_key(config: RunnableConfig | None) -> tuple[str, str, str | None] | None:
    """(key, run id, thread id) of a run from its config; None when the run is traced by its driver or has no id."""
    if not config:
        return None
    configurable = config.get("configurable") or {}
    if configurable.get(TRACED_KEY):
        return None
    metadata = config.get("metadata") or {}
    thread = configurable.get("thread_id") or metadata.get("thread_id")
    run = metadata.get("run_id") or config.get("run_id")
    if not thread and not run:
        return None
    run_hex = uuid.UUID(str(run)).hex if run else uuid.uuid4().hex
    return str(thread or run), run_hex, str(thread) if thread else None


class LiveTraces:
    """Builds and saves traces from node events (thread-safe: parallel draft branches report concurrently)."""

    def __init__(self, store: TraceStore, graph: str = "graph") -> None:
        self._store = store
        self._graph = graph
        self._runs: dict[str, TraceRecorder] = {}
        self._lock = threading.Lock()

    def started(
        self, config: RunnableConfig | None, node: str, task_id: str, task_input: Any, context: Context
    ) -> None:
        """A node task began."""
        key = run_key(config)
        if key is None:
            return
        abandoned = None
        with self._lock:
            recorder = self._runs.get(key[0])
            if recorder is not None and _new_question(recorder, node, task_input):
                abandoned = self._runs.pop(key[0])
                recorder = None
            if recorder is None:
                graph = str((config or {}).get("metadata", {}).get("graph_id") or self._graph)
                question = str(getattr(task_input, "question", "") or "")
                recorder = TraceRecorder(
                    graph=graph, question=question, context=context, run_id=key[1], thread_id=key[2]
                )
                self._runs[key[0]] = recorder
            recorder.observe("tasks", {"id": task_id, "name": node, "input": task_input})
        if abandoned is not None:
            _save(self._store, abandoned.finish(error=RuntimeError("interrupted and not resumed")))

    def finished(
        self,
        config: RunnableConfig | None,
        node: str,
        task_id: str,
        task_input: Any,
        update: Mapping[str, Any] | None,
        error: BaseException | None = None,
    ) -> None:
        """A node task ended with ``update`` (or ``error``); the trace is saved after ``answer`` or on failure."""
        key = run_key(config)
        if key is None:
            return
        with self._lock:
            recorder = self._runs.get(key[0])
            if recorder is None:
                return
            payload: dict[str, Any] = {"id": task_id, "name": node}
            payload.update({"error": error} if error is not None else {"result": dict(update or {})})
            recorder.observe("tasks", payload)
            if error is None and node != "answer":
                return
            del self._runs[key[0]]
        if error is not None:
            _save(self._store, recorder.finish(error=error))
            return
        final = _after(task_input, update or {}) if isinstance(task_input, State) else None
        result = to_result(final, graph=recorder.graph, seconds=time.time() - recorder.started) if final else None
        if result is not None:
            result.run_id = recorder.run_id
        _save(self._store, recorder.finish(result=result))


def _after(state: State, update: Mapping[str, Any]) -> State:
    """The state after the last node's update (the appending channels appended, the others replaced)."""
    values = {f.name: getattr(state, f.name) for f in fields(state)}
    for name, value in update.items():
        values[name] = [*values[name], *value] if name in ("timings", "messages") else value
    return State(**values)


def _new_question(recorder: TraceRecorder, node: str, task_input: Any) -> bool:
    """Whether a node start begins a new run on a thread whose previous run was interrupted and never resumed."""
    if node not in ("condense", "retrieve") or int(getattr(task_input, "round", 0)) != 0:
        return False
    return any(step.node != "condense" for step in recorder.steps)
