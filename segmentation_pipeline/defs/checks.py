"""Blocking checks on the staged customers: bad data never reaches the published warehouse.

They run on the run's work database after `raw_customers` and before publishing; a
failure stops every downstream asset, so the published warehouse keeps its results.
"""

from collections.abc import Callable

import dagster as dg
import duckdb

from segmentation_pipeline.core import validation
from segmentation_pipeline.core.validation import CheckOutcome
from segmentation_pipeline.defs.assets.ingest import raw_customers
from segmentation_pipeline.defs.resources import SegmentationSettings, WarehouseResource


def _result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=outcome.description,
        metadata=outcome.metadata,
        severity=dg.AssetCheckSeverity.ERROR,
    )


def _check_on_customers(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    check: Callable[[duckdb.DuckDBPyConnection], CheckOutcome],
) -> dg.AssetCheckResult:
    with warehouse.work_connection(context.run.run_id) as con:
        return _result(check(con))


@dg.asset_check(asset=raw_customers, blocking=True)
def customer_ids_unique(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """Each customer_id appears once in the staged customers."""
    return _check_on_customers(context, warehouse, validation.unique_customer_ids)


@dg.asset_check(asset=raw_customers, blocking=True)
def required_fields_present(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """No staged customer lacks an id, gender, age, income or spending score."""
    return _check_on_customers(context, warehouse, validation.required_fields_present)


@dg.asset_check(asset=raw_customers, blocking=True)
def values_in_range(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """Age 0-120, income >= 0 and finite, spending score 1-100."""
    return _check_on_customers(context, warehouse, validation.values_in_range)


@dg.asset_check(asset=raw_customers, blocking=True)
def reject_share_within_limit(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    settings: SegmentationSettings,
) -> dg.AssetCheckResult:
    """The share of quarantined rows stays within `max_reject_fraction`."""
    with warehouse.work_connection(context.run.run_id) as con:
        return _result(
            validation.reject_share_within_limit(
                con, context.run.run_id, settings.max_reject_fraction
            )
        )
