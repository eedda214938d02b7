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
    """Build up to ``m`` unique subsets, each taking one passage from every cluster, covering as many passages as
    the subsets can hold.

    Algorithm 1 of the paper samples one passage per cluster at random; here each subset takes, from every
    cluster, a passage used least so far (ties broken at random), so the m subsets spread over the clusters'
    passages instead of repeating some and never drafting from others. When m·k' >= n (k' clusters) but a cluster
    has more passages than there are subsets, its leftover passages replace repeats of passages from the other
    clusters (a subset then has two passages of that cluster): every passage is drafted from. When the clusters
    allow fewer than ``m`` distinct subsets (few passages), all of them are returned.

    Args:
        labels: Cluster label of each passage.
        m: Wanted number of subsets.
        seed: Seed of the sampling.

    Returns:
        Subsets as lists of passage indices, in cluster order (a replacement keeps its slot).
    """
    clusters = [[i for i, lab in enumerate(labels) if lab == c] for c in sorted(set(labels))]
    if not clusters or m <= 0:
        return []
    rng = np.random.default_rng(seed)
    possible = math.prod(len(c) for c in clusters)
    if possible <= m:
        every = [list(s) for s in itertools.product(*clusters)]
        return [every[i] for i in rng.permutation(len(every))]
    uses = np.zeros(len(labels), dtype=np.int64)
    tiebreak = rng.random(len(labels))
    subsets: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    for _ in range(m):
        subset = _least_used(clusters, uses, tiebreak, seen, rng)
        seen.add(tuple(subset))
        subsets.append(subset)
        uses[subset] += 1
        tiebreak = rng.random(len(labels))
    if m * len(clusters) >= len(labels):
        _cover(subsets, labels, uses)
    return subsets


def _least_used(
    clusters: list[list[int]],
    uses: npt.NDArray[np.int64],
    tiebreak: npt.NDArray[np.float64],
    seen: set[tuple[int, ...]],
    rng: np.random.Generator,
) -> list[int]:
    """One passage per cluster, least used first; a random one-per-cluster subset when that one is taken."""
    subset = [min(c, key=lambda i: (uses[i], tiebreak[i])) for c in clusters]
    while tuple(subset) in seen:
        subset = [int(c[rng.integers(len(c))]) for c in clusters]
    return subset


def _cover(subsets: list[list[int]], labels: Sequence[int], uses: npt.NDArray[np.int64]) -> None:
    """Give every passage no subset holds a slot of a passage that several subsets hold (same cluster first,
    then the most repeated), keeping the subsets distinct."""
    for u in [i for i in range(len(labels)) if uses[i] == 0]:
        slots = [
            (j, pos)
            for j, s in enumerate(subsets)
            for pos, p in enumerate(s)
            if uses[p] > 1 and u not in s and tuple(sorted([*s[:pos], u, *s[pos + 1 :]])) not in _keys(subsets)
        ]
        if not slots:
            continue
        j, pos = min(slots, key=lambda jp: (labels[subsets[jp[0]][jp[1]]] != labels[u], -uses[subsets[jp[0]][jp[1]]]))
        uses[subsets[j][pos]] -= 1
        subsets[j][pos] = u
        uses[u] += 1


def _keys(subsets: list[list[int]]) -> set[tuple[int, ...]]:
    return {tuple(sorted(s)) for s in subsets}


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
