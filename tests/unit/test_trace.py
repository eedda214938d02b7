"""Run traces with scripted fakes: steps in order with their reads and writes, retries, failures, persistence."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.ask import run
from app.llm.protocol import ScoreRequest, ScoreResult
from app.trace.model import InvalidRunIdError, RunTrace, TraceNotFoundError, new_run_id, validate_run_id
from app.trace.store import SQLiteTraceStore
from graphs.backends import StaticBackends
from graphs.context import Context
from graphs.result import RunResult
from tests.fakes import FakeLLM
from tests.unit.test_graph import make, paris_judge

QUESTION = "What is the capital of France?"


@pytest.fixture
def traces(tmp_path: Path) -> SQLiteTraceStore:
    return SQLiteTraceStore(tmp_path / "traces.sqlite")


def traced(
    backends: StaticBackends, traces: SQLiteTraceStore, context: Context, **kwargs: str
) -> tuple[RunResult, RunTrace]:
    result = run(QUESTION, context, traces=traces, provider=lambda ctx: backends, **kwargs)  # type: ignore[arg-type]
    assert result.run_id is not None
    return result, traces.get(result.run_id)


def test_trace_has_every_step_in_order_with_reads_and_writes(traces: SQLiteTraceStore) -> None:
    backends, _, _ = make(paris_judge)
    result, trace = traced(backends, traces, Context(n_drafts=5, seed=3))
    assert trace.status == "ok" and trace.error is None and trace.graph == "speculative_rag"
    assert trace.question == QUESTION and trace.context["seed"] == 3
    assert [s.node for s in trace.steps] == ["retrieve", "partition", *["draft"] * 5, "verify", "reflect", "answer"]
    assert [s.index for s in trace.steps] == list(range(10))
    for s in trace.steps:
        assert trace.started_at <= s.started_at <= s.ended_at <= trace.ended_at
        assert s.seconds >= 0 and s.error is None and s.round == 0
    retrieve, partition, *drafts, verify, reflect, answer = trace.steps
    assert retrieve.reads["query"] == QUESTION
    passages = retrieve.writes["passages"]
    assert len(passages) == 10 and all({"id", "title", "score", "round"} <= set(p) for p in passages)
    ids = [p["id"] for p in passages]
    assert partition.reads["passage_ids"] == ids
    assert list(partition.writes["clusters"]) == ids
    assert sorted(set(partition.writes["clusters"].values())) == [0, 1]
    subsets = partition.writes["subsets"]
    assert subsets == result.rounds[0].subsets
    # each draft step carries its subset and the draft it produced
    for i, step in enumerate(drafts):
        assert step.reads == {"subset": i, "passage_ids": subsets[i]}
        d = step.writes["draft"]
        assert d["subset"] == i and d["passage_ids"] == subsets[i] and d["answer"] and d["rationale"]
        assert d["tokens"] > 0 and d["logprob"] < 0
    # the verify step holds every draft's scores; they match the result
    assert verify.reads["draft_indices"] == [0, 1, 2, 3, 4]
    scores = {s["index"]: s for s in verify.writes["scores"]}
    assert sorted(scores) == [0, 1, 2, 3, 4]
    for i, out in enumerate(result.drafts):
        assert out.scores is not None
        assert scores[i]["total"] == pytest.approx(out.scores.total)
        assert scores[i]["p_yes"] == pytest.approx(out.scores.p_yes)
        assert scores[i]["self_consistency"] == pytest.approx(out.scores.self_consistency)
    assert [r["index"] for r in reflect.reads["ranking_input"]] == [0, 1, 2, 3, 4]
    assert reflect.writes["decision"] == "accept" and reflect.writes["reason"]
    assert reflect.writes["ranking"] == result.rounds[0].ranking
    assert answer.writes["chosen"] == result.chosen and answer.writes["answer"] == result.answer
    # the stored result is the returned one, run id included
    assert trace.result == result and trace.run_id == result.run_id


def test_trace_holds_no_embeddings(traces: SQLiteTraceStore) -> None:
    backends, _, _ = make(paris_judge)
    result, _ = traced(backends, traces, Context(n_drafts=5, seed=3))
    with sqlite3.connect(traces.path) as conn:
        (doc,) = conn.execute("SELECT doc FROM traces WHERE run_id = ?", (result.run_id,)).fetchone()
    assert '"vector"' not in doc
    assert json.loads(doc)["run_id"] == result.run_id


def test_retry_records_two_rounds_and_the_rewritten_query(traces: SQLiteTraceStore) -> None:
    backends, _, _ = make(lambda c: (-2.0, 0.5), rewrite="Paris France capital")
    _, trace = traced(
        backends, traces, Context(n_drafts=5, max_rounds=2, top_n=5, retry_on="low_confidence", fallback=False)
    )
    nodes = [(s.node, s.round) for s in trace.steps]
    m = [len(s.writes["subsets"]) for s in trace.steps if s.node == "partition"]
    assert m[0] == 5 and m[1] >= 1

    def one_round(r: int) -> list[tuple[str, int]]:
        return [(n, r) for n in ["retrieve", "partition", *["draft"] * m[r], "verify", "reflect"]]

    assert nodes == one_round(0) + one_round(1) + [("answer", 1)]
    reflects = [s for s in trace.steps if s.node == "reflect"]
    assert [r.writes["decision"] for r in reflects] == ["retry", "accept"]
    assert reflects[0].writes["rewritten_query"] == "Paris France capital"
    assert reflects[0].writes["query"] == "Paris France capital" and reflects[0].writes["round"] == 1
    second = [s for s in trace.steps if s.node == "retrieve"][1]
    assert second.reads["query"] == "Paris France capital"
    first_ids = [p["id"] for p in trace.steps[0].writes["passages"]]
    assert second.reads["excluded_ids"] == first_ids
    assert not set(first_ids) & {p["id"] for p in second.writes["passages"]}
    verify2 = [s for s in trace.steps if s.node == "verify"][1]
    second_round = list(range(5, 5 + m[1]))
    assert verify2.reads["draft_indices"] == second_round
    assert sorted(s["index"] for s in verify2.writes["scores"]) == second_round


class _FailingVerifier(FakeLLM):
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        raise RuntimeError("verifier backend down\nsecond line")


def failing_verifier_backends() -> StaticBackends:
    """The fake backends of ``make(paris_judge)`` with a verifier whose scoring raises (a run fails in verify)."""
    backends, _, _ = make(paris_judge)
    return StaticBackends(
        drafter=backends.drafter,
        verifier=_FailingVerifier(reply=lambda p: "x"),
        embedder=backends.embedder,
        store=backends.store,
    )


def test_a_run_that_fails_in_verify_saves_its_partial_trace(traces: SQLiteTraceStore) -> None:
    broken = failing_verifier_backends()
    run_id = new_run_id()
    with pytest.raises(RuntimeError, match="verifier backend down") as info:
        run(QUESTION, Context(n_drafts=5, seed=3), traces=traces, run_id=run_id, provider=lambda ctx: broken)
    assert f"run id: {run_id} (specrag trace {run_id})" in info.value.__notes__
    trace = traces.get(run_id)
    assert trace.status == "error" and trace.result is None
    assert trace.failed_node == "verify"
    assert trace.error == "verify: RuntimeError: verifier backend down second line"
    assert [s.node for s in trace.steps] == ["retrieve", "partition", *["draft"] * 5, "verify"]
    failed = trace.steps[-1]
    assert failed.error == "RuntimeError: verifier backend down second line" and failed.writes == {}
    assert failed.reads["draft_indices"] == [0, 1, 2, 3, 4]
    assert failed.started_at >= trace.steps[-2].started_at and failed.started_at <= failed.ended_at
    assert all(s.error is None for s in trace.steps[:-1])


def test_standard_graph_is_traced_too(traces: SQLiteTraceStore) -> None:
    backends, _, _ = make(paris_judge)
    result, trace = traced(backends, traces, Context(top_n=4), graph="standard")
    assert trace.graph == "standard_rag" == result.graph
    assert [s.node for s in trace.steps] == ["retrieve", "answer"]
    assert len(trace.steps[1].reads["passage_ids"]) == 4 and trace.steps[1].writes["answer"] == result.answer


def test_traces_survive_reopening_and_list_by_thread(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "traces.sqlite"
    backends, _, _ = make(paris_judge)
    first = SQLiteTraceStore(path)
    a, _ = traced(backends, first, Context(n_drafts=5, seed=3), thread_id="t-1")
    b, _ = traced(backends, first, Context(n_drafts=5, seed=4), thread_id="t-2")
    c, _ = traced(backends, first, Context(n_drafts=5, seed=5))
    reopened = SQLiteTraceStore(path)
    assert reopened.get(a.run_id or "").result == a
    assert [t.run_id for t in reopened.list()] == [c.run_id, b.run_id, a.run_id]
    assert [t.run_id for t in reopened.list(thread_id="t-1")] == [a.run_id]
    assert [t.run_id for t in reopened.list(limit=1)] == [c.run_id]
    listed = reopened.list(thread_id="t-2")[0]
    assert listed.status == "ok" and listed.answer == b.answer and listed.question == QUESTION
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_saving_again_replaces_the_run(traces: SQLiteTraceStore) -> None:
    now = datetime.now(UTC)
    trace = RunTrace(
        run_id=new_run_id(),
        graph="g",
        question="q",
        context={},
        started_at=now,
        ended_at=now + timedelta(seconds=1),
        status="error",
    )
    traces.save(trace)
    traces.save(trace.model_copy(update={"status": "ok"}))
    assert traces.get(trace.run_id).status == "ok" and len(traces.list()) == 1


@pytest.mark.parametrize("bad", ["../../etc/passwd", "", "x" * 33, "a" * 31, "A" * 32, "g" * 32, "a" * 32 + "\n"])
def test_malformed_run_ids_are_rejected(traces: SQLiteTraceStore, bad: str) -> None:
    with pytest.raises(InvalidRunIdError, match="invalid run id"):
        traces.get(bad)
    with pytest.raises(InvalidRunIdError):
        validate_run_id(bad)


def test_unknown_run_id_is_not_found(traces: SQLiteTraceStore) -> None:
    with pytest.raises(TraceNotFoundError, match="no trace for run"):
        traces.get(new_run_id())


def test_run_ids_are_uuid4_hex() -> None:
    ids: Callable[[], str] = new_run_id
    assert len({ids() for _ in range(100)}) == 100
    assert all(validate_run_id(ids()) for _ in range(10))


def test_async_driver_records_the_same_steps(traces: SQLiteTraceStore) -> None:
    import asyncio

    from app.trace.capture import arun_traced
    from graphs import speculative_rag

    backends, _, _ = make(paris_judge)
    compiled = speculative_rag.build(lambda ctx: backends).compile(name="speculative_rag")
    trace = asyncio.run(arun_traced(compiled, QUESTION, Context(n_drafts=5, seed=3), traces=traces, thread_id="t"))
    assert [s.node for s in trace.steps] == ["retrieve", "partition", *["draft"] * 5, "verify", "reflect", "answer"]
    assert traces.get(trace.run_id).result == trace.result and trace.thread_id == "t"
