"""Tests of model selection: the Mall_Customers acceptance numbers, determinism, validation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import linkage
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)

from segmentation_pipeline.core.forked import fork_available
from segmentation_pipeline.core.model_search import (
    _adjusted_rand,
    _cut_tree_labels,
    cluster_separation_scores,
    search_models,
)
from segmentation_pipeline.core.selection import (
    ALGORITHMS,
    CANDIDATE_COLUMNS,
    UNSTABLE_CHOICE,
    Candidate,
    ModelSelection,
    assign_nearest,
    canonical_order,
    choose_candidate,
    select_model,
    silhouette_from_distances,
)
from tests.conftest import MALL_CSV

INCOME, SCORE = "Annual Income (k$)", "Spending Score (1-100)"
EXPECTED_MALL_CENTROIDS = np.array(
    [(55.3, 49.5), (86.5, 82.1), (25.7, 79.4), (88.2, 17.1), (26.3, 20.9)]
)


@pytest.fixture(scope="module")
def mall_raw() -> np.ndarray:
    """Annual income and spending score of the 200 Mall customers, original units."""
    if not MALL_CSV.exists():
        pytest.fail(f"reference data missing: {MALL_CSV}")
    return pd.read_csv(MALL_CSV)[[INCOME, SCORE]].to_numpy(dtype=np.float64)


@pytest.fixture(scope="module")
def mall_scaling(mall_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation, as the pipeline computes them in SQL."""
    return mall_raw.mean(axis=0), mall_raw.std(axis=0, ddof=0)


@pytest.fixture(scope="module")
def mall_x(mall_raw: np.ndarray, mall_scaling: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Standardised float32 features, as the pipeline hands them over."""
    mean, std = mall_scaling
    return ((mall_raw - mean) / std).astype(np.float32)


@pytest.fixture(scope="module")
def mall_selection(mall_x: np.ndarray) -> ModelSelection:
    return select_model(mall_x)


# --------------------------------------------------------------------------- acceptance


def test_mall_chooses_five_segments(mall_selection: ModelSelection) -> None:
    assert mall_selection.chosen.k == 5
    assert mall_selection.chosen.selected
    assert UNSTABLE_CHOICE not in mall_selection.rule
    assert mall_selection.chosen.silhouette == pytest.approx(0.554, abs=0.005)
    assert mall_selection.centroids.shape == (5, 2)


def test_mall_centroids_in_original_units(
    mall_selection: ModelSelection, mall_scaling: tuple[np.ndarray, np.ndarray]
) -> None:
    mean, std = mall_scaling
    original = mall_selection.centroids * std + mean
    distances = cdist(EXPECTED_MALL_CENTROIDS, original)
    rows, cols = linear_sum_assignment(distances)
    assert np.all(np.abs(original[cols] - EXPECTED_MALL_CENTROIDS[rows]) <= 1.0), original


def test_mall_labels_agree_with_plain_kmeans(
    mall_selection: ModelSelection, mall_x: np.ndarray, mall_raw: np.ndarray
) -> None:
    labels, _, _, _ = assign_nearest(mall_x, mall_selection.centroids)
    reference = KMeans(5, n_init=10, random_state=42).fit_predict(mall_raw)
    assert adjusted_rand_score(reference, labels) >= 0.95


def test_same_input_gives_identical_selection(
    mall_selection: ModelSelection, mall_x: np.ndarray
) -> None:
    again = select_model(mall_x.copy())
    assert again.candidates == mall_selection.candidates
    assert again.rule == mall_selection.rule
    np.testing.assert_array_equal(again.centroids, mall_selection.centroids)


def test_shuffled_rows_give_identical_centroids_and_assignment(
    mall_selection: ModelSelection, mall_x: np.ndarray
) -> None:
    order = np.random.default_rng(7).permutation(len(mall_x))
    shuffled = select_model(mall_x[order])
    np.testing.assert_array_equal(shuffled.centroids, mall_selection.centroids)
    original_labels = assign_nearest(mall_x, mall_selection.centroids)[0]
    shuffled_labels = assign_nearest(mall_x[order], shuffled.centroids)[0]
    np.testing.assert_array_equal(shuffled_labels, original_labels[order])


def test_search_shared_with_a_forked_process_equals_search_in_one_process(
    mall_x: np.ndarray,
) -> None:
    # This machine has 2 cores: the search hands its units (an algorithm at some k) to a
    # forked worker and this process from one shared counter. Which process evaluates a
    # unit must not matter: every candidate, the choice and the centroids are the same.
    assert fork_available()
    arguments = (mall_x, ALGORITHMS, 2, 10, 0, 0.8, 0.005, None)
    shared = search_models(*arguments)
    alone = search_models(*arguments, share_with_fork=False)
    assert shared.candidates == alone.candidates
    assert shared.rule == alone.rule
    np.testing.assert_array_equal(shared.centroids, alone.centroids)
    assert [(c.algorithm, c.k) for c in shared.candidates] == [
        (algorithm, k) for algorithm in ALGORITHMS for k in range(2, 11)
    ]


def test_one_algorithm_alone_scores_as_among_all(mall_x: np.ndarray) -> None:
    together = select_model(mall_x)
    alone = [
        candidate
        for algorithm in ("kmeans", "gmm", "ward")
        for candidate in select_model(mall_x, algorithms=(algorithm,)).candidates
    ]
    unselected = [replace(c, selected=False) for c in together.candidates]
    assert unselected == [replace(c, selected=False) for c in alone]


def test_stability_ari_equals_sklearn() -> None:
    rng = np.random.default_rng(3)
    for k, other_k in [(2, 2), (5, 7), (9, 3)]:
        labels = rng.integers(0, k, size=1_500)
        other = rng.integers(0, other_k, size=1_500)
        other[:1_000] = labels[:1_000] % other_k  # partly agreeing labelings
        assert _adjusted_rand(labels, k, other, other_k) == adjusted_rand_score(labels, other)
    same = rng.integers(0, 4, size=100)
    assert _adjusted_rand(same, 4, same, 4) == 1.0


def test_four_separated_blobs_give_k_four() -> None:
    centres = [(-6.0, -6.0), (-6.0, 6.0), (6.0, -6.0), (6.0, 6.0)]
    x, _ = make_blobs(n_samples=1_200, centers=centres, cluster_std=1.0, random_state=3)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    selection = select_model(x)
    assert selection.chosen.k == 4
    assert UNSTABLE_CHOICE not in selection.rule


# --------------------------------------------------------------------------- candidates


def test_candidate_table(mall_selection: ModelSelection) -> None:
    candidates = mall_selection.candidates
    assert all(set(CANDIDATE_COLUMNS) <= set(vars(c)) for c in candidates)
    assert len(candidates) == 3 * 9
    assert sum(c.selected for c in candidates) == 1
    assert [c.inertia is not None for c in candidates] == [
        c.algorithm == "kmeans" for c in candidates
    ]
    for c in candidates:
        assert np.isfinite([c.silhouette, c.davies_bouldin, c.calinski_harabasz]).all()
        assert -1.0 <= c.stability <= 1.0
    chosen = next(c for c in candidates if c.selected)
    assert (chosen.algorithm, chosen.k) == (
        mall_selection.chosen.algorithm,
        mall_selection.chosen.k,
    )


def test_subset_of_algorithms_and_k(mall_x: np.ndarray) -> None:
    selection = select_model(mall_x, algorithms=("ward",), k_min=4, k_max=6)
    assert [(c.algorithm, c.k) for c in selection.candidates] == [
        ("ward", 4),
        ("ward", 5),
        ("ward", 6),
    ]
    assert selection.chosen.algorithm == "ward"
    assert selection.centroids.shape == (selection.chosen.k, 2)
    np.testing.assert_array_equal(
        canonical_order(selection.centroids), np.arange(selection.chosen.k)
    )


def _candidate(algorithm: str, k: int, silhouette: float, stability: float) -> Candidate:
    return Candidate(algorithm, k, silhouette, 0.5, 100.0, None, stability)


def test_choice_prefers_stable_then_smaller_k_then_simpler_algorithm() -> None:
    candidates = [
        _candidate("ward", 3, 0.700, 0.95),
        _candidate("gmm", 3, 0.701, 0.95),
        _candidate("kmeans", 4, 0.702, 0.95),
        _candidate("kmeans", 6, 0.900, 0.50),  # best silhouette, but unstable
    ]
    chosen, stable, rule = choose_candidate(candidates, 0.8, 0.005)
    assert (chosen.algorithm, chosen.k) == ("gmm", 3)
    assert stable
    assert "tie" in rule


def test_choice_falls_back_to_best_silhouette_when_nothing_is_stable() -> None:
    candidates = [_candidate("kmeans", 3, 0.40, 0.5), _candidate("gmm", 5, 0.60, 0.6)]
    chosen, stable, rule = choose_candidate(candidates, 0.8, 0.005)
    assert (chosen.algorithm, chosen.k) == ("gmm", 5)
    assert not stable
    assert "NO candidate" in rule


def test_choice_skips_candidates_with_an_empty_segment() -> None:
    empty = Candidate("gmm", 4, 0.9, 0.5, 100.0, None, 0.99, smallest_share=0.0)
    candidates = [empty, _candidate("kmeans", 3, 0.5, 0.9)]
    chosen, _, _ = choose_candidate(candidates, 0.8, 0.005)
    assert (chosen.algorithm, chosen.k) == ("kmeans", 3)


# --------------------------------------------------------------------------- building blocks


def test_assign_nearest_matches_brute_force_in_chunks() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1_001, 3)).astype(np.float32)
    centroids = rng.normal(size=(6, 3))
    distances = cdist(x.astype(np.float64), centroids)
    order = np.argsort(distances, axis=1)
    labels, distance, second, second_distance = assign_nearest(x, centroids, chunk_rows=97)
    np.testing.assert_array_equal(labels, order[:, 0])
    np.testing.assert_array_equal(second, order[:, 1])
    np.testing.assert_allclose(distance, distances[np.arange(1_001), order[:, 0]])
    np.testing.assert_allclose(second_distance, distances[np.arange(1_001), order[:, 1]])
    assert labels.dtype == np.int32 and distance.dtype == np.float64


def test_assign_nearest_single_centroid_and_shape_errors() -> None:
    x = np.zeros((4, 2), dtype=np.float32)
    labels, _, second, second_distance = assign_nearest(x, np.ones((1, 2)))
    assert labels.tolist() == [0] * 4 and second.tolist() == [-1] * 4
    assert np.isinf(second_distance).all()
    with pytest.raises(ValueError, match="features"):
        assign_nearest(x, np.ones((3, 3)))
    with pytest.raises(ValueError, match="chunk_rows"):
        assign_nearest(x, np.ones((3, 2)), chunk_rows=0)


def test_silhouette_from_distances_equals_sklearn() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2))
    labels = rng.integers(0, 4, size=300)
    labels[0] = 9  # a singleton cluster scores 0, as in sklearn
    distances = cdist(x, x).astype(np.float32)
    expected = silhouette_score(x, labels)
    assert silhouette_from_distances(distances, labels) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("k", [2, 5, 9])
def test_cluster_separation_scores_equal_sklearn(k: int) -> None:
    rng = np.random.default_rng(k)
    x, _ = make_blobs(n_samples=4_000, centers=k, n_features=3, random_state=k)
    labels = rng.integers(0, k, size=len(x))
    labels[: len(x) // 2] = KMeans(k, n_init=1, random_state=0).fit_predict(x[: len(x) // 2])
    labels[labels == 1] = k + 4  # absent labels are no clusters, as in sklearn
    davies_bouldin, calinski_harabasz = cluster_separation_scores(x, labels)
    assert davies_bouldin == pytest.approx(davies_bouldin_score(x, labels), rel=1e-9)
    assert calinski_harabasz == pytest.approx(calinski_harabasz_score(x, labels), rel=1e-9)


def test_cluster_separation_scores_edge_cases() -> None:
    twice = np.repeat([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], 10, axis=0)  # clusters of one point
    labels = np.repeat([0, 1], 10)
    assert cluster_separation_scores(twice, labels) == (
        davies_bouldin_score(twice, labels),
        calinski_harabasz_score(twice, labels),
    )
    one_cluster = cluster_separation_scores(twice, np.zeros(20, dtype=int))
    assert all(np.isnan(one_cluster))


def test_ward_cut_matches_agglomerative_clustering() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 3))
    tree = linkage(x, method="ward")
    for k in range(2, 11):
        expected = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
        assert adjusted_rand_score(expected, _cut_tree_labels(tree, k)) == 1.0


def test_canonical_order_ignores_label_switching() -> None:
    centroids = np.array([[1.0, 2.0], [-1.0, 5.0], [1.0, -3.0]])
    for permutation in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        shuffled = centroids[permutation]
        np.testing.assert_array_equal(
            shuffled[canonical_order(shuffled)], [[-1.0, 5.0], [1.0, -3.0], [1.0, 2.0]]
        )


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k_min": 1}, "k_min must be >= 2"),
        ({"k_min": 5, "k_max": 4}, r"k_max \(4\) must be >= k_min \(5\)"),
        ({"k_max": 12}, "number of distinct rows"),
        ({"algorithms": ("kmeans", "dbscan")}, "unknown algorithm"),
        ({"algorithms": ()}, "at least one"),
        ({"stability_threshold": 1.5}, "stability_threshold"),
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict, message: str) -> None:
    # 12 distinct rows, repeated: k_max must stay below 12.
    x = np.repeat(np.arange(24, dtype=np.float32).reshape(12, 2), 3, axis=0)
    with pytest.raises(ValueError, match=message):
        select_model(x, **kwargs)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros(10), "2-D"),
        (np.zeros((0, 2)), "at least one row"),
        (np.array([[0.0, 1.0], [np.nan, 2.0]] * 10), "NaN"),
    ],
)
def test_invalid_data_is_rejected(x: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select_model(x)
