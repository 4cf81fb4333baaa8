"""Segment profiles: statistics, names and marketing recommendations per segment."""

from typing import Any

import dagster as dg

from segmentation_pipeline.core import workers
from segmentation_pipeline.core.markdown import value_table
from segmentation_pipeline.core.segment_stats import (
    named_profiles,
    previous_profiles,
    record_profiles,
    segment_statistics,
)
from segmentation_pipeline.defs.assets.common import GROUP, TRANSIENT_RETRY, stops_when_interrupted
from segmentation_pipeline.defs.assets.model import customer_segments
from segmentation_pipeline.defs.resources import WarehouseResource

_SHOWN = [
    "segment_id",
    "segment_name",
    "n_customers",
    "share",
    "avg_age",
    "avg_annual_income",
    "avg_spending_score",
    "female_share",
]


@dg.asset(
    group_name=GROUP, kinds={"duckdb"}, deps=[customer_segments], retry_policy=TRANSIENT_RETRY
)
@stops_when_interrupted
def segment_profiles(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Each segment in original units, with a name and a marketing recommendation.

    Names and recommendations come from how the segment differs from the whole customer
    base on each feature (z-scores of the segment means), so they follow the data; names
    are unique within a run. A segment that keeps its id from the previous run keeps its
    trait levels with hysteresis (``profiling.level_of``), so a change elsewhere in the base
    that nudges its z-scores across the threshold does not rename it.
    """
    run_id = context.run.run_id
    with warehouse.staged_connection(run_id) as con:
        features = con.execute(
            "SELECT list(feature ORDER BY position) FROM feature_scaling WHERE run_id = $run_id",
            {"run_id": run_id},
        ).fetchone()[0]
        stats, overall = segment_statistics(con)
        previous = previous_profiles(con, run_id)
        # Named in the pre-started worker under `segmentation run` (pandas already loaded).
        profiles = workers.call(named_profiles, stats, overall, features, previous)
        con.execute("BEGIN TRANSACTION")
        record_profiles(con, run_id, profiles)
        con.execute("COMMIT")
    context.log.info(
        "Segments: " + "; ".join(f"{p['segment_id']} {p['segment_name']}" for p in profiles)
    )
    return dg.MaterializeResult(
        metadata={
            "profiles": dg.MetadataValue.md(
                value_table(_SHOWN, [[_shown(p, name) for name in _SHOWN] for p in profiles])
            ),
            "recommendations": dg.MetadataValue.md(
                "\n".join(
                    f"- **{p['segment_id']} {p['segment_name']}**: {p['recommendation']}"
                    for p in profiles
                )
            ),
            "n_segments": len(profiles),
        }
    )


def _shown(profile: dict[str, Any], name: str) -> Any:
    """A profile value as the UI's table shows it: shares in percent, averages to 0.1."""
    value = profile[name]
    if name in ("share", "female_share"):
        return f"{value * 100:.1f} %"
    if name.startswith("avg_"):
        return round(value, 1)
    return value
