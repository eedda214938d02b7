"""partition: k-means over passage embeddings, then m unique subsets with one passage per cluster."""

from __future__ import annotations

from typing import Any

import numpy as np

from graphs.backends import Backends
from graphs.clustering import kmeans, random_subsets, sample_subsets
from graphs.context import Context
from graphs.state import State


def partition(state: State, context: Context, backends: Backends) -> dict[str, Any]:
    """Cluster this round's passages into k = ``per_draft`` groups and sample ``n_drafts`` subsets.

    With fewer passages than k, there are fewer clusters; when the clusters admit fewer than m distinct
    subsets, all of them are used. The seed is offset by the round so a retry samples afresh. With
    ``partition='random'`` (an ablation) there is no clustering: every passage is in cluster 0 and each subset is
    k passages drawn at random.

    Returns:
        ``clusters`` (label per passage) and ``subsets`` (passage ids per draft).
    """
    passages = state.passages
    if not passages:
        return {"clusters": [], "subsets": []}
    seed = context.seed + 1000 * state.round
    if context.partition == "random":
        labels = [0] * len(passages)
        subsets = random_subsets(len(passages), context.per_draft, context.n_drafts, seed=seed)
    else:
        vectors = np.asarray([p.vector for p in passages], dtype=np.float64)
        labels = kmeans(vectors, context.per_draft, seed=seed).tolist()
        subsets = sample_subsets(labels, context.n_drafts, seed=seed)
    return {"clusters": labels, "subsets": [[passages[i].id for i in s] for s in subsets]}
