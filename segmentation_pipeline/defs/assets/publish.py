"""Publish: the run's work database replaces the warehouse analysts query, atomically."""

import dagster as dg

from segmentation_pipeline.core.catalog import apply_comments
from segmentation_pipeline.core.errors import PublishError
from segmentation_pipeline.core.history import history_row_count
from segmentation_pipeline.core.validation import run_is_complete
from segmentation_pipeline.core.views import create_views
from segmentation_pipeline.defs.assets.common import GROUP, TRANSIENT_RETRY, stops_when_interrupted
from segmentation_pipeline.defs.assets.profiles import segment_profiles
from segmentation_pipeline.defs.checks import blocking_checks_not_passed
from segmentation_pipeline.defs.resources import WarehouseResource

PUBLISHED_TABLES = (
    "customers",
    "customer_segments",
    "segment_profiles",
    "segmentation_runs",
    "model_candidates",
    "segment_centroids",
    "feature_scaling",
    "customer_segments_history",
    "segment_migrations",
    "rejected_rows",
    "ingest_runs",
)


@dg.asset(group_name=GROUP, kinds={"duckdb"}, deps=[segment_profiles], retry_policy=TRANSIENT_RETRY)
@stops_when_interrupted
def published_warehouse(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """The DuckDB warehouse analysts query, replaced in one atomic rename.

    Runs only after every blocking check passed. The work file is checkpointed, closed
    and renamed over the published file: a reader sees the old results or the new ones,
    never a mix, and the previous file stays next to it as `*.previous.duckdb`.
    """
    run_id = context.run.run_id
    if warehouse.warehouse.published_by(run_id):
        context.log.info(f"Already published to {warehouse.warehouse.path} by an earlier attempt.")
        return dg.MaterializeResult(
            metadata={"path": dg.MetadataValue.path(str(warehouse.warehouse.path))}
        )
    if unchecked := blocking_checks_not_passed(context.instance, run_id):
        raise dg.Failure(
            description=f"not published: the blocking checks {', '.join(unchecked)} did not "
            "run in this run (were the asset checks left out of the launch?). Materialize the "
            "whole segmentation group with its checks (segmentation_job).",
            allow_retries=False,
        )
    with warehouse.staged_connection(run_id) as con:
        complete = run_is_complete(con, run_id)
        views = create_views(con) if complete.passed else []  # analysts' views, see core/views
        # after the views: CREATE OR REPLACE drops comments; BI tools show them, core/catalog
        comments = apply_comments(con) if complete.passed else 0
        history_rows = history_row_count(con)
    if not complete.passed:
        raise dg.Failure(
            description=f"not published, the results are incomplete: {complete.description}. "
            "Materialize the whole segmentation group (segmentation_job).",
            allow_retries=False,
        )
    try:
        result = warehouse.warehouse.publish(
            run_id, PUBLISHED_TABLES, {"customer_segments_history": history_rows}
        )
    except PublishError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    context.log.info(f"Published {result.path} ({result.size_bytes:,} bytes).")
    if result.warning:
        context.log.warning(result.warning)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(result.path)),
            "size_bytes": result.size_bytes,
            "views": ", ".join(views),
            "catalog_comments": comments,
            **{f"rows_{table}": count for table, count in result.row_counts.items()},
        }
    )
