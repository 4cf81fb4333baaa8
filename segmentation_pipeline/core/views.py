"""Views in the warehouse for the questions analysts ask most, so they need no joins.

They are created in the run's work database just before it is published, so a published
warehouse always carries view definitions that match its tables. Views store no data:
they read the history tables at query time, and "latest run" means the run with the
newest `finished_at` in `segmentation_runs` (every run in a published file is a
published run; failed runs never reach it). The latest run is the one publishing the
file, so its assignments are `segment_assignments`; the run before it is named in the
view's text, so that DuckDB reads that run's table alone, not the whole history.
"""

from __future__ import annotations

import duckdb

from segmentation_pipeline.core.sql_text import literal

# In creation order: later views read the earlier ones.
VIEWS: dict[str, str] = {
    # The run whose results are current: the newest finished run.
    "latest_segmentation_run": """
        SELECT * FROM segmentation_runs ORDER BY finished_at DESC, run_id LIMIT 1""",
    # Latest segment of every customer, with the segment's name and the customer's data.
    "customer_latest_segment": """
        SELECT h.customer_id, h.segment_id, p.segment_name, c.gender, c.age,
               c.annual_income, c.spending_score, h.run_id, r.finished_at
        FROM segment_assignments h
        JOIN segmentation_runs r USING (run_id)
        LEFT JOIN segment_profiles p USING (run_id, segment_id)
        LEFT JOIN customers c USING (customer_id)""",
    # Size and share of every segment in every run, oldest run first.
    "segment_sizes_by_run": """
        SELECT dense_rank() OVER (ORDER BY r.finished_at, r.run_id) AS run_number,
               p.run_id, r.finished_at, p.segment_id, p.segment_name, p.n_customers, p.share
        FROM segment_profiles p
        JOIN segmentation_runs r USING (run_id)""",
    # Customers whose segment changed between the previous run and the latest one.
    "segment_changes_last_run": """
        SELECT now_.customer_id,
               before.segment_id AS from_segment_id, p_before.segment_name AS from_segment_name,
               now_.segment_id AS to_segment_id, p_now.segment_name AS to_segment_name,
               latest.previous_run_id, latest.run_id
        FROM latest_segmentation_run latest
        JOIN segment_assignments now_ ON now_.run_id = latest.run_id
        JOIN (SELECT * FROM customer_segments_history WHERE run_id = {previous_run}) before
          ON before.run_id = latest.previous_run_id AND before.customer_id = now_.customer_id
        LEFT JOIN segment_profiles p_now
          ON p_now.run_id = now_.run_id AND p_now.segment_id = now_.segment_id
        LEFT JOIN segment_profiles p_before
          ON p_before.run_id = before.run_id AND p_before.segment_id = before.segment_id
        WHERE before.segment_id <> now_.segment_id""",
}


def create_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create (or redefine) every view in one transaction; return their names.

    All-or-nothing, so a published file never has half of the views from one version of
    this module and half from another.
    """
    row = con.execute(
        "SELECT previous_run_id FROM segmentation_runs ORDER BY finished_at DESC, run_id LIMIT 1"
    ).fetchone()
    previous_run = literal(row[0]) if row and row[0] is not None else "NULL"
    con.execute("BEGIN TRANSACTION")
    try:
        for name, query in VIEWS.items():
            text = query.replace("{previous_run}", previous_run)
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {text}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return list(VIEWS)
