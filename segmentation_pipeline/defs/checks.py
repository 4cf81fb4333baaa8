"""Blocking checks on the staged customers: bad data never reaches the published warehouse.

They run on the run's work database after `raw_customers` and before publishing; a
failure stops every downstream asset, so the published warehouse keeps its results.
The five checks share one step and one connection (a step costs about 0.1 s of Dagster
bookkeeping, more than the checks themselves); each is still its own check in the UI,
with its own result. Executed without `raw_customers` in the same run, they fail, saying
so: there is nothing staged to check (each run stages into its own work file).
"""

from collections.abc import Callable, Iterator

import dagster as dg
import duckdb

from segmentation_pipeline.core import validation
from segmentation_pipeline.core.validation import CheckOutcome
from segmentation_pipeline.defs.assets.ingest import raw_customers
from segmentation_pipeline.defs.resources import SegmentationSettings, WarehouseResource

Check = Callable[[duckdb.DuckDBPyConnection, str, SegmentationSettings], CheckOutcome]

_CHECKS: dict[str, tuple[str, Check]] = {
    "customer_ids_unique": (
        "Each customer_id appears once in the staged customers.",
        lambda con, _run_id, _settings: validation.unique_customer_ids(con),
    ),
    "required_fields_present": (
        "No staged customer lacks an id, gender, age, income or spending score.",
        lambda con, _run_id, _settings: validation.required_fields_present(con),
    ),
    "values_in_range": (
        "Age 0-120, income >= 0 and finite, spending score 1-100.",
        lambda con, _run_id, _settings: validation.values_in_range(con),
    ),
    "reject_share_within_limit": (
        "The share of quarantined rows stays within `max_reject_fraction`.",
        lambda con, run_id, settings: validation.reject_share_within_limit(
            con, run_id, settings.max_reject_fraction
        ),
    ),
    "customer_count_kept": (
        "At most `max_customer_drop` of the customer count of the last run of the same file "
        "is gone (a nightly export cut short must not replace the published segments); a "
        "file never run before is not compared.",
        lambda con, run_id, settings: validation.customer_count_kept(
            con, run_id, settings.max_customer_drop
        ),
    ),
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=raw_customers, description=description, blocking=True)
        for name, (description, _) in _CHECKS.items()
    ],
    name="staged_customer_checks",
    description="Blocking checks on the staged customers, before anything is fitted.",
    can_subset=True,
)
def staged_customer_checks(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    settings: SegmentationSettings,
) -> Iterator[dg.AssetCheckResult]:
    """Ids unique, required fields present, values in range, reject share within limit,
    customer count kept."""
    selected = [
        name for name in _CHECKS if name in {k.name for k in context.selected_asset_check_keys}
    ]
    run_id = context.run.run_id
    try:
        with warehouse.staged_connection(run_id) as con:
            outcomes = {name: _CHECKS[name][1](con, run_id, settings) for name in selected}
    except dg.Failure as not_staged:
        # Run alone (the UI offers it), a check found the published customers and passed.
        outcomes = {name: CheckOutcome(False, str(not_staged.description)) for name in selected}
    for name, outcome in outcomes.items():
        yield dg.AssetCheckResult(
            check_name=name,
            asset_key=raw_customers.key,
            passed=outcome.passed,
            description=outcome.description,
            metadata=outcome.metadata,
            severity=dg.AssetCheckSeverity.ERROR,
        )


def blocking_checks_not_passed(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The blocking checks without a passed evaluation in this run.

    A check that fails stops every downstream step; one that did not run stops nothing:
    the launchpad's "Include asset checks" unticked runs the assets alone, and a file with
    5 % of its rows rejected was published. So publishing asks for all of them.
    """
    passed = {
        e.check_name
        for e in run_check_evaluations(instance, run_id)
        if e.passed and e.asset_key == raw_customers.key
    }
    return [name for name in _CHECKS if name not in passed]


def run_check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list:
    """Every asset check evaluation the run recorded (``AssetCheckEvaluation``s), in order:
    what the publish step, the report and the failure alert read of the checks."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    return [record.event_log_entry.dagster_event.event_specific_data for record in records]
