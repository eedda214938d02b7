"""Multi-perspective sampling (Algorithm 1 of the paper, lines 2-10): k-means, then unique subsets.

Deterministic for a seed: the same vectors and seed give the same clusters and subsets.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def kmeans(vectors: npt.NDArray[np.floating], k: int, *, seed: int, max_iter: int = 100) -> npt.NDArray[np.int64]:
    """Cluster rows of ``vectors`` into at most ``k`` non-empty clusters (k-means++ init, Lloyd iterations).

    Args:
        vectors: Array of shape (n, d).
        k: Wanted number of clusters; capped at the number of distinct rows.
        seed: Seed of the initialisation.
        max_iter: Iteration bound.

    Returns:
        Labels 0..k'-1 of shape (n,), numbered by first appearance so the labelling is canonical.
    """
    x = np.asarray(vectors, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = min(k, len(np.unique(x.round(6), axis=0)))
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(x[rng.choice(n, p=d2 / d2.sum())])
    c = np.asarray(centres)
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(max_iter):
        new = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            # An emptied cluster takes the point farthest from its centre, so k stays k.
            c[j] = members.mean(0) if len(members) else x[np.argmax(((x - c[labels]) ** 2).sum(-1))]
    return _canonical(labels)


def _canonical(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    order: dict[int, int] = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.asarray([order[label] for label in labels.tolist()], dtype=np.int64)


def sample_subsets(labels: Sequence[int], m: int, *, seed: int) -> list[list[int]]:
    """Build up to ``m`` unique subsets, each taking one passage from every cluster.

    When the clusters allow fewer than ``m`` distinct subsets (few passages), all of them are returned.

    Args:
        labels: Cluster label of each passage.
        m: Wanted number of subsets.
        seed: Seed of the sampling.

    Returns:
        Subsets as lists of passage indices, ordered by cluster label.
    """
    clusters = [[i for i, lab in enumerate(labels) if lab == c] for c in sorted(set(labels))]
    if not clusters:
        return []
    rng = np.random.default_rng(seed)
    possible = math.prod(len(c) for c in clusters)
    if possible <= m:
        every = [list(s) for s in itertools.product(*clusters)]
        return [every[i] for i in rng.permutation(len(every))]
    seen: set[tuple[int, ...]] = set()
    subsets: list[list[int]] = []
    while len(subsets) < m:
        subset = tuple(int(c[rng.integers(len(c))]) for c in clusters)
        if subset not in seen:
            seen.add(subset)
            subsets.append(list(subset))
    return subsets


def random_subsets(n: int, k: int, m: int, *, seed: int) -> list[list[int]]:
    """Up to ``m`` unique subsets of ``k`` passage indices drawn uniformly, without clustering (the paper's
    "random subsets" ablation). With ``C(n, k) <= m``, every subset is returned, in a random order.

    Args:
        n: Number of passages.
        k: Passages per subset (capped at ``n``).
        m: Wanted number of subsets.
        seed: Seed of the sampling.

    Returns:
        Subsets as sorted lists of passage indices.
    """
    k = min(k, n)
    if k <= 0:
        return []
    rng = np.random.default_rng(seed)
    if math.comb(n, k) <= m:
        every = [list(s) for s in itertools.combinations(range(n), k)]
        return [every[i] for i in rng.permutation(len(every))]
    seen: set[tuple[int, ...]] = set()
    subsets: list[list[int]] = []
    while len(subsets) < m:
        subset = tuple(sorted(int(i) for i in rng.choice(n, size=k, replace=False)))
        if subset not in seen:
            seen.add(subset)
            subsets.append(list(subset))
    return subsets
