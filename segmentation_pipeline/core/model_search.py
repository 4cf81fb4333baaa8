"""Model search: fit every candidate (algorithm, k) on a sample and measure it.

The scikit-learn and SciPy half of model selection (``core/selection.py`` holds what a
candidate is, the choice rule and nearest-centroid assignment, and imports this module
only when a selection runs, so that loading the definitions does not pay for these
libraries).

How a candidate is evaluated (all on fixed-seed subsamples, so that 3 algorithms x 9 values
of k stay within a few seconds on 2 cores):

* the input rows are sorted lexicographically first, so the result does not depend on the
  order in which the caller drew the sample; one seeded permutation then yields the
  selection sample (kmeans fit and, for every candidate, Davies-Bouldin, Calinski-Harabasz,
  inertia), and its prefixes are the GMM fit sample, the Ward fit sample (Ward is O(n^2)),
  the silhouette sample and the stability sample (sizes in ``SampleSizes``);
* silhouette is computed on the silhouette sample from one shared distance matrix (the same
  points for every candidate, exact silhouette of that sample);
* stability is the mean adjusted Rand index, over a few bootstrap resamples of the stability
  sample, between the candidate's own nearest-centroid labels and the nearest-centroid labels
  of the same algorithm and k refitted on the resample. The resamples are small (1,500
  rows), so this is a conservative estimate: it asks whether the segments are found again
  from little data.

Final model: for kmeans, Lloyd iterations on the whole provided sample started from the
evaluated candidate's centres (best of several k-means++ restarts); for gmm the mixture means
and for ward the cluster means, both as evaluated. Everything is seeded and every fit is
single-threaded; with a second core, a forked worker process and this one share the
candidates out between them (``_evaluate_algorithms``), with the same result.
"""

from __future__ import annotations

import itertools
import multiprocessing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import sklearn
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from segmentation_pipeline.core.alignment import ari_from_contingency
from segmentation_pipeline.core.forked import ForkedCall, fork_available
from segmentation_pipeline.core.selection import (
    Candidate,
    ModelSelection,
    SampleSizes,
    algorithms_for,
    assign_nearest,
    canonical_order,
    choose_candidate,
    count_distinct_sorted,
    silhouette_from_distances,
    sorted_rows,
    validate_k_range,
    validated_matrix,
)

# Added to GMM covariances: data are standardised (unit scale), so 1e-4 is negligible but
# keeps covariances of duplicated or discrete points (bootstrap resamples) invertible.
_GMM_REG_COVAR = 1e-4


@dataclass(frozen=True)
class _Samples:
    """The nested subsamples drawn from the canonically ordered input."""

    full: np.ndarray
    selection: np.ndarray
    gmm: np.ndarray
    ward: np.ndarray
    silhouette: np.ndarray
    stability: np.ndarray


# --------------------------------------------------------------------------- search


def search_models(
    X: np.ndarray,
    algorithms: tuple[str, ...],
    k_min: int,
    k_max: int,
    seed: int,
    stability_threshold: float,
    tie_tolerance: float,
    sizes: SampleSizes | None,
    *,
    share_with_fork: bool = True,
) -> ModelSelection:
    """``selection.select_model``'s work (see there for the arguments), each fit on one thread.

    ``share_with_fork=False`` keeps every fit in this process (the result is the same).

    BLAS and OpenMP are limited to 1 thread: the fits are many and small, so threads buy
    little, and on a 2-core machine shared with other work the spinning OpenMP/BLAS threads
    made KMeans and GMM 10-40x slower (measured: 9 KMeans fits on 20k rows took 16 s with 2
    threads under load, 0.4 s with 1 thread).

    scikit-learn's per-call argument validation is skipped (``skip_parameter_validation``):
    the arguments are built here, not typed by users, and over hundreds of small fits and
    scores the checks cost about 5% of the selection; the results are identical.
    """
    with (
        threadpool_limits(limits=1),
        sklearn.config_context(skip_parameter_validation=True, assume_finite=True),
    ):
        return _search_models(
            X,
            algorithms,
            k_min,
            k_max,
            seed,
            stability_threshold,
            tie_tolerance,
            sizes,
            share_with_fork,
        )


def _search_models(
    X: np.ndarray,
    algorithms: tuple[str, ...],
    k_min: int,
    k_max: int,
    seed: int,
    stability_threshold: float,
    tie_tolerance: float,
    sizes: SampleSizes | None,
    share_with_fork: bool,
) -> ModelSelection:
    """Body of search_models."""
    sizes = sizes or SampleSizes()
    data = validated_matrix(X)
    canonical = sorted_rows(data)
    n_distinct = count_distinct_sorted(canonical)
    _validate_settings(algorithms, k_min, k_max, n_distinct, stability_threshold, sizes)

    rng = np.random.default_rng(seed)
    samples = _draw_samples(canonical, sizes, rng)
    boot_indices = _bootstrap_indices(len(samples.stability), sizes.bootstrap_resamples, rng)
    ks = list(range(k_min, k_max + 1))
    silhouette_distances = _pairwise_distances_f32(samples.silhouette)

    candidates: list[Candidate] = []
    centroids_by_candidate: dict[tuple[str, int], np.ndarray] = {}
    evaluated = _evaluate_algorithms(
        algorithms,
        samples,
        boot_indices,
        ks,
        seed,
        sizes,
        silhouette_distances,
        share_with_fork=share_with_fork,
    )
    for algorithm in algorithms:
        for candidate, centroids in evaluated[algorithm]:
            candidates.append(candidate)
            centroids_by_candidate[(algorithm, candidate.k)] = centroids

    chosen, _, rule = choose_candidate(candidates, stability_threshold, tie_tolerance)
    candidates = [replace(c, selected=c is chosen) for c in candidates]
    chosen = next(c for c in candidates if c.selected)

    centroids = _final_centroids(chosen, centroids_by_candidate, samples.full)
    return ModelSelection(
        candidates=tuple(candidates),
        chosen=chosen,
        rule=rule,
        centroids=centroids,
        n_rows=len(canonical),
        n_distinct_rows=n_distinct,
        n_selection=len(samples.selection),
        n_gmm=len(samples.gmm),
        n_ward=len(samples.ward),
        n_silhouette=len(samples.silhouette),
        n_stability=len(samples.stability),
        bootstrap_resamples=sizes.bootstrap_resamples,
        seed=seed,
        stability_threshold=stability_threshold,
        tie_tolerance=tie_tolerance,
    )


def _validate_settings(
    algorithms: tuple[str, ...],
    k_min: int,
    k_max: int,
    n_distinct: int,
    stability_threshold: float,
    sizes: SampleSizes,
) -> None:
    """Reject settings that cannot produce a meaningful selection, with a clear message."""
    algorithms_for("local", algorithms)
    validate_k_range(k_min, k_max, n_distinct, stability_threshold)
    if sizes.bootstrap_resamples < 1:
        raise ValueError("sizes.bootstrap_resamples must be >= 1")
    smallest = min(sizes.selection, sizes.gmm, sizes.ward, sizes.silhouette, sizes.stability)
    if smallest <= k_max:
        raise ValueError(f"every sample size in {sizes} must exceed k_max ({k_max})")


# --------------------------------------------------------------------------- sampling


def _draw_samples(canonical: np.ndarray, sizes: SampleSizes, rng: np.random.Generator) -> _Samples:
    """Nested random subsamples: each is a prefix of one seeded permutation of the rows."""
    shuffled = canonical[rng.permutation(len(canonical))]
    selection = shuffled[: sizes.selection]
    return _Samples(
        full=canonical,
        selection=selection,
        gmm=selection[: sizes.gmm],
        ward=selection[: sizes.ward],
        silhouette=selection[: sizes.silhouette],
        stability=selection[: sizes.stability],
    )


def _bootstrap_indices(n: int, resamples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Resample indices (with replacement), shared by all algorithms for a fair comparison."""
    return [rng.integers(0, n, size=n) for _ in range(resamples)]


def _fit_sample(algorithm: str, samples: _Samples) -> np.ndarray:
    """The sample an algorithm is fitted on for evaluation (smaller for the costly ones)."""
    return {"ward": samples.ward, "gmm": samples.gmm}.get(algorithm, samples.selection)


def _pairwise_distances_f32(points: np.ndarray, block_rows: int = 1_000) -> np.ndarray:
    """Square Euclidean distance matrix in float32, built block-wise to halve peak memory."""
    n = len(points)
    distances = np.empty((n, n), dtype=np.float32)
    for start in range(0, n, block_rows):
        distances[start : start + block_rows] = cdist(points[start : start + block_rows], points)
    return distances


# --------------------------------------------------------------------------- fitting


def _fit_centroids_all_k(
    algorithm: str, data: np.ndarray, ks: list[int], seed: int, sizes: SampleSizes
) -> dict[int, np.ndarray]:
    """Centroids (k x d) of ``algorithm`` fitted on ``data`` for every k in ``ks``."""
    with warnings.catch_warnings():
        # Duplicated points (bootstrap, integer-valued features) make kmeans/gmm warn about
        # fewer distinct clusters or slow convergence; the metrics judge the outcome anyway.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if algorithm == "ward":
            return _ward_centroids(data, ks)
        if algorithm == "gmm":
            return {k: _gmm_means(data, k, seed) for k in ks}
        return {k: _kmeans_centres(data, k, seed, sizes.kmeans_n_init) for k in ks}


def _kmeans_centres(data: np.ndarray, k: int, seed: int, n_init: int) -> np.ndarray:
    """k-means++ initialised KMeans centres, seeded."""
    model = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed)
    return model.fit(data).cluster_centers_.astype(np.float64)


def _gmm_means(data: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Means of a full-covariance Gaussian mixture, seeded."""
    model = GaussianMixture(
        n_components=k, covariance_type="full", reg_covar=_GMM_REG_COVAR, random_state=seed
    )
    return model.fit(data).means_.astype(np.float64)


def _ward_centroids(data: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
    """Ward cluster means for every k from ONE linkage tree.

    Same partitions as AgglomerativeClustering(linkage="ward") (which also builds the scipy
    Ward tree and undoes its last merges), but the O(n^2) tree is built once and cut at every
    k.
    """
    tree = linkage(data, method="ward")
    return {k: _cluster_means(data, _cut_tree_labels(tree, k), k) for k in ks}


def _cut_tree_labels(tree: np.ndarray, k: int) -> np.ndarray:
    """Labels 0..k-1 of the k clusters that exist after the first n-k merges of ``tree``.

    Vectorised (pointer jumping to each leaf's root) because scipy's cut_tree walks the tree
    in Python and was the slowest step of the whole selection.
    """
    n = tree.shape[0] + 1
    merges = n - k
    parent = np.arange(2 * n - 1)
    children = tree[:merges, :2].astype(np.intp)
    parent[children[:, 0]] = n + np.arange(merges)
    parent[children[:, 1]] = n + np.arange(merges)
    while True:
        grandparent = parent[parent]
        if np.array_equal(grandparent, parent):
            break
        parent = grandparent
    return np.unique(parent[:n], return_inverse=True)[1]


def _cluster_means(data: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean of each cluster 0..k-1 (every cluster must be non-empty)."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, data.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, data)
    return sums / counts[:, None]


def _final_centroids(
    chosen: Candidate,
    centroids_by_candidate: dict[tuple[str, int], np.ndarray],
    full: np.ndarray,
) -> np.ndarray:
    """Centroids to deploy, in canonical order.

    kmeans: Lloyd iterations on the WHOLE sample, started from the evaluated candidate's
    centres (already the best of ``kmeans_n_init`` k-means++ restarts on the selection
    sample). This uses every row while staying the solution whose metrics were reported,
    and costs ~0.1 s instead of ~1 s for fresh restarts on 200k rows. gmm and ward keep the
    centroids that were evaluated (their fits do not scale to the whole sample).
    """
    centroids = centroids_by_candidate[(chosen.algorithm, chosen.k)]
    if chosen.algorithm == "kmeans":
        centroids = refine_kmeans_centres(centroids, full)
    return np.ascontiguousarray(centroids[canonical_order(centroids)])


def refine_kmeans_centres(centres: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Lloyd iterations on ``data`` started from ``centres``: the evaluated k-means solution,
    brought to every row of the sample (deterministic: no random restarts)."""
    model = KMeans(n_clusters=len(centres), init=centres, n_init=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(data).cluster_centers_.astype(np.float64)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Unit:
    """A share of the search that one process evaluates: one algorithm at some values of k."""

    algorithm: str
    ks: tuple[int, ...]


def _work_units(algorithms: tuple[str, ...], ks: list[int]) -> list[_Unit]:
    """The search cut into units, costliest first so that two processes finish together.

    Ward is one unit (one tree per sample, cut at every k); kmeans and gmm give a unit per
    k, as each k is fitted on its own. Ward's tree comes first, then gmm (EM costs the most
    per fit), then kmeans, each from the largest k down.
    """
    order = {"ward": 0, "gmm": 1, "kmeans": 2}
    units: list[_Unit] = []
    for algorithm in sorted(algorithms, key=order.__getitem__):
        if algorithm == "ward":
            units.append(_Unit(algorithm, tuple(ks)))
        else:
            units.extend(_Unit(algorithm, (k,)) for k in reversed(ks))
    return units


def _evaluate_algorithms(
    algorithms: tuple[str, ...],
    samples: _Samples,
    boot_indices: list[np.ndarray],
    ks: list[int],
    seed: int,
    sizes: SampleSizes,
    silhouette_distances: np.ndarray,
    *,
    share_with_fork: bool = True,
) -> dict[str, list[tuple[Candidate, np.ndarray]]]:
    """Every algorithm's (candidate, centroids) pairs, by algorithm, in order of k.

    With a second core, a forked worker process and this one take the units of
    ``_work_units`` from one shared counter until none is left, so both stay busy whatever
    the sample size (on 200 rows gmm's fits dominate; on a 200k-row sample all three
    algorithms weigh about the same). The results are the same either way: each unit
    depends only on the samples, resamples and seeds drawn before.
    """
    units = _work_units(algorithms, ks)
    arguments = (samples, boot_indices, seed, sizes, silhouette_distances)
    if not share_with_fork or len(units) < 2 or not fork_available():
        evaluated = _evaluate_units(units, itertools.count().__next__, arguments)
    else:
        counter = multiprocessing.get_context("fork").Value("i", 0)
        claim = partial(_claim_next, counter)
        with ForkedCall(_evaluate_units, units, claim, arguments) as forked:
            evaluated = _evaluate_units(units, claim, arguments)
            evaluated.update(forked.result())
    by_key = {
        (units[index].algorithm, candidate.k): (candidate, centroids)
        for index, pairs in evaluated.items()
        for candidate, centroids in pairs
    }
    return {algorithm: [by_key[(algorithm, k)] for k in ks] for algorithm in algorithms}


def _claim_next(counter: Any) -> int:
    """The next unit's index from a counter shared with the forked process (a
    multiprocessing.Value); indexes past the last unit mean the work is done."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    return index


def _evaluate_units(
    units: list[_Unit], claim: Callable[[], int], arguments: tuple
) -> dict[int, list[tuple[Candidate, np.ndarray]]]:
    """Evaluate units as ``claim`` hands out their indexes, until it runs past the last."""
    evaluated: dict[int, list[tuple[Candidate, np.ndarray]]] = {}
    samples, boot_indices, seed, sizes, silhouette_distances = arguments
    while (index := claim()) < len(units):
        unit = units[index]
        evaluated[index] = _evaluate_algorithm(
            unit.algorithm, samples, boot_indices, list(unit.ks), seed, sizes, silhouette_distances
        )
    return evaluated


def _evaluate_algorithm(
    algorithm: str,
    samples: _Samples,
    boot_indices: list[np.ndarray],
    ks: list[int],
    seed: int,
    sizes: SampleSizes,
    silhouette_distances: np.ndarray,
) -> list[tuple[Candidate, np.ndarray]]:
    """Fit one algorithm for every k (plus its bootstrap refits) and score each k.

    All k are fitted together because Ward builds one tree per sample and cuts it at every k.
    Returns (candidate, centroids) pairs in order of k.
    """
    fitted = _fit_centroids_all_k(algorithm, _fit_sample(algorithm, samples), ks, seed, sizes)
    boot_fits = [
        _fit_centroids_all_k(algorithm, samples.stability[idx], ks, seed + 1 + b, sizes)
        for b, idx in enumerate(boot_indices)
    ]
    return [
        (
            _evaluate_candidate(
                algorithm, fitted[k], [fit[k] for fit in boot_fits], samples, silhouette_distances
            ),
            fitted[k],
        )
        for k in ks
    ]


def _evaluate_candidate(
    algorithm: str,
    centroids: np.ndarray,
    boot_centroids: list[np.ndarray],
    samples: _Samples,
    silhouette_distances: np.ndarray,
) -> Candidate:
    """Metrics of one candidate, all on nearest-centroid labels."""
    k = len(centroids)
    labels, distance, _, _ = assign_nearest(samples.selection, centroids)
    sil_labels = labels[: len(samples.silhouette)]  # the silhouette sample is a prefix
    smallest = float(np.bincount(labels, minlength=k).min()) / len(labels)
    davies_bouldin, calinski_harabasz = cluster_separation_scores(samples.selection, labels)
    return Candidate(
        algorithm=algorithm,
        k=k,
        silhouette=silhouette_from_distances(silhouette_distances, sil_labels),
        davies_bouldin=davies_bouldin,
        calinski_harabasz=calinski_harabasz,
        inertia=float(np.sum(distance**2)) if algorithm == "kmeans" else None,
        stability=_bootstrap_stability(centroids, boot_centroids, samples.stability),
        smallest_share=smallest,
    )


def cluster_separation_scores(data: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(Davies-Bouldin, Calinski-Harabasz) of one labelling: the values of sklearn's
    davies_bouldin_score and calinski_harabasz_score (up to float rounding), NaN for both
    when fewer than two clusters are present.

    Both come from the same per-cluster means and distances to them, computed once here
    with bincount; sklearn's scorers loop over the clusters with boolean masks and check
    their inputs on every call, which made them the costliest part of scoring a candidate.
    Labels need not be consecutive: absent labels are no clusters, as in sklearn.
    """
    present, codes = np.unique(labels, return_inverse=True)
    n_clusters, n = len(present), len(labels)
    if not 2 <= n_clusters <= n - 1:
        return np.nan, np.nan
    points = np.asarray(data, dtype=np.float64)
    counts = np.bincount(codes, minlength=n_clusters).astype(np.float64)
    means = (
        np.column_stack(
            [np.bincount(codes, weights=column, minlength=n_clusters) for column in points.T]
        )
        / counts[:, None]
    )
    offsets = points - means[codes]
    squared = np.einsum("ij,ij->i", offsets, offsets)

    within = float(squared.sum())
    between = float(counts @ ((means - points.mean(axis=0)) ** 2).sum(axis=1))
    calinski_harabasz = (
        1.0 if within == 0.0 else between * (n - n_clusters) / (within * (n_clusters - 1.0))
    )

    spread = np.bincount(codes, weights=np.sqrt(squared), minlength=n_clusters) / counts
    centre_distances = cdist(means, means)
    if np.allclose(spread, 0) or np.allclose(centre_distances, 0):
        return 0.0, calinski_harabasz
    centre_distances[centre_distances == 0] = np.inf
    ratios = (spread[:, None] + spread[None, :]) / centre_distances
    return float(np.mean(ratios.max(axis=1))), calinski_harabasz


def _bootstrap_stability(
    centroids: np.ndarray, boot_centroids: list[np.ndarray], evaluation: np.ndarray
) -> float:
    """Mean ARI between the candidate's labels and those of refits on bootstrap resamples."""
    own, _, _, _ = assign_nearest(evaluation, centroids)
    scores = [
        _adjusted_rand(own, len(centroids), assign_nearest(evaluation, boot)[0], len(boot))
        for boot in boot_centroids
    ]
    return float(np.mean(scores))


def _adjusted_rand(labels: np.ndarray, k: int, other_labels: np.ndarray, other_k: int) -> float:
    """ARI of two labelings (0..k-1 and 0..other_k-1) from their contingency table: the value
    of sklearn's adjusted_rand_score, without its per-call input checks, which cost more
    than the score over the 135 comparisons of a selection."""
    pairs = labels.astype(np.int64) * other_k + other_labels
    return ari_from_contingency(np.bincount(pairs, minlength=k * other_k).reshape(k, other_k))
