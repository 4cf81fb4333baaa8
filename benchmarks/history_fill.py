"""Top a published warehouse's history up to a full window, for the steady nightly case.

A warehouse refreshed every night for a month holds 30 runs of history (the default
window), and each refresh copies all of it. Thirty real runs at 10 million customers would
take ten minutes of the benchmark, so the history is filled with copies of the warehouse's
newest past run's table, recorded as older runs. A past run's table has the same columns
and about the same size whatever its segments, so the refresh copies, prunes and reads the
same amount of data as after a month of real runs.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from segmentation_pipeline.core.history import archived_runs, assignments_table


def fill_history(warehouse: Path, runs_in_window: int) -> int:
    """Add copied runs until ``warehouse`` holds ``runs_in_window`` runs; returns how many.

    Needs a warehouse with at least one past run (a refresh has run). Run it only while no
    refresh runs: it writes the published file in place.
    """
    con = duckdb.connect(str(warehouse))
    try:
        source = assignments_table(_last_past_run(con))
        oldest = con.execute("SELECT min(finished_at) FROM segmentation_runs").fetchone()[0]
        missing = runs_in_window - len(archived_runs(con))
        for number in range(missing):  # a day apart, before every real run
            copy = f"history-fill-{number:03d}"
            con.execute(f"CREATE TABLE {assignments_table(copy)} AS SELECT * FROM {source}")  # noqa: S608
            con.execute(
                "INSERT INTO segmentation_runs (run_id, finished_at) "
                "VALUES ($run_id, $oldest - INTERVAL ($days) DAY)",
                {"run_id": copy, "oldest": oldest, "days": number + 1},
            )
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return max(missing, 0)


def _last_past_run(con: duckdb.DuckDBPyConnection) -> str:
    """The run before the latest: its table is stored as every past run's is."""
    rows = con.execute(
        "SELECT run_id FROM segmentation_runs ORDER BY finished_at DESC, run_id LIMIT 2"
    ).fetchall()
    if len(rows) < 2:
        raise ValueError("the warehouse has no past run to copy: refresh it once first")
    return rows[1][0]
