"""compress (optional): keep the sentences of each passage that matter for the question, under a word budget."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from app.store.chunking import split_sentences
from graphs.backends import Backends
from graphs.compression import plan
from graphs.context import Context
from graphs.nodes._bind import context_of
from graphs.state import PassageCompression, State


def compress(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Compress this round's passages to about ``compress_target`` of their words (see ``graphs.compression``).

    The question and every sentence are embedded in one batch; sentence importance is cosine similarity to the
    question. Ids, titles and order of the passages stay; only their text shrinks.

    Returns:
        ``passages`` with the compressed texts and ``compression`` (per passage: tier, kept sentences, words).
    """
    if not state.passages:
        return {"compression": []}
    sentences = [split_sentences(p.text) or [p.text] for p in state.passages]
    flat = [s for ss in sentences for s in ss]
    vectors = backends.embedder.embed([state.question, *flat])
    sims = vectors[1:] @ vectors[0]
    bounds = np.cumsum([0, *map(len, sentences)])
    relevance = [sims[a:b] for a, b in itertools.pairwise(bounds)]
    plans = plan(sentences, relevance, context.compress_target)
    passages, report = [], []
    for p, ss, rel, pl in zip(state.passages, sentences, relevance, plans, strict=True):
        kept = " ".join(ss[j] for j in pl.kept)
        passages.append(dataclasses.replace(p, text=kept))
        report.append(
            PassageCompression(
                passage_id=p.id,
                tier=pl.tier,
                sentences=len(ss),
                kept=pl.kept,
                relevance=[round(float(x), 4) for x in rel],
                words_before=sum(len(s.split()) for s in ss),
                words_after=len(kept.split()),
            )
        )
    return {"passages": passages, "compression": report}


def after_retrieve(
    skip_to: Literal["partition", "answer"], knob: Literal["compress", "compress_answer"]
) -> Callable[[State, Any], Literal["compress", "partition", "answer"]]:
    """Routing after ``retrieve``: to ``compress`` when the run's context enables ``knob`` (``compress`` for the
    drafts of Speculative RAG, ``compress_answer`` for standard RAG's answer), else to ``skip_to``."""

    def route(state: State, runtime: Any) -> Literal["compress", "partition", "answer"]:
        return "compress" if getattr(context_of(runtime), knob) and state.passages else skip_to

    return route
