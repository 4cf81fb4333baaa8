"""The report a marketer reads: one self-contained HTML file per run, and a Markdown twin."""

import base64
from pathlib import Path

import dagster as dg

from segmentation_pipeline.core import workers
from segmentation_pipeline.core.markdown import value_table
from segmentation_pipeline.core.report import render_report, write_report
from segmentation_pipeline.core.report_inputs import load_report_inputs
from segmentation_pipeline.defs.assets.common import GROUP, TRANSIENT_RETRY
from segmentation_pipeline.defs.assets.publish import published_warehouse
from segmentation_pipeline.defs.resources import WarehouseResource


def reports_dir(warehouse_path: Path) -> Path:
    """Reports live next to the warehouse they describe."""
    return warehouse_path.parent / "reports"


@dg.asset(
    group_name=GROUP,
    kinds={"html", "markdown"},
    deps=[published_warehouse],
    retry_policy=TRANSIENT_RETRY,
)
def segment_report(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """The run's report: summary, input exploration, model selection, segments with names
    and recommendations, and changes since the previous run.

    Written from the published warehouse (so it shows exactly what analysts can query) to
    `reports/<run_id>.html` and `.md` next to the warehouse, with stable `latest.html` and
    `latest.md`. Opens offline: every plot is embedded, nothing is loaded from the network.
    """
    run_id = context.run.run_id
    published = warehouse.warehouse
    con = published.connect_read_only(run_id)
    try:
        inputs = load_report_inputs(con, run_id)
    finally:
        con.close()
    # Drawn in the pre-started worker under `segmentation run` (matplotlib already loaded).
    rendered = workers.call(render_report, inputs)
    paths = write_report(rendered, reports_dir(published.path), run_id)
    context.log.info(f"Report written to {paths['html']}")
    scatter = base64.b64encode(rendered.images["segments"]).decode("ascii")
    shown = ["segment_id", "segment_name", "n_customers", "recommendation"]
    profiles = list(inputs.profiles[shown].itertuples(index=False))
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(str(paths["html"])),
            "latest": dg.MetadataValue.path(str(paths["latest_html"])),
            "markdown": dg.MetadataValue.path(str(paths["markdown"])),
            "segments": dg.MetadataValue.md(f"![segments](data:image/png;base64,{scatter})"),
            "profiles": dg.MetadataValue.md(value_table(shown, profiles)),
        }
    )
