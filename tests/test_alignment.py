"""Tests of stable segment ids across runs and of ARI from a contingency table."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics.cluster import contingency_matrix

from segmentation_pipeline.core.alignment import align_segment_ids, ari_from_contingency

PREVIOUS = np.array([[-1.5, -1.0], [-1.0, 1.2], [0.8, -1.3], [1.1, 1.0]])
PREVIOUS_IDS = [3, 7, 8, 11]
NEXT_FREE = 12
MAX_DISTANCE = 0.5


def test_first_run_numbers_segments_in_order() -> None:
    assert align_segment_ids(PREVIOUS, None, None, 1, MAX_DISTANCE) == [1, 2, 3, 4]


@pytest.mark.parametrize("permutation", [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
def test_identical_centroids_keep_their_ids_in_any_order(permutation: list[int]) -> None:
    new = PREVIOUS[permutation] + 0.01  # small drift between nights
    ids = align_segment_ids(new, PREVIOUS, PREVIOUS_IDS, NEXT_FREE, MAX_DISTANCE)
    assert ids == [PREVIOUS_IDS[i] for i in permutation]


def test_segment_that_moved_far_gets_a_fresh_id() -> None:
    new = PREVIOUS.copy()
    new[2] = [2.5, -3.0]  # far from every previous centroid
    ids = align_segment_ids(new, PREVIOUS, PREVIOUS_IDS, NEXT_FREE, MAX_DISTANCE)
    assert ids == [3, 7, NEXT_FREE, 11]


def test_distance_threshold_is_strict() -> None:
    new = PREVIOUS + np.array([MAX_DISTANCE, 0.0])
    ids = align_segment_ids(new, PREVIOUS, PREVIOUS_IDS, NEXT_FREE, MAX_DISTANCE)
    assert ids == [12, 13, 14, 15]


def test_k_grows_new_segment_gets_fresh_id() -> None:
    new = np.vstack([PREVIOUS[:2], [[0.0, 0.0]], PREVIOUS[2:]])  # canonical order kept
    ids = align_segment_ids(new, PREVIOUS, PREVIOUS_IDS, NEXT_FREE, MAX_DISTANCE)
    assert ids == [3, 7, NEXT_FREE, 8, 11]


def test_k_grows_by_two_fresh_ids_follow_row_order() -> None:
    new = np.vstack([[[-3.0, 0.0]], PREVIOUS, [[3.0, 0.0]]])
    ids = align_segment_ids(new, PREVIOUS, PREVIOUS_IDS, NEXT_FREE, MAX_DISTANCE)
    assert ids == [NEXT_FREE, 3, 7, 8, 11, NEXT_FREE + 1]


def test_k_shrinks_survivors_keep_ids() -> None:
    new = PREVIOUS[[0, 2, 3]]
    ids = align_segment_ids(new, PREVIOUS, PREVIOUS_IDS, NEXT_FREE, MAX_DISTANCE)
    assert ids == [3, 8, 11]


def test_k_shrinks_merged_segment_keeps_nearest_id() -> None:
    merged = (PREVIOUS[0] + PREVIOUS[1]) / 2 + np.array([0.0, -0.9])  # close to PREVIOUS[0]
    new = np.vstack([[merged], PREVIOUS[2:]])
    ids = align_segment_ids(new, PREVIOUS, PREVIOUS_IDS, NEXT_FREE, max_distance=1.0)
    assert ids == [3, 8, 11]


def test_alignment_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    new = PREVIOUS + rng.normal(scale=0.4, size=PREVIOUS.shape)
    first = align_segment_ids(new, PREVIOUS, PREVIOUS_IDS, NEXT_FREE, MAX_DISTANCE)
    for _ in range(3):
        assert align_segment_ids(new, PREVIOUS, PREVIOUS_IDS, NEXT_FREE, MAX_DISTANCE) == first


@pytest.mark.parametrize(
    ("previous_ids", "next_free", "message"),
    [
        ([3, 7, 8], NEXT_FREE, "4 previous centroids"),
        ([3, 3, 8, 11], NEXT_FREE, "unique"),
        (PREVIOUS_IDS, 11, "next_free_id"),
    ],
)
def test_invalid_previous_ids_are_rejected(
    previous_ids: list[int], next_free: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        align_segment_ids(PREVIOUS, PREVIOUS, previous_ids, next_free, MAX_DISTANCE)


def test_inconsistent_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="both"):
        align_segment_ids(PREVIOUS, PREVIOUS, None, NEXT_FREE, MAX_DISTANCE)
    with pytest.raises(ValueError, match="features"):
        align_segment_ids(PREVIOUS[:, :1], PREVIOUS, PREVIOUS_IDS, NEXT_FREE, MAX_DISTANCE)
    with pytest.raises(ValueError, match="max_distance"):
        align_segment_ids(PREVIOUS, PREVIOUS, PREVIOUS_IDS, NEXT_FREE, 0.0)


# --------------------------------------------------------------------------- ARI


@pytest.mark.parametrize("seed", range(8))
def test_ari_from_contingency_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 2_000))
    previous = rng.integers(0, int(rng.integers(1, 8)), size=n)
    new = np.where(rng.random(n) < 0.7, previous, rng.integers(0, 6, size=n))
    table = contingency_matrix(previous, new)
    assert ari_from_contingency(table) == pytest.approx(
        adjusted_rand_score(previous, new), abs=1e-12
    )


def test_ari_edge_cases_match_sklearn() -> None:
    assert ari_from_contingency(np.array([[5]])) == adjusted_rand_score([0] * 5, [0] * 5)
    assert ari_from_contingency(np.eye(4, dtype=int)) == 1.0
    assert ari_from_contingency(np.array([[3, 0], [0, 0], [0, 4]])) == 1.0  # empty segment
    assert ari_from_contingency(np.zeros((0, 0))) == 1.0


def _hubert_arabie_ari(table: np.ndarray) -> float:
    """Textbook ARI from pair counts, in exact rational arithmetic."""

    def pairs(values: np.ndarray) -> int:
        return sum(int(v) * (int(v) - 1) // 2 for v in values.ravel())

    index = pairs(table)
    rows, cols = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = Fraction(rows * cols, pairs(np.array([table.sum()])))
    return float((index - expected) / (Fraction(rows + cols, 2) - expected))


def test_ari_handles_ten_million_customers_exactly() -> None:
    table = np.array([[4_000_000, 1_000_000, 3], [500_000, 4_499_997, 0]])
    result = ari_from_contingency(table)
    assert 0.0 < result < 1.0
    assert result == pytest.approx(_hubert_arabie_ari(table), rel=1e-12)


def test_invalid_contingency_tables_are_rejected() -> None:
    with pytest.raises(ValueError, match="2-D"):
        ari_from_contingency(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="non-negative"):
        ari_from_contingency(np.array([[1, -2], [3, 4]]))
    with pytest.raises(ValueError, match="whole"):
        ari_from_contingency(np.array([[1.5, 2.0], [3.0, 4.0]]))
