"""The vector index is built only past the row threshold, and search stays exact-quality (random vectors)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from app.store.lancedb_store import LanceDBStore
from app.store.protocol import Chunk

pytestmark = pytest.mark.integration


class _Fake:
    name = "random-vectors"
    dim = 16

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        raise AssertionError("not used")


def _chunks(rng: np.random.Generator, start: int, n: int) -> list[Chunk]:
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        Chunk(
            id=f"c{start + i:05d}", doc_id=f"d{(start + i) % 37}", title="t", text=f"row {start + i}", vector=tuple(v)
        )
        for i, v in enumerate(vectors.tolist())
    ]


def test_vector_index_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    store = LanceDBStore.open(tmp_path / "kb", embedder=_Fake(), create=True, vector_index_min_rows=600)
    rows = _chunks(rng, 0, 500)
    assert store.add(rows) == 500
    store.optimize()
    assert store.stats().vector_index == "none (exact search, 500 < 600)"
    query = rows[123].vector
    exact = [h.chunk.id for h in store.search("", query, k=10, mode="vector")]
    assert exact[0] == "c00123"

    more = _chunks(rng, 500, 200)
    assert store.add(more) == 200
    store.optimize()
    stats = store.stats()
    assert stats.chunks == 700 and stats.documents == 37
    assert "Hnsw" in stats.vector_index or "HNSW" in stats.vector_index, stats.vector_index
    assert stats.vector_index.endswith("0 pending")

    # recall@10 of the index against a brute force over ALL 700 rows (cosine; the rows are unit vectors), for
    # indexed rows and for fresh random queries
    every = rows + more
    ids = np.asarray([c.id for c in every])
    matrix = np.asarray([c.vector for c in every], dtype=np.float64)
    fresh = rng.normal(size=(20, 16))
    queries = [*(every[i].vector for i in range(0, 700, 35)), *(fresh / np.linalg.norm(fresh, axis=1, keepdims=True))]
    recalls = []
    for q in queries:
        truth = set(ids[np.argsort(-(matrix @ np.asarray(q, dtype=np.float64)), kind="stable")[:10]].tolist())
        found = [h.chunk.id for h in store.search("", list(map(float, q)), k=10, mode="vector")]
        assert len(found) == 10
        recalls.append(len(truth & set(found)) / 10)
    assert store.search("", query, k=1, mode="vector")[0].chunk.id == "c00123"
    assert min(recalls) >= 0.8 and sum(recalls) / len(recalls) >= 0.95, recalls  # only 500 rows: ~0.7
