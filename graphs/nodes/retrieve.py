"""retrieve: hybrid top-n passages for the question (round 0) or the rewritten query (later rounds)."""

from __future__ import annotations

from typing import Any

from graphs.backends import Backends
from graphs.context import Context
from graphs.state import Passage, State


def retrieve(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Retrieve ``top_n`` passages, skipping every passage an earlier round already saw.

    Args:
        state: Reads ``question``, ``query``, ``round`` and ``all_passages``.
        context: ``top_n``, ``search_mode``.
        backends: Embedder and store.

    Returns:
        ``query``, ``passages`` (this round) and the same passages appended to ``all_passages``.
    """
    query = state.query or state.question
    vector = backends.embedder.embed([query])[0]
    hits = backends.store.search(
        query,
        vector.tolist(),
        k=context.top_n,
        mode=context.search_mode,
        exclude_ids=[p.id for p in state.all_passages],
    )
    passages = [
        Passage(
            id=h.chunk.id,
            doc_id=h.chunk.doc_id,
            title=h.chunk.title,
            text=h.chunk.text,
            score=h.score,
            round=state.round,
            vector=list(h.chunk.vector),
        )
        for h in hits
    ]
    return {"query": query, "passages": passages, "all_passages": passages}
