"""Model selection: what a candidate model is, how the winner is chosen, and how customers
are assigned to its centroids.

The pipeline hands over a sample of STANDARDISED features (float32, up to a few hundred
thousand rows, picked by a hash of the id) and later assigns every customer to the NEAREST
CENTROID in that space, whatever algorithm won. So every candidate is summarised as
centroids (k-means centres, Gaussian-mixture means, Ward cluster means), and every metric is
computed on nearest-centroid labels: the candidates are judged on the partition that will
actually be deployed, not on the algorithm's own (e.g. posterior) labels. How the candidates
are fitted and measured is in ``core/model_search.py``; it holds the scikit-learn and SciPy
calls and is imported only when a selection runs (see ``select_model``).

Choice rule:

1. A candidate is eligible when its stability is >= ``stability_threshold`` (0.8) and none of
   its segments is empty under nearest-centroid assignment. A segmentation that changes when
   the data is resampled would relabel customers night after night, and a segment that
   nearest-centroid assignment never uses cannot be deployed.
2. Among eligible candidates take the highest silhouette: it rewards compact, well-separated
   segments, is scale-free (comparable across k, unlike inertia) and works for every
   algorithm once it is expressed as centroids.
3. Candidates within ``tie_tolerance`` (0.005, about the sampling noise of the silhouette
   estimate) of that best silhouette count as ties; the tie goes to the smaller k (fewer
   segments are easier to act on and to keep stable), then to the simpler algorithm
   (kmeans, then gmm, then ward: k-means optimises exactly the nearest-centroid objective
   that is deployed, the others only approximate it).
4. If no candidate is eligible, the same rule runs over all candidates and the result says
   that the choice is not stable (``rule`` says so, with ``UNSTABLE_CHOICE``).

Centroids are returned in a canonical order (lexicographic by rounded coordinates), so label
switching between runs never changes the output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from segmentation_pipeline.core import workers

ALGORITHMS: tuple[str, ...] = ("kmeans", "gmm", "ward")
# Lower is simpler; used to break silhouette ties.
SIMPLICITY: dict[str, int] = {name: rank for rank, name in enumerate(ALGORITHMS)}
# The Spark engine's MLlib algorithms: k-means (k-means||) and bisecting k-means.
SPARK_ALGORITHMS: tuple[str, ...] = ("kmeans", "bisecting_kmeans")


def algorithms_for(engine: str, requested: Sequence[str]) -> tuple[str, ...]:
    """The algorithms a run tries on ``engine`` for its ``algorithms`` setting; ValueError
    saying what is wrong. Checked when a run starts, not only at the model search.

    The setting's default (the local engine's kmeans, gmm, ward) means "this engine's
    default": on Spark, k-means and bisecting k-means; otherwise every name must be one
    the engine fits.
    """
    names = tuple(requested)
    if len(set(names)) != len(names):
        raise ValueError(f"algorithms must not repeat, got {list(names)}")
    if engine == "spark":
        if set(names) == set(ALGORITHMS):
            return SPARK_ALGORITHMS
        unknown = [name for name in names if name not in SPARK_ALGORITHMS]
        if unknown or not names:
            raise ValueError(
                f"the Spark engine fits {' and '.join(SPARK_ALGORITHMS)}; "
                f"got {', '.join(names) or 'none'}"
            )
    else:
        if not names:
            raise ValueError(f"algorithms must name at least one of {ALGORITHMS}")
        unknown = [name for name in names if name not in SIMPLICITY]
        if unknown:
            raise ValueError(f"unknown algorithm(s) {unknown}; known: {list(ALGORITHMS)}")
    return names


CANDIDATE_COLUMNS: tuple[str, ...] = (
    "algorithm",
    "k",
    "silhouette",
    "davies_bouldin",
    "calinski_harabasz",
    "inertia",
    "stability",
    "selected",
)

# Decimals kept when ordering centroids, so float noise cannot reorder equal centroids.
_CANONICAL_DECIMALS = 6
# Rows per block in assign_nearest: bounds the (rows x k) temporaries to a few MB.
_ASSIGN_CHUNK_ROWS = 131_072


@dataclass(frozen=True)
class SampleSizes:
    """Upper bounds of the internal subsamples; they are what keeps selection fast.

    Defaults keep ``select_model`` on 200,000 rows x 3 features at 2.3-3.6 s (measured on a
    2-core machine; unstructured data, where EM converges slowly, is the slow end) while
    leaving the sampling noise of the metrics small. Inputs smaller than a size are used
    whole (Mall_Customers, 200 rows: every sample is all 200 rows).
    """

    selection: int = 20_000  # kmeans fits; every candidate's DB, CH and inertia
    gmm: int = 10_000  # GMM fits (EM costs ~10x a kmeans fit per row); metrics use selection
    ward: int = 3_000  # Ward linkage is O(n^2) in time and memory
    silhouette: int = 4_000  # one shared n x n float32 distance matrix (64 MB at 4,000)
    stability: int = 1_500  # bootstrap refits run on resamples of this many rows
    bootstrap_resamples: int = 5
    kmeans_n_init: int = 4  # k-means++ restarts for the candidate and bootstrap kmeans fits


@dataclass(frozen=True)
class Candidate:
    """One (algorithm, k) pair and its quality measured on nearest-centroid labels.

    ``inertia`` (sum of squared distances to the centres on the selection sample) is only
    meaningful for kmeans, which minimises it; it is None for the other algorithms.
    ``smallest_share`` is the fraction of the selection sample in the smallest segment;
    0.0 means a segment is empty under nearest-centroid assignment.
    """

    algorithm: str
    k: int
    silhouette: float
    davies_bouldin: float
    calinski_harabasz: float
    inertia: float | None
    stability: float
    selected: bool = False
    smallest_share: float = 1.0


@dataclass(frozen=True)
class ModelSelection:
    """The outcome of ``select_model``: every candidate, the chosen one and its centroids.

    ``centroids`` (k x d, standardised space, canonical order) is all the pipeline needs to
    assign customers; the model object itself is never kept. The chosen candidate's
    metrics are those it was evaluated with (for kmeans the final refit on the whole sample
    may differ slightly from the evaluated candidate).
    """

    candidates: tuple[Candidate, ...]
    chosen: Candidate
    rule: str
    centroids: np.ndarray
    n_rows: int
    n_distinct_rows: int
    n_selection: int
    n_gmm: int
    n_ward: int
    n_silhouette: int
    n_stability: int
    bootstrap_resamples: int
    seed: int
    stability_threshold: float
    tie_tolerance: float


# --------------------------------------------------------------------------- public API


def select_model(
    X: np.ndarray,
    algorithms: Sequence[str] = ALGORITHMS,
    k_min: int = 2,
    k_max: int = 10,
    seed: int = 0,
    stability_threshold: float = 0.8,
    tie_tolerance: float = 0.005,
    sizes: SampleSizes | None = None,
) -> ModelSelection:
    """Evaluate every (algorithm, k), choose one by the module's rule, return its centroids.

    ``X`` is the standardised sample (rows = customers, columns = features); its row order
    does not matter. Raises ValueError on invalid input. Seeded, every fit on one thread:
    the same input gives the same output, whatever the machine's core count.
    """
    return workers.call(
        _search_models,
        X,
        tuple(algorithms),
        k_min,
        k_max,
        seed,
        stability_threshold,
        tie_tolerance,
        sizes,
    )


def _search_models(*arguments: object) -> ModelSelection:
    """``model_search.search_models``, imported on first use.

    scikit-learn and SciPy take about 1 s to import; importing them here keeps them out of
    loading the definitions (the UI's code server, `dg check defs`, every run's start-up).
    Under `segmentation run` this runs in the pre-started worker (core/workers.py), which
    has imported them already, while the run was starting.
    """
    from segmentation_pipeline.core.model_search import search_models

    return search_models(*arguments)  # type: ignore[arg-type]


def assign_nearest(
    X: np.ndarray, centroids: np.ndarray, chunk_rows: int = _ASSIGN_CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest and second-nearest centroid of every row, with Euclidean distances.

    Returns ``(labels, distance, second_labels, second_distance)``: int32 labels (indices
    into ``centroids``) and float64 distances. The second-nearest centroid measures how
    clear-cut an assignment is. Works block by block (``chunk_rows`` rows at a time) in
    float64, so a float32 batch of millions of rows needs only a few MB of temporaries and
    distance ties are resolved identically everywhere (lowest index wins). With a single
    centroid the second label is -1 and its distance +inf.
    """
    data = np.asarray(X)
    centres = np.asarray(centroids, dtype=np.float64)
    _validate_assignment_shapes(data, centres)
    n = data.shape[0]
    labels = np.empty(n, dtype=np.int32)
    second_labels = np.empty(n, dtype=np.int32)
    distance = np.empty(n, dtype=np.float64)
    second_distance = np.empty(n, dtype=np.float64)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        block = _assign_block(data[start:stop], centres)
        labels[start:stop], distance[start:stop] = block[0], block[1]
        second_labels[start:stop], second_distance[start:stop] = block[2], block[3]
    return labels, distance, second_labels, second_distance


def canonical_order(centroids: np.ndarray) -> np.ndarray:
    """Row order sorting centroids lexicographically by rounded coordinates.

    Any algorithm may number its clusters arbitrarily (label switching); sorting makes the
    centroid list, and so segment index i, a function of the centroid positions only.
    """
    rounded = np.round(np.asarray(centroids, dtype=np.float64), _CANONICAL_DECIMALS)
    return np.lexsort(rounded.T[::-1])


def silhouette_from_distances(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette from a precomputed square distance matrix, vectorised.

    Same definition as sklearn.metrics.silhouette_score (a point alone in its cluster scores
    0), but the per-cluster distance sums come from one matrix product, so scoring dozens of
    candidates on one shared distance matrix costs milliseconds each. NaN when fewer than 2
    or more than n-1 clusters are present.
    """
    codes = np.unique(labels, return_inverse=True)[1]
    counts = np.bincount(codes)
    n = len(codes)
    if not 2 <= len(counts) <= n - 1:
        return float("nan")
    rows = np.arange(n)
    one_hot = np.zeros((n, len(counts)), dtype=distances.dtype)
    one_hot[rows, codes] = 1
    sums = (distances @ one_hot).astype(np.float64)
    own_count = counts[codes]
    within = sums[rows, codes] / np.maximum(own_count - 1, 1)
    means = sums / counts
    means[rows, codes] = np.inf
    nearest_other = means.min(axis=1)
    denominator = np.maximum(within, nearest_other)
    scores = np.zeros(n, dtype=np.float64)
    valid = (denominator > 0) & (own_count > 1)
    scores[valid] = (nearest_other[valid] - within[valid]) / denominator[valid]
    return float(scores.mean())


# --------------------------------------------------------------------------- validation


def validated_matrix(X: np.ndarray) -> np.ndarray:
    """The sample as a finite 2-D float64 array (float64 so fits are order-deterministic)."""
    data = np.asarray(X)
    if data.ndim != 2:
        raise ValueError(f"X must be a 2-D array (rows x features), got shape {data.shape}")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"X must have at least one row and one feature, got shape {data.shape}")
    data = data.astype(np.float64)
    if not np.isfinite(data).all():
        raise ValueError("X contains NaN or infinite values; impute or drop them first")
    return data


def validate_k_range(k_min: int, k_max: int, n_distinct: int, stability_threshold: float) -> None:
    """The k range and stability threshold every engine's selection needs, with clear
    messages."""
    if k_min < 2:
        raise ValueError(f"k_min must be >= 2 (one segment is not a segmentation), got {k_min}")
    if k_max < k_min:
        raise ValueError(f"k_max ({k_max}) must be >= k_min ({k_min})")
    if k_max >= n_distinct:
        raise ValueError(
            f"k_max ({k_max}) must be smaller than the number of distinct rows ({n_distinct})"
        )
    if not 0.0 <= stability_threshold <= 1.0:
        raise ValueError(f"stability_threshold must be in [0, 1], got {stability_threshold}")


def _validate_assignment_shapes(data: np.ndarray, centres: np.ndarray) -> None:
    """Fail early when a batch and the centroids do not describe the same feature space."""
    if data.ndim != 2:
        raise ValueError(f"X must be a 2-D array, got shape {data.shape}")
    if centres.ndim != 2 or centres.shape[0] == 0:
        raise ValueError(f"centroids must be a non-empty 2-D array, got shape {centres.shape}")
    if data.shape[1] != centres.shape[1]:
        raise ValueError(f"X has {data.shape[1]} features but centroids have {centres.shape[1]}")


# --------------------------------------------------------------------------- sampling


def sorted_rows(data: np.ndarray) -> np.ndarray:
    """Rows in lexicographic order: makes everything downstream independent of input order."""
    return data[np.lexsort(data.T[::-1])]


def count_distinct_sorted(sorted_rows: np.ndarray) -> int:
    """Number of distinct rows of a lexicographically sorted matrix."""
    if len(sorted_rows) == 0:
        return 0
    changes = np.any(sorted_rows[1:] != sorted_rows[:-1], axis=1)
    return int(changes.sum()) + 1


# --------------------------------------------------------------------------- choice


# How a selection rule says that no candidate was stable (the summary looks for it).
UNSTABLE_CHOICE = "NO candidate reached bootstrap stability"
# What the run's summary and its report then say.
UNSTABLE_CAUTION = "no model was stable under resampling: treat these segments as unstable"


def choose_candidate(
    candidates: list[Candidate],
    stability_threshold: float,
    tie_tolerance: float,
    simplicity: Mapping[str, int] = SIMPLICITY,
) -> tuple[Candidate, bool, str]:
    """Apply the module's choice rule; return the winner, whether it is stable, and why.

    ``simplicity`` ranks the algorithms for the tie-break (lower is simpler); an engine with
    other algorithms passes its own ranking.
    """
    scored = [c for c in candidates if np.isfinite(c.silhouette)]
    if not scored:
        raise ValueError("no candidate produced a valid silhouette; the data cannot be segmented")
    eligible = [c for c in scored if is_eligible(c, stability_threshold)]
    pool = eligible or scored
    best = max(c.silhouette for c in pool)
    ties = [c for c in pool if c.silhouette >= best - tie_tolerance]
    chosen = min(ties, key=lambda c: (c.k, simplicity[c.algorithm]))
    return chosen, bool(eligible), _explain(chosen, eligible, ties, best, stability_threshold)


def is_eligible(candidate: Candidate, stability_threshold: float) -> bool:
    """Stable enough, and every segment is used by nearest-centroid assignment."""
    return candidate.stability >= stability_threshold and candidate.smallest_share > 0.0


def _explain(
    chosen: Candidate,
    eligible: list[Candidate],
    ties: list[Candidate],
    best: float,
    stability_threshold: float,
) -> str:
    """A human-readable sentence on why ``chosen`` won, for the run report."""
    name = f"{chosen.algorithm} k={chosen.k}"
    if eligible:
        head = (
            f"{name}: highest silhouette among the {len(eligible)} candidates with bootstrap "
            f"stability >= {stability_threshold:g} and no empty segment"
        )
    else:
        head = (
            f"{name}: {UNSTABLE_CHOICE} {stability_threshold:g} (or all had an empty "
            "segment), so the highest silhouette over all candidates was taken; treat this "
            "segmentation as unstable"
        )
    detail = f" (silhouette {chosen.silhouette:.3f}, stability {chosen.stability:.3f}"
    if len(ties) > 1:
        detail += (
            f"; {len(ties)} candidates within the tie tolerance of the best {best:.3f}, "
            "tie broken by smaller k, then simpler algorithm"
        )
    return head + detail + ")"


# --------------------------------------------------------------------------- assignment


def _assign_block(
    block: np.ndarray, centres: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest/second-nearest centroid of one block, squared distances via exact differences."""
    m, k = block.shape[0], centres.shape[0]
    squared = np.empty((m, k), dtype=np.float64)
    for j in range(k):
        diff = block - centres[j]  # float64 (centres are float64), m x d
        squared[:, j] = np.einsum("ij,ij->i", diff, diff)
    rows = np.arange(m)
    first = np.argmin(squared, axis=1)
    first_sq = squared[rows, first]
    if k == 1:
        return (
            first.astype(np.int32),
            np.sqrt(first_sq),
            np.full(m, -1, dtype=np.int32),
            np.full(m, np.inf),
        )
    squared[rows, first] = np.inf
    second = np.argmin(squared, axis=1)
    return (
        first.astype(np.int32),
        np.sqrt(first_sq),
        second.astype(np.int32),
        np.sqrt(squared[rows, second]),
    )
