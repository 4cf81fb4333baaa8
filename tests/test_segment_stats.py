"""Segment statistics in SQL: exact medians on small data, close estimates on large data."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from segmentation_pipeline.core import segment_stats
from segmentation_pipeline.core.features import compute_scaling


def segment_statistics(con, **options) -> tuple[pd.DataFrame, dict[str, float]]:
    """The statistics as a frame, for comparing columns."""
    records, overall = segment_stats.segment_statistics(con, **options)
    return pd.DataFrame(records), overall


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


@pytest.fixture(scope="module")
def many_customers(tmp_path_factory):
    """Two million customers in a file database, so DuckDB aggregates them on two threads
    over many row groups, as it does in a real run."""
    path = tmp_path_factory.mktemp("stats") / "many.duckdb"
    connection = duckdb.connect(str(path))
    connection.execute("""
        CREATE TABLE customers AS
        SELECT CAST(i AS VARCHAR) AS customer_id,
               CASE WHEN hash(i, 'g') % 5 < 3 THEN 'Female' ELSE 'Male' END AS gender,
               CAST(18 + hash(i, 'a') % 62 AS INTEGER) AS age,
               (hash(i, 'i') % 1000000) / 7919.0 AS annual_income,
               CAST(1 + hash(i, 's') % 100 AS INTEGER) AS spending_score
        FROM range(2000000) t(i)
    """)
    connection.execute(
        "CREATE TABLE segment_assignments AS SELECT customer_id, "
        "CAST(hash(customer_id) % 5 AS INTEGER) AS segment_id FROM customers"
    )
    connection.execute("CHECKPOINT")
    yield connection
    connection.close()


def test_statistics_and_scaling_are_the_same_on_every_run(many_customers):
    # DuckDB's avg and stddev_pop change in their last digits from run to run over
    # millions of rows (threads add in varying order); published numbers must not.
    runs = [segment_stats.segment_statistics(many_customers) for _ in range(6)]
    assert all(run == runs[0] for run in runs[1:])
    features = ["age", "annual_income", "spending_score", "gender"]
    scalings = {compute_scaling(many_customers, features) for _ in range(6)}
    assert len(scalings) == 1


def test_deviations_equal_numpy_on_many_customers(many_customers):
    stats, overall = segment_statistics(many_customers)
    frame = many_customers.execute(
        "SELECT segment_id, annual_income, age FROM customers "
        "JOIN segment_assignments USING (customer_id) ORDER BY segment_id"
    ).fetchnumpy()
    for row in stats.itertuples():
        members = frame["segment_id"] == row.segment_id
        for measure in ("annual_income", "age"):
            values = np.asarray(frame[measure][members], dtype=np.float64)
            assert getattr(row, f"avg_{measure}") == pytest.approx(values.mean(), rel=1e-12)
            assert getattr(row, f"std_{measure}") == pytest.approx(values.std(), rel=1e-12)
    incomes = np.asarray(frame["annual_income"], dtype=np.float64)
    assert overall["std_annual_income"] == pytest.approx(incomes.std(), rel=1e-12)


def test_gender_coded_f_and_m_counts_as_female_and_male_alike(con):
    """CRM exports often code gender as F / M (or 'woman'): female_share and the gender
    feature read them as 'Female' / 'Male'. Before, every such segment showed 0% female and
    the gender feature was refused as constant."""
    spelled_out, overall = segment_statistics(con)
    scaling = compute_scaling(con, ["gender"])
    con.execute(
        "UPDATE customers SET gender = CASE WHEN gender = 'Female' THEN "
        "(CASE WHEN hash(customer_id) % 3 = 0 THEN ' f' ELSE 'Woman' END) ELSE 'M' END"
    )
    coded, coded_overall = segment_statistics(con)
    pd.testing.assert_series_equal(coded.female_share, spelled_out.female_share)
    assert coded_overall["female_share"] == overall["female_share"]
    assert compute_scaling(con, ["gender"]) == scaling
