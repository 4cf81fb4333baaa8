"""Model selection with Spark MLlib: k-means and bisecting k-means candidates over the k range."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pyarrow as pa
from pyspark.ml.clustering import BisectingKMeans, KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import adjusted_rand_score

from segmentation_pipeline.core.model_search import (
    cluster_separation_scores,
    refine_kmeans_centres,
)
from segmentation_pipeline.core.selection import (
    ALGORITHMS,
    SPARK_ALGORITHMS,
    Candidate,
    ModelSelection,
    SampleSizes,
    algorithms_for,
    assign_nearest,
    canonical_order,
    choose_candidate,
    count_distinct_sorted,
    is_eligible,
    sorted_rows,
    validate_k_range,
    validated_matrix,
)

# Silhouette ties go to the simpler algorithm: plain k-means, then bisecting k-means.
SPARK_SIMPLICITY: dict[str, int] = {name: rank for rank, name in enumerate(SPARK_ALGORITHMS)}
_MAX_ITER = 50  # k-means stops earlier when the centres move less than its tolerance
_KMEANS_RUNS = 2
_RESTART_SEED_STEP = 1_000_003
# Bisecting k-means runs exactly this many 2-means iterations per split (no tolerance);
# splits converge in a few, and every iteration is a Spark job.
_BISECTING_MAX_ITER = 10
# MLlib's bisecting split perturbs the parent centre by 1e-4 x its norm: on standardised data
# the root centre is the origin, so it would never split. Fitting on data shifted by this
# constant (distances are unchanged) and shifting the centres back avoids that.
_BISECTING_SHIFT = 10.0
# Concurrent MLlib fits: each is a chain of small jobs, so overlapping them hides latency.
_FIT_THREADS = 4


class ModelSearch:
    """Candidates over algorithms and k, fitted with Spark MLlib, chosen by the local rule.

    * The sample is sorted lexicographically first (row order never matters) and held in
      Spark as one cached partition, so every fit sees the same rows in the same order and
      is reproducible, whatever the cluster's size.
    * Each (algorithm, k) is fitted on the selection subsample (``SampleSizes.selection``
      rows, 20,000 by default, drawn by one seeded permutation as in the local engine; MLlib
      KMeans with k-means|| and BisectingKMeans, seeded); the silhouette comes from MLlib's
      ClusteringEvaluator on that subsample (its squared-Euclidean silhouette, computed in
      O(n k)); Davies-Bouldin, Calinski-Harabasz, inertia and the smallest segment from the
      nearest-centroid labels, as in the local engine. Fitting every candidate on the whole
      sample took 166 s at a 200,000-row sample on 2 cores, for the same choice.
    * The chosen k-means is then refined on the whole sample by Lloyd iterations from its
      centres (the local engine's final step); bisecting k-means keeps its evaluated centres.
    * Stability is the local engine's: the mean adjusted Rand index between the candidate's
      labels and those of MLlib refits on bootstrap resamples of a seeded 1,500-row
      subsample. Refits are Spark jobs, so they are made in order of silhouette until the
      choice is settled (an eligible candidate found, and every candidate within the tie
      tolerance of it measured); candidates below that are never chosen whatever their
      stability, and keep a NULL stability. The choice is then exactly the one of
      ``choose_candidate`` over fully measured candidates.
    """

    def __init__(
        self,
        session: SparkSession,
        sample: np.ndarray,
        algorithms: Sequence[str] = ALGORITHMS,
        k_min: int = 2,
        k_max: int = 10,
        seed: int = 0,
        stability_threshold: float = 0.8,
        tie_tolerance: float = 0.005,
        sizes: SampleSizes | None = None,
    ) -> None:
        self.session = session
        self.algorithms = algorithms_for("spark", algorithms)
        self.sizes = sizes or SampleSizes()
        self.seed = seed
        self.stability_threshold = stability_threshold
        self.tie_tolerance = tie_tolerance
        self.data = sorted_rows(validated_matrix(sample))
        self.n_distinct = count_distinct_sorted(self.data)
        validate_k_range(k_min, k_max, self.n_distinct, stability_threshold)
        self.ks = list(range(k_min, k_max + 1))
        rng = np.random.default_rng(seed)
        shuffled = self.data[rng.permutation(len(self.data))]
        self.selection = shuffled[: self.sizes.selection]
        self.stability_rows = self.selection[: self.sizes.stability]
        self.boot_indices = [
            rng.integers(0, len(self.stability_rows), size=len(self.stability_rows))
            for _ in range(self.sizes.bootstrap_resamples)
        ]
        self.fitted: dict[tuple[str, int], np.ndarray] = {}

    def run(self) -> ModelSelection:
        pairs = [(a, k) for a in self.algorithms for k in self.ks]
        with ThreadPoolExecutor(_FIT_THREADS) as threads:
            pool = _Mapper(threads, self.session)
            frame = _vector_frame(self.session, self.selection).cache()
            try:
                fits = list(pool.map(lambda pair: _fit_centres(frame, *pair, self.seed), pairs))
            finally:
                frame.unpersist()
            self.fitted = dict(zip(pairs, fits, strict=True))
            candidates = self._candidates(pool)
            candidates, measured = self._settle_stability(candidates, pool)
        return self._selection(candidates, measured)

    # ---------------------------------------------------------------- candidates

    def _candidates(self, pool: _Mapper) -> list[Candidate]:
        """Every fit scored on its nearest-centroid labels of the selection subsample.

        The labels (numpy, as assign_nearest gives them) go to Spark as columns of one
        cached frame, so every ClusteringEvaluator run has the same plan but for the column
        it reads.
        """
        labels = {pair: assign_nearest(self.selection, c) for pair, c in self.fitted.items()}
        columns = {f"label{i}": labels[pair][0] for i, pair in enumerate(self.fitted)}
        scored = [
            f"label{i}"
            for i, (pair, centres) in enumerate(self.fitted.items())
            if len(centres) == pair[1] and len(np.unique(labels[pair][0])) >= 2
        ]
        frame = _vector_frame(self.session, self.selection, columns).cache()
        try:
            values = pool.map(lambda column: _silhouette(frame, column), scored)
            silhouettes = dict(zip(scored, values, strict=True))
        finally:
            frame.unpersist()
        return [
            self._candidate(pair, labels[pair], silhouettes.get(f"label{i}", float("nan")))
            for i, pair in enumerate(self.fitted)
        ]

    def _candidate(
        self, pair: tuple[str, int], nearest: tuple[np.ndarray, ...], silhouette: float
    ) -> Candidate:
        """One (algorithm, k) with the local engine's metrics on its nearest-centroid labels."""
        algorithm, k = pair
        labels, distance = nearest[0], nearest[1]
        complete = len(self.fitted[pair]) == k  # bisecting may not reach k leaves
        counts = np.bincount(labels, minlength=k)
        davies_bouldin, calinski_harabasz = (
            cluster_separation_scores(self.selection, labels)
            if np.isfinite(silhouette)  # not for an incomplete bisecting tree
            else (np.nan, np.nan)
        )
        return Candidate(
            algorithm=algorithm,
            k=k,
            silhouette=silhouette,
            davies_bouldin=davies_bouldin,
            calinski_harabasz=calinski_harabasz,
            inertia=float(np.sum(distance**2)) if algorithm == "kmeans" else None,
            stability=float("nan"),
            smallest_share=float(counts.min()) / len(labels) if complete else 0.0,
        )

    # ---------------------------------------------------------------- stability

    def _settle_stability(
        self, candidates: list[Candidate], pool: _Mapper
    ) -> tuple[list[Candidate], int]:
        """Measure stability in order of silhouette until no other measure could change
        the choice; return the candidates and how many were measured."""
        order = sorted(
            (c for c in candidates if np.isfinite(c.silhouette) and c.smallest_share > 0),
            key=lambda c: (-c.silhouette, c.k, SPARK_ALGORITHMS.index(c.algorithm)),
        )
        stability: dict[tuple[str, int], float] = {}
        settled_at: float | None = None
        for candidate in order:
            if settled_at is not None and candidate.silhouette < settled_at - self.tie_tolerance:
                break
            score = self._stability(candidate, pool)
            stability[(candidate.algorithm, candidate.k)] = score
            if settled_at is None and is_eligible(
                replace(candidate, stability=score), self.stability_threshold
            ):
                settled_at = candidate.silhouette
        measured = [
            replace(c, stability=stability.get((c.algorithm, c.k), float("nan")))
            for c in candidates
        ]
        return measured, len(stability)

    def _stability(self, candidate: Candidate, pool: _Mapper) -> float:
        """Mean ARI between the candidate's labels and MLlib refits on bootstrap resamples."""
        centres = self.fitted[(candidate.algorithm, candidate.k)]
        own = assign_nearest(self.stability_rows, centres)[0]

        def refit(b: int) -> float:
            resample = self.stability_rows[self.boot_indices[b]]
            frame = _vector_frame(self.session, resample)
            boot = _fit_centres(frame, candidate.algorithm, candidate.k, self.seed + 1 + b)
            return adjusted_rand_score(own, assign_nearest(self.stability_rows, boot)[0])

        return float(np.mean(list(pool.map(refit, range(len(self.boot_indices))))))

    # ---------------------------------------------------------------- choice

    def _selection(self, candidates: list[Candidate], n_measured: int) -> ModelSelection:
        chosen, _, rule = choose_candidate(
            candidates, self.stability_threshold, self.tie_tolerance, SPARK_SIMPLICITY
        )
        candidates = [replace(c, selected=c is chosen) for c in candidates]
        chosen = next(c for c in candidates if c.selected)
        centres = self.fitted[(chosen.algorithm, chosen.k)]
        if chosen.algorithm == "kmeans":
            centres = refine_kmeans_centres(centres, self.data)
        rule += (
            f"; Spark MLlib, stability measured for {n_measured} of {len(candidates)} "
            "candidates, in order of silhouette until the choice was settled"
        )
        return ModelSelection(
            candidates=tuple(candidates),
            chosen=chosen,
            rule=rule,
            centroids=np.ascontiguousarray(centres[canonical_order(centres)]),
            n_rows=len(self.data),
            n_distinct_rows=self.n_distinct,
            n_selection=len(self.selection),
            n_gmm=0,
            n_ward=0,
            n_silhouette=len(self.selection),
            n_stability=len(self.stability_rows),
            bootstrap_resamples=len(self.boot_indices),
            seed=self.seed,
            stability_threshold=self.stability_threshold,
            tie_tolerance=self.tie_tolerance,
        )


class _Mapper:
    """Runs the fits concurrently on a classic session, in the calling thread on Spark
    Connect: a Connect session is active in one thread only, and MLlib's model calls (e.g.
    a training summary) made in another thread fail with no active session."""

    def __init__(self, threads: ThreadPoolExecutor, session: SparkSession) -> None:
        connect = type(session).__module__.startswith("pyspark.sql.connect")
        self.map = map if connect else threads.map


def _fit_centres(frame: DataFrame, algorithm: str, k: int, seed: int) -> np.ndarray:
    """Centres (k x d, or fewer if bisecting could not split) of a seeded MLlib fit.

    k-means|| lands in a poor local optimum now and then (on the Mall file, 4 runs in 10 at
    k = 5) and MLlib has no restarts option, so k-means keeps the lowest-cost of a few seeded
    runs, as scikit-learn's n_init does for the local engine.
    """
    if algorithm == "kmeans":
        models = [
            KMeans(k=k, seed=seed + run * _RESTART_SEED_STEP, maxIter=_MAX_ITER).fit(frame)
            for run in range(_KMEANS_RUNS)
        ]
        best = min(models, key=lambda model: model.summary.trainingCost)
        return np.array(best.clusterCenters(), dtype=np.float64)
    shifted = frame.select(F.col("shifted").alias("features"))
    model = BisectingKMeans(k=k, seed=seed, maxIter=_BISECTING_MAX_ITER).fit(shifted)
    return np.array(model.clusterCenters(), dtype=np.float64) - _BISECTING_SHIFT


def _silhouette(frame: DataFrame, label_column: str) -> float:
    """MLlib's ClusteringEvaluator silhouette (squared Euclidean) of one label column."""
    evaluator = ClusteringEvaluator(
        featuresCol="features", predictionCol=label_column, metricName="silhouette"
    )
    return float(evaluator.evaluate(frame))


def _vector_frame(
    session: SparkSession, rows: np.ndarray, extra: dict[str, np.ndarray] | None = None
) -> DataFrame:
    """Rows as a one-partition DataFrame: columns f0.., ``features`` and ``shifted`` vectors,
    and any ``extra`` columns.

    One partition keeps the order of the rows, so seeded fits are reproducible on any
    cluster (the sample is bounded by the sample size, so one partition holds it).
    """
    names = [f"f{j}" for j in range(rows.shape[1])]
    table = pa.table({**{name: rows[:, j] for j, name in enumerate(names)}, **(extra or {})})
    frame = session.createDataFrame(table).coalesce(1)
    frame = frame.select("*", *[(F.col(n) + _BISECTING_SHIFT).alias(f"s{n}") for n in names])
    frame = VectorAssembler(inputCols=names, outputCol="features").transform(frame)
    return VectorAssembler(inputCols=[f"s{n}" for n in names], outputCol="shifted").transform(frame)
