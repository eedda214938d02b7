"""Orchestration overhead of the Speculative RAG graph: (graph wall time - model time) / graph wall time.

    .venv/bin/python bench/bench_overhead.py [--store DIR] [--questions 2] [--task multihop_qa] [--max-rounds 1]
                                             [--no-warm-up] [--cache-dir .specrag/bench]

Real questions (``<shared>/eval/dev/questions.jsonl``, those of --task in file order) run through
``graphs.speculative_rag.build(provider).compile()`` with the default models from the settings. Without --store, the
shared corpus of the task is ingested once into ``<cache-dir>/kb-<corpus>`` (reused by later runs).

Model time is measured around every backend call:

* drafter and verifier: wrapped in ``app.llm.metered.MeteredModel``; its busy time counts the wall time with a
  request in flight, so the draft branches that run concurrently (one llama.cpp batch) count once. It includes the
  short window the llama.cpp backend waits to coalesce concurrent draft requests (``batch_window_ms``);
* embedder: wall time of ``embed`` (the query embedding in ``retrieve``);
* store: wall time of ``search`` (hybrid retrieval).

These calls happen in different nodes, one after another, so their sum is the model time. The rest of the graph wall
time is the overhead, split into the time inside nodes that is not model time (prompt building, parsing, k-means,
scoring: the node timings' union minus model time) and the time between nodes (LangGraph scheduling, state merges,
Send fan-out). The design's target is an overhead of at most 5 %. A warm-up run of the first question (loading the
models) comes first and is not counted, unless --no-warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.embed.factory import get_embedder
from app.embed.protocol import Embedder
from app.llm.factory import get_llm
from app.llm.metered import MeteredModel
from app.settings import get_settings
from app.store.factory import open_store
from app.store.ingest import ingest_paths
from app.store.protocol import Chunk, Hit, SearchMode, StoreStats, VectorStore
from graphs import speculative_rag
from graphs.backends import StaticBackends
from graphs.context import Context
from graphs.state import InputState, NodeTiming

CORPUS = {"multihop_qa": "hotpotqa_reflexion100_corpus.jsonl"}
"""Task -> shared corpus ingested when no --store is given (``specrag ingest`` refuses PopQA's empty texts)."""


class TimedEmbedder:
    """An :class:`Embedder` that adds up the wall time spent embedding."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.seconds = 0.0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        started = time.perf_counter()
        try:
            return self.inner.embed(texts)
        finally:
            self.seconds += time.perf_counter() - started


class TimedStore:
    """A :class:`VectorStore` that adds up the wall time spent in ``search``."""

    def __init__(self, inner: VectorStore) -> None:
        self.inner = inner
        self.seconds = 0.0

    def search(
        self,
        query: str,
        vector: Sequence[float],
        *,
        k: int,
        mode: SearchMode = "hybrid",
        exclude_ids: Sequence[str] = (),
        where: Mapping[str, str] | None = None,
    ) -> list[Hit]:
        started = time.perf_counter()
        try:
            return self.inner.search(query, vector, k=k, mode=mode, exclude_ids=exclude_ids, where=where)
        finally:
            self.seconds += time.perf_counter() - started

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return self.inner.existing_ids(ids)

    def add(self, chunks: Sequence[Chunk]) -> int:
        return self.inner.add(chunks)

    def optimize(self) -> None:
        self.inner.optimize()

    def stats(self) -> StoreStats:
        return self.inner.stats()


@dataclass
class Meters:
    """The metered backends of the run."""

    drafter: MeteredModel
    verifier: MeteredModel
    embedder: TimedEmbedder
    store: TimedStore

    def reset(self) -> None:
        self.drafter.reset()
        self.verifier.reset()
        self.embedder.seconds = 0.0
        self.store.seconds = 0.0

    def parts(self) -> dict[str, float]:
        """Model seconds since the last reset, per backend."""
        return {
            "drafter": self.drafter.usage().busy_seconds,
            "verifier": self.verifier.usage().busy_seconds,
            "embedder": self.embedder.seconds,
            "store search": self.store.seconds,
        }


@dataclass(frozen=True)
class Measurement:
    """One question's graph run."""

    wall: float
    in_nodes: float
    parts: dict[str, float]

    @property
    def model(self) -> float:
        return sum(self.parts.values())


def shared_dev() -> Path:
    """``<shared>/eval/dev`` from the settings."""
    shared = get_settings().shared_dir
    return (shared if shared.is_absolute() else Path.cwd() / shared) / "eval/dev"


def ingested_store(corpus: Path, cache: Path, embedder: Embedder) -> Path:
    """A store holding ``corpus`` under ``cache`` (ingest is idempotent: a complete store is only checked)."""
    path = cache / f"kb-{corpus.name.split('_')[0]}"
    store = open_store(get_settings().store, path=path, embedder=embedder, create=True)
    ingest_paths([corpus], store, embedder, progress=False)
    return path


def load_meters(store_path: Path) -> Meters:
    """The configured drafter, verifier, embedder and the store, metered."""
    s = get_settings()
    embedder = get_embedder(s.embedder)
    store = open_store(s.store, path=store_path, embedder=embedder, create=False)
    return Meters(
        drafter=MeteredModel(get_llm(s.drafter, threads=s.llm_threads, cache_dir=s.model_cache)),
        verifier=MeteredModel(get_llm(s.verifier, threads=s.llm_threads, cache_dir=s.model_cache)),
        embedder=TimedEmbedder(embedder),
        store=TimedStore(store),
    )


def union_seconds(timings: Sequence[NodeTiming]) -> float:
    """Length of the union of the node intervals (concurrent draft branches count once)."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted((t.start, t.start + t.seconds) for t in timings):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def measure(graph: Any, question: str, context: Context, meters: Meters) -> Measurement:
    """Run one question through the compiled graph with fresh meters."""
    meters.reset()
    started = time.perf_counter()
    out = graph.invoke(InputState(question=question), context=context)
    wall = time.perf_counter() - started
    return Measurement(wall=wall, in_nodes=union_seconds(out["timings"]), parts=meters.parts())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the questions and print the overhead fraction and its parts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="an ingested store (default: ingest the task's shared corpus)")
    parser.add_argument("--questions", type=int, default=2)
    parser.add_argument("--task", choices=sorted(CORPUS), default="multihop_qa")
    parser.add_argument("--max-rounds", type=int, default=1, help="1 keeps each run to one pass")
    parser.add_argument("--no-warm-up", action="store_true", help="count the first run too (includes model loading)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".specrag/bench"))
    args = parser.parse_args(argv)

    dev = shared_dev()
    store = args.store or ingested_store(dev / CORPUS[args.task], args.cache_dir, get_embedder(get_settings().embedder))
    with open(dev / "questions.jsonl", encoding="utf-8") as f:
        questions = [q["question"] for q in map(json.loads, f) if q["task"] == args.task][: args.questions]

    meters = load_meters(store)
    backends = StaticBackends(
        drafter=meters.drafter, verifier=meters.verifier, embedder=meters.embedder, store=meters.store
    )
    graph = speculative_rag.build(lambda _: backends).compile(name="speculative_rag")
    context = Context(store=str(store), max_rounds=args.max_rounds)
    if not args.no_warm_up:
        measure(graph, questions[0], context, meters)
    runs = [measure(graph, q, context, meters) for q in questions]
    report(runs, args, store)
    return 0


def report(runs: Sequence[Measurement], args: argparse.Namespace, store: Path) -> None:
    """Per-question table, then the totals: overhead fraction and its parts."""
    names = list(runs[0].parts)
    print(
        f"{len(runs)} {args.task} questions through speculative_rag (max_rounds={args.max_rounds}), store {store}, "
        f"{get_settings().llm_threads} threads{'' if args.no_warm_up else ', after a warm-up run'}; seconds"
    )
    header = ["question", "wall", *names, "model", "in nodes, not model", "between nodes", "overhead"]
    widths = [max(len(h), 8) for h in header]
    print("\n| " + " | ".join(f"{h:>{w}s}" for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    rows = [(f"q{i + 1}", r) for i, r in enumerate(runs)] + [("sum", total(runs))]
    for label, r in rows:
        cells = [r.wall, *r.parts.values(), r.model, r.in_nodes - r.model, r.wall - r.in_nodes, r.wall - r.model]
        text = [f"{label:>{widths[0]}s}"] + [f"{c:{w}.3f}" for c, w in zip(cells, widths[1:], strict=True)]
        print("| " + " | ".join(text) + " |")
    t = total(runs)
    print(f"\norchestration overhead (wall - model) / wall: {(t.wall - t.model) / t.wall:.2%} (target <= 5%)")
    print(f"  inside nodes, not model time: {(t.in_nodes - t.model) / t.wall:.2%} of wall time")
    print(f"  between nodes (LangGraph): {(t.wall - t.in_nodes) / t.wall:.2%} of wall time")
    shares = ", ".join(f"{n} {t.parts[n] / t.wall:.1%}" for n in names)
    print(f"model time by backend: {shares}")
    median = statistics.median((r.wall - r.model) / r.wall for r in runs)
    print(f"median over questions of the overhead fraction: {median:.2%}")


def total(runs: Sequence[Measurement]) -> Measurement:
    """The sum of the measurements."""
    parts = {name: sum(r.parts[name] for r in runs) for name in runs[0].parts}
    return Measurement(wall=sum(r.wall for r in runs), in_nodes=sum(r.in_nodes for r in runs), parts=parts)


if __name__ == "__main__":
    raise SystemExit(main())
