"""LanceDB at 100k chunks: top-10 search latency with the ANN index vs exact search, recall@10, hybrid latency.

    .venv/bin/python bench/bench_store.py [--chunks 100000] [--queries 100] [--base 0] [--seed 0]
                                          [--cache-dir .specrag/bench]

How the data is made (embedding 100k real passages with MiniLM would take ~40 minutes on a 2-core CPU):

1. The real passages of the shared corpora (``<shared>/eval/dev/*_corpus.jsonl``, ~5.4k, chunked as
   ``specrag ingest`` chunks them; ``--base N`` keeps the first N) are embedded once with the configured embedder
   (MiniLM by default).
2. Chunk i < B (B real passages) is real passage i with its real embedding. Every later chunk i is derived from
   passage a = i mod B: vector = normalise(e_a + w * e_b + 0.25 * g), with b another passage drawn at random,
   w ~ U(0, 0.5) and g a random unit vector (seeded by --seed). It carries the title and text of passage a, so
   BM25 indexes real text (each text appears about N/B times).
3. Queries are the embeddings of the real dev questions (``<shared>/eval/dev/questions.jsonl``, in file order).

The store is created with ``app.store.factory.open_store`` (the product's LanceDB layout) and indexed by
``LanceDBStore.optimize`` as ``specrag ingest`` leaves it (IVF_HNSW_SQ cosine index, BM25). Embeddings and the
built store are cached under --cache-dir (keyed by the settings), so reruns only search.

Each query runs every method once, in rotating order, so background load hits them alike:

* ANN: ``LanceDBStore.search(mode="vector", k=10)``, the product's path (index, refine x4);
* exact (LanceDB): the same query on the same table with ``bypass_vector_index()`` (a flat scan);
* exact (numpy): dot products with all stored vectors in memory, one thread (the ground truth for recall);
* hybrid: ``LanceDBStore.search(mode="hybrid", k=10)`` with the question text (vector + BM25, RRF).

Prints p50/p95 per method, recall@10 of ANN against exact search, and the ratios, measured in this run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import numpy.typing as npt

from app.embed.factory import get_embedder
from app.embed.protocol import Embedder
from app.settings import get_settings
from app.store.factory import open_store
from app.store.ingest import ChunkText, Document, chunk_document, chunk_id
from app.store.lancedb_store import TABLE_NAME, LanceDBStore
from app.store.protocol import Chunk, SearchMode

Vectors = npt.NDArray[np.float32]
RECIPE = 1  # bump when the way chunks are derived changes (invalidates cached stores)
NOISE = 0.25
MAX_MIX = 0.5
ADD_BATCH = 5000
K = 10
WARM_UP = 3


def log(message: str) -> None:
    """Progress on stderr (the results go to stdout)."""
    sys.stderr.write(message + "\n")


# ---------------------------------------------------------------------------------------------- data


def corpus_documents(path: Path) -> tuple[list[Document], int]:
    """A shared corpus file's documents, and how many lines were skipped for an empty text.

    ``specrag ingest`` refuses a JSONL line with an empty text (the PopQA corpus has some), so the lines are read
    here and only non-empty passages are kept.
    """
    documents: list[Document] = []
    skipped = 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            record = json.loads(line) if line.strip() else None
            if record is None or not str(record.get("text") or "").strip():
                skipped += record is not None
                continue
            text, title = str(record["text"]).strip(), str(record.get("title") or "").strip()
            documents.append(Document(doc_id=str(record["id"]), title=title, text=text, source=f"{path}:{number}"))
    return documents, skipped


def real_passages(dev: Path, limit: int) -> list[ChunkText]:
    """The shared corpora's passages, chunked as ``specrag ingest`` does (distinct chunks, file order)."""
    unique: dict[str, ChunkText] = {}
    for path in sorted(dev.glob("*_corpus.jsonl")):
        documents, skipped = corpus_documents(path)
        if skipped:
            log(f"{path.name}: skipped {skipped} lines with an empty text")
        for document in documents:
            for chunk in chunk_document(document):
                unique.setdefault(chunk.id, chunk)
    passages = list(unique.values())
    return passages[:limit] if limit > 0 else passages


def cached_embeddings(path: Path, keys: Sequence[str], texts: Sequence[str], embedder: Embedder) -> Vectors:
    """Embeddings of ``texts``, read from ``path`` when it holds the same keys, else computed and saved."""
    if path.is_file():
        with np.load(path) as saved:
            if saved["keys"].tolist() == list(keys):
                return np.asarray(saved["vectors"], dtype=np.float32)
    log(f"embedding {len(texts):,} texts with {embedder.name} (cached in {path}) ...")
    start = time.perf_counter()
    parts = [embedder.embed(texts[i : i + 256]) for i in range(0, len(texts), 256)]
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)
    log(f"  {len(texts) / (time.perf_counter() - start):.1f} texts/s")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, keys=np.asarray(list(keys)), vectors=vectors)
    return vectors


def derived_vectors(base: Vectors, start: int, stop: int, rng: np.random.Generator) -> Vectors:
    """Vectors of chunks ``start..stop-1`` (all >= len(base)): see step 2 of the module docstring."""
    n_base, dim = base.shape
    count = stop - start
    a = np.arange(start, stop) % n_base
    b = (a + rng.integers(1, n_base, size=count)) % n_base  # another passage (a != b)
    w = rng.uniform(0.0, MAX_MIX, size=(count, 1)).astype(np.float32)
    g = rng.standard_normal((count, dim)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    v = base[a] + w * base[b] + NOISE * g
    return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float32)


def chunk_batches(passages: Sequence[ChunkText], base: Vectors, total: int, seed: int) -> Iterator[list[Chunk]]:
    """Yield the ``total`` chunks in batches of :data:`ADD_BATCH`: the real passages first, then derived ones."""
    rng = np.random.default_rng(seed)
    n_base = len(passages)
    for start in range(0, total, ADD_BATCH):
        stop = min(start + ADD_BATCH, total)
        real = range(start, min(stop, n_base))
        batch = [_real_chunk(passages[i], base[i]) for i in real]
        if stop > n_base:
            first = max(start, n_base)
            vectors = derived_vectors(base, first, stop, rng)
            batch += [
                _derived_chunk(passages[i % n_base], i, v) for i, v in zip(range(first, stop), vectors, strict=True)
            ]
        yield batch


def _real_chunk(p: ChunkText, vector: Vectors) -> Chunk:
    return Chunk(id=p.id, doc_id=p.doc_id, title=p.title, text=p.text, vector=tuple(vector.tolist()))


def _derived_chunk(p: ChunkText, i: int, vector: Vectors) -> Chunk:
    doc_id = f"{p.doc_id}~derived-{i}"
    return Chunk(id=chunk_id(doc_id, p.text), doc_id=doc_id, title=p.title, text=p.text, vector=tuple(vector.tolist()))


@dataclass(frozen=True)
class Recipe:
    """What a cached store was built from."""

    chunks: int
    base: int
    seed: int
    embedder: str
    recipe: int = RECIPE

    def key(self) -> str:
        return f"store-n{self.chunks}-b{self.base}-s{self.seed}-r{self.recipe}"


def build_store(
    directory: Path, recipe: Recipe, passages: Sequence[ChunkText], base: Vectors, embedder: Embedder
) -> None:
    """Create the store through the product's factory, add every chunk, then build the indexes (optimize)."""
    if directory.exists():
        shutil.rmtree(directory)
    store = open_store(
        get_settings().store.model_copy(update={"provider": "lancedb"}), path=directory, embedder=embedder, create=True
    )
    start = time.perf_counter()
    rows = 0
    for batch in chunk_batches(passages, base, recipe.chunks, recipe.seed):
        rows += store.add(batch)
        log(f"  added {rows:,}/{recipe.chunks:,} chunks ({time.perf_counter() - start:.0f} s)")
    added = time.perf_counter() - start
    store.optimize()
    log(f"  rows added in {added:.0f} s, indexes built in {time.perf_counter() - start - added:.0f} s")


def open_cached_store(
    cache: Path, recipe: Recipe, passages: Sequence[ChunkText], base: Vectors, embedder: Embedder
) -> LanceDBStore:
    """The store for ``recipe``: reused when its marker file matches, built (and marked) otherwise."""
    directory = cache / recipe.key()
    marker = cache / f"{recipe.key()}.json"
    wanted = json.dumps(recipe.__dict__, sort_keys=True)
    if not (marker.is_file() and marker.read_text(encoding="utf-8") == wanted and directory.is_dir()):
        log(f"building the store in {directory} ...")
        marker.unlink(missing_ok=True)
        build_store(directory, recipe, passages, base, embedder)
        marker.write_text(wanted, encoding="utf-8")
    return LanceDBStore.open(directory, embedder=embedder, create=False)


# ---------------------------------------------------------------------------------------------- search


@dataclass
class Method:
    """One way of answering a top-10 query: returns chunk ids, best first."""

    label: str
    run: Callable[[int], list[str]]
    seconds: list[float] = field(default_factory=list)


def stored_vectors(table: Any) -> tuple[list[str], Vectors]:
    """Every stored chunk's id and vector (the numpy ground truth searches exactly what the store holds)."""
    data = table.to_arrow().select(["id", "vector"])
    dim = data.schema.field("vector").type.list_size
    flat = data.column("vector").combine_chunks().flatten().to_numpy()
    return data.column("id").to_pylist(), np.asarray(flat, dtype=np.float32).reshape(-1, dim)


def exact_numpy(ids: Sequence[str], vectors: Vectors, query: Vectors) -> list[str]:
    """Top-K by cosine similarity (all vectors are unit length): one matrix-vector product over everything.

    ``einsum`` runs numpy's own single-threaded loop: multi-threaded BLAS spins badly on a busy 2-core machine.
    """
    sims = np.einsum("ij,j->i", vectors, query)
    top = np.argpartition(-sims, K)[:K]
    return [ids[i] for i in top[np.argsort(-sims[top], kind="stable")]]


def exact_lancedb(table: Any, query: Vectors) -> list[str]:
    """The store's vector query (cosine, top-K) on the same table, with the index bypassed: a flat scan."""
    builder = table.search(query, query_type="vector", vector_column_name="vector").distance_type("cosine")
    rows = builder.bypass_vector_index().limit(K).to_list()
    return [r["id"] for r in rows]


def make_methods(store: LanceDBStore, table: Any, queries: Vectors, texts: Sequence[str]) -> list[Method]:
    """ANN (the product's search), the two exact baselines, and hybrid; each takes a query's index."""
    ids, vectors = stored_vectors(table)

    def search(q: int, mode: SearchMode) -> list[str]:
        text = texts[q] if mode == "hybrid" else ""
        return [h.chunk.id for h in store.search(text, queries[q].tolist(), k=K, mode=mode)]

    return [
        Method("ANN: LanceDBStore.search(vector)", lambda q: search(q, "vector")),
        Method("exact: LanceDB flat scan (bypass index)", lambda q: exact_lancedb(table, queries[q])),
        Method("exact: numpy dot products (in memory)", lambda q: exact_numpy(ids, vectors, queries[q])),
        Method("hybrid: LanceDBStore.search(hybrid)", lambda q: search(q, "hybrid")),
    ]


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds), q)) * 1000.0


def time_methods(methods: Sequence[Method], n_queries: int) -> dict[str, list[list[str]]]:
    """Run every method on every query (rotating the order per query); returns each method's results."""
    results: dict[str, list[list[str]]] = {m.label: [] for m in methods}
    for q in range(min(WARM_UP, n_queries)):
        for m in methods:
            m.run(q)
    for q in range(n_queries):
        shift = q % len(methods)
        for m in [*methods[shift:], *methods[:shift]]:
            t0 = time.perf_counter()
            out = m.run(q)
            m.seconds.append(time.perf_counter() - t0)
            results[m.label].append(out)
    return results


def recall(found: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> tuple[float, float]:
    """Mean and minimum recall@K of ``found`` against ``truth``."""
    per_query = [len(set(f[:K]) & set(t[:K])) / K for f, t in zip(found, truth, strict=True)]
    return float(np.mean(per_query)), float(np.min(per_query))


# ---------------------------------------------------------------------------------------------- main


def load_questions(dev: Path, n: int) -> tuple[list[str], list[str]]:
    """Ids and texts of the first ``n`` dev questions."""
    with open(dev / "questions.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()][:n]
    return [r["id"] for r in rows], [r["question"] for r in rows]


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or reuse) the store, time the searches and print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks in the store")
    parser.add_argument("--queries", type=int, default=100, help="dev questions used as queries (max 300)")
    parser.add_argument("--base", type=int, default=0, help="real passages to derive from (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=Path(".specrag/bench"))
    args = parser.parse_args(argv)

    dev = get_settings().dev_dir
    embedder = get_embedder(get_settings().embedder)
    passages = real_passages(dev, args.base)
    if args.chunks < len(passages):
        passages = passages[: args.chunks]
    base = cached_embeddings(
        args.cache_dir / f"passages-{len(passages)}.npz", [p.id for p in passages], [p.text for p in passages], embedder
    )
    q_ids, q_texts = load_questions(dev, args.queries)
    queries = cached_embeddings(args.cache_dir / f"questions-{len(q_ids)}.npz", q_ids, q_texts, embedder)

    recipe = Recipe(chunks=args.chunks, base=len(passages), seed=args.seed, embedder=embedder.name)
    store = open_cached_store(args.cache_dir, recipe, passages, base, embedder)
    table = lancedb.connect(str(store.path)).open_table(TABLE_NAME)  # the same table, for the exact baseline
    methods = make_methods(store, table, queries, q_texts)
    results = time_methods(methods, len(q_ids))
    report(store, recipe, methods, results)
    return 0


def report(
    store: LanceDBStore,
    recipe: Recipe,
    methods: Sequence[Method],
    results: dict[str, list[list[str]]],
) -> None:
    """Print the settings, the latency table, recall and the ratios."""
    ann, flat, numpy_exact, hybrid = (m.label for m in methods)
    p50 = {m.label: percentile_ms(m.seconds, 50) for m in methods}
    stats = store.stats()
    derived = recipe.chunks - recipe.base
    print(
        f"{stats.chunks:,} chunks: {recipe.base:,} real passages of the shared corpora + {derived:,} derived "
        f"(normalise(e_a + w*e_b + {NOISE}*g), w ~ U(0, {MAX_MIX}), seed {recipe.seed}), embedder {stats.embedder}"
    )
    print(f"vector index: {stats.vector_index}; text index: {stats.text_index}")
    print(f"{len(results[ann])} queries = real dev questions embedded; top-{K}; store {store.path}\n")
    print(f"| {'method':44s} | {'p50 ms':>8s} | {'p95 ms':>8s} |")
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 10}|")
    for m in methods:
        print(f"| {m.label:44s} | {p50[m.label]:8.2f} | {percentile_ms(m.seconds, 95):8.2f} |")
    mean, worst = recall(results[ann], results[numpy_exact])
    flat_mean, _ = recall(results[flat], results[numpy_exact])
    print(f"\nrecall@{K} of ANN vs exact (numpy): {mean:.3f} (worst query {worst:.1f})")
    print(f"recall@{K} of the LanceDB flat scan vs numpy (sanity check, expect 1.0): {flat_mean:.3f}")
    print(f"ANN p50 / exact p50 (LanceDB flat scan): {p50[ann] / p50[flat]:.3f}x")
    print(f"ANN p50 / exact p50 (numpy in memory): {p50[ann] / p50[numpy_exact]:.3f}x")
    print(f"hybrid p50 / ANN p50: {p50[hybrid] / p50[ann]:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
