"""OpenTelemetry export received by a real OTLP receiver (Arize Phoenix, tests/integration/phoenix.py), over
OTLP/HTTP and OTLP/gRPC: one trace per run whose trace id is the run id, a span per node (parent: the run's span),
the five drafts' scores. The run uses scripted backends (the export is under test); the spans are read back from
Phoenix's REST API, not from the exporter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.ask import run
from app.settings import OtelSettings
from app.trace.otel import ExportingTraceStore, OtlpExporter
from app.trace.store import SQLiteTraceStore
from graphs.context import Context
from tests.conftest import unavailable
from tests.integration.phoenix import Phoenix, PhoenixUnavailableError, running_phoenix
from tests.unit.test_graph import make, paris_judge

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    try:
        with running_phoenix(tmp_path_factory.mktemp("phoenix")) as started:
            yield started
    except PhoenixUnavailableError as exc:
        unavailable(f"no OTLP receiver: {exc}")


def _attr(span: dict[str, Any], key: str) -> Any:
    """An attribute of a span as Phoenix returns it (flat dotted keys, or nested objects)."""
    attrs = span.get("attributes") or {}
    if key in attrs:
        return attrs[key]
    node: Any = attrs
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_phoenix_receives_one_trace_with_a_span_per_node_and_the_five_drafts_scores(
    phoenix: Phoenix, tmp_path: Path, protocol: str
) -> None:
    project = f"specrag-{protocol.split('/')[0]}"
    endpoint = phoenix.otlp_http if protocol == "http/protobuf" else phoenix.otlp_grpc
    settings = OtelSettings(enabled=True, protocol=protocol, endpoint=endpoint, project=project)
    store = ExportingTraceStore(SQLiteTraceStore(tmp_path / "t.sqlite"), OtlpExporter(settings))
    backends, _, _ = make(paris_judge)
    result = run(
        "What is the capital of France?", Context(n_drafts=5, seed=3), traces=store, provider=lambda ctx: backends
    )
    assert result.run_id is not None
    trace = store.get(result.run_id)
    assert store.exporter.flush(30)
    store.close()

    spans = phoenix.spans(project, expect=len(trace.steps) + 1)
    assert len(spans) == len(trace.steps) + 1, phoenix.log.read_text()[-2000:]
    assert {s["context"]["trace_id"] for s in spans} == {trace.run_id}
    roots = [s for s in spans if not s.get("parent_id")]
    assert len(roots) == 1 and roots[0]["name"] == "invoke_agent speculative_rag"
    root_id = roots[0]["context"]["span_id"]
    children = [s for s in spans if s.get("parent_id")]
    assert all(s["parent_id"] == root_id for s in children)
    nodes = sorted((_attr(s, "specrag.step"), _attr(s, "specrag.node")) for s in children)
    assert [n for _, n in nodes] == [step.node for step in trace.steps]
    drafts = [s for s in children if _attr(s, "specrag.node") == "draft"]
    assert len(drafts) == 5 and all(_attr(s, "gen_ai.request.model") == "fake" for s in drafts)
    # the five drafts' scores: as events on the verify span, and on the run's span
    expected = {d["subset"]: d["scores"] for d in trace.drafts()}
    verify = next(s for s in children if _attr(s, "specrag.node") == "verify")
    events = [e for e in verify.get("events") or [] if e.get("name") == "specrag.draft.scores"]
    assert len(events) == 5
    for event in events:
        attrs = event.get("attributes") or {}
        subset = attrs.get("specrag.draft.subset")
        assert attrs.get("specrag.draft.total") == pytest.approx(expected[subset]["total"])
        assert attrs.get("specrag.draft.rho_sc") == pytest.approx(expected[subset]["self_consistency"])
    for i in range(5):
        assert _attr(roots[0], f"specrag.draft.{i}.total") == pytest.approx(expected[i]["total"])
