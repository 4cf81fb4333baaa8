"""Segment statistics in SQL: exact medians on small data, close estimates on large data."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from segmentation_pipeline.core.segment_stats import segment_statistics


@pytest.fixture
def con():
    rng = np.random.default_rng(1)
    n = 50_000
    frame = pd.DataFrame(
        {
            "customer_id": [str(i) for i in range(n)],
            "gender": rng.choice(["Female", "Male"], n, p=[0.6, 0.4]),
            "age": rng.integers(18, 80, n),
            "annual_income": rng.gamma(4, 15, n),
            "spending_score": rng.integers(1, 101, n),
        }
    )
    connection = duckdb.connect()
    connection.register("frame", frame)
    connection.execute("CREATE TABLE customers AS SELECT * FROM frame")
    connection.execute(
        "CREATE TABLE segment_assignments AS SELECT customer_id, "
        "CAST(hash(customer_id) % 4 AS INTEGER) AS segment_id FROM customers"
    )
    yield connection
    connection.close()


def test_statistics_match_pandas(con):
    stats, overall = segment_statistics(con)
    joined = con.execute(
        "SELECT * FROM customers JOIN segment_assignments USING (customer_id)"
    ).df()
    expected = joined.groupby("segment_id")
    assert stats.n_customers.tolist() == expected.size().tolist()
    np.testing.assert_allclose(stats.median_age, expected.age.median())
    np.testing.assert_allclose(stats.std_annual_income, expected.annual_income.std(ddof=0))
    np.testing.assert_allclose(
        stats.female_share, expected.gender.apply(lambda g: (g == "Female").mean())
    )
    assert overall["n_customers"] == 50_000


def test_large_inputs_estimate_medians_closely(con):
    exact, _ = segment_statistics(con)
    estimated, _ = segment_statistics(con, exact_median_limit=0)
    for column in ("median_age", "median_spending_score"):
        assert (estimated[column] - exact[column]).abs().max() <= 1.0
    relative = (estimated.median_annual_income / exact.median_annual_income - 1).abs()
    assert relative.max() < 0.02


def test_statistics_do_not_depend_on_the_order_of_the_assignments(con):
    """Assignments in the customers' order are paired by position; in any other order (as
    another engine may write them) or with rows missing, by customer_id: same statistics."""
    in_order, _ = segment_statistics(con)
    con.execute(
        "CREATE OR REPLACE TABLE segment_assignments AS "
        "SELECT * FROM segment_assignments ORDER BY hash(customer_id)"
    )
    shuffled, _ = segment_statistics(con)
    pd.testing.assert_frame_equal(shuffled, in_order, check_exact=False, rtol=1e-12)

    con.execute("DELETE FROM segment_assignments WHERE customer_id = '0'")
    one_missing, _ = segment_statistics(con)
    assert one_missing.n_customers.sum() == 50_000 - 1
