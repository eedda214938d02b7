"""Ingest files into a store: read and check all inputs, chunk, embed new chunks in batches, store each batch.

Crash safety: every batch is committed by :meth:`VectorStore.add` before the next one is embedded, so a killed or
interrupted ingest loses at most the batch in flight. Chunk ids are content hashes, so re-running the same command
skips everything already stored and completes the rest. Indexes are refreshed once at the end
(:meth:`VectorStore.optimize`); an ingest killed before that still leaves a searchable store (the next ingest or
optimize catches the indexes up).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from app.embed.protocol import Embedder
from app.store.chunking import ChunkText, chunk_document, chunk_id, split_text
from app.store.loaders import Document, IngestError, LoadedInputs, load_documents
from app.store.protocol import Chunk, VectorStore

__all__ = [
    "ChunkText",
    "Document",
    "IngestError",
    "IngestReport",
    "LoadedInputs",
    "chunk_document",
    "chunk_id",
    "ingest_documents",
    "ingest_paths",
    "load_documents",
    "split_text",
]

BatchCallback = Callable[[int, int, int], None]
"""Called after each committed batch with (chunks added by the batch, total added so far, total to add)."""


@dataclass(frozen=True, kw_only=True)
class IngestReport:
    """What an ingest did.

    Attributes:
        files: Files read.
        documents: Documents found in them.
        chunks_seen: Distinct chunks the inputs produced.
        chunks_added: Chunks newly stored.
        already_present: Chunks that were already stored before this run.
        skipped_files: ``(path, reason)`` for files not ingested (unsupported type, no text).
        seconds: Wall time, including embedding and indexing.
    """

    files: int
    documents: int
    chunks_seen: int
    chunks_added: int
    already_present: int
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def chunks_per_second(self) -> float:
        """Newly stored chunks per second of wall time."""
        return self.chunks_added / self.seconds if self.seconds > 0 else 0.0


def _unique_chunks(documents: Sequence[Document]) -> list[ChunkText]:
    unique: dict[str, ChunkText] = {}
    for document in documents:
        for chunk in chunk_document(document):
            unique.setdefault(chunk.id, chunk)
    return list(unique.values())


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]} chunks/s"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def ingest_documents(
    inputs: LoadedInputs,
    store: VectorStore,
    embedder: Embedder,
    *,
    batch_size: int = 64,
    progress: bool = True,
    console: Console | None = None,
    on_batch: BatchCallback | None = None,
) -> IngestReport:
    """Store the chunks of already loaded inputs that the store does not have yet.

    Args:
        inputs: From :func:`app.store.loaders.load_documents`.
        store: Where to store.
        embedder: Embeds the new chunks (must be the store's embedder).
        batch_size: Chunks embedded and committed together.
        progress: Show progress: a bar on a terminal, one line per committed batch otherwise.
        console: Where progress goes (default: stderr).
        on_batch: Called after each committed batch (see :data:`BatchCallback`).

    Returns:
        The report.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    started = time.perf_counter()
    console = console or Console(stderr=True)
    chunks = _unique_chunks(inputs.documents)
    present = store.existing_ids([c.id for c in chunks])
    todo = [c for c in chunks if c.id not in present]
    added = 0

    bar = _progress(console) if progress and console.is_terminal and todo else None
    task = bar.add_task("embedding", total=len(todo), rate="-") if bar is not None else None
    if bar is not None:
        bar.start()
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            vectors = embedder.embed([c.text for c in batch])
            stored = store.add(
                [
                    Chunk(id=c.id, doc_id=c.doc_id, title=c.title, text=c.text, vector=tuple(v.tolist()))
                    for c, v in zip(batch, vectors, strict=True)
                ]
            )
            added += stored
            done = start + len(batch)
            elapsed = time.perf_counter() - started
            if bar is not None and task is not None:
                bar.update(task, completed=done, rate=f"{done / elapsed:.1f}" if elapsed > 0 else "-")
            elif progress:
                console.print(
                    f"stored {done:,}/{len(todo):,} new chunks ({done / max(elapsed, 1e-9):.1f} chunks/s)",
                    highlight=False,
                )
            if on_batch is not None:
                on_batch(stored, added, len(todo))
    finally:
        if bar is not None:
            bar.stop()

    if progress and todo:
        console.print("updating indexes ...", highlight=False)
    store.optimize()
    return IngestReport(
        files=len(inputs.files),
        documents=len(inputs.documents),
        chunks_seen=len(chunks),
        chunks_added=added,
        already_present=len(present),
        skipped_files=[(str(p), reason) for p, reason in inputs.skipped],
        seconds=time.perf_counter() - started,
    )


def ingest_paths(
    paths: Sequence[Path],
    store: VectorStore,
    embedder: Embedder,
    *,
    batch_size: int = 64,
    progress: bool = True,
    console: Console | None = None,
    on_batch: BatchCallback | None = None,
) -> IngestReport:
    """Read, check, chunk, embed and store files and directories (see :func:`ingest_documents`).

    All inputs are read and checked first: a bad input raises :class:`IngestError` before anything is written.

    Args:
        paths: Files (.txt, .md, .pdf, .jsonl) and directories.
        store: Where to store.
        embedder: Embeds new chunks.
        batch_size: Chunks embedded and committed together.
        progress: Show progress on ``console``.
        console: Where progress goes (default: stderr).
        on_batch: Called after each committed batch.

    Returns:
        The report.

    Raises:
        IngestError: An input is missing, unreadable or malformed (nothing was written).
    """
    inputs = load_documents(paths)
    return ingest_documents(
        inputs, store, embedder, batch_size=batch_size, progress=progress, console=console, on_batch=on_batch
    )
