"""Per-run cost of where traces go: SQLite (baseline) against Postgres and against OpenTelemetry export.

    .venv/bin/python bench/bench_trace_store.py [--runs 200] [--postgres URL] [--otlp-http URL] [--otlp-grpc HOST:PORT]

One real trace (a scripted speculative run: 10 steps, 5 drafts with scores, ~20 kB of JSON) is saved ``--runs``
times under fresh run ids into each configuration, and the time of ``save`` is what the run pays (the graph waits
for it before answering). Configurations: ``sqlite`` (the embedded default: the baseline), ``sqlite+otel`` (the
same, plus building the run's spans and queueing them for the background exporter; the export itself is measured
separately as the flush time per run), ``postgres`` (with --postgres) and ``postgres+otel``. Without a collector
URL, spans go to the SDK's in-memory exporter (the cost of building and queueing them, not of the network).
Reports the median and p95 milliseconds per save and the ratio to the baseline in the same run (JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.ask import run
from app.settings import OtelSettings
from app.trace.model import RunTrace, new_run_id
from app.trace.store import SQLiteTraceStore, TraceStore
from graphs.backends import StaticBackends
from graphs.context import Context
from tests.fakes import FakeEmbedder, FakeLLM, FakeStore

DOCS = [(f"Doc {i}", f"Paris is the capital of France, passage {i} of the bench corpus.") for i in range(12)]


def _trace(tmp: Path) -> RunTrace:
    emb = FakeEmbedder()
    verifier = FakeLLM(reply=lambda p: "capital of France", judge=lambda c: (-1.0, 0.95))
    drafter = FakeLLM(reply=lambda p: " The documents say: Paris is the capital.\nAnswer: Paris")
    backends = StaticBackends(drafter=drafter, verifier=verifier, embedder=emb, store=FakeStore(emb, DOCS))
    store = SQLiteTraceStore(tmp / "seed.sqlite")
    result = run("What is the capital of France?", Context(seed=3), traces=store, provider=lambda ctx: backends)
    assert result.run_id is not None
    return store.get(result.run_id)


def _time(store: TraceStore, trace: RunTrace, runs: int, after: Callable[[], object] = lambda: None) -> dict[str, Any]:
    ms: list[float] = []
    for _ in range(runs):
        copy = trace.model_copy(update={"run_id": new_run_id()})
        t0 = time.perf_counter()
        store.save(copy)
        ms.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    after()
    flush = (time.perf_counter() - t0) * 1000 / runs
    ms.sort()
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
        "flush_ms_per_run": round(flush, 3),
    }


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--postgres", help="postgresql://... (a database the benchmark may write to)")
    parser.add_argument("--otlp-http", help="OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces")
    parser.add_argument("--otlp-grpc", help="OTLP/gRPC host:port")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from app.trace.otel import ExportingTraceStore, OtlpExporter

    def exporter() -> OtlpExporter:
        if args.otlp_grpc:
            return OtlpExporter(OtelSettings(enabled=True, protocol="grpc", endpoint=args.otlp_grpc))
        if args.otlp_http:
            return OtlpExporter(OtelSettings(enabled=True, endpoint=args.otlp_http))
        return OtlpExporter(OtelSettings(enabled=True), span_exporter=InMemorySpanExporter())

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        trace = _trace(tmp)
        size = len(trace.model_dump_json())
        results["sqlite"] = _time(SQLiteTraceStore(tmp / "a.sqlite"), trace, args.runs)
        otel = exporter()
        results["sqlite+otel"] = _time(
            ExportingTraceStore(SQLiteTraceStore(tmp / "b.sqlite"), otel), trace, args.runs, lambda: otel.flush(60)
        )
        otel.shutdown()
        if args.postgres:
            from app.trace.postgres import PostgresTraceStore

            pg = PostgresTraceStore(args.postgres, pool_size=2)
            results["postgres"] = _time(pg, trace, args.runs)
            otel = exporter()
            results["postgres+otel"] = _time(ExportingTraceStore(pg, otel), trace, args.runs, lambda: otel.flush(60))
            otel.shutdown()
            pg.close()
    base = results["sqlite"]["median_ms"]
    for r in results.values():
        r["x_sqlite"] = round(r["median_ms"] / base, 2) if base else None
    where = args.otlp_grpc or args.otlp_http or "in-memory span exporter"
    if args.json:
        print(json.dumps({"trace_bytes": size, "runs": args.runs, "exporter": where, "results": results}, indent=2))
        return
    print(f"trace: {size:,} bytes of JSON, {len(trace.steps)} steps; {args.runs} saves each; export to {where}")
    print("| store | save median ms | p95 ms | × sqlite | export flush ms / run |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['median_ms']} | {r['p95_ms']} | {r['x_sqlite']} | {r['flush_ms_per_run']} |")


if __name__ == "__main__":
    main()
