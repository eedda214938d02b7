import numpy as np
import pytest

from graphs.clustering import kmeans, random_subsets, sample_subsets


def two_blobs(n_per: int = 5, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal([5, 0], 0.1, size=(n_per, 2))
    b = rng.normal([-5, 0], 0.1, size=(n_per, 2))
    return np.vstack([a, b])


def test_kmeans_separates_obvious_groups() -> None:
    labels = kmeans(two_blobs(), 2, seed=0)
    assert labels.tolist() == [0] * 5 + [1] * 5


def test_kmeans_is_deterministic_for_a_seed() -> None:
    x = np.random.default_rng(3).normal(size=(30, 8))
    assert kmeans(x, 3, seed=7).tolist() == kmeans(x, 3, seed=7).tolist()
    assert len(set(kmeans(x, 3, seed=7).tolist())) == 3


def test_kmeans_caps_k_at_distinct_points_and_handles_empty() -> None:
    x = np.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert sorted(set(kmeans(x, 5, seed=0).tolist())) == [0, 1]
    assert kmeans(np.zeros((0, 4)), 2, seed=0).tolist() == []
    assert kmeans(np.ones((1, 4)), 2, seed=0).tolist() == [0]


def test_subsets_take_one_passage_per_cluster_and_are_unique() -> None:
    labels = [0, 0, 0, 1, 1, 1, 2, 2]
    subsets = sample_subsets(labels, 5, seed=0)
    assert len(subsets) == 5
    assert len({tuple(s) for s in subsets}) == 5
    for s in subsets:
        assert [labels[i] for i in s] == [0, 1, 2]


def test_subsets_deterministic_and_seed_dependent() -> None:
    labels = [0] * 5 + [1] * 5
    assert sample_subsets(labels, 5, seed=1) == sample_subsets(labels, 5, seed=1)
    assert any(sample_subsets(labels, 5, seed=s) != sample_subsets(labels, 5, seed=1) for s in range(2, 6))


@pytest.mark.parametrize(
    ("labels", "expected"),
    [([0, 0, 1], 2), ([0], 1), ([0, 1], 1), ([], 0), ([0, 1, 1, 1, 1], 4)],
)
def test_fewer_possible_subsets_than_m_returns_all(labels: list[int], expected: int) -> None:
    subsets = sample_subsets(labels, 5, seed=0)
    assert len(subsets) == expected
    assert len({tuple(s) for s in subsets}) == expected


def test_random_subsets_are_unique_k_subsets_and_deterministic() -> None:
    subsets = random_subsets(10, 2, 5, seed=3)
    assert len(subsets) == 5 and len({tuple(s) for s in subsets}) == 5
    assert all(len(s) == 2 and len(set(s)) == 2 and all(0 <= i < 10 for i in s) for s in subsets)
    assert random_subsets(10, 2, 5, seed=3) == subsets
    assert random_subsets(10, 2, 5, seed=4) != subsets


def test_random_subsets_with_few_passages_returns_every_subset() -> None:
    assert sorted(map(tuple, random_subsets(3, 2, 5, seed=0))) == [(0, 1), (0, 2), (1, 2)]
    assert random_subsets(1, 2, 5, seed=0) == [[0]]
    assert random_subsets(0, 2, 5, seed=0) == []
