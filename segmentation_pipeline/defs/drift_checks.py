"""Drift checks: how far this run moved from the previous one (warnings, never a stop).

They attach to `segment_profiles`, the last asset before publishing, because by then the
run's work database holds everything they compare: shares (profiles), centroids and
scaling (model), ARI and silhouette (segmentation_runs). They run in one step, with a
higher step priority than `published_warehouse`, so the in-process executor evaluates
them on the work database before it is renamed into place. Severity WARN and not
blocking: a shifted customer base is news for the analysts, not a reason to keep
yesterday's results.

When the run's work file is gone (the run already published it, e.g. under another
executor) or the checks are executed on their own from the UI, they read the published
warehouse read-only instead and compare its latest run with the one before.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb

from segmentation_pipeline.core import drift
from segmentation_pipeline.defs.assets.profiles import segment_profiles
from segmentation_pipeline.defs.resources import DriftThresholds, WarehouseResource

SHARE_SHIFT = "segment_share_shift"
CENTROID_MOVEMENT = "segment_centroid_movement"
ASSIGNMENT_AGREEMENT = "assignment_agreement"
SILHOUETTE_DROP = "silhouette_drop"

_SPECS = [
    dg.AssetCheckSpec(
        SHARE_SHIFT,
        asset=segment_profiles,
        description="Segment shares vs the previous run (population stability index).",
    ),
    dg.AssetCheckSpec(
        CENTROID_MOVEMENT,
        asset=segment_profiles,
        description="Largest movement of a kept segment's centre, in this run's standard "
        "deviations (the scale of the stable ids).",
    ),
    dg.AssetCheckSpec(
        ASSIGNMENT_AGREEMENT,
        asset=segment_profiles,
        description="Adjusted Rand index of the customers' segments vs the previous run.",
    ),
    dg.AssetCheckSpec(
        SILHOUETTE_DROP,
        asset=segment_profiles,
        description="Fall of the silhouette score since the previous run.",
    ),
]

# Ahead of published_warehouse (priority 0) when both become ready after segment_profiles.
_BEFORE_PUBLISH = {"dagster/priority": "10"}


@contextmanager
def _run_database(warehouse: WarehouseResource, run_id: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """The run's work database if it still exists, else the published warehouse read-only.

    Never creates a work file: copying the warehouse just to read it would be wasted I/O.
    """
    files = warehouse.warehouse
    if files.work_path(run_id).exists():
        with warehouse.work_connection(run_id) as con:
            yield con
        return
    con = files.connect_read_only(run_id)
    try:
        yield con
    finally:
        con.close()


def _compare(
    con: duckdb.DuckDBPyConnection, run_id: str
) -> tuple[drift.RunSnapshot | None, drift.RunSnapshot | None]:
    """(previous, current): this run if it recorded a model, else the latest published run."""
    current = drift.load_snapshot(con, run_id)
    if current is None:
        latest = drift.latest_run_id(con)
        current = drift.load_snapshot(con, latest) if latest else None
    if current is None or current.previous_run_id is None:
        return None, current
    return drift.load_snapshot(con, current.previous_run_id), current


@dg.multi_asset_check(
    specs=_SPECS,
    name="segment_drift",
    description="Compare this run's segmentation with the previous run's (warnings only).",
    op_tags=_BEFORE_PUBLISH,
)
def segment_drift(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    drift_thresholds: DriftThresholds,
) -> Iterator[dg.AssetCheckResult]:
    """Share shift (PSI), centroid movement, assignment agreement (ARI) and silhouette drop."""
    try:
        with _run_database(warehouse, context.run.run_id) as con:
            previous, current = _compare(con, context.run.run_id)
    except (duckdb.Error, FileNotFoundError) as error:
        # A monitor must not fail the run; say plainly that it could not look.
        yield from _all_warn(f"drift not computed: {error}")
        return
    if current is None:
        yield from _all_warn("drift not computed: no segmentation run recorded in the warehouse")
        return
    outcomes = {
        SHARE_SHIFT: drift.share_shift(previous, current, drift_thresholds.max_share_psi),
        CENTROID_MOVEMENT: drift.centroid_movement(
            previous, current, drift_thresholds.max_centroid_shift
        ),
        ASSIGNMENT_AGREEMENT: drift.assignment_agreement(
            previous, current, drift_thresholds.min_ari
        ),
        SILHOUETTE_DROP: drift.silhouette_drop(
            previous, current, drift_thresholds.max_silhouette_drop
        ),
    }
    for name, outcome in outcomes.items():
        if not outcome.passed:
            context.log.warning(f"{name}: {outcome.description}")
        yield dg.AssetCheckResult(
            check_name=name,
            asset_key=segment_profiles.key,
            passed=outcome.passed,
            description=outcome.description,
            metadata={"run_id": current.run_id, **outcome.metadata},
            severity=dg.AssetCheckSeverity.WARN,
        )


def _all_warn(description: str) -> Iterator[dg.AssetCheckResult]:
    for spec in _SPECS:
        yield dg.AssetCheckResult(
            check_name=spec.name,
            asset_key=spec.asset_key,
            passed=False,
            description=description,
            severity=dg.AssetCheckSeverity.WARN,
        )
