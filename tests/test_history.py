"""The model's rows in the history tables, read back as the next run reads them."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from segmentation_pipeline.core import history
from segmentation_pipeline.core.features import FeatureScaling
from segmentation_pipeline.core.selection import Candidate

SCALING = FeatureScaling(("annual_income", "spending_score"), (60.0, 50.0), (25.0, 25.0))


@pytest.fixture
def con():
    connection = duckdb.connect()
    history.ensure_history_tables(connection)
    yield connection
    connection.close()


def _record(con: duckdb.DuckDBPyConnection, run_id: str, centroids: np.ndarray) -> None:
    candidates = [
        Candidate("kmeans", 2, 0.5, 0.7, 120.0, 33.0, 0.9, selected=True),
        Candidate("gmm", 2, float("nan"), float("nan"), float("nan"), None, 0.8),
    ]
    history.record_model(
        con, run_id, SCALING, [7, 3], centroids, np.array([1.5, np.inf]), candidates
    )
    history.record_run(con, {"run_id": run_id, "features": SCALING.features})


def test_candidates_are_stored_with_missing_scores_as_null(con) -> None:
    _record(con, "run-1", np.array([[-1.0, 1.0], [1.0, -1.0]]))
    rows = con.execute(
        "SELECT algorithm, k, silhouette, davies_bouldin, calinski_harabasz, inertia, "
        "stability, selected FROM model_candidates WHERE run_id = 'run-1' ORDER BY algorithm"
    ).fetchall()
    assert rows == [
        ("gmm", 2, None, None, None, None, 0.8, False),
        ("kmeans", 2, 0.5, 0.7, 120.0, 33.0, 0.9, True),
    ]


def test_the_next_run_reads_the_previous_centroids_by_segment_id(con) -> None:
    scaled = np.array([[-1.0, 1.0], [1.0, -1.0]])
    _record(con, "run-1", scaled)
    previous = history.previous_model(con, "run-2", SCALING.features)
    assert previous is not None
    assert previous.run_id == "run-1"
    assert previous.segment_ids == (3, 7)  # ascending ids; segment 7 was the first centroid
    np.testing.assert_allclose(previous.centroids, SCALING.to_original(scaled[::-1]))
    assert history.previous_model(con, "run-2", ("age", "spending_score")) is None
