"""Nearest-centroid assignment in SQL agrees with the numpy reference, customer by customer."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from segmentation_pipeline.core.assignment import assign_customers, outlier_thresholds
from segmentation_pipeline.core.features import compute_scaling, sample_features
from segmentation_pipeline.core.selection import assign_nearest


def test_sql_assignment_matches_assign_nearest():
    rng = np.random.default_rng(3)
    n = 20_000
    customers = pd.DataFrame(
        {
            "customer_id": [f"{i:06d}" for i in range(n)],
            "gender": rng.choice(["Female", "Male"], n),
            "age": rng.integers(18, 80, n).astype("int32"),
            "annual_income": rng.normal(60, 25, n).clip(0),
            "spending_score": rng.integers(1, 101, n).astype("int32"),
        }
    )
    con = duckdb.connect()
    con.register("frame", customers)
    con.execute("CREATE TABLE customers AS SELECT * FROM frame")
    scaling = compute_scaling(con, ["age", "annual_income", "spending_score", "gender"])
    centroids = rng.normal(0, 1, (6, 4))
    ids = [11, 3, 7, 20, 5, 9]
    sample = sample_features(con, scaling, n, seed=0)
    thresholds = outlier_thresholds(sample, centroids)

    written = assign_customers(
        con, scaling, centroids, ids, thresholds, "run-1", "segment_assignments"
    )
    assert written == n

    got = con.execute(
        "SELECT a.segment_id, a.distance, a.second_segment_id, a.second_distance, a.is_outlier "
        "FROM segment_assignments a JOIN customers c USING (customer_id) ORDER BY c.customer_id"
    ).fetchnumpy()
    scaled = sample_features(con, scaling, n, seed=0)  # all customers, in customer_id order
    labels, distance, second, second_distance = assign_nearest(scaled, centroids)
    id_of = np.array(ids)
    assert (got["segment_id"] == id_of[labels]).all()
    assert (got["second_segment_id"] == id_of[second]).all()
    # the same float64 arithmetic on the same FLOAT features, published as FLOAT
    np.testing.assert_array_equal(got["distance"], distance.astype(np.float32))
    np.testing.assert_array_equal(got["second_distance"], second_distance.astype(np.float32))
    assert (got["is_outlier"] == (distance > thresholds[labels])).mean() > 0.999
    assert con.execute("SELECT count(DISTINCT run_id) FROM segment_assignments").fetchone() == (1,)


def test_the_outlier_flag_agrees_with_the_published_distance_and_threshold():
    """distance is published as FLOAT, the threshold as DOUBLE: a customer whose distance
    rounds up to FLOAT past a threshold equal to its exact distance is above it as published,
    so it is flagged (an analyst's `distance > outlier_distance` finds the same customers)."""
    rng = np.random.default_rng(5)
    n = 2_000
    con = duckdb.connect()
    con.register(
        "frame",
        pd.DataFrame(
            {
                "customer_id": [f"{i:05d}" for i in range(n)],
                "gender": rng.choice(["Female", "Male"], n),
                "age": rng.integers(18, 80, n).astype("int32"),
                "annual_income": rng.normal(60, 25, n).clip(0),
                "spending_score": rng.integers(1, 101, n).astype("int32"),
            }
        ),
    )
    con.execute("CREATE TABLE customers AS SELECT * FROM frame")
    scaling = compute_scaling(con, ["age", "annual_income", "spending_score"])
    centroids = rng.normal(0, 1, (3, 3))
    scaled = sample_features(con, scaling, n, seed=0)  # all customers, in customer_id order
    labels, distance, _, _ = assign_nearest(scaled, centroids)
    rounds_up = distance.astype(np.float32).astype(np.float64) > distance
    thresholds = np.array(
        [distance[(labels == j) & rounds_up].max() for j in range(len(centroids))]
    )

    assign_customers(con, scaling, centroids, [1, 2, 3], thresholds, "run-1", "assigned")

    got = con.execute(
        "SELECT a.segment_id, a.distance, a.is_outlier FROM assigned a "
        "JOIN customers c USING (customer_id) ORDER BY c.customer_id"
    ).fetchnumpy()
    published_above = got["distance"].astype(np.float64) > thresholds[got["segment_id"] - 1]
    assert got["is_outlier"].sum() >= len(centroids)
    assert (got["is_outlier"] == published_above).all()


def _assign_and_read(con, scaling, centroids, ids):  # noqa: ANN001, ANN202 - test helper
    thresholds = np.full(len(ids), np.inf)
    assign_customers(con, scaling, centroids, ids, thresholds, "run-1", "segment_assignments")
    return con.execute(
        "SELECT a.segment_id, a.distance, a.second_segment_id, a.second_distance "
        "FROM segment_assignments a JOIN customers c USING (customer_id) ORDER BY c.customer_id"
    ).fetchnumpy()


def test_sql_assignment_breaks_ties_like_assign_nearest_and_handles_one_centroid():
    """Customers exactly between centroids go to the lower centroid index, and their
    runner-up is the other one, in SQL as in numpy; with one centroid there is no runner-up."""
    values = np.arange(-3, 4, dtype=np.int32)  # a grid of whole numbers
    age, spending = np.meshgrid(values + 40, values + 50)
    n = age.size
    con = duckdb.connect()
    con.register(
        "frame",
        pd.DataFrame(
            {
                "customer_id": [f"{i:03d}" for i in range(n)],
                "gender": ["Female"] * n,
                "age": age.ravel(),
                "annual_income": np.full(n, 50.0),
                "spending_score": spending.ravel(),
            }
        ),
    )
    con.execute("CREATE TABLE customers AS SELECT * FROM frame")
    scaling = compute_scaling(con, ["age", "spending_score"])
    scaled = sample_features(con, scaling, n, seed=0)  # in customer_id order
    step = np.unique(scaled[:, 0])[1] - np.unique(scaled[:, 0])[0]
    # Mirror-image centroids: every customer on the middle column is exactly between two.
    centroids = np.array([[-step, 0.0], [step, 0.0], [0.0, 3 * step], [-step, 0.0]])
    ids = [4, 2, 9, 7]  # the last centroid repeats the first: a tie on every customer

    got = _assign_and_read(con, scaling, centroids, ids)
    labels, distance, second, second_distance = assign_nearest(scaled, centroids)
    assert (labels[np.isclose(scaled[:, 0], 0, atol=1e-6)] == 0).any()  # ties did occur
    assert (got["segment_id"] == np.array(ids)[labels]).all()
    assert (got["second_segment_id"] == np.array(ids)[second]).all()
    # the same float64 arithmetic on the same FLOAT features, published as FLOAT
    np.testing.assert_array_equal(got["distance"], distance.astype(np.float32))
    np.testing.assert_array_equal(got["second_distance"], second_distance.astype(np.float32))

    alone = _assign_and_read(con, scaling, centroids[:1], [6])
    assert (alone["segment_id"] == 6).all()
    assert alone["second_segment_id"].mask.all()  # NULL: there is no runner-up
    assert np.isinf(alone["second_distance"]).all()
