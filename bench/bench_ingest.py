"""Ingest throughput: `specrag ingest` of a shared corpus into a fresh store vs embedding the same passages alone.

    .venv/bin/python bench/bench_ingest.py [--corpus hotpotqa] [--limit 0] [--batch-size 64]

The ingest is what ``specrag ingest`` does (``app.store.ingest.ingest_documents``: read, chunk, embed and ``add``
each batch, then ``optimize``) into a fresh LanceDB store in a temporary directory, with the embedder's and the
store's calls timed. The baseline is embedding alone with the same embedder (MiniLM by default): right after ingest
commits a batch, the same batch of texts is embedded again, outside the ingest's time (the ``on_batch`` callback's
time is subtracted). Interleaving batch by batch lets background load hit both alike.

``--limit N`` keeps the corpus' first N passages (0: all). Prints passages (and chunks) per second of both and
their ratio, measured in this run, and how the ingest's wall time splits between embedding, the store (writes,
duplicate checks, indexes) and the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.embed.factory import make_embedder
from app.embed.protocol import Embedder
from app.settings import get_settings
from app.store.factory import open_store
from app.store.ingest import IngestReport, LoadedInputs, chunk_document, ingest_documents, load_documents
from app.store.protocol import Chunk, Hit, SearchMode, StoreStats, VectorStore

CORPUS = {"hotpotqa": "hotpotqa_reflexion100_corpus.jsonl", "arcc": "arcc_s2rag100_corpus.jsonl"}
"""Shared corpora ``specrag ingest`` accepts (the PopQA one has lines with an empty text, which ingest refuses)."""


class TimedStore:
    """A :class:`VectorStore` that adds up the wall time spent in each of the inner store's methods."""

    def __init__(self, inner: VectorStore) -> None:
        self.inner = inner
        self.seconds: dict[str, float] = {"existing_ids": 0.0, "add": 0.0, "optimize": 0.0}

    def _charge(self, method: str, started: float) -> None:
        self.seconds[method] = self.seconds.get(method, 0.0) + time.perf_counter() - started

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        started = time.perf_counter()
        try:
            return self.inner.existing_ids(ids)
        finally:
            self._charge("existing_ids", started)

    def add(self, chunks: Sequence[Chunk]) -> int:
        started = time.perf_counter()
        try:
            return self.inner.add(chunks)
        finally:
            self._charge("add", started)

    def optimize(self) -> None:
        started = time.perf_counter()
        try:
            self.inner.optimize()
        finally:
            self._charge("optimize", started)

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
        return self.inner.search(query, vector, k=k, mode=mode, exclude_ids=exclude_ids, where=where)

    def stats(self) -> StoreStats:
        return self.inner.stats()


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


def load_corpus(path: Path, limit: int) -> LoadedInputs:
    """The corpus file read as ``specrag ingest`` reads it, keeping the first ``limit`` passages (0: all)."""
    inputs = load_documents([path])
    if limit > 0:
        inputs = dataclasses.replace(inputs, documents=inputs.documents[:limit])
    return inputs


class Baseline:
    """The ``on_batch`` callback that embeds each committed batch's texts again, timing that alone.

    Args:
        texts: The texts ingest embeds, in its order (a fresh store: every distinct chunk).
        embedder: The same embedder as the ingest's.
        batch_size: The ingest's batch size.
    """

    def __init__(self, texts: Sequence[str], embedder: Embedder, batch_size: int) -> None:
        self.texts = texts
        self.embedder = embedder
        self.batch_size = batch_size
        self.batches = 0
        self.embed_seconds = 0.0
        self.callback_seconds = 0.0

    def __call__(self, stored: int, added: int, total: int) -> None:
        entered = time.perf_counter()
        start = self.batches * self.batch_size
        self.embedder.embed(self.texts[start : start + self.batch_size])
        self.embed_seconds += time.perf_counter() - entered
        self.batches += 1
        self.callback_seconds += time.perf_counter() - entered


@dataclass(frozen=True)
class IngestRun:
    """One ingest into a fresh store: its report, wall time, time in the embedder and the store, and the baseline."""

    report: IngestReport
    seconds: float
    embed_seconds: float
    store_seconds: dict[str, float]
    baseline_seconds: float


def ingest_fresh(inputs: LoadedInputs, embedder: Embedder, batch_size: int) -> IngestRun:
    """Ingest ``inputs`` into a new LanceDB store in a temporary directory, the baseline interleaved."""
    settings = get_settings().store.model_copy(update={"provider": "lancedb"})
    texts = list({c.id: c.text for d in inputs.documents for c in chunk_document(d)}.values())
    baseline = Baseline(texts, embedder, batch_size)
    timed_embedder = TimedEmbedder(embedder)
    with tempfile.TemporaryDirectory(prefix="specrag-bench-ingest-") as tmp:
        store = TimedStore(open_store(settings, path=Path(tmp) / "store", embedder=embedder, create=True))
        started = time.perf_counter()
        report = ingest_documents(
            inputs, store, timed_embedder, batch_size=batch_size, progress=False, on_batch=baseline
        )
        seconds = time.perf_counter() - started - baseline.callback_seconds
    if baseline.batches * batch_size < len(texts):
        raise RuntimeError("the baseline did not embed every batch: ingest skipped chunks of a fresh store?")
    return IngestRun(report, seconds, timed_embedder.seconds, dict(store.seconds), baseline.embed_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """Ingest with the baseline interleaved and print throughput and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=sorted(CORPUS), default="hotpotqa")
    parser.add_argument("--limit", type=int, default=0, help="first N passages of the corpus (0: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="chunks per batch (specrag ingest's default)")
    args = parser.parse_args(argv)

    settings = get_settings()
    shared = settings.shared_dir if settings.shared_dir.is_absolute() else Path.cwd() / settings.shared_dir
    path = shared / "eval/dev" / CORPUS[args.corpus]
    embedder = make_embedder(settings.embedder)
    embedder.embed(["warm-up"])  # loads the model: neither measurement pays for it

    started = time.perf_counter()
    inputs = load_corpus(path, args.limit)
    read_seconds = time.perf_counter() - started
    run = ingest_fresh(inputs, embedder, args.batch_size)
    print_results(args, embedder.name, dataclasses.replace(run, seconds=run.seconds + read_seconds), read_seconds)
    return 0


def print_results(args: argparse.Namespace, embedder: str, run: IngestRun, read_seconds: float) -> None:
    """The table and the ratios."""
    passages, chunks = run.report.documents, run.report.chunks_added
    print(
        f"{args.corpus} corpus: {passages:,} passages -> {chunks:,} chunks, batch size {args.batch_size}, "
        f"embedder {embedder}, fresh LanceDB store; baseline interleaved batch by batch"
    )
    print(f"\n| {'run':44s} | {'seconds':>8s} | {'passages/s':>10s} | {'chunks/s':>8s} |")
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 12}|{'-' * 10}|")
    for label, seconds in (
        ("embedding only (baseline)", run.baseline_seconds),
        ("specrag ingest (read, chunk, embed, store)", run.seconds),
    ):
        print(f"| {label:44s} | {seconds:8.2f} | {passages / seconds:10.1f} | {chunks / seconds:8.1f} |")
    parts = {
        "reading the file": read_seconds,
        "embedder.embed": run.embed_seconds,
        **{f"store.{m}": t for m, t in run.store_seconds.items()},
    }
    for label, seconds in parts.items():
        print(f"| {'  of which ' + label:44s} | {seconds:8.2f} | {'':10s} | {'':8s} |")
    store_share = sum(run.store_seconds.values()) / run.seconds
    embed_share = run.embed_seconds / run.seconds
    print(f"\ningest / embedding-only throughput: {run.baseline_seconds / run.seconds:.2f}x")
    print(
        f"within the ingest: embedding {embed_share:.1%} of wall time, store calls {store_share:.1%}, "
        f"the rest (read, chunk, convert) {1 - embed_share - store_share:.1%}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
