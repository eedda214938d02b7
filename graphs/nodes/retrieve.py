"""retrieve: hybrid top-n passages for the question (round 0) or the rewritten query (later rounds)."""

from __future__ import annotations

from typing import Any

from graphs.backends import Backends
from graphs.context import Context
from graphs.safety import injection_signals
from graphs.state import Passage, Quarantined, State


def retrieve(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Retrieve ``top_n`` passages, skipping every passage an earlier round already saw.

    With ``quarantine_instructions``, a passage that addresses the model (``graphs.safety.injection_signals``) is
    set aside: recorded in ``quarantined`` with what gave it away, and never shown to a model.

    Args:
        state: Reads ``question``, ``query``, ``round`` and ``all_passages``.
        context: ``top_n``, ``search_mode``, ``quarantine_instructions``.
        backends: Embedder and store.

    Returns:
        ``query``, ``passages`` (this round, quarantined ones removed), every retrieved passage appended to
        ``all_passages`` (so no later round retrieves it again) and the quarantined ones to ``quarantined``.
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
    retrieved = [
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
    passages, quarantined = [], []
    for p in retrieved:
        signals = injection_signals(f"{p.title}\n{p.text}") if context.quarantine_instructions else []
        if signals:
            quarantined.append(Quarantined(passage_id=p.id, title=p.title, round=state.round, signals=signals))
        else:
            passages.append(p)
    return {"query": query, "passages": passages, "all_passages": retrieved, "quarantined": quarantined}
