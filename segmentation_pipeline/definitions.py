"""The code location: every definition under defs/, run in-process.

The in-process executor is the default for every run (UI, schedule, CLI): steps
share one process, so they never contend for the DuckDB work file, and there is no
per-step process start-up cost.
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(executor=dg.in_process_executor),
    )
