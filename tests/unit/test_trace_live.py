"""Runs that no driver traces (LangGraph Studio / langgraph dev) are recorded by the node wrapper."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver

from app.ask import run
from app.trace.live import LiveTraces
from app.trace.store import SQLiteTraceStore
from graphs import speculative_rag
from graphs.backends import StaticBackends
from graphs.context import Context
from graphs.state import InputState
from tests.unit.test_graph import make, paris_judge
from tests.unit.test_trace import failing_verifier_backends

QUESTION = "What is the capital of France?"


@dataclass(frozen=True)
class Observed(StaticBackends):
    """Fake backends that, like the configured ones, offer a live trace observer."""

    observer: LiveTraces | None = None


def observed(store: SQLiteTraceStore, backends: StaticBackends | None = None) -> Observed:
    b = backends or make(paris_judge)[0]
    return Observed(b.drafter, b.verifier, b.embedder, b.store, observer=LiveTraces(store, graph="speculative_rag"))


def test_a_studio_run_interrupted_and_resumed_leaves_one_complete_trace(tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "traces.sqlite")
    backends = observed(store)
    graph = speculative_rag.build(lambda ctx: backends).compile(
        checkpointer=InMemorySaver(), interrupt_before=["verify"]
    )
    config: RunnableConfig = {"configurable": {"thread_id": "studio-thread"}}
    graph.invoke(InputState(question=QUESTION), config, context=Context(n_drafts=5))
    assert store.list() == []  # interrupted before verify: not finished yet
    graph.invoke(None, config, context=Context(n_drafts=5))  # resume, as Studio's "continue"
    (summary,) = store.list()
    trace = store.get(summary.run_id)
    assert trace.status == "ok" and trace.thread_id == "studio-thread" and trace.question == QUESTION
    nodes = [s.node for s in trace.steps]
    assert nodes[:2] == ["retrieve", "partition"] and nodes.count("draft") == 5
    assert nodes[-3:] == ["verify", "reflect", "answer"]
    assert trace.result is not None and len(trace.result.drafts) == 5
    assert all(d.scores is not None for d in trace.result.drafts)
    totals = [d.scores.total for d in trace.result.drafts if d.scores and d.scores.total is not None]
    assert len(totals) == 5 and trace.result.chosen == totals.index(max(totals))


def test_a_failing_studio_run_saves_its_partial_trace(tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "traces.sqlite")
    backends = observed(store, failing_verifier_backends())
    graph = speculative_rag.build(lambda ctx: backends).compile(checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "t-fail"}}
    with pytest.raises(RuntimeError):
        graph.invoke(InputState(question=QUESTION), config, context=Context(n_drafts=5))
    (summary,) = store.list()
    trace = store.get(summary.run_id)
    assert trace.status == "error" and trace.failed_node == "verify"


def test_runs_traced_by_their_driver_are_not_recorded_twice(tmp_path: Path) -> None:
    live = SQLiteTraceStore(tmp_path / "live.sqlite")
    captured = SQLiteTraceStore(tmp_path / "captured.sqlite")
    backends = observed(live)
    result = run(QUESTION, Context(n_drafts=5), traces=captured, provider=lambda ctx: backends)
    assert [s.run_id for s in captured.list()] == [result.run_id]
    assert live.list() == []


def test_an_abandoned_interrupted_run_is_saved_apart_from_the_next_question(tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "traces.sqlite")
    backends = observed(store)
    graph = speculative_rag.build(lambda ctx: backends).compile(
        checkpointer=InMemorySaver(), interrupt_before=["verify"]
    )
    config: RunnableConfig = {"configurable": {"thread_id": "t2"}}
    graph.invoke(InputState(question=QUESTION), config, context=Context(n_drafts=5))  # interrupted, never resumed
    graph.invoke(InputState(question="Which river flows through Paris?"), config, context=Context(n_drafts=5))
    traces = [store.get(s.run_id) for s in store.list()]
    assert [t.status for t in traces] == ["error"]
    assert traces[0].question == QUESTION and traces[0].error and "not resumed" in traces[0].error
