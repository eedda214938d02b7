"""Vector stores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

SearchMode = Literal["hybrid", "vector", "text"]
WHERE_KEYS = ("doc_id", "title")
"""Chunk fields a search can be restricted to (exact match): see :meth:`VectorStore.search`."""


def check_where(where: Mapping[str, str] | None) -> None:
    """Refuse a metadata filter on unknown fields.

    Args:
        where: ``{field: value}`` with fields from :data:`WHERE_KEYS`, or ``None``.

    Raises:
        ValueError: An unknown field or a non-string value.
    """
    for key, value in (where or {}).items():
        if key not in WHERE_KEYS:
            raise ValueError(f"cannot filter on {key!r}: valid fields are {', '.join(WHERE_KEYS)}")
        if not isinstance(value, str):
            raise ValueError(f"filter value for {key!r} must be a string, got {type(value).__name__}")


@dataclass(frozen=True, kw_only=True)
class Chunk:
    """A stored passage.

    Attributes:
        id: Content-hash id (sha256 of document id and text, hex, 32 chars): stable across re-ingests.
        doc_id: The source document's id (file path, or the ``id`` field of a JSONL line).
        title: Document title.
        text: The passage text.
        vector: Its embedding (unit length).
    """

    id: str
    doc_id: str
    title: str
    text: str
    vector: tuple[float, ...] = field(repr=False, default=())


@dataclass(frozen=True, kw_only=True)
class Hit:
    """A search result: a chunk and its relevance score (higher is better)."""

    chunk: Chunk
    score: float


@dataclass(frozen=True, kw_only=True)
class StoreStats:
    """What the store holds and how it is indexed."""

    path: str
    documents: int
    chunks: int
    embedder: str
    vector_index: str
    text_index: str


class StoreNotFoundError(FileNotFoundError):
    """The store does not exist (nothing has been ingested there)."""


@runtime_checkable
class VectorStore(Protocol):
    """Passages with vectors: idempotent upserts, vector, full-text and hybrid search."""

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` already stored."""
        ...

    def add(self, chunks: Sequence[Chunk]) -> int:
        """Store chunks whose ids are new (durably, before returning); returns how many were added."""
        ...

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
        """Top-k chunks for the query, best first, skipping ``exclude_ids``.

        ``where`` restricts the search to chunks whose fields equal the given values (fields: ``doc_id``,
        ``title``; all must match). Callers that do not pass it are unaffected.
        """
        ...

    def optimize(self) -> None:
        """Build or refresh indexes (vector index once the table is large enough, BM25 index)."""
        ...

    def stats(self) -> StoreStats:
        """Counts and index state."""
        ...
