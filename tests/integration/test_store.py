"""Real MiniLM embeddings and a real LanceDB store (in a temp directory), on the shipped sample corpus."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from app.embed.protocol import Embedder
from app.store.errors import EmbedderMismatchError
from app.store.ingest import IngestReport, ingest_paths, load_documents
from app.store.lancedb_store import LanceDBStore
from app.store.protocol import Chunk, StoreNotFoundError, VectorStore
from tests.conftest import require_embedding_model

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "corpus"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    require_embedding_model()
    from app.embed.factory import make_embedder
    from app.settings import EmbedderSettings

    return make_embedder(EmbedderSettings())


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> tuple[LanceDBStore, IngestReport]:
    path = tmp_path_factory.mktemp("kb") / "store"
    store = LanceDBStore.open(path, embedder=embedder, create=True)
    report = ingest_paths([SAMPLES], store, embedder, batch_size=8, progress=False)
    return store, report


@pytest.fixture(scope="module")
def store(ingested: tuple[LanceDBStore, IngestReport]) -> LanceDBStore:
    return ingested[0]


def test_embedder_outputs_unit_float32(embedder: Embedder) -> None:
    vectors = embedder.embed(["The Rosetta Stone", "Champollion"])
    assert vectors.shape == (2, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert embedder.embed([]).shape == (0, 384)
    assert embedder.name == "sentence-transformers/all-MiniLM-L6-v2"


def test_ingest_report_and_stats(ingested: tuple[LanceDBStore, IngestReport]) -> None:
    store, report = ingested
    inputs = load_documents([SAMPLES])
    assert isinstance(store, VectorStore)
    assert report.files == len(inputs.files) == len(list(SAMPLES.iterdir()))
    assert report.documents == len(inputs.documents)
    assert report.chunks_added == report.chunks_seen > report.documents  # the longer files are split
    assert report.already_present == 0
    stats = store.stats()
    assert stats.chunks == report.chunks_seen
    assert stats.documents == report.documents
    assert stats.embedder == "sentence-transformers/all-MiniLM-L6-v2 (dim 384)"
    assert stats.vector_index == f"none (exact search, {stats.chunks} < 5,000)"
    assert stats.text_index.startswith("BM25") and stats.text_index.endswith("up to date")


def test_ingesting_twice_adds_nothing(ingested: tuple[LanceDBStore, IngestReport], embedder: Embedder) -> None:
    store, first = ingested
    again = ingest_paths([SAMPLES], store, embedder, progress=False)
    assert again.chunks_added == 0
    assert again.already_present == first.chunks_seen
    assert store.count() == first.chunks_seen


def test_add_is_idempotent_and_dedupes(store: LanceDBStore) -> None:
    hit = store.search("", [1.0] + [0.0] * 383, k=1, mode="vector")[0]
    before = store.count()
    assert store.add([hit.chunk, hit.chunk]) == 0
    assert store.count() == before


QUERIES = [
    ("Which ship carried the Rosetta Stone to England?", "corpus/british-acquisition.txt"),
    ("Who was the officer in charge when the stone was found at Fort Julien?", "corpus/discovery-1799.md"),
    ("Swedish diplomat who read proper names in the Demotic text", "corpus/demotic-early-work.txt"),
    ("Where was Champollion born?", "corpus/champollion-life.md"),
    ("Why is the oval ring around a royal name called a cartouche?", "glossary-cartouche"),
]


@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
@pytest.mark.parametrize(("query", "doc_id"), QUERIES)
def test_relevant_passage_first(store: LanceDBStore, embedder: Embedder, mode: str, query: str, doc_id: str) -> None:
    hits = store.search(query, embedder.embed([query])[0], k=5, mode=mode)  # type: ignore[arg-type]
    assert len(hits) == 5
    assert hits[0].chunk.doc_id == doc_id
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len({h.chunk.id for h in hits}) == 5
    top = hits[0].chunk
    assert len(top.vector) == 384
    assert abs(float(np.linalg.norm(top.vector)) - 1.0) < 1e-4


def test_hybrid_is_deterministic(store: LanceDBStore, embedder: Embedder) -> None:
    query = "Champollion Coptic cartouche Ramesses"
    vector = embedder.embed([query])[0]
    runs = [[(h.chunk.id, h.score) for h in store.search(query, vector, k=10)] for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
def test_exclude_ids(store: LanceDBStore, embedder: Embedder, mode: str) -> None:
    query = "Which ship carried the Rosetta Stone to England?"
    vector = embedder.embed([query])[0]
    first = store.search(query, vector, k=3, mode=mode)  # type: ignore[arg-type]
    excluded = [first[0].chunk.id, "no-such-id", "quote'in-id"]
    rest = store.search(query, vector, k=3, mode=mode, exclude_ids=excluded)  # type: ignore[arg-type]
    assert first[0].chunk.id not in {h.chunk.id for h in rest}
    assert rest[0].chunk.id == first[1].chunk.id


def test_text_search_sees_rows_added_after_indexing(store: LanceDBStore, embedder: Embedder) -> None:
    text = "Zanzibarian quokkas collected the obsidian marbles."
    chunk = Chunk(id="late-row", doc_id="late", title="Late", text=text, vector=tuple(embedder.embed([text])[0]))
    assert store.add([chunk]) == 1
    assert "pending" in store.stats().text_index
    hits = store.search("obsidian quokkas", embedder.embed(["obsidian quokkas"])[0], k=1, mode="text")
    assert hits[0].chunk.id == "late-row"
    store.optimize()
    assert store.stats().text_index.endswith("up to date")
    assert store.search("obsidian quokkas", [0.0] * 384, k=1, mode="text")[0].chunk.id == "late-row"


def test_open_missing_store(tmp_path: Path, embedder: Embedder) -> None:
    with pytest.raises(StoreNotFoundError, match="run `specrag ingest` first"):
        LanceDBStore.open(tmp_path / "absent", embedder=embedder, create=False)
    assert not (tmp_path / "absent").exists()


def test_store_of_other_embedder_refused(tmp_path: Path, embedder: Embedder) -> None:
    class Other:
        name = "some/other-model"
        dim = 384

        def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
            raise AssertionError("not used")

    LanceDBStore.open(tmp_path / "kb", embedder=Other(), create=True)
    with pytest.raises(EmbedderMismatchError, match="built with embedder some/other-model"):
        LanceDBStore.open(tmp_path / "kb", embedder=embedder, create=False)
    from app.settings import StoreSettings
    from app.store.factory import open_store

    with pytest.raises(EmbedderMismatchError):
        open_store(StoreSettings(), path=tmp_path / "kb", embedder=embedder, create=True)
