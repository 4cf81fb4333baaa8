"""Ingest: the input CSV, validated and staged in the run's work database."""

from pathlib import Path

import dagster as dg

from segmentation_pipeline.core.errors import InputError, SourceChangedError
from segmentation_pipeline.core.markdown import counted
from segmentation_pipeline.core.source_file import changed_since, file_state
from segmentation_pipeline.defs.assets.common import GROUP, TRANSIENT_RETRY, stops_when_interrupted
from segmentation_pipeline.defs.metadata import column_schema, markdown_preview
from segmentation_pipeline.defs.resources import (
    SegmentationSettings,
    WarehouseResource,
    engine_for,
)


@dg.asset(
    group_name=GROUP,
    kinds={"duckdb", "csv"},
    retry_policy=TRANSIENT_RETRY,
)
@stops_when_interrupted
def raw_customers(
    context: dg.AssetExecutionContext,
    settings: SegmentationSettings,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Customers from the source CSV, checked row by row and staged for this run.

    The file's header is matched to the canonical columns (Kaggle `Genre`, `Gender` and
    snake_case spellings), every value is parsed strictly as text first, and rows that
    break a rule go to `rejected_rows` with their line number and reason. Exact duplicate
    rows collapse; ids with conflicting rows are rejected. Nothing is published here: the
    blocking checks on this asset run first, and publishing is a later step.
    """
    engine = engine_for(settings)
    source = settings.source_path
    selection = context.run.asset_selection  # None: the whole job
    if selection is not None and dg.AssetKey("published_warehouse") not in selection:
        context.log.warning(
            "This run does not publish (published_warehouse is not selected): the customers "
            "staged here are checked, then discarded when it ends."
        )
    with warehouse.work_connection(context.run.run_id) as con:
        before = file_state(source)
        try:
            summary = engine.stage_customers(con, source, context.run.run_id)
        except InputError as error:
            # a row cut off by a writer reads as malformed: say what really happened
            raise _ingest_failure(source, changed_since(source, before) or error) from None
        if changed := changed_since(source, before):
            raise _ingest_failure(source, changed)
        context.log.info(
            f"Loaded {summary.n_customers:,} customers from {source} "
            f"({counted(summary.n_rejected, 'row')} rejected, "
            f"{counted(summary.n_duplicates_collapsed, 'duplicate')} collapsed)."
        )
        metadata = {
            "source": dg.MetadataValue.path(summary.source),
            "source_sha256": summary.source_sha256,
            "dagster/row_count": summary.n_customers,
            "rows_read": summary.n_rows_read,
            "rejected_rows": summary.n_rejected,
            "reject_fraction": summary.reject_fraction,
            "duplicates_collapsed": summary.n_duplicates_collapsed,
            "ignored_columns": ", ".join(summary.ignored_columns) or "none",
            "dagster/column_schema": column_schema(con, "customers"),
            "preview": markdown_preview(con, "SELECT * FROM customers ORDER BY customer_id"),
            "rejected_preview": markdown_preview(
                con,
                "SELECT line_number, column_name, value, reason FROM rejected_rows "
                "WHERE run_id = $run_id ORDER BY line_number",
                {"run_id": context.run.run_id},
            ),
        }
    return dg.MaterializeResult(metadata=metadata)


def _ingest_failure(source: Path, error: InputError) -> dg.Failure:
    """The step's failure for an input error, with where and why as metadata. Bad data stays
    bad, so it is not retried; a file still being written may be complete next time."""
    return dg.Failure(
        description=error.describe(),
        metadata={
            "source": dg.MetadataValue.path(str(source)),
            "line": error.line if error.line is not None else "",
            "column": error.column or "",
            "value": error.value or "",
            "reason": error.reason,
        },
        allow_retries=isinstance(error, SourceChangedError),
    )
