"""One run's report, from the published warehouse to files, in one call.

``segmentation run`` makes this call in the pre-started worker (core/workers.py): reading
the report's inputs (pandas frames), drawing (matplotlib) and writing all happen there,
where those libraries are already loaded, so the run's own process never imports pandas.
Elsewhere (the UI, the daemon) it runs in-process with the same result. This module
imports them only inside the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segmentation_pipeline.core.warehouse import Warehouse

SHOWN_PROFILE_COLUMNS = ("segment_id", "segment_name", "n_customers", "recommendation")


@dataclass(frozen=True)
class WrittenReport:
    """Where the report went, and what the Dagster UI shows of it."""

    paths: dict[str, Path]
    segments_png: bytes
    profiles: list[tuple[Any, ...]]  # SHOWN_PROFILE_COLUMNS of each segment


def write_run_report(
    warehouse: Warehouse, run_id: str, reports_dir: Path, warnings: Sequence[str] = ()
) -> WrittenReport:
    """Read the run's results from the published warehouse, render, and write the report;
    ``warnings`` are the run's drift checks that warned, which the report repeats."""
    from segmentation_pipeline.core.report import render_report, write_report
    from segmentation_pipeline.core.report_inputs import load_report_inputs

    con = warehouse.connect_read_only(run_id)
    try:
        inputs = load_report_inputs(con, run_id, warnings=warnings)
    finally:
        con.close()
    rendered = render_report(inputs)
    paths = write_report(rendered, reports_dir, run_id)
    shown = inputs.profiles[list(SHOWN_PROFILE_COLUMNS)].astype(object)
    return WrittenReport(
        paths=paths,
        segments_png=rendered.images["segments"],
        profiles=list(shown.itertuples(index=False, name=None)),
    )
