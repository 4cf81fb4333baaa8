"""Segment profiles: statistics, names and marketing recommendations per segment."""

import dagster as dg

from segmentation_pipeline.core.markdown import value_table
from segmentation_pipeline.core.profiling import build_profiles
from segmentation_pipeline.core.segment_stats import record_profiles, segment_statistics
from segmentation_pipeline.defs.assets.common import GROUP, TRANSIENT_RETRY
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
def segment_profiles(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Each segment in original units, with a name and a marketing recommendation.

    Names and recommendations come from how the segment differs from the whole customer
    base on each feature (z-scores of the segment means), so they follow the data; names
    are unique within a run and stay attached to the stable segment id.
    """
    run_id = context.run.run_id
    with warehouse.work_connection(run_id) as con:
        features = con.execute(
            "SELECT list(feature ORDER BY position) FROM feature_scaling WHERE run_id = $run_id",
            {"run_id": run_id},
        ).fetchone()[0]
        stats, overall = segment_statistics(con)
        profiles = build_profiles(stats, overall, features)
        con.execute("BEGIN TRANSACTION")
        record_profiles(con, run_id, profiles)
        con.execute("COMMIT")
    table = profiles[_SHOWN].copy()
    for column in ("share", "female_share"):
        table[column] = (table[column] * 100).round(1).astype(str) + " %"
    for column in ("avg_age", "avg_annual_income", "avg_spending_score"):
        table[column] = table[column].round(1)
    context.log.info(
        "Segments: " + "; ".join(f"{r.segment_id} {r.segment_name}" for r in profiles.itertuples())
    )
    return dg.MaterializeResult(
        metadata={
            "profiles": dg.MetadataValue.md(
                value_table(list(table.columns), list(table.itertuples(index=False)))
            ),
            "recommendations": dg.MetadataValue.md(
                "\n".join(
                    f"- **{r.segment_id} {r.segment_name}**: {r.recommendation}"
                    for r in profiles.itertuples()
                )
            ),
            "n_segments": len(profiles),
        }
    )
