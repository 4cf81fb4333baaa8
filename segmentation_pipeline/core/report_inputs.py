"""Gather what the report shows from the published warehouse, for one run.

Everything is read back from the tables analysts query, so the report and SQL always
agree. The scatter plots use a deterministic sample of customers (smallest hash of the
id), so the same run always renders the same report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from segmentation_pipeline.core import drift

REPORT_SAMPLE = 5_000


@dataclass(frozen=True)
class ReportInputs:
    """Everything one run's report shows; frames as the pipeline computed them."""

    run: Mapping[str, Any]
    customers_sample: pd.DataFrame
    candidates: pd.DataFrame
    profiles: pd.DataFrame
    centroids: pd.DataFrame
    migrations: pd.DataFrame | None = None
    drift: pd.DataFrame | None = None
    # The run's drift checks that warned ("check: description"), as the run recorded them.
    warnings: tuple[str, ...] = ()


def load_report_inputs(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    sample_size: int = REPORT_SAMPLE,
    warnings: Sequence[str] = (),
) -> ReportInputs:
    run_frame = con.execute(
        "SELECT * FROM segmentation_runs WHERE run_id = $run_id", {"run_id": run_id}
    ).df()
    if run_frame.empty:
        raise ValueError(f"run {run_id} is not in segmentation_runs")
    run = run_frame.iloc[0].to_dict()
    run["features"] = str(run["features"]).split(",")
    run["finished_at"] = str(run["finished_at"])
    if pd.isna(run.get("ari_vs_previous")):
        run["ari_vs_previous"] = None
    previous = run.get("previous_run_id")
    previous = None if previous is None or pd.isna(previous) else str(previous)
    parameters = {"run_id": run_id}
    # Pick the sample's ids first (a top-n over one table), then join only those: joining
    # every customer first would build a hash table of all of them.
    sample = con.execute(
        "WITH picked AS (SELECT customer_id, segment_id FROM customer_segments "
        "  ORDER BY hash(customer_id), customer_id LIMIT $n) "
        "SELECT c.customer_id, c.gender, c.age, c.annual_income, c.spending_score, p.segment_id "
        "FROM picked p JOIN customers c USING (customer_id) "
        "ORDER BY hash(c.customer_id), c.customer_id",
        {"n": sample_size},
    ).df()
    candidates = con.execute(
        "SELECT algorithm, k, silhouette, davies_bouldin, calinski_harabasz, inertia, stability,"
        " selected FROM model_candidates WHERE run_id = $run_id ORDER BY algorithm, k",
        parameters,
    ).df()
    profiles = con.execute(
        "SELECT * EXCLUDE (run_id) FROM segment_profiles WHERE run_id = $run_id "
        "ORDER BY segment_id",
        parameters,
    ).df()
    centroids = (
        con.execute(
            "SELECT segment_id, feature, centroid FROM segment_centroids WHERE run_id = $run_id",
            parameters,
        )
        .df()
        .pivot(index="segment_id", columns="feature", values="centroid")
        .reset_index()
    )
    centroids.columns.name = None
    migrations = drift = None
    if previous is not None:
        migrations = con.execute(
            "SELECT from_segment_id, to_segment_id, n_customers FROM segment_migrations "
            "WHERE run_id = $run_id ORDER BY 1 NULLS FIRST, 2 NULLS FIRST",
            parameters,
        ).df()
        drift = drift_against(con, run_id, previous)
    return ReportInputs(
        run=run,
        customers_sample=sample,
        candidates=candidates,
        profiles=profiles,
        centroids=centroids,
        migrations=migrations,
        drift=drift,
        warnings=tuple(warnings),
    )


def drift_against(con: duckdb.DuckDBPyConnection, run_id: str, previous: str) -> pd.DataFrame:
    """Per segment of this run or the previous one: share before and now, how far its
    centroid moved (NaN for a segment that is new or gone) and its previous name (for a
    segment that is gone, the only name it has).

    The movement is `drift.run_centroid_shifts`, the number the `segment_centroid_movement`
    check reports (in this run's standard deviations), so the report and the warning next
    to it agree.
    """
    frame = con.execute(
        """
        WITH now AS (SELECT segment_id, share FROM segment_profiles WHERE run_id = $run_id),
             before AS (
                SELECT segment_id, share, segment_name FROM segment_profiles
                WHERE run_id = $previous)
        SELECT segment_id, before.share AS previous_share, now.share,
               before.segment_name AS previous_name
        FROM now FULL JOIN before USING (segment_id)
        ORDER BY segment_id
        """,
        {"run_id": run_id, "previous": previous},
    ).df()
    shifts = drift.run_centroid_shifts(con, run_id, previous)
    frame.insert(3, "centroid_shift", [shifts.get(int(s), math.nan) for s in frame.segment_id])
    return frame
