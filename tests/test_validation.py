"""The staged-customer checks on hand-built tables: what each one lets through and what not."""

from __future__ import annotations

import duckdb
import pytest

from segmentation_pipeline.core.validation import (
    customer_count_kept,
    ids_strictly_increasing,
    required_fields_present,
    unique_customer_ids,
)

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


@pytest.mark.parametrize(
    ("ids", "increasing", "duplicated"),
    [
        (["0001", "0002", "0010", "0100"], True, 0),  # sorted: no grouping needed
        (["0001", "0002", "0002", "0003"], False, 1),  # a repeat next to itself
        (["0002", "0001", "0003"], False, 0),  # unsorted from the first rows
        (["0001", "0002", "0003", "0004", "0002"], False, 1),  # unsorted after the probe
        (["0001", None, "0003"], False, 0),  # a missing id proves nothing
    ],
)
def test_ids_in_increasing_order_skip_the_grouping_and_repeats_are_still_found(
    ids, increasing, duplicated
):
    con = duckdb.connect()
    con.execute("CREATE TABLE customers (customer_id VARCHAR)")
    con.executemany("INSERT INTO customers VALUES (?)", [(i,) for i in ids])
    relation = "SELECT customer_id FROM customers"

    assert ids_strictly_increasing(con, relation, probe_rows=3) is increasing
    outcome = unique_customer_ids(con)
    assert outcome.passed is (duplicated == 0)
    assert outcome.metadata["duplicated_ids"] == duplicated


def test_ids_repeated_far_apart_in_many_row_groups_are_found():
    """Two sorted halves: every neighbour increases except where the second half starts."""
    con = duckdb.connect(config={"threads": 2})
    con.execute(
        "CREATE TABLE customers AS SELECT lpad(CAST(i % 300000 AS VARCHAR), 8, '0') "
        "AS customer_id FROM range(600000) AS t(i)"
    )
    assert not ids_strictly_increasing(con, "SELECT customer_id FROM customers")
    outcome = unique_customer_ids(con)
    assert not outcome.passed
    assert outcome.metadata["duplicated_ids"] == 300000


def _with_runs(con, n_customers: int, source: str, previous: list[tuple]) -> None:
    """Staged customers of run "this" read from ``source``; earlier runs as given."""
    con.execute(
        "INSERT INTO customers SELECT i::VARCHAR, 'Male', 30, 40.0, 50 FROM range($n) t(i)",
        {"n": n_customers},
    )
    con.execute(
        "CREATE TABLE ingest_runs AS SELECT 'this' AS run_id, $source AS source", {"source": source}
    )
    con.execute(
        "CREATE TABLE segmentation_runs (run_id VARCHAR, finished_at TIMESTAMPTZ, "
        "n_customers BIGINT, source VARCHAR)"
    )
    for row in previous:
        con.execute("INSERT INTO segmentation_runs VALUES (?, ?::TIMESTAMPTZ, ?, ?)", row)


def test_customer_count_is_compared_with_the_latest_other_run_of_the_same_file(con):
    _with_runs(
        con,
        50,
        "/in/customers.csv",
        [
            ("old", "2025-01-01", 1000, "/in/customers.csv"),
            ("last", "2025-01-02", 100, "/in/customers.csv"),
            ("this", "2025-01-03", 50, "/in/customers.csv"),  # a retry of this run left its row
        ],
    )

    at_limit = customer_count_kept(con, "this", 0.5)
    below = customer_count_kept(con, "this", 0.49)

    assert at_limit.passed  # 50 of the previous run's 100: exactly half gone is allowed
    assert at_limit.metadata["previous_customers"] == 100
    assert not below.passed
    assert below.description.startswith(
        "customer count 50 against 100 in the last run last of the same file (50.0% fewer"
    )


def test_a_file_that_grew_is_said_to_have_more_customers(con):
    """A file of 210 customers after one of 200 was "0.0% fewer"."""
    _with_runs(con, 210, "/in/customers.csv", [("last", "2025-01-02", 200, "/in/customers.csv")])
    outcome = customer_count_kept(con, "this", 0.5)
    assert outcome.passed
    assert outcome.description == (
        "customer count 210 against 200 in the last run last of the same file "
        "(5.0% more; limit 50% fewer)"
    )


def test_an_unchanged_count_is_said_to_be_the_same(con):
    _with_runs(con, 200, "/in/customers.csv", [("last", "2025-01-02", 200, "/in/customers.csv")])
    outcome = customer_count_kept(con, "this", 0.5)
    assert "(the same count; limit 50% fewer)" in outcome.description


def test_customer_count_of_a_file_never_run_before_is_not_compared(con):
    _with_runs(con, 5, "/in/other.csv", [("last", "2025-01-02", 100, "/in/customers.csv")])
    outcome = customer_count_kept(con, "this", 0.0)
    assert outcome.passed
    assert outcome.description == "no earlier run of /in/other.csv: not compared"


def test_customer_count_skips_runs_of_other_files_in_between(con):
    """Nightly file, a one-off run of another file, then the nightly file cut short: it is
    compared with the nightly run before the one-off (before, with the one-off: skipped)."""
    _with_runs(
        con,
        20,
        "/in/nightly.csv",
        [
            ("nightly", "2025-01-01", 200, "/in/nightly.csv"),
            ("one-off", "2025-01-02", 30, "/in/other.csv"),
        ],
    )
    outcome = customer_count_kept(con, "this", 0.5)
    assert not outcome.passed
    assert outcome.metadata["previous_run_id"] == "nightly"
    assert outcome.description.startswith(
        "customer count 20 against 200 in the last run nightly of the same file (90.0% fewer"
    )


def test_customer_count_knows_a_file_recorded_resolved_by_an_earlier_version(con, tmp_path):
    """Runs recorded the source resolved; now by the path given. Through a linked folder,
    the first refresh after the upgrade took the file for one never run before."""
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "nightly.csv").write_text("")
    (tmp_path / "linked").symlink_to(tmp_path / "exports")
    resolved = str(tmp_path / "exports" / "nightly.csv")
    _with_runs(
        con, 50, str(tmp_path / "linked" / "nightly.csv"), [("old", "2025-01-01", 200, resolved)]
    )

    outcome = customer_count_kept(con, "this", 0.5)

    assert not outcome.passed
    assert outcome.metadata["previous_run_id"] == "old"


def test_customer_count_passes_on_a_first_run_and_on_growth(con):
    _with_runs(con, 1, "/in/customers.csv", [])
    first = customer_count_kept(con, "this", 0.0)
    assert (
        first.passed and first.description == "no previous run to compare the customer count with"
    )
    con.execute(
        "INSERT INTO segmentation_runs VALUES ('last', '2025-01-02', 1, '/in/customers.csv')"
    )
    con.execute("INSERT INTO customers VALUES ('x', 'Male', 30, 40.0, 50)")
    grown = customer_count_kept(con, "this", 0.0)
    assert grown.passed and grown.metadata["drop"] == 0.0
