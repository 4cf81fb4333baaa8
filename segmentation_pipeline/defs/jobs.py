"""The job that refreshes everything: what the CLI, the UI and the schedule run."""

import dagster as dg

segmentation_job = dg.define_asset_job(
    name="segmentation_job",
    selection=dg.AssetSelection.groups("segmentation"),
    description="Ingest, check, segment and publish the customer warehouse.",
    executor_def=dg.in_process_executor,
    # The run queue's key in a DAGSTER_HOME set up before the queue was keyed on the code
    # location (dagster_home/dagster.yaml); kept so that such a home still queues the job.
    tags={"segmentation/writer": "warehouse"},
)

# The code location's name (workspace.yaml, pyproject's [tool.dg.project]): Dagster tags
# every run it launches with it, and the run queue and the failure alert key on it.
CODE_LOCATION = "segmentation_pipeline"
