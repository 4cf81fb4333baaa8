"""The model sample: the customers with the smallest hash of (id, seed), however it is found."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from segmentation_pipeline.core.features import (
    FeatureScaling,
    compute_scaling,
    parse_features,
    sample_features,
)

FEATURES = ["age", "annual_income", "spending_score"]


def _customers(n: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE customers AS SELECT 'C' || lpad(CAST(i AS VARCHAR), 7, '0') AS customer_id,"
        " 'Female' AS gender, CAST(18 + i % 60 AS INTEGER) AS age,"
        " CAST(i % 137 AS DOUBLE) AS annual_income, CAST(1 + i % 100 AS INTEGER) AS spending_score"
        " FROM range($n) t(i)",
        {"n": n},
    )
    return con


def _smallest_hashes(
    con: duckdb.DuckDBPyConnection, scaling: FeatureScaling, size: int, seed: int
) -> np.ndarray:
    """The definition: a top-size over every customer, ordered by (hash, id)."""
    rows = con.execute(
        f"SELECT {scaling.scaled_columns_sql()} FROM customers "  # noqa: S608 - fixed names
        "ORDER BY hash(customer_id, $seed), customer_id LIMIT $size",
        {"seed": seed, "size": size},
    ).fetchnumpy()
    return np.column_stack([rows[name] for name in scaling.features]).astype(np.float32)


@pytest.mark.parametrize(("n", "size", "seed"), [(50_000, 5_000, 0), (50_000, 5_000, 7)])
def test_sample_is_the_top_size_by_hash(n: int, size: int, seed: int) -> None:
    con = _customers(n)
    scaling = compute_scaling(con, FEATURES)
    sample = sample_features(con, scaling, size, seed)
    assert sample.shape == (size, 3)
    np.testing.assert_array_equal(sample, _smallest_hashes(con, scaling, size, seed))


def test_sample_is_exact_when_the_hash_filter_lets_too_few_through() -> None:
    # 10 of 100 customers: the filter passes about 11, fewer than 10 for some seeds, and
    # then the top-size runs over everyone. The result is the definition for every seed.
    con = _customers(100)
    scaling = compute_scaling(con, FEATURES)
    bound = int(2**64 * 1.1 * 10 / 100)
    passing = [
        con.execute(
            "SELECT count(*) FROM customers WHERE hash(customer_id, $seed) < CAST($b AS UBIGINT)",
            {"seed": seed, "b": bound},
        ).fetchone()[0]
        for seed in range(40)
    ]
    assert min(passing) < 10 <= max(passing)  # both paths are taken below
    for seed in range(40):
        sample = sample_features(con, scaling, 10, seed)
        np.testing.assert_array_equal(sample, _smallest_hashes(con, scaling, 10, seed))


def test_small_tables_are_sampled_whole_in_id_order() -> None:
    con = _customers(300)
    scaling = compute_scaling(con, FEATURES)
    sample = sample_features(con, scaling, 1_000, seed=0)
    ordered = con.execute(
        f"SELECT {scaling.scaled_columns_sql()} FROM customers ORDER BY customer_id"  # noqa: S608
    ).fetchnumpy()
    np.testing.assert_array_equal(
        sample, np.column_stack([ordered[f] for f in FEATURES]).astype(np.float32)
    )


def test_features_are_parsed_into_the_canonical_order():
    """Whatever order they are listed in, features come back in FEATURE_COLUMNS order, so
    one set of features is one model."""
    assert parse_features("spending_score, age,annual_income") == tuple(FEATURES)
    assert parse_features(["gender", "spending_score", "age"]) == (
        "age",
        "spending_score",
        "gender",
    )
    with pytest.raises(ValueError, match="unknown feature"):
        parse_features("income,age")


def test_a_feature_with_one_value_is_refused_by_name():
    con = _customers(100)
    con.execute("UPDATE customers SET age = 40")

    with pytest.raises(ValueError) as error:
        compute_scaling(con, FEATURES)

    assert str(error.value) == (
        "feature(s) age have the same value for every customer, so they cannot separate "
        "segments; leave them out of --features"
    )


def test_a_gender_column_coded_zero_one_is_explained():
    """Gender enters as a female indicator: coded 0/1 it was 'the same value for every
    customer' though the column held two values."""
    con = _customers(100)
    con.execute("UPDATE customers SET gender = CAST(rowid % 2 AS VARCHAR)")

    with pytest.raises(ValueError) as error:
        compute_scaling(con, ["gender", "annual_income"])

    assert str(error.value).endswith(
        "(gender enters as a female indicator: no customer's gender reads as female "
        "(female, f, woman, in any case), or every one does)"
    )


def test_a_single_customer_is_named_as_too_few():
    con = _customers(1)

    with pytest.raises(ValueError) as error:
        compute_scaling(con, FEATURES)

    assert str(error.value) == "only 1 customer: at least 2 are needed to form segments"
