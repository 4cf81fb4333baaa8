"""Stable segment ids across nightly runs, and agreement between two runs' segmentations.

Every run refits the model, and clustering algorithms number their clusters arbitrarily, so
"segment 3" tonight need not be last night's "segment 3". Downstream users (dashboards, CRM
campaigns) key on segment ids, so each new segment inherits the id of the previous segment it
matches, and only genuinely new (or moved) segments get fresh ids.

Matching is a minimum-total-distance one-to-one assignment (Hungarian algorithm) between new
and previous centroids, both expressed in the CURRENT run's standardised units (the caller
standardises the previous run's original-unit centroids with the current scaling), so a
distance threshold means the same thing every night. A matched pair farther apart than
``max_distance`` is treated as a different segment: the old id retires and the new segment
gets a fresh one, rather than silently giving an old name to a different group of customers.

The distance between a new centroid and the previous one whose id it takes is the movement
`drift.centroid_shifts` reports for that segment (the same Euclidean distance in the current
run's standard deviations, there computed from the original-unit centroids), which is what
the `segment_centroid_movement` check and the report show: a segment that kept its id moved
less than ``max_distance`` by all three. The matching itself needs every new-to-previous
distance (not only those of one id), so it computes them here on the standardised matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def align_segment_ids(
    new_centroids: np.ndarray,
    previous_centroids: np.ndarray | None,
    previous_ids: Sequence[int] | None,
    next_free_id: int,
    max_distance: float,
) -> list[int]:
    """Segment id for each row of ``new_centroids``, reusing previous ids where they match.

    A new centroid keeps the id of the previous centroid it is paired with by the Hungarian
    matching on Euclidean distance, if that distance is strictly below ``max_distance``.
    Every other new centroid (unpaired because k grew, or paired but too far) gets a fresh
    id ``next_free_id``, ``next_free_id + 1``, ... in row order of ``new_centroids`` (which
    the caller keeps in canonical order). First run (no previous): ``next_free_id`` onwards.
    Deterministic: same inputs, same ids.
    """
    new = _as_centroid_matrix(new_centroids, "new_centroids")
    if previous_centroids is None or previous_ids is None:
        if (previous_centroids is None) != (previous_ids is None):
            raise ValueError("previous_centroids and previous_ids must both be given or both None")
        return _fresh_ids(len(new), next_free_id)

    previous = _as_centroid_matrix(previous_centroids, "previous_centroids")
    old_ids = _validated_previous_ids(previous_ids, len(previous), next_free_id)
    if previous.shape[1] != new.shape[1]:
        raise ValueError(
            f"new centroids have {new.shape[1]} features, previous have {previous.shape[1]}"
        )
    if not max_distance > 0:
        raise ValueError(f"max_distance must be > 0, got {max_distance}")

    inherited = _matched_previous_ids(new, previous, old_ids, max_distance)
    return _fill_fresh_ids(inherited, next_free_id)


def ari_from_contingency(counts: np.ndarray) -> float:
    """Adjusted Rand index from a contingency table of counts.

    ``counts[i, j]`` is the number of customers in previous segment i and new segment j
    (e.g. from a SQL GROUP BY), so agreement between two runs over millions of customers is
    computed without loading their labels. Same definition and edge cases as
    sklearn.metrics.adjusted_rand_score (pair-confusion form); sums of squares are computed
    with exact Python integers, so there is no overflow even for billions of customers.
    """
    table = _validated_counts(counts)
    n = sum(int(v) for v in table.sum(axis=1))
    sum_squares = sum(int(v) * int(v) for v in table.ravel())
    row_squares = sum(int(v) * int(v) for v in table.sum(axis=1))
    col_squares = sum(int(v) * int(v) for v in table.sum(axis=0))

    # Pair confusion matrix counts ordered pairs of distinct customers (as sklearn does).
    together_both = sum_squares - n
    together_new_only = col_squares - sum_squares
    together_previous_only = row_squares - sum_squares
    apart_both = n * n - together_new_only - together_previous_only - sum_squares

    if together_new_only == 0 and together_previous_only == 0:
        return 1.0  # identical partitions, including the all-in-one and all-singletons cases
    numerator = 2 * (together_both * apart_both - together_previous_only * together_new_only)
    denominator = (together_both + together_previous_only) * (
        together_previous_only + apart_both
    ) + (together_both + together_new_only) * (together_new_only + apart_both)
    return float(numerator / denominator)


def _as_centroid_matrix(centroids: np.ndarray, name: str) -> np.ndarray:
    """A finite 2-D float64 matrix (k x d), or a ValueError naming the argument."""
    matrix = np.asarray(centroids, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (k x d), got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return matrix


def _validated_previous_ids(
    previous_ids: Sequence[int], n_previous: int, next_free_id: int
) -> list[int]:
    """Previous ids as ints; one per previous centroid, unique, all below next_free_id."""
    ids = [int(i) for i in previous_ids]
    if len(ids) != n_previous:
        raise ValueError(f"got {len(ids)} previous ids for {n_previous} previous centroids")
    if len(set(ids)) != len(ids):
        raise ValueError(f"previous ids must be unique, got {ids}")
    if ids and max(ids) >= next_free_id:
        raise ValueError(
            f"next_free_id ({next_free_id}) must exceed every previous id (max {max(ids)}), "
            "otherwise a fresh id could collide with an existing one"
        )
    return ids


def _matched_previous_ids(
    new: np.ndarray, previous: np.ndarray, previous_ids: list[int], max_distance: float
) -> list[int | None]:
    """For each new centroid, the previous id it inherits, or None when it needs a fresh one."""
    # SciPy's optimiser loads on first use, not with the definitions (about 0.5 s); under
    # `segmentation run` this runs in a worker that has it loaded already.
    from scipy.optimize import linear_sum_assignment

    distances = np.linalg.norm(new[:, None, :] - previous[None, :, :], axis=2)
    new_rows, previous_rows = linear_sum_assignment(distances)
    inherited: list[int | None] = [None] * len(new)
    for i, j in zip(new_rows, previous_rows, strict=True):
        if distances[i, j] < max_distance:
            inherited[i] = previous_ids[j]
    return inherited


def _fill_fresh_ids(inherited: list[int | None], next_free_id: int) -> list[int]:
    """Replace each None by the next fresh id, in row order."""
    fresh = iter(range(next_free_id, next_free_id + len(inherited)))
    return [next(fresh) if segment_id is None else segment_id for segment_id in inherited]


def _fresh_ids(count: int, next_free_id: int) -> list[int]:
    """Ids for a first run: consecutive from next_free_id."""
    return list(range(next_free_id, next_free_id + count))


def _validated_counts(counts: np.ndarray) -> np.ndarray:
    """The contingency table as a 2-D int64 array of non-negative whole counts."""
    table = np.asarray(counts)
    if table.ndim != 2:
        raise ValueError(f"counts must be a 2-D contingency table, got shape {table.shape}")
    if table.size and not np.isfinite(table).all():
        raise ValueError("counts contains NaN or infinite values")
    if table.size and ((table < 0).any() or (table != np.round(table)).any()):
        raise ValueError("counts must be non-negative whole numbers")
    return table.astype(np.int64)
