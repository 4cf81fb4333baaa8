"""Publish: the run's work database replaces the warehouse analysts query, atomically."""

import dagster as dg

from segmentation_pipeline.core.errors import PublishError
from segmentation_pipeline.defs.assets.ingest import GROUP, raw_customers
from segmentation_pipeline.defs.resources import WarehouseResource

PUBLISHED_TABLES = ("customers", "rejected_rows", "ingest_runs")


@dg.asset(group_name=GROUP, kinds={"duckdb"}, deps=[raw_customers])
def published_warehouse(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """The DuckDB warehouse analysts query, replaced in one atomic rename.

    Runs only after every blocking check passed. The work file is checkpointed, closed
    and renamed over the published file: a reader sees the old results or the new ones,
    never a mix, and the previous file stays next to it as `*.previous.duckdb`.
    """
    try:
        result = warehouse.warehouse.publish(context.run.run_id, PUBLISHED_TABLES)
    except PublishError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    context.log.info(f"Published {result.path} ({result.size_bytes:,} bytes).")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(result.path)),
            "size_bytes": result.size_bytes,
            **{f"rows_{table}": count for table, count in result.row_counts.items()},
        }
    )
