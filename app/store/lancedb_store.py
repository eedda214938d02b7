"""A :class:`app.store.protocol.VectorStore` on LanceDB (embedded, one directory on disk).

Layout of a store directory::

    <path>/specrag-store.json   which embedder built the store (name, dim) and the layout version
    <path>/chunks.lance/        the LanceDB table: id, doc_id, title, text, vector (fixed-size float32 list)

Writes: :meth:`LanceDBStore.add` is one ``merge_insert("id")`` commit that only inserts ids not yet stored, so a
repeated or concurrent add of the same chunks is idempotent, and the rows are on disk when it returns (a killed
process loses nothing that ``add`` returned for).

Indexes:

* Full-text (BM25): LanceDB's native inverted index on ``text``, created by the first :meth:`add` and brought up to
  date by :meth:`optimize` (which ``specrag ingest`` calls at the end). Rows added after the last index build are
  "unindexed": LanceDB still finds them (it scans them exhaustively and merges the results), so text search never
  misses data; it is only slower until :meth:`optimize` folds them into the index.
* Vector: below :data:`VECTOR_INDEX_MIN_ROWS` rows, search is exact brute force (fast at this size, and an IVF index
  cannot be trained on few rows). :meth:`optimize` builds an IVF_HNSW_SQ index (cosine) once the table reaches the
  threshold, and afterwards adds new rows to it.

Search modes: ``vector`` (cosine similarity), ``text`` (BM25) and ``hybrid``: both searches fused with reciprocal
rank fusion (RRF, k=60) computed here, with deterministic tie-breaking.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from app.embed.protocol import Embedder
from app.store.errors import EmbedderMismatchError, StoreError
from app.store.protocol import Chunk, Hit, SearchMode, StoreNotFoundError, StoreStats, check_where

TABLE_NAME = "chunks"
META_FILE = "specrag-store.json"
LAYOUT_VERSION = 1
VECTOR_INDEX_MIN_ROWS = 5000
"""Rows needed before an approximate vector index is built; below it, search is exact."""
VECTOR_REFINE_FACTOR = 4
"""With a vector index, fetch this many times k candidates and re-rank them exactly."""
RRF_K = 60
"""The usual reciprocal-rank-fusion constant: score = sum over rankings of 1 / (RRF_K + rank)."""
HYBRID_CANDIDATES = 50
"""Minimum candidates taken from each ranking before fusion (more when k is large)."""
_ID_QUERY_BATCH = 500


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _id_list(ids: Iterable[str]) -> str:
    return ", ".join(_sql_str(i) for i in ids)


def _schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("title", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


def _row_to_chunk(row: dict[str, Any]) -> Chunk:
    return Chunk(
        id=row["id"],
        doc_id=row["doc_id"],
        title=row["title"],
        text=row["text"],
        vector=tuple(float(x) for x in row["vector"]),
    )


class LanceDBStore:
    """Passages with vectors in a LanceDB directory. Use :meth:`open` to get one.

    Args:
        path: The store directory.
        table: The open ``chunks`` table.
        embedder_name: Embedder that built the store.
        dim: Vector dimension.
        vector_index_min_rows: Rows needed before :meth:`optimize` builds a vector index.
    """

    def __init__(
        self,
        path: Path,
        table: Any,
        *,
        embedder_name: str,
        dim: int,
        vector_index_min_rows: int = VECTOR_INDEX_MIN_ROWS,
    ) -> None:
        self._path = path
        self._table = table
        self._embedder_name = embedder_name
        self._dim = dim
        self._schema = _schema(dim)
        self._vector_index_min_rows = vector_index_min_rows
        self._seen_fts = False
        self._seen_vector_index = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        embedder: Embedder | None,
        create: bool,
        vector_index_min_rows: int = VECTOR_INDEX_MIN_ROWS,
    ) -> LanceDBStore:
        """Open the store at ``path``, creating it if asked.

        Args:
            path: The store directory.
            embedder: The embedder the caller will search/add with: a store built with another one (name or dim) is
                refused. ``None`` skips the check (read-only uses such as stats); required when creating.
            create: Create the store if there is none (the directory must then be absent or empty).
            vector_index_min_rows: Rows needed before :meth:`optimize` builds a vector index.

        Returns:
            The open store.

        Raises:
            StoreNotFoundError: No store at ``path`` and ``create`` is false.
            EmbedderMismatchError: The store was built with a different embedder.
            StoreError: ``path`` is not a store directory (a file, or a non-empty directory of other things).
        """
        import lancedb

        path = Path(path)
        meta_path = path / META_FILE
        if meta_path.is_file():
            meta = cls._read_meta(meta_path)
            if embedder is not None and (meta["embedder"] != embedder.name or meta["dim"] != embedder.dim):
                raise EmbedderMismatchError(
                    f"the store at {path} was built with embedder {meta['embedder']} (dim {meta['dim']}), but the "
                    f"configured embedder is {embedder.name} (dim {embedder.dim}): use another --store, or "
                    f"re-ingest into a new one"
                )
        elif not create:
            raise StoreNotFoundError(f"no store at {path}: run `specrag ingest` first")
        else:
            if embedder is None:
                raise ValueError("an embedder is needed to create a store")
            if path.exists() and not path.is_dir():
                raise StoreError(f"cannot create a store at {path}: it is a file")
            if path.is_dir() and any(path.iterdir()):
                raise StoreError(f"cannot create a store at {path}: the directory is not empty and is not a store")
            meta = {"embedder": embedder.name, "dim": embedder.dim, "layout": LAYOUT_VERSION}
            path.mkdir(parents=True, exist_ok=True)
            cls._write_meta(meta_path, meta)

        db = lancedb.connect(str(path))
        dim = int(meta["dim"])
        if TABLE_NAME in cls._table_names(db):
            table = db.open_table(TABLE_NAME)
        elif create:
            # The metadata is written first, so a store interrupted here is completed by the next open.
            table = db.create_table(TABLE_NAME, schema=_schema(dim), exist_ok=True)
        else:
            raise StoreNotFoundError(f"no store at {path}: run `specrag ingest` first")
        return cls(
            path,
            table,
            embedder_name=str(meta["embedder"]),
            dim=dim,
            vector_index_min_rows=vector_index_min_rows,
        )

    @staticmethod
    def _table_names(db: Any) -> list[str]:
        result = db.list_tables()
        tables = getattr(result, "tables", None)
        return list(tables if tables is not None else result)

    @staticmethod
    def _read_meta(meta_path: Path) -> dict[str, Any]:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            _ = str(meta["embedder"]), int(meta["dim"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"unreadable store metadata {meta_path}: {exc}") from exc
        if not isinstance(meta, dict):
            raise StoreError(f"unreadable store metadata {meta_path}")
        return meta

    @staticmethod
    def _write_meta(meta_path: Path, meta: dict[str, Any]) -> None:
        tmp = meta_path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(meta_path)

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> Path:
        """The store directory."""
        return self._path

    @property
    def embedder_name(self) -> str:
        """The embedder that built the store."""
        return self._embedder_name

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    def count(self) -> int:
        """Number of stored chunks."""
        return int(self._table.count_rows())

    # ------------------------------------------------------------------ writes

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` already stored."""
        wanted = list(dict.fromkeys(ids))
        found: set[str] = set()
        for start in range(0, len(wanted), _ID_QUERY_BATCH):
            batch = wanted[start : start + _ID_QUERY_BATCH]
            rows = self._table.search().where(f"id IN ({_id_list(batch)})").select(["id"]).limit(len(batch)).to_arrow()
            found.update(rows.column("id").to_pylist())
        return found

    def add(self, chunks: Sequence[Chunk]) -> int:
        """Store the chunks whose ids are new, in one commit (on disk when this returns).

        Args:
            chunks: Chunks with vectors of the store's dimension. Duplicate ids within ``chunks`` keep the first.

        Returns:
            How many chunks were inserted.

        Raises:
            ValueError: A vector has the wrong dimension.
        """
        unique: dict[str, Chunk] = {}
        for chunk in chunks:
            if len(chunk.vector) != self._dim:
                raise ValueError(f"chunk {chunk.id}: vector has {len(chunk.vector)} values, expected {self._dim}")
            unique.setdefault(chunk.id, chunk)
        existing = self.existing_ids(list(unique))
        new = [c for c in unique.values() if c.id not in existing]
        if not new:
            return 0
        flat = np.asarray([c.vector for c in new], dtype=np.float32).reshape(-1)
        data = pa.Table.from_arrays(
            [
                pa.array([c.id for c in new], pa.string()),
                pa.array([c.doc_id for c in new], pa.string()),
                pa.array([c.title for c in new], pa.string()),
                pa.array([c.text for c in new], pa.string()),
                pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), self._dim),
            ],
            schema=self._schema,
        )
        result = self._table.merge_insert("id").when_not_matched_insert_all().execute(data)
        if not self._has_fts_index():
            self._create_fts_index()
            self._seen_fts = True
        inserted = getattr(result, "num_inserted_rows", None)
        return int(inserted) if inserted is not None else len(new)

    # ------------------------------------------------------------------ indexes

    def _indices(self) -> list[Any]:
        return list(self._table.list_indices())

    def _fts_index(self) -> Any | None:
        return next((ix for ix in self._indices() if ix.index_type == "FTS"), None)

    def _vector_index(self) -> Any | None:
        return next((ix for ix in self._indices() if "vector" in ix.columns), None)

    def _has_fts_index(self) -> bool:
        # Indexes are never dropped, so once seen, an index needs no further look-ups.
        if not self._seen_fts:
            self._seen_fts = self._fts_index() is not None
        return self._seen_fts

    def _has_vector_index(self) -> bool:
        if not self._seen_vector_index:
            self._seen_vector_index = self._vector_index() is not None
        return self._seen_vector_index

    def _create_fts_index(self) -> None:
        from lancedb.index import FTS

        # English stemming and stop words; the index covers the rows present now, later rows are scanned.
        self._table.create_index("text", config=FTS(), replace=True)

    def optimize(self) -> None:
        """Build or refresh the indexes.

        Creates the BM25 index (and a B-tree index on ``id``) if missing, builds the vector index once the table has
        :data:`VECTOR_INDEX_MIN_ROWS` rows, then compacts the data files and folds unindexed rows into every index.
        """
        from lancedb.index import BTree, HnswSq

        rows = self.count()
        if rows == 0:
            return
        indices = self._indices()
        if not any(ix.index_type == "FTS" for ix in indices):
            self._create_fts_index()
        if not any("id" in ix.columns for ix in indices):
            self._table.create_index("id", config=BTree(), replace=True)
        if rows >= self._vector_index_min_rows and self._vector_index() is None:
            self._table.create_index("vector", config=HnswSq(distance_type="cosine"), replace=True)
        self._table.optimize()

    # ------------------------------------------------------------------ search

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

        Args:
            query: The query text (used by ``text`` and ``hybrid``).
            vector: The query embedding (used by ``vector`` and ``hybrid``).
            k: How many hits.
            mode: ``hybrid`` (RRF of vector and BM25 rankings), ``vector`` or ``text``.
            exclude_ids: Chunk ids to leave out.
            where: Exact-match metadata filter: ``{"doc_id": ..., "title": ...}`` (either or both).

        Returns:
            Hits, best first; scores are cosine similarity (vector), BM25 (text) or the RRF sum (hybrid). Ties are
            broken by chunk id, so results are deterministic.
        """
        check_where(where)
        if k <= 0:
            return []
        clauses = [f"id NOT IN ({_id_list(exclude_ids)})"] if exclude_ids else []
        clauses += [f"{key} = {_sql_str(value)}" for key, value in sorted((where or {}).items())]
        sql = " AND ".join(clauses) or None
        match mode:
            case "vector":
                return self._vector_search(vector, k, sql)
            case "text":
                return self._text_search(query, k, sql)
            case "hybrid":
                n = max(HYBRID_CANDIDATES, 2 * k)
                return self._fuse([self._vector_search(vector, n, sql), self._text_search(query, n, sql)], k)
            case other:
                raise ValueError(f"unknown search mode {other!r}: valid options are hybrid, vector, text")

    def _vector_search(self, vector: Sequence[float], k: int, where: str | None) -> list[Hit]:
        query_vector = np.asarray(vector, dtype=np.float32)
        if query_vector.shape != (self._dim,):
            raise ValueError(f"query vector has shape {query_vector.shape}, expected ({self._dim},)")
        builder = self._table.search(query_vector, query_type="vector", vector_column_name="vector")
        builder = builder.distance_type("cosine")
        if where:
            builder = builder.where(where, prefilter=True)
        if self._has_vector_index():
            # The index compares quantized vectors: re-rank its candidates on the stored float32 vectors.
            builder = builder.refine_factor(VECTOR_REFINE_FACTOR)
        rows = builder.limit(k).to_list()
        hits = [Hit(chunk=_row_to_chunk(r), score=1.0 - float(r["_distance"])) for r in rows]
        hits.sort(key=lambda h: (-h.score, h.chunk.id))
        return hits

    def _text_search(self, query: str, k: int, where: str | None) -> list[Hit]:
        if not query.strip() or not self._has_fts_index():
            return []
        builder = self._table.search(query, query_type="fts", fts_columns="text")
        if where:
            builder = builder.where(where, prefilter=True)
        rows = builder.limit(k).to_list()
        hits = [Hit(chunk=_row_to_chunk(r), score=float(r["_score"])) for r in rows]
        hits.sort(key=lambda h: (-h.score, h.chunk.id))
        return hits

    @staticmethod
    def _fuse(rankings: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
        scores: dict[str, float] = {}
        best_rank: dict[str, int] = {}
        chunks: dict[str, Chunk] = {}
        for ranking in rankings:
            for rank, hit in enumerate(ranking, start=1):
                cid = hit.chunk.id
                scores[cid] = scores.get(cid, 0.0) + 1.0 / (RRF_K + rank)
                best_rank[cid] = min(best_rank.get(cid, rank), rank)
                chunks.setdefault(cid, hit.chunk)
        order = sorted(scores, key=lambda cid: (-scores[cid], best_rank[cid], cid))
        return [Hit(chunk=chunks[cid], score=scores[cid]) for cid in order[:k]]

    # ------------------------------------------------------------------ stats

    def stats(self) -> StoreStats:
        """Counts and index state."""
        chunks = self.count()
        documents = 0
        if chunks:
            doc_ids = self._table.search().select(["doc_id"]).limit(chunks).to_arrow().column("doc_id")
            documents = len(doc_ids.unique())
        return StoreStats(
            path=str(self._path),
            documents=documents,
            chunks=chunks,
            embedder=f"{self._embedder_name} (dim {self._dim})",
            vector_index=self._describe_vector_index(chunks),
            text_index=self._describe_text_index(),
        )

    def _index_counts(self, index: Any) -> tuple[int, int]:
        stats = None
        with contextlib.suppress(Exception):
            stats = self._table.index_stats(index.name)
        if stats is None:
            return 0, 0
        return int(stats.num_indexed_rows), int(stats.num_unindexed_rows)

    def _describe_vector_index(self, chunks: int) -> str:
        index = self._vector_index()
        if index is None:
            if chunks < self._vector_index_min_rows:
                return f"none (exact search, {chunks:,} < {self._vector_index_min_rows:,})"
            return "none yet (exact search; built by the next optimize)"
        indexed, pending = self._index_counts(index)
        return f"{index.index_type} (cosine): {indexed:,} rows indexed, {pending:,} pending"

    def _describe_text_index(self) -> str:
        index = self._fts_index()
        if index is None:
            return "none (built by the first add)"
        indexed, pending = self._index_counts(index)
        state = "up to date" if pending == 0 else f"{pending:,} rows pending (scanned until the next optimize)"
        return f"BM25 (native FTS): {indexed:,} rows indexed, {state}"
