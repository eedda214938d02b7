"""The VectorStore contract: every backend (LanceDB, Weaviate via the wire fake, Weaviate live) passes the same tests.

Vectors come from the deterministic bag-of-words ``FakeEmbedder`` (texts sharing words are close), so vector, text
and hybrid search all have an obviously right answer without loading a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from app.store.errors import EmbedderMismatchError
from app.store.protocol import Chunk, SearchMode, StoreNotFoundError, VectorStore
from tests.contract.conftest import KnowledgeBases
from tests.fakes import FakeEmbedder

EMBEDDER = FakeEmbedder()
CORPUS = [
    ("rosetta", "Rosetta Stone", "The Rosetta Stone was shipped to England aboard HMS Egyptienne in 1802."),
    ("champollion", "Champollion", "Jean-Francois Champollion was born in Figeac in 1790."),
    ("champollion", "Champollion", "Champollion announced the decipherment of hieroglyphs in 1822 in Paris."),
    ("cartouche", "Cartouche", "A cartouche is an oval ring enclosing a royal name in hieroglyphic writing."),
    ("fort", "Fort Julien", "French soldiers found the stone while rebuilding Fort Julien near Rashid."),
    ("akerblad", "Akerblad", "Swedish diplomat Akerblad read proper names in the demotic text."),
]
QUERIES = [
    ("Which ship carried the Rosetta Stone to England?", 0),
    ("Where was Champollion born?", 1),
    ("oval ring around a royal name", 3),
    ("Swedish diplomat demotic proper names", 5),
]
MODES: list[SearchMode] = ["hybrid", "vector", "text"]


def make_chunks(rows: Sequence[tuple[str, str, str]] = CORPUS, prefix: str = "c") -> list[Chunk]:
    """Chunks with content-like ids and fake-embedder vectors."""
    vectors = EMBEDDER.embed([text for _, _, text in rows])
    return [
        Chunk(id=f"{prefix}{i:02d}", doc_id=doc, title=title, text=text, vector=tuple(float(x) for x in vec))
        for i, ((doc, title, text), vec) in enumerate(zip(rows, vectors, strict=True))
    ]


def search(store: VectorStore, query: str, *, k: int, mode: SearchMode = "hybrid", **kwargs: object) -> list[str]:
    """Ids of the hits, best first."""
    vector = [float(x) for x in EMBEDDER.embed([query])[0]]
    return [h.chunk.id for h in store.search(query, vector, k=k, mode=mode, **kwargs)]  # type: ignore[arg-type]


@pytest.fixture
def kb(kbs: KnowledgeBases, kb_name: Callable[[str], str]) -> VectorStore:
    """A knowledge base holding :data:`CORPUS`."""
    store = kbs.open(kb_name("main"))
    assert store.add(make_chunks()) == len(CORPUS)
    store.optimize()
    return store


def test_is_a_vector_store(kb: VectorStore) -> None:
    assert isinstance(kb, VectorStore)


def test_add_is_idempotent(kbs: KnowledgeBases, kb_name: Callable[[str], str]) -> None:
    store = kbs.open(kb_name("idem"))
    chunks = make_chunks()
    assert store.add(chunks[:3] + chunks[:1]) == 3  # duplicates within one call count once
    assert store.add(chunks) == len(chunks) - 3  # only the new ones
    assert store.add(chunks) == 0
    assert store.add([]) == 0
    assert store.stats().chunks == len(chunks)


def test_reopen_sees_the_data(kbs: KnowledgeBases, kb_name: Callable[[str], str]) -> None:
    name = kb_name("reopen")
    assert kbs.open(name).add(make_chunks()) == len(CORPUS)
    again = kbs.open(name, create=False)
    assert again.add(make_chunks()) == 0
    assert again.stats().chunks == len(CORPUS)


def test_existing_ids(kb: VectorStore) -> None:
    assert kb.existing_ids(["c00", "c03", "absent", "c00"]) == {"c00", "c03"}
    assert kb.existing_ids([]) == set()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("query", "expected"), QUERIES)
def test_relevant_chunk_first(kb: VectorStore, mode: SearchMode, query: str, expected: int) -> None:
    vector = [float(x) for x in EMBEDDER.embed([query])[0]]
    hits = kb.search(query, vector, k=3, mode=mode)
    assert hits[0].chunk.id == f"c{expected:02d}"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = hits[0].chunk
    assert (top.doc_id, top.title, top.text) == CORPUS[expected]
    assert top.vector == pytest.approx(make_chunks()[expected].vector, abs=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_exclude_ids(kb: VectorStore, mode: SearchMode) -> None:
    query = "Champollion hieroglyphs"
    first = search(kb, query, k=3, mode=mode)
    rest = search(kb, query, k=3, mode=mode, exclude_ids=[first[0], "no-such-id", "quote'in-id"])
    assert first[0] not in rest
    assert len(first) >= 2
    if mode == "hybrid":
        # Weaviate's relativeScore fusion normalises over the candidates, so removing one may reorder the others.
        assert rest[0] in first[1:]
    else:
        assert rest[: len(first) - 1] == first[1:]


@pytest.mark.parametrize("mode", MODES)
def test_k_bounds_results(kb: VectorStore, mode: SearchMode) -> None:
    assert len(search(kb, "Champollion Rosetta Stone hieroglyphs", k=2, mode=mode)) == 2
    assert search(kb, "Champollion", k=0, mode=mode) == []
    assert len(set(search(kb, "Champollion", k=50, mode=mode))) == len(search(kb, "Champollion", k=50, mode=mode))


def test_vector_search_returns_everything_when_k_is_large(kb: VectorStore) -> None:
    assert sorted(search(kb, "stone", k=100, mode="vector")) == [f"c{i:02d}" for i in range(len(CORPUS))]


@pytest.mark.parametrize("mode", MODES)
def test_where_filter(kb: VectorStore, mode: SearchMode) -> None:
    hits = search(kb, "Champollion hieroglyphs Rosetta Stone", k=5, mode=mode, where={"doc_id": "champollion"})
    assert set(hits) == {"c01", "c02"}
    with pytest.raises(ValueError, match="valid fields are doc_id, title"):
        search(kb, "x", k=1, mode=mode, where={"text": "x"})


def test_stats(kb: VectorStore) -> None:
    stats = kb.stats()
    assert stats.chunks == len(CORPUS)
    assert stats.documents == len({doc for doc, _, _ in CORPUS})
    assert stats.embedder == "fake-bow-64 (dim 64)"
    assert stats.vector_index and stats.text_index


def test_knowledge_bases_are_isolated(kbs: KnowledgeBases, kb_name: Callable[[str], str]) -> None:
    a, b = kbs.open(kb_name("a")), kbs.open(kb_name("b"))
    chunks = make_chunks()
    assert a.add(chunks[:3]) == 3
    assert b.add(chunks[3:]) == len(chunks) - 3
    assert b.add(chunks[:3]) == 3  # the same chunk ids are new in another knowledge base
    a_only = make_chunks([("zeta", "Zeta", "Zanzibarian quokkas collected obsidian marbles.")], prefix="z")
    assert a.add(a_only) == 1
    assert a.existing_ids(["c00", "c04", "z00"]) == {"c00", "z00"}
    assert b.existing_ids(["z00"]) == set()
    for mode in MODES:
        assert "z00" not in search(b, "obsidian quokkas", k=10, mode=mode)
        assert search(a, "obsidian quokkas", k=1, mode=mode) == ["z00"]
    assert (a.stats().chunks, b.stats().chunks) == (4, len(chunks))


def test_missing_knowledge_base(kbs: KnowledgeBases, kb_name: Callable[[str], str]) -> None:
    kbs.open(kb_name("exists"))  # the backend exists (for Weaviate: the collection), this knowledge base does not
    with pytest.raises(StoreNotFoundError):
        kbs.open(kb_name("absent"), create=False)


def test_other_embedder_refused(kbs: KnowledgeBases, kb_name: Callable[[str], str]) -> None:
    class Other(FakeEmbedder):
        name = "some/other-model"

    name = kb_name("emb")
    kbs.open(name)
    with pytest.raises(EmbedderMismatchError):
        kbs.open(name, embedder=Other())
