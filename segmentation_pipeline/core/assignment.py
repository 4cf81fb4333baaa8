"""Assign every customer to its nearest segment centroid, streaming in Arrow batches.

Customers are read from DuckDB in fixed-size batches, assigned with numpy, and written
back, so memory stays flat however many customers there are. Each customer gets its
segment, the distance to that centroid, the second-nearest segment and its distance,
and an outlier flag: distance above the segment's high percentile, as measured on the
model sample (so the threshold is known before the stream starts).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa

from segmentation_pipeline.core.features import FeatureScaling
from segmentation_pipeline.core.selection import assign_nearest

BATCH_ROWS = 1_000_000
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
    batch_rows: int = BATCH_ROWS,
) -> int:
    """Write ``segment_assignments`` for every customer; return how many were assigned."""
    ids = np.asarray(segment_ids, dtype=np.int32)
    con.execute("""
        CREATE OR REPLACE TABLE segment_assignments (
            run_id VARCHAR, customer_id VARCHAR, segment_id INTEGER, distance FLOAT,
            second_segment_id INTEGER, second_distance FLOAT, is_outlier BOOLEAN)
    """)
    writer = con.cursor()
    reader = con.sql(
        f"SELECT customer_id, {scaling.scaled_columns_sql()} FROM customers"  # noqa: S608
    ).to_arrow_reader(batch_rows)
    assigned = 0
    try:
        for batch in reader:
            features = np.column_stack(
                [batch.column(name).to_numpy() for name in scaling.features]
            ).astype(np.float32, copy=False)
            labels, distance, second, second_distance = assign_nearest(features, centroids)
            table = pa.table(
                {
                    "customer_id": batch.column("customer_id"),
                    "segment_id": ids[labels],
                    "distance": distance.astype(np.float32),
                    "second_segment_id": ids[second],
                    "second_distance": second_distance.astype(np.float32),
                    "is_outlier": distance > thresholds[labels],
                }
            )
            writer.register("assigned_batch", table)
            writer.execute(
                "INSERT INTO segment_assignments SELECT $run_id, * FROM assigned_batch",
                {"run_id": run_id},
            )
            writer.unregister("assigned_batch")
            assigned += len(labels)
    finally:
        writer.close()
    return assigned
