"""Per-segment statistics in SQL, the published profile table, and the segments view.

Profiles are computed over every assigned customer (not a sample), in original units.
`customer_segments` is a view joining each assignment to its segment's name, so a name
lives in one row of `segment_profiles` and is never copied onto millions of rows.
"""

from __future__ import annotations

import duckdb
import pandas as pd

FEMALE = "CASE WHEN lower(trim(gender)) = 'female' THEN 1.0 ELSE 0.0 END"
MEASURES = ("age", "annual_income", "spending_score")
EXACT_MEDIAN_LIMIT = 10_000_000

PROFILE_COLUMNS = (
    "run_id",
    "segment_id",
    "segment_name",
    "n_customers",
    "share",
    "avg_age",
    "avg_annual_income",
    "avg_spending_score",
    "female_share",
    "recommendation",
    "median_age",
    "median_annual_income",
    "median_spending_score",
    "std_age",
    "std_annual_income",
    "std_spending_score",
    "z_age",
    "z_annual_income",
    "z_spending_score",
    "z_gender",
)


def segment_statistics(
    con: duckdb.DuckDBPyConnection, exact_median_limit: int = EXACT_MEDIAN_LIMIT
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-segment and whole-base statistics of the current assignments.

    Medians are exact up to ``exact_median_limit`` customers. Beyond that they are estimated
    (t-digest, well within a unit for these measures): an exact median must hold every value
    of a segment in memory, which does not fit the run's memory cap at 100 million customers.

    The local engine writes the assignments in the customers' own order, so the two tables
    are first paired row by row (POSITIONAL JOIN, 0.3 s faster than a hash join on the id at
    10 million customers). The same query counts the pairs whose ids differ; if there is
    any (an engine that writes in another order, such as Spark), the statistics come from
    the join on customer_id instead.
    """
    n_customers = con.execute("SELECT count(*) FROM customers").fetchone()[0]
    median = "median({})" if n_customers <= exact_median_limit else "approx_quantile({}, 0.5)"
    per_measure = ", ".join(
        f"avg(c.{m}) AS avg_{m}, {median.format(f'c.{m}')} AS median_{m}, "
        f"stddev_pop(c.{m}) AS std_{m}"
        for m in MEASURES
    )
    columns = f"a.segment_id, count(*) AS n_customers, {per_measure}, avg({FEMALE}) AS female_share"
    misaligned = "count(*) FILTER (WHERE a.customer_id IS DISTINCT FROM c.customer_id)"
    stats = con.execute(
        f"SELECT {columns}, {misaligned} AS misaligned "  # noqa: S608 - fixed names
        "FROM customers c POSITIONAL JOIN segment_assignments a "
        "GROUP BY a.segment_id ORDER BY a.segment_id"
    ).df()
    if stats.pop("misaligned").any():
        stats = con.execute(
            f"SELECT {columns} FROM segment_assignments a "  # noqa: S608 - fixed names
            "JOIN customers c USING (customer_id) GROUP BY a.segment_id ORDER BY a.segment_id"
        ).df()
    overall_columns = ", ".join(
        f"avg({m}) AS mean_{m}, stddev_pop({m}) AS std_{m}" for m in MEASURES
    )
    overall = con.execute(
        f"SELECT count(*) AS n_customers, {overall_columns}, "  # noqa: S608 - fixed names
        f"avg({FEMALE}) AS female_share FROM customers"
    ).df()
    return stats, {k: float(v) for k, v in overall.iloc[0].items()}


def record_profiles(con: duckdb.DuckDBPyConnection, run_id: str, profiles: pd.DataFrame) -> None:
    """Store this run's profiles and point `customer_segments` at the named assignments."""
    con.execute(
        """CREATE TABLE IF NOT EXISTS segment_profiles (
            run_id VARCHAR, segment_id INTEGER, segment_name VARCHAR, n_customers BIGINT,
            share DOUBLE, avg_age DOUBLE, avg_annual_income DOUBLE, avg_spending_score DOUBLE,
            female_share DOUBLE, recommendation VARCHAR, median_age DOUBLE,
            median_annual_income DOUBLE, median_spending_score DOUBLE, std_age DOUBLE,
            std_annual_income DOUBLE, std_spending_score DOUBLE, z_age DOUBLE,
            z_annual_income DOUBLE, z_spending_score DOUBLE, z_gender DOUBLE)"""
    )
    con.execute("DELETE FROM segment_profiles WHERE run_id = $run_id", {"run_id": run_id})
    frame = profiles.assign(run_id=run_id)[list(PROFILE_COLUMNS)]
    con.register("new_profiles", frame)
    con.execute("INSERT INTO segment_profiles SELECT * FROM new_profiles")
    con.unregister("new_profiles")
    con.execute(
        """CREATE OR REPLACE VIEW customer_segments AS
        SELECT a.customer_id, a.segment_id, p.segment_name, a.distance, a.second_segment_id,
               a.second_distance, a.is_outlier, a.run_id
        FROM segment_assignments a
        LEFT JOIN segment_profiles p ON p.run_id = a.run_id AND p.segment_id = a.segment_id"""
    )
