"""The staged-customer checks on hand-built tables: what each one lets through and what not."""

from __future__ import annotations

import duckdb
import pytest

from segmentation_pipeline.core.validation import required_fields_present

# Text values and whether each counts as missing: only NULL and values that trim to nothing.
TEXT_VALUES = [
    (None, True),
    ("", True),
    (" ", True),
    ("\u00a0", True),  # no-break space
    ("\u3000 ", True),  # ideographic space, then a space
    ("x", False),
    (" x", False),
    ("\tx", False),
    ("\t", False),  # trim removes spaces, not control characters
    ("~", False),
    ("\x7f", False),
    ("é", False),
    ("0001", False),
]


@pytest.fixture
def con():
    connection = duckdb.connect()
    connection.execute(
        "CREATE TABLE customers (customer_id VARCHAR, gender VARCHAR, age INTEGER, "
        "annual_income DOUBLE, spending_score INTEGER)"
    )
    yield connection
    connection.close()


@pytest.mark.parametrize(("value", "missing"), TEXT_VALUES)
def test_required_fields_count_null_and_blank_text_as_missing(con, value, missing):
    con.execute("INSERT INTO customers VALUES ('0001', 'Male', 30, 40.0, 50)")
    con.execute("INSERT INTO customers VALUES ($v, $v, NULL, 40.0, 50)", {"v": value})

    outcome = required_fields_present(con)

    expected = 1 if missing else 0
    assert outcome.metadata["missing_customer_id"] == expected
    assert outcome.metadata["missing_gender"] == expected
    assert outcome.metadata["missing_age"] == 1
    assert outcome.metadata["missing_annual_income"] == 0
    assert not outcome.passed
