"""Assign every customer to its nearest segment centroid, streamed through DuckDB.

The assignment runs as one SQL statement over the customers, so DuckDB streams them in
vectors and memory stays flat however many customers there are. Each customer gets its
segment, the distance to that centroid, the second-nearest segment and its distance,
and an outlier flag: distance above the segment's high percentile, as measured on the
model sample (so the threshold is known before the stream starts).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np

from segmentation_pipeline.core.features import FeatureScaling
from segmentation_pipeline.core.selection import assign_nearest

OUTLIER_PERCENTILE = 99.0


def outlier_thresholds(
    sample: np.ndarray, centroids: np.ndarray, percentile: float = OUTLIER_PERCENTILE
) -> np.ndarray:
    """Per segment (in centroid order), the distance above which a customer is an outlier."""
    labels, distance, _, _ = assign_nearest(sample, centroids)
    thresholds = np.full(len(centroids), np.inf)
    for index in range(len(centroids)):
        members = distance[labels == index]
        if len(members):
            thresholds[index] = float(np.percentile(members, percentile))
    return thresholds


def assign_customers(
    con: duckdb.DuckDBPyConnection,
    scaling: FeatureScaling,
    centroids: np.ndarray,
    segment_ids: Sequence[int],
    thresholds: np.ndarray,
    run_id: str,
) -> int:
    """Write ``segment_assignments`` for every customer; return how many were assigned.

    The distances to the k centroids are SQL expressions (k and the number of features are
    small), so DuckDB streams the customers through them in parallel vectors and writes the
    table directly: no round trip through Python, flat memory at any size. Ties go to the
    lower centroid index, as in ``assign_nearest``.
    """
    k = len(segment_ids)
    squared = [
        " + ".join(
            f"({name} - {float(c)!r}) * ({name} - {float(c)!r})"
            for name, c in zip(scaling.features, centre, strict=True)
        )
        for centre in np.asarray(centroids, dtype=np.float64)
    ]
    columns = ", ".join(f"{expression} AS d{j}" for j, expression in enumerate(squared))
    all_d = ", ".join(f"d{j}" for j in range(k))
    first = " ".join(f"WHEN d{j} = m1 THEN {j}" for j in range(k))
    others = ", ".join(
        f"CASE WHEN i1 = {j} THEN 'infinity'::DOUBLE ELSE d{j} END" for j in range(k)
    )
    second = " ".join(f"WHEN i1 <> {j} AND d{j} = m2 THEN {j}" for j in range(k))

    def pick(index: str, values: Sequence[object]) -> str:
        return (
            f"CASE {index} " + " ".join(f"WHEN {j} THEN {v}" for j, v in enumerate(values)) + " END"
        )

    limits = [repr(float(t)) if np.isfinite(t) else "'infinity'::DOUBLE" for t in thresholds]
    ids = [int(i) for i in segment_ids]
    con.execute(
        f"""
        CREATE OR REPLACE TABLE segment_assignments AS
        WITH scaled AS (SELECT customer_id, {scaling.scaled_columns_sql()} FROM customers),
             measured AS (SELECT customer_id, {columns} FROM scaled),
             nearest AS (SELECT *, least({all_d}) AS m1 FROM measured),
             first AS (SELECT *, CASE {first} END AS i1 FROM nearest),
             runner_up AS (SELECT *, least({others}) AS m2 FROM first),
             ranked AS (SELECT *, CASE {second} END AS i2 FROM runner_up)
        SELECT $run_id AS run_id, customer_id,
               CAST({pick("i1", ids)} AS INTEGER) AS segment_id,
               CAST(sqrt(m1) AS FLOAT) AS distance,
               CAST({pick("i2", ids)} AS INTEGER) AS second_segment_id,
               CAST(sqrt(m2) AS FLOAT) AS second_distance,
               sqrt(m1) > {pick("i1", limits)} AS is_outlier
        FROM ranked
        """,  # noqa: S608 - only numbers and fixed names are formatted in
        {"run_id": run_id},
    )
    return con.execute("SELECT count(*) FROM segment_assignments").fetchone()[0]
