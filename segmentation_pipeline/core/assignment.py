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
    table: str,
) -> int:
    """Write every customer's assignment into ``table``; return how many were assigned.

    The distances to the k centroids are SQL expressions (k and the number of features are
    small), so DuckDB streams the customers through them in parallel vectors and writes the
    table directly: no round trip through Python, flat memory at any size. Ties go to the
    lower centroid index, as in ``assign_nearest``. The outlier flag compares the distance
    as published (FLOAT) with the threshold, so that ``distance > outlier_distance`` over
    the published tables gives the flag exactly.
    """
    k = len(segment_ids)
    # DOUBLE literals: a bare 1.44 is a DECIMAL, and DuckDB computes FLOAT - DECIMAL and
    # compares FLOAT with DECIMAL in FLOAT; the distances are meant to be DOUBLE arithmetic.
    squared = [
        " + ".join(
            f"({name} - {float(c)!r}::DOUBLE) * ({name} - {float(c)!r}::DOUBLE)"
            for name, c in zip(scaling.features, centre, strict=True)
        )
        for centre in np.asarray(centroids, dtype=np.float64)
    ]
    distances = [f"d{j}" for j in range(k)]
    masked = [f"e{j}" for j in range(k)]  # d with the nearest one set to infinity
    columns = ", ".join(f"{expression} AS d{j}" for j, expression in enumerate(squared))
    mask = ", ".join(
        f"CASE WHEN i1 = {j} THEN 'infinity'::DOUBLE ELSE d{j} END AS e{j}" for j in range(k)
    )
    limits = [
        f"{float(t)!r}::DOUBLE" if np.isfinite(t) else "'infinity'::DOUBLE" for t in thresholds
    ]
    ids = [int(i) for i in segment_ids]
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {table} AS
        WITH scaled AS (SELECT customer_id, {scaling.scaled_columns_sql()} FROM customers),
             measured AS (SELECT customer_id, {columns} FROM scaled),
             first AS (SELECT *, {_first_smallest(distances)} AS i1 FROM measured),
             masked AS (SELECT *, {mask} FROM first),
             ranked AS (SELECT *, {_first_smallest(masked)} AS i2 FROM masked),
             picked AS (SELECT customer_id, i1, i2, {_pick("i1", distances)} AS m1,
                               {_pick("i2", masked)} AS m2 FROM ranked)
        SELECT $run_id AS run_id, customer_id,
               CAST({_pick("i1", ids)} AS INTEGER) AS segment_id,
               CAST(sqrt(m1) AS FLOAT) AS distance,
               CAST(CASE WHEN m2 < 'infinity'::DOUBLE THEN {_pick("i2", ids)} END AS INTEGER)
                   AS second_segment_id,
               CAST(sqrt(m2) AS FLOAT) AS second_distance,
               CAST(sqrt(m1) AS FLOAT) > {_pick("i1", limits)} AS is_outlier
        FROM picked
        """,  # noqa: S608 - only numbers and fixed names are formatted in
        {"run_id": run_id},
    )
    return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608


def _first_smallest(values: Sequence[str]) -> str:
    """SQL: the index of the smallest of ``values`` (columns), the lowest among equals.

    Each WHEN is reached only when no earlier value is the smallest, so comparing a value
    with the later ones suffices. Plain comparisons: DuckDB's variadic least() took 0.4 s
    over 10 million rows of 5 distances, these comparisons about 0.05 s.
    """
    last = len(values) - 1
    whens = " ".join(
        f"WHEN {' AND '.join(f'{values[j]} <= {values[i]}' for i in range(j + 1, last + 1))} "
        f"THEN {j}"
        for j in range(last)
    )
    return f"CASE {whens} ELSE {last} END" if whens else "0"


def _pick(index: str, values: Sequence[object]) -> str:
    """SQL: the element of ``values`` at position ``index`` (a column)."""
    return f"CASE {index} " + " ".join(f"WHEN {j} THEN {v}" for j, v in enumerate(values)) + " END"
