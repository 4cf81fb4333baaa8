"""The job that refreshes everything: what the CLI, the UI and the schedule run."""

import dagster as dg

segmentation_job = dg.define_asset_job(
    name="segmentation_job",
    selection=dg.AssetSelection.groups("segmentation"),
    description="Ingest, check, segment and publish the customer warehouse.",
    executor_def=dg.in_process_executor,
)
