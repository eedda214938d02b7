"""The passages every system of an evaluation sees for one question, served as a ``VectorStore``.

In the paper's setting the dataset gives each question's passages (in the retriever's order); with ``--store`` they
are retrieved once from an ingested knowledge base. Either way all systems read the same pool, and the graphs run
unchanged: their ``retrieve`` node asks this store, which returns the pool in order (skipping passages an earlier
round saw), so ``top_n`` takes the first n.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.embed.protocol import Embedder
from app.eval.dataset import EvalQuestion
from app.store.chunking import chunk_id, split_text
from app.store.protocol import Chunk, Hit, SearchMode, StoreStats, VectorStore


class PassagePool:
    """A fixed, ordered list of chunks (one question's passages).

    Args:
        chunks: The passages, best first, with vectors.
        scores: The retriever's score of each (None where the source gave none).
    """

    def __init__(self, chunks: Sequence[Chunk], scores: Sequence[float | None]) -> None:
        if len(chunks) != len(scores):
            raise ValueError("one score (or None) per chunk")
        self.chunks = list(chunks)
        self.scores = list(scores)

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return {c.id for c in self.chunks} & set(ids)

    def add(self, chunks: Sequence[Chunk]) -> int:
        raise NotImplementedError("an evaluation's passage pool is read-only")

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
        """The first ``k`` passages of the pool not in ``exclude_ids``; the score is the source's, else 1/rank."""
        skip = set(exclude_ids)
        hits = [
            Hit(chunk=c, score=s if s is not None else 1.0 / (rank + 1))
            for rank, (c, s) in enumerate(zip(self.chunks, self.scores, strict=True))
            if c.id not in skip and all(getattr(c, f) == v for f, v in (where or {}).items())
        ]
        return hits[:k]

    def optimize(self) -> None:
        pass

    def stats(self) -> StoreStats:
        n = len(self.chunks)
        return StoreStats(
            path=":eval-pool:",
            documents=len({c.doc_id for c in self.chunks}),
            chunks=n,
            embedder="",
            vector_index="none (fixed pool)",
            text_index="none (fixed pool)",
        )


def given_chunks(question: EvalQuestion) -> list[tuple[str, str, str, float | None]]:
    """The dataset's passages for ``question`` chunked as ingest would chunk them, in order: (document id, title,
    chunk text, the passage's score) per chunk (what :func:`given_pool` takes its first chunks from)."""
    return [
        (f"{question.id}#{i}", p.title, text, p.score)
        for i, p in enumerate(question.passages)
        for text in split_text(p.text)
    ]


def given_pool(question: EvalQuestion, embedder: Embedder, *, limit: int) -> PassagePool:
    """The dataset's passages for ``question``, chunked as ingest would chunk them (passages over 250 words are
    split into ~200-word windows, in order), the first ``limit`` chunks embedded (text only, as ingest does).

    Args:
        question: The question with its passages.
        embedder: Gives the vectors that ``partition`` clusters.
        limit: Chunks kept (top-n times the rounds a run may take).
    """
    items = given_chunks(question)[:limit]
    vectors = embedder.embed([text for _, _, text, _ in items])  # as ingest embeds chunks
    chunks = [
        Chunk(id=chunk_id(doc_id, text), doc_id=doc_id, title=title, text=text, vector=tuple(map(float, v)))
        for (doc_id, title, text, _), v in zip(items, vectors, strict=True)
    ]
    return PassagePool(chunks, [s for *_, s in items])


def retrieved_pool(query: str, store: VectorStore, embedder: Embedder, *, limit: int, mode: SearchMode) -> PassagePool:
    """The top ``limit`` chunks of an ingested knowledge base for ``query`` (retrieved once, for every system)."""
    hits = store.search(query, embedder.embed([query])[0].tolist(), k=limit, mode=mode)
    return PassagePool([h.chunk for h in hits], [h.score for h in hits])
