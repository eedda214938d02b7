"""Selective, question-aware compression of passages (training-free, after FlexRAG, arXiv 2409.15699).

FlexRAG estimates how much each part of the retrieved context matters for the question and compresses the less
important parts harder, under an overall budget. Its learned compressor needs training; its importance estimation
with a general embedder and its importance-grouped compression ratios do not. Here:

1. Every passage is split into sentences; each sentence's importance is its cosine similarity to the question
   (the embedder that indexed the store), a passage's importance that of its best sentence.
2. Passages are grouped by importance rank into tiers (most, middle, least important thirds); each tier keeps a
   share of its words proportional to its weight (``TIER_WEIGHTS``), scaled so the whole meets the budget (a
   target fraction of the words, capped at 1 per tier).
3. Within a passage, sentences are kept in order of importance until the passage's share is reached (its best
   sentence always), then put back in their original order. Passage boundaries are kept: no passage disappears.

Words stand in for tokens when budgeting (the drafter's real prompt tokens are what the evaluation reports).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

TIER_WEIGHTS = (1.5, 1.0, 0.5)
"""Relative keep ratios of the most, middle and least important third of the passages."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What to keep of one passage."""

    tier: int
    """0 = most important third of the passages, 2 = least."""
    ratio: float
    """Share of the passage's words its tier allows."""
    kept: list[int]
    """Indices of the kept sentences, in original order."""


def tier_ratios(words_per_tier: Sequence[int], target: float) -> list[float]:
    """Keep ratio per tier, proportional to ``TIER_WEIGHTS``, each at most 1, meeting ``target`` overall.

    A tier capped at 1 hands its excess to the others (water filling), so the overall fraction is ``target``
    whenever that is reachable.
    """
    total = sum(words_per_tier)
    if total == 0:
        return [1.0] * len(words_per_tier)
    weights = [TIER_WEIGHTS[min(i, len(TIER_WEIGHTS) - 1)] for i in range(len(words_per_tier))]
    ratios = [0.0] * len(words_per_tier)
    free = [i for i, w in enumerate(words_per_tier) if w > 0]
    budget = target * total
    while free:
        scale = budget / sum(weights[i] * words_per_tier[i] for i in free)
        capped = [i for i in free if weights[i] * scale >= 1.0]
        if not capped:
            for i in free:
                ratios[i] = weights[i] * scale
            break
        for i in capped:
            ratios[i] = 1.0
            budget -= words_per_tier[i]
            free.remove(i)
    return ratios


def plan(
    sentences: Sequence[Sequence[str]], relevance: Sequence[npt.NDArray[np.floating]], target: float
) -> list[Plan]:
    """Which sentences of each passage to keep so that about ``target`` of all words remain.

    Args:
        sentences: Per passage, its sentences.
        relevance: Per passage, each sentence's similarity to the question.
        target: Fraction of the words to keep overall (0 < target <= 1).

    Returns:
        One plan per passage.
    """
    importance = [float(np.max(r)) if len(r) else -np.inf for r in relevance]
    order = sorted(range(len(sentences)), key=lambda i: -importance[i])
    tiers = [0] * len(sentences)
    for rank, i in enumerate(order):
        tiers[i] = min(2, rank * 3 // max(len(order), 1))
    words = [[len(s.split()) for s in ss] for ss in sentences]
    per_tier = [sum(sum(words[i]) for i in range(len(sentences)) if tiers[i] == t) for t in range(3)]
    ratios = tier_ratios(per_tier, target)
    plans = []
    for i, ss in enumerate(sentences):
        budget = ratios[tiers[i]] * sum(words[i])
        kept: list[int] = []
        used = 0
        for j in sorted(range(len(ss)), key=lambda j: -float(relevance[i][j])):
            if kept and used + words[i][j] > budget:
                continue  # a shorter, less relevant sentence may still fit
            kept.append(j)
            used += words[i][j]
        plans.append(Plan(tier=tiers[i], ratio=ratios[tiers[i]], kept=sorted(kept)))
    return plans
