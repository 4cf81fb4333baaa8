"""The report a marketer reads: one self-contained HTML file per run, and a Markdown twin."""

import base64
from pathlib import Path

import dagster as dg

from segmentation_pipeline.core import workers
from segmentation_pipeline.core.markdown import value_table
from segmentation_pipeline.core.report_job import SHOWN_PROFILE_COLUMNS, write_run_report
from segmentation_pipeline.core.warehouse import Warehouse
from segmentation_pipeline.defs.assets.common import GROUP, TRANSIENT_RETRY, stops_when_interrupted
from segmentation_pipeline.defs.assets.publish import published_warehouse
from segmentation_pipeline.defs.checks import run_check_evaluations
from segmentation_pipeline.defs.resources import WarehouseResource


def reports_dir(warehouse_path: Path) -> Path:
    """Reports live next to the warehouse they describe."""
    return warehouse_path.parent / "reports"


def run_to_report(context: dg.AssetExecutionContext, published: Warehouse) -> str:
    """This run, once it published; in a run that published nothing (`segment_report`
    materialized alone, to render a lost report again), the latest published run."""
    run_id = context.run.run_id
    if published.holds_run(run_id):
        return run_id
    latest = published.latest_run_id()
    if latest is None:
        raise dg.Failure(
            description=f"no run is published in {published.path} yet: materialize the whole "
            "segmentation group (segmentation_job)",
            allow_retries=False,
        )
    context.log.info(f"This run published nothing: the report is that of run {latest}.")
    return latest


def drift_warnings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The run's asset checks that warned ("check: description"), as recorded: the drift
    checks publish all the same, so the report repeats what they said."""
    return [
        f"{evaluation.check_name}: {evaluation.description}"
        for evaluation in run_check_evaluations(instance, run_id)
        if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    ]


@dg.asset(
    group_name=GROUP,
    kinds={"html", "markdown"},
    deps=[published_warehouse],
    retry_policy=TRANSIENT_RETRY,
)
@stops_when_interrupted
def segment_report(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """The run's report: summary, input exploration, model selection, segments with names
    and recommendations, and changes since the previous run.

    Written from the published warehouse (so it shows exactly what analysts can query) to
    `reports/<run_id>.html` and `.md` next to the warehouse, with stable `latest.html` and
    `latest.md`. Opens offline: every plot is embedded, nothing is loaded from the network.
    """
    published = warehouse.warehouse
    run_id = run_to_report(context, published)
    warnings = drift_warnings(context.instance, run_id)
    report = workers.call(
        write_run_report, published, run_id, reports_dir(published.path), warnings
    )
    context.log.info(f"Report written to {report.paths['html']}")
    scatter = base64.b64encode(report.segments_png).decode("ascii")
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(str(report.paths["html"])),
            "latest": dg.MetadataValue.path(str(report.paths["latest_html"])),
            "markdown": dg.MetadataValue.path(str(report.paths["markdown"])),
            "segments": dg.MetadataValue.md(f"![segments](data:image/png;base64,{scatter})"),
            "profiles": dg.MetadataValue.md(
                value_table(list(SHOWN_PROFILE_COLUMNS), report.profiles)
            ),
        }
    )
