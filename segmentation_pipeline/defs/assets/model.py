"""The model: scaled features, model selection with stable ids, and every customer's segment."""

import dagster as dg
import numpy as np

from segmentation_pipeline.core import history
from segmentation_pipeline.core.assignment import outlier_thresholds
from segmentation_pipeline.core.features import FeatureScaling, parse_features, record_scaling
from segmentation_pipeline.core.markdown import counted, value_table
from segmentation_pipeline.core.selection import (
    CANDIDATE_COLUMNS,
    count_distinct_sorted,
    sorted_rows,
)
from segmentation_pipeline.defs.assets.common import GROUP, TRANSIENT_RETRY, stops_when_interrupted
from segmentation_pipeline.defs.assets.ingest import raw_customers
from segmentation_pipeline.defs.metadata import markdown_preview
from segmentation_pipeline.defs.resources import (
    SegmentationSettings,
    WarehouseResource,
    engine_for,
)


def _scaling_of_run(con, run_id: str) -> FeatureScaling:  # noqa: ANN001 - a DuckDB connection
    rows = con.execute(
        "SELECT feature, mean, std FROM feature_scaling WHERE run_id = $run_id ORDER BY position",
        {"run_id": run_id},
    ).fetchall()
    if not rows:
        raise dg.Failure("no feature scaling recorded for this run; materialize customer_features")
    names, means, stds = zip(*rows, strict=True)
    return FeatureScaling(tuple(names), tuple(means), tuple(stds))


def _rounded(value: object) -> object:
    """A candidate's score to 4 decimals for display; other values as they are."""
    return round(value, 4) if isinstance(value, float) else value


def _usable_k_max(
    context: dg.AssetExecutionContext, sample: np.ndarray, k_min: int, k_max: int
) -> int:
    """k_max, lowered when there are too few distinct customers to form that many segments."""
    n_distinct = count_distinct_sorted(sorted_rows(sample))  # 5x faster than np.unique
    if n_distinct <= k_min:
        raise dg.Failure(
            description=f"the customers take only {n_distinct} distinct values on the chosen "
            f"features; at least {k_min + 1} are needed to choose between {k_min} or more "
            "segments",
            allow_retries=False,
        )
    if k_max >= n_distinct:
        context.log.warning(
            f"k_max lowered from {k_max} to {n_distinct - 1}: the customers take only "
            f"{n_distinct} distinct values on the chosen features"
        )
        return n_distinct - 1
    return k_max


@dg.asset(group_name=GROUP, kinds={"duckdb"}, deps=[raw_customers], retry_policy=TRANSIENT_RETRY)
@stops_when_interrupted
def customer_features(
    context: dg.AssetExecutionContext,
    settings: SegmentationSettings,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """The chosen features of every customer, standardised (z-scores).

    Means and standard deviations are computed in DuckDB over all customers and stored as
    data in `feature_scaling`; `customer_features` is a view applying them, so nothing is
    copied. Gender enters as a 0/1 indicator of 'Female'.
    """
    run_id = context.run.run_id
    try:
        names = parse_features(settings.features)
    except ValueError as error:
        raise dg.Failure(description=f"features: {error}", allow_retries=False) from None
    engine = engine_for(settings)
    with warehouse.staged_connection(run_id) as con:
        try:
            scaling = engine.feature_scaling(con, names)
        except ValueError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None
        con.execute("BEGIN TRANSACTION")
        record_scaling(con, scaling, run_id)
        con.execute("COMMIT")
        # FLOAT (32-bit) values read as doubles show noise: -1.424568772315979 for -1.4245688
        preview = markdown_preview(
            con,
            "SELECT customer_id, round(COLUMNS(* EXCLUDE (customer_id))::DOUBLE, 4) "
            "FROM customer_features ORDER BY customer_id",
        )
    return dg.MaterializeResult(
        metadata={
            "features": ", ".join(names),
            **{f"mean_{n}": m for n, m in zip(scaling.features, scaling.means, strict=True)},
            **{f"std_{n}": s for n, s in zip(scaling.features, scaling.stds, strict=True)},
            "preview": preview,
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"scikitlearn", "duckdb"},
    deps=[customer_features],
    retry_policy=TRANSIENT_RETRY,
)
@stops_when_interrupted
def segmentation_model(
    context: dg.AssetExecutionContext,
    settings: SegmentationSettings,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """The chosen clustering model, stored as centroids (no pickle).

    Every algorithm (k-means, Gaussian mixture, Ward) and k in [k_min, k_max] is scored on a
    deterministic sample: silhouette, Davies-Bouldin, Calinski-Harabasz, inertia and
    bootstrap stability. Among candidates stable enough (bootstrap ARI >= 0.8) with no empty
    segment, the highest silhouette wins; near-ties go to the smaller k, then the simpler
    algorithm (see `core/selection.py`). New centroids are matched to the previous run's (Hungarian
    matching), so a segment that persists keeps its id.
    """
    run_id = context.run.run_id
    engine = engine_for(settings)
    with warehouse.staged_connection(run_id) as con:
        scaling = _scaling_of_run(con, run_id)
        sample = engine.sample_features(con, scaling, settings.sample_size, settings.seed)
        k_max = _usable_k_max(context, sample, settings.k_min, settings.k_max)
        try:
            chosen = engine.select_model(
                sample,
                algorithms=settings.algorithms,
                k_min=settings.k_min,
                k_max=k_max,
                seed=settings.seed,
            )
        except ValueError as error:
            raise dg.Failure(description=f"model selection: {error}", allow_retries=False) from None
        context.log.info(
            f"Chose {chosen.chosen.algorithm} with k={chosen.chosen.k} "
            f"(silhouette {chosen.chosen.silhouette:.3f}) from {len(chosen.candidates)} candidates "
            f"on {len(sample):,} sampled customers."
        )
        history.ensure_history_tables(con)
        segment_ids = history.stable_segment_ids(
            con, run_id, scaling, chosen.centroids, settings.segment_match_distance
        )
        thresholds = outlier_thresholds(sample, chosen.centroids)
        ingest = con.execute(
            "SELECT source, source_sha256, n_customers, n_rejected FROM ingest_runs "
            "WHERE run_id = $run_id",
            {"run_id": run_id},
        ).fetchone() or (None, None, None, None)
        con.execute("BEGIN TRANSACTION")
        history.record_model(
            con, run_id, scaling, segment_ids, chosen.centroids, thresholds, chosen.candidates
        )
        history.record_run(
            con,
            {
                "run_id": run_id,
                "source": ingest[0],
                "source_sha256": ingest[1],
                "n_customers": ingest[2],
                "n_rejected": ingest[3],
                "algorithm": chosen.chosen.algorithm,
                "n_segments": chosen.chosen.k,
                "features": scaling.features,
                "silhouette": chosen.chosen.silhouette,
                "davies_bouldin": chosen.chosen.davies_bouldin,
                "calinski_harabasz": chosen.chosen.calinski_harabasz,
                "inertia": chosen.chosen.inertia,
                "stability": chosen.chosen.stability,
                "ari_vs_previous": None,
                "previous_run_id": history.previous_run_id(con, run_id),
                "selection_rule": chosen.rule,
                "seed": settings.seed,
                "sample_size": len(sample),
                "engine": engine.name,
            },
        )
        con.execute("COMMIT")
    return dg.MaterializeResult(
        metadata={
            "algorithm": chosen.chosen.algorithm,
            "k": chosen.chosen.k,
            "silhouette": chosen.chosen.silhouette,
            "davies_bouldin": chosen.chosen.davies_bouldin,
            "calinski_harabasz": chosen.chosen.calinski_harabasz,
            "stability": chosen.chosen.stability,
            "sample_size": len(sample),
            "segment_ids": ", ".join(str(i) for i in segment_ids),
            "selection_rule": chosen.rule,
            "centroids": dg.MetadataValue.md(
                value_table(
                    ["segment_id", *scaling.features],
                    [
                        [segment_id, *(round(float(value), 2) for value in centre)]
                        for segment_id, centre in zip(
                            segment_ids, scaling.to_original(chosen.centroids), strict=True
                        )
                    ],
                )
            ),
            "candidates": dg.MetadataValue.md(
                value_table(
                    list(CANDIDATE_COLUMNS),
                    [
                        [_rounded(getattr(candidate, name)) for name in CANDIDATE_COLUMNS]
                        for candidate in chosen.candidates
                    ],
                )
            ),
        }
    )


@dg.asset(
    group_name=GROUP, kinds={"duckdb"}, deps=[segmentation_model], retry_policy=TRANSIENT_RETRY
)
@stops_when_interrupted
def customer_segments(
    context: dg.AssetExecutionContext,
    settings: SegmentationSettings,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Every valid customer's segment, distance to its centroid, runner-up and outlier flag.

    Assignment streams through the customers in batches (flat memory at any size), into
    the run's own table in the `assignment_history` schema, which `segment_assignments`
    shows and `customer_segments_history` keeps for the last `history_runs_kept` runs
    (see `core/history.py`). Customers moving between segments since the previous run are
    counted in `segment_migrations`, and the agreement with the previous run (adjusted
    Rand index) goes into `segmentation_runs`; then the previous run's table is stored
    against integer customer keys, a tenth of its size (`core/history_keys.py`).
    """
    run_id = context.run.run_id
    engine = engine_for(settings)
    with warehouse.staged_connection(run_id) as con:
        scaling = _scaling_of_run(con, run_id)
        model = con.execute(
            "SELECT segment_id, list(centroid_scaled ORDER BY position),"
            " any_value(outlier_distance) FROM segment_centroids"
            " JOIN feature_scaling USING (run_id, feature)"
            " WHERE run_id = $run_id GROUP BY segment_id ORDER BY segment_id",
            {"run_id": run_id},
        ).fetchall()
        if not model:
            raise dg.Failure("no model recorded for this run; materialize segmentation_model")
        segment_ids = [row[0] for row in model]
        centroids = np.array([row[1] for row in model], dtype=np.float64)
        thresholds = np.array([row[2] for row in model], dtype=np.float64)
        history.prepare_assignment_history(con)
        n_assigned = engine.assign(
            con,
            scaling,
            centroids,
            segment_ids,
            thresholds,
            run_id,
            history.assignments_table(run_id),
        )
        con.execute("BEGIN TRANSACTION")
        previous = history.previous_run_id(con, run_id)
        ari = history.record_assignment_history(con, run_id, previous)
        pruned = history.prune_assignment_history(con, run_id, settings.history_runs_kept)
        unused_keys = history.key_past_runs(con, run_id)
        history.define_history_views(con, run_id)
        history.finish_run(con, run_id, n_assigned, ari)
        con.execute("COMMIT")
        sizes = markdown_preview(
            con,
            "SELECT segment_id, count(*) AS n_customers, round(avg(distance), 3) AS mean_distance,"
            " count(*) FILTER (WHERE is_outlier) AS outliers FROM segment_assignments "
            "GROUP BY segment_id ORDER BY segment_id",
            limit=100,
        )
        moved = con.execute(
            "SELECT coalesce(sum(n_customers), 0) FROM segment_migrations WHERE run_id = $run_id"
            " AND from_segment_id IS NOT NULL AND from_segment_id <> to_segment_id",
            {"run_id": run_id},
        ).fetchone()[0]
    no_agreement = "first run" if previous is None else "none: no customer in common"
    if ari is None:  # nobody can have changed segment
        context.log.info(f"Assigned {n_assigned:,} customers ({no_agreement}).")
    else:
        moved_text = f"{counted(int(moved), 'customer')} changed segment since the previous run"
        context.log.info(f"Assigned {n_assigned:,} customers; {moved_text}.")
    if unused_keys:
        context.log.info(f"Deleted {unused_keys:,} customer keys that no kept run uses.")
    if pruned:
        context.log.info(
            f"Removed {pruned:,} history rows older than the last "
            f"{settings.history_runs_kept} runs."
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n_assigned,
            "segment_sizes": sizes,
            "customers_changed_segment": int(moved) if ari is not None else no_agreement,
            "ari_vs_previous": ari if ari is not None else no_agreement,
            "previous_run_id": previous or "none",
            "history_rows_removed": pruned,
        }
    )
