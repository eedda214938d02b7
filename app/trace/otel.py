"""OpenTelemetry export of run traces (OTLP over HTTP or gRPC; off by default: ``SPECRAG_TRACES__OTEL__ENABLED``).

A saved :class:`~app.trace.model.RunTrace` becomes one OpenTelemetry trace whose **trace id is the run id** (both
are 128 bits: look a run up in Jaeger, Tempo or Phoenix by the id `specrag ask` prints): a root span for the run
and one child span per node execution (each parallel ``draft`` branch its own), with the node's recorded start and
end times. Attributes follow the OpenTelemetry GenAI semantic conventions where they apply (``gen_ai.operation.name``,
``gen_ai.agent.name``, ``gen_ai.conversation.id``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` /
``output_tokens``, ``gen_ai.response.finish_reasons``) and OpenInference's span kinds (``openinference.span.kind``)
so that Arize Phoenix renders them; the rest is under ``specrag.*``: each draft's outcome, answer and log-probability
on its ``draft`` span, and every draft's scores (ρ_draft, ρ_sc, ρ_sr, total, P(Yes)) as ``specrag.draft.scores``
events on the ``verify`` span and as attributes of the root span.

Spans are built after the run from its trace (the run itself carries no instrumentation) and handed to a
``BatchSpanProcessor`` on a private ``TracerProvider`` (the process's global provider is left alone), so exporting
costs the run a few milliseconds and an unreachable collector never fails or slows it: the exporter logs and drops.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from opentelemetry import trace as otel
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from app.settings import OtelSettings
from app.trace.model import RunTrace, Step, TraceError, TraceSummary
from app.trace.store import (
    INSTALL_HINT,
    TraceStore,
)

log = logging.getLogger(__name__)


_KINDS = {"retrieve": "RETRIEVER", "draft": "LLM", "verify": "LLM", "answer": "CHAIN"}
"""OpenInference span kind per node (others: CHAIN)."""

AttrValue = str | bool | int | float | Sequence[str] | Sequence[int] | Sequence[float]


class TraceExporter(Protocol):
    """Sends finished run traces somewhere else (never raises from ``export``)."""

    def export(self, trace: RunTrace) -> None:
        """Hand ``trace`` over for export (asynchronously; failures are logged)."""
        ...

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything handed over was sent (or failed); False on timeout."""
        ...

    def shutdown(self) -> None:
        """Flush and stop."""
        ...


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000_000)


def _clean(attrs: Mapping[str, Any]) -> dict[str, AttrValue]:
    """Attributes OpenTelemetry accepts: no None, lists of one primitive type."""
    out: dict[str, AttrValue] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            out[key] = value
        elif isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            out[key] = [str(v) for v in value]
        elif isinstance(value, list | tuple) and value and all(isinstance(v, int | float) for v in value):
            out[key] = [float(v) for v in value]
    return out


def score_attributes(draft: Mapping[str, Any]) -> dict[str, AttrValue]:
    """One draft's scores as ``specrag.draft.*`` attributes (absent scores are left out)."""
    scores = draft.get("scores") or {}
    return _clean(
        {
            "specrag.draft.round": draft.get("round"),
            "specrag.draft.subset": draft.get("subset"),
            "specrag.draft.outcome": draft.get("outcome"),
            "specrag.draft.rho_draft": scores.get("draft"),
            "specrag.draft.rho_sc": scores.get("self_consistency"),
            "specrag.draft.rho_sr": scores.get("self_reflection"),
            "specrag.draft.p_yes": scores.get("p_yes"),
            "specrag.draft.total": scores.get("total"),
        }
    )


class _RunIds(IdGenerator):
    """Id generator whose next trace id is the run id being exported (random span ids, and random trace ids for
    anything else)."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self._local = threading.local()

    @contextmanager
    def trace_id(self, run_id: str) -> Iterator[None]:
        self._local.trace_id = int(run_id, 16)
        try:
            yield
        finally:
            self._local.trace_id = None

    def generate_trace_id(self) -> int:
        value = getattr(self._local, "trace_id", None)
        return int(value) if value else self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def is_trace_id_random(self) -> bool:
        """uuid4 run ids are random (122 bits), so W3C's 'random trace id' flag holds."""
        return True


def _span_exporter(settings: OtelSettings) -> SpanExporter:
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(
            endpoint=settings.endpoint,
            insecure=settings.insecure,
            headers=dict(settings.headers) or None,
            timeout=settings.timeout_s,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=settings.endpoint, headers=dict(settings.headers) or None, timeout=settings.timeout_s)


class OtlpExporter:
    """Exports run traces as OTLP spans.

    Args:
        settings: Endpoint, protocol, headers, resource, content switch.
        span_exporter: An OpenTelemetry ``SpanExporter`` to use instead of the OTLP one (tests).

    Raises:
        TraceError: The OpenTelemetry packages are not installed.
    """

    def __init__(self, settings: OtelSettings, *, span_exporter: SpanExporter | None = None) -> None:
        try:
            exporter = span_exporter if span_exporter is not None else _span_exporter(settings)
        except ImportError as exc:
            raise TraceError(f"{INSTALL_HINT} ({exc})") from None
        from importlib.metadata import PackageNotFoundError, version

        try:
            __version__ = version("specrag")
        except PackageNotFoundError:
            __version__ = "0"
        self.settings = settings
        resource: dict[str, str] = {"service.name": settings.service_name, "service.version": __version__}
        if settings.project:
            resource["openinference.project.name"] = settings.project
        self._ids = _RunIds()
        self._lock = threading.Lock()
        self._provider = TracerProvider(resource=Resource.create(resource), id_generator=self._ids)
        self._provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        self._tracer = self._provider.get_tracer("specrag", __version__)

    def export(self, trace: RunTrace) -> None:
        """Build the run's spans and queue them for export; any failure is logged, never raised."""
        try:
            with self._lock, self._ids.trace_id(trace.run_id):
                self._emit(trace)
        except Exception as exc:
            log.warning("OpenTelemetry export of run %s failed: %s", trace.run_id, " ".join(str(exc).split()))

    def _emit(self, trace: RunTrace) -> None:
        content = self.settings.content
        drafts = trace.drafts()
        root_attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": trace.graph,
            "gen_ai.conversation.id": trace.thread_id,
            "openinference.span.kind": "AGENT",
            "specrag.run_id": trace.run_id,
            "specrag.status": trace.status,
            "specrag.drafts": len(drafts),
            "specrag.rounds": len(trace.result.rounds) if trace.result else None,
        }
        if trace.result is not None:
            root_attrs["specrag.chosen"] = trace.result.chosen
            root_attrs["specrag.decision"] = trace.result.decision
            if trace.result.confidence is not None:
                root_attrs["specrag.confidence"] = trace.result.confidence.value
                root_attrs["specrag.confidence.model"] = trace.result.confidence.model
            if content:
                root_attrs["specrag.answer"] = trace.result.answer
                root_attrs["output.value"] = trace.result.answer
        if content:
            root_attrs["specrag.question"] = trace.question
            root_attrs["input.value"] = trace.question
        for i, d in enumerate(drafts):
            for key, value in score_attributes(d).items():
                root_attrs[key.replace("specrag.draft.", f"specrag.draft.{i}.")] = value
        root = self._tracer.start_span(
            f"invoke_agent {trace.graph}",
            kind=SpanKind.INTERNAL,
            start_time=_ns(trace.started_at),
            attributes=_clean(root_attrs),
        )
        if trace.status == "error":
            root.set_status(Status(StatusCode.ERROR, trace.error or "error"))
        parent = otel.set_span_in_context(root)
        for step in trace.steps:
            span = self._tracer.start_span(
                self._span_name(step),
                context=parent,
                kind=SpanKind.INTERNAL,
                start_time=_ns(step.started_at),
                attributes=_clean(self._step_attributes(step)),
            )
            if step.node == "verify":
                for d in drafts:
                    if d.get("scores") and d.get("round") == step.round:
                        span.add_event("specrag.draft.scores", score_attributes(d), timestamp=_ns(step.ended_at))
            if step.error:
                span.set_status(Status(StatusCode.ERROR, step.error))
            span.end(end_time=_ns(step.ended_at))
        root.end(end_time=_ns(trace.ended_at))

    @staticmethod
    def _span_name(step: Step) -> str:
        draft = step.writes.get("draft") if step.node == "draft" else None
        if isinstance(draft, Mapping) and draft.get("model"):
            return f"chat {draft['model']}"
        return step.node

    def _step_attributes(self, step: Step) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "specrag.node": step.node,
            "specrag.round": step.round,
            "specrag.step": step.index,
            "openinference.span.kind": _KINDS.get(step.node, "CHAIN"),
        }
        draft = step.writes.get("draft") if step.node == "draft" else None
        if isinstance(draft, Mapping):
            attrs |= {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": draft.get("model") or None,
                "gen_ai.usage.input_tokens": draft.get("prompt_tokens"),
                "gen_ai.usage.output_tokens": draft.get("tokens"),
                "gen_ai.response.finish_reasons": [str(draft.get("finish_reason"))],
                "specrag.draft.subset": draft.get("subset"),
                "specrag.draft.outcome": draft.get("outcome"),
                "specrag.draft.letter": draft.get("letter"),
                "specrag.draft.logprob": draft.get("logprob"),
                "specrag.draft.passage_ids": list(draft.get("passage_ids") or []),
            }
            if self.settings.content:
                attrs["specrag.draft.answer"] = draft.get("answer")
                attrs["specrag.draft.rationale"] = draft.get("rationale")
        elif step.node == "verify":
            attrs["gen_ai.operation.name"] = "chat"
            attrs["specrag.verify.scored"] = len(step.writes.get("scores", []) or [])
        if step.error:
            attrs["error.type"] = step.error.split(":", 1)[0][:100]
        return attrs

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait for queued spans to be sent (or to fail)."""
        return bool(self._provider.force_flush(int(timeout_s * 1000)))

    def shutdown(self) -> None:
        """Flush and stop the exporter (also done at interpreter exit)."""
        self._provider.shutdown()


class ExportingTraceStore:
    """A trace store that also exports every trace it saved (after the save: only stored traces are exported).

    Args:
        inner: The store that keeps the traces.
        exporter: Where saved traces are also sent.
    """

    def __init__(self, inner: TraceStore, exporter: TraceExporter) -> None:
        self.inner = inner
        self.exporter = exporter

    def save(self, trace: RunTrace) -> None:
        """Save in ``inner``, then queue the export (an export failure is only logged)."""
        self.inner.save(trace)
        self.exporter.export(trace)

    def get(self, run_id: str) -> RunTrace:
        """From ``inner``."""
        return self.inner.get(run_id)

    def list(self, *, thread_id: str | None = None, limit: int = 50) -> builtins.list[TraceSummary]:
        """From ``inner``."""
        return self.inner.list(thread_id=thread_id, limit=limit)

    def close(self) -> None:
        """Flush the exporter and close ``inner``."""
        self.exporter.shutdown()
        self.inner.close()

    def __repr__(self) -> str:
        return f"ExportingTraceStore({self.inner!r})"
