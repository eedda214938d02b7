"""OpenTelemetry export (app/trace/otel.py) against the SDK's in-memory exporter: one trace per run whose id is
the run id, a span per node with the node's own times, GenAI attributes on drafts, the drafts' scores as events;
content can be left out; an unreachable collector never fails a run. (A real OTLP receiver: tests/integration/
test_otel_export.py.)"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from app.ask import run
from app.settings import OtelSettings, Settings, TraceSettings
from app.trace.model import RunTrace
from app.trace.otel import ExportingTraceStore, OtlpExporter
from app.trace.store import SQLiteTraceStore, open_trace_store
from graphs.context import Context
from tests.reliability.harness import free_port
from tests.unit.test_graph import make, paris_judge

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def _traced(store: ExportingTraceStore) -> RunTrace:
    backends, _, _ = make(paris_judge)
    result = run(
        "What is the capital of France?", Context(n_drafts=5, seed=3), traces=store, provider=lambda ctx: backends
    )
    assert result.run_id is not None
    return store.get(result.run_id)


def _a(item: Any) -> dict[str, Any]:
    """A span's, event's or resource's attributes (never None)."""
    return dict(item.attributes or {})


@pytest.fixture
def memory() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def test_a_run_is_one_trace_with_a_span_per_node_and_the_drafts_scores(
    tmp_path: Path, memory: InMemorySpanExporter
) -> None:
    exporter = OtlpExporter(OtelSettings(enabled=True, project="unit"), span_exporter=memory)
    store = ExportingTraceStore(SQLiteTraceStore(tmp_path / "t.sqlite"), exporter)
    trace = _traced(store)
    assert exporter.flush(5)
    spans = memory.get_finished_spans()
    assert len(spans) == len(trace.steps) + 1
    assert {s.context.trace_id for s in spans} == {int(trace.run_id, 16)}
    root = next(s for s in spans if s.parent is None)
    assert root.name == "invoke_agent speculative_rag"
    assert _a(root)["gen_ai.operation.name"] == "invoke_agent"
    assert _a(root)["specrag.answer"] == trace.result.answer if trace.result else False
    assert _a(root.resource)["service.name"] == "specrag"
    assert _a(root.resource)["openinference.project.name"] == "unit"
    children = sorted((s for s in spans if s.parent is not None), key=lambda s: _a(s)["specrag.step"])
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in children)
    assert [_a(s)["specrag.node"] for s in children] == [step.node for step in trace.steps]
    for span, step in zip(children, trace.steps, strict=True):
        assert span.start_time == int(step.started_at.timestamp() * 1e9)
        assert span.end_time == int(step.ended_at.timestamp() * 1e9)
    drafts = [s for s in children if _a(s)["specrag.node"] == "draft"]
    assert len(drafts) == 5
    for span in drafts:
        assert span.name == "chat fake"
        assert _a(span)["gen_ai.request.model"] == "fake"
        assert _a(span)["gen_ai.usage.output_tokens"] > 0
        assert _a(span)["gen_ai.usage.input_tokens"] > 0
        assert _a(span)["specrag.draft.outcome"] == "answer"
    verify = next(s for s in children if _a(s)["specrag.node"] == "verify")
    events = [e for e in verify.events if e.name == "specrag.draft.scores"]
    expected = trace.drafts()
    assert len(events) == 5
    for event, draft in zip(events, expected, strict=True):
        assert _a(event)["specrag.draft.subset"] == draft["subset"]
        assert _a(event)["specrag.draft.total"] == pytest.approx(draft["scores"]["total"])
        assert _a(event)["specrag.draft.rho_sc"] == pytest.approx(draft["scores"]["self_consistency"])
        assert _a(event)["specrag.draft.p_yes"] == pytest.approx(draft["scores"]["p_yes"])
    assert _a(root)["specrag.draft.4.total"] == pytest.approx(expected[4]["scores"]["total"])
    assert trace.result is not None and trace.result.confidence is not None
    assert _a(root)["specrag.decision"] == trace.result.decision
    assert _a(root)["specrag.confidence"] == pytest.approx(trace.result.confidence.value)
    exporter.shutdown()


def test_content_can_be_left_out(tmp_path: Path, memory: InMemorySpanExporter) -> None:
    exporter = OtlpExporter(OtelSettings(enabled=True, content=False), span_exporter=memory)
    trace = _traced(ExportingTraceStore(SQLiteTraceStore(tmp_path / "t.sqlite"), exporter))
    exporter.flush(5)
    text = trace.question
    for span in memory.get_finished_spans():
        assert all(text not in str(v) for v in _a(span).values())
        assert "specrag.draft.answer" not in _a(span) and "specrag.answer" not in _a(span)
    assert any("specrag.draft.total" in _a(e) for s in memory.get_finished_spans() for e in s.events)
    exporter.shutdown()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_an_unreachable_collector_never_fails_or_blocks_a_run(tmp_path: Path, protocol: str) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/v1/traces" if protocol == "http/protobuf" else f"127.0.0.1:{port}"
    settings = Settings(
        traces=TraceSettings(
            path=tmp_path / "t.sqlite",
            otel=OtelSettings(enabled=True, protocol=protocol, endpoint=endpoint, timeout_s=1),
        )
    )
    store = open_trace_store(settings=settings)
    assert isinstance(store, ExportingTraceStore)
    started = time.monotonic()
    trace = _traced(store)
    assert trace.status == "ok"
    # the run's own cost: saving + building spans (the send happens on the exporter's thread)
    assert SQLiteTraceStore(tmp_path / "t.sqlite").get(trace.run_id) == trace
    store.close()
    assert time.monotonic() - started < 60


def test_a_failing_exporter_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Broken(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            raise RuntimeError("collector exploded")

    caplog.set_level(logging.WARNING)
    exporter = OtlpExporter(OtelSettings(enabled=True), span_exporter=Broken())
    store = ExportingTraceStore(SQLiteTraceStore(tmp_path / "t.sqlite"), exporter)
    trace = _traced(store)
    assert store.get(trace.run_id) == trace
    exporter.flush(5)
    store.close()
    assert any(r.exc_info and "collector exploded" in str(r.exc_info[1]) for r in caplog.records)
