"""Past runs stored against customer keys: the same customers and segments come back."""

from __future__ import annotations

import random

import duckdb
import pytest

from segmentation_pipeline.core import history_keys
from tests.test_history import BEFORE, NEXT_RUN_ORDERS

SCHEMA = "assignment_history"


@pytest.fixture
def con():
    connection = duckdb.connect()
    connection.execute(f"CREATE SCHEMA {SCHEMA}")
    yield connection
    connection.close()


def _write(con: duckdb.DuckDBPyConnection, run: str, segments: dict[str, int]) -> None:
    """A run's table as the engines write it: customers in file order, more columns."""
    con.execute(
        f'CREATE TABLE {SCHEMA}."{run}" AS SELECT $run AS run_id, customer_id, segment_id, '  # noqa: S608
        "1.0::FLOAT AS distance FROM (SELECT unnest($ids) AS customer_id, "
        "unnest($segments)::INTEGER AS segment_id)",
        {"run": run, "ids": list(segments), "segments": list(segments.values())},
    )


def _read(con: duckdb.DuckDBPyConnection, run: str) -> dict[str, int]:
    rows = con.execute(history_keys.branch(f'{SCHEMA}."{run}"')).fetchall()
    assert len(rows) == len({customer for customer, _ in rows})
    return dict(rows)


def _keys_are_unique(con: duckdb.DuckDBPyConnection) -> bool:
    n, ids, keys = con.execute(
        "SELECT count(*), count(DISTINCT customer_id), count(DISTINCT customer_key) "  # noqa: S608
        f"FROM {history_keys.KEYS_TABLE}"
    ).fetchone()
    return n == ids == keys


@pytest.mark.parametrize(("now", "by_position"), NEXT_RUN_ORDERS)
@pytest.mark.parametrize("probe_rows", [20, 1000])  # within the runs, and longer than both
def test_a_keyed_run_reads_back_as_written(con, now, by_position, probe_rows) -> None:
    _write(con, "run-1", BEFORE)
    assert history_keys.key_run(con, SCHEMA, "run-1", probe_rows)  # no keys yet: all appended
    _write(con, "run-2", now)

    assert history_keys.key_run(con, SCHEMA, "run-2", probe_rows) == by_position

    assert _read(con, "run-1") == BEFORE
    assert _read(con, "run-2") == now
    assert _keys_are_unique(con)
    columns = con.execute(f'DESCRIBE {SCHEMA}."run-2"').fetchall()
    assert [column[0] for column in columns] == list(history_keys.KEYED_COLUMNS)
    tables = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = $schema ORDER BY 1",
        {"schema": SCHEMA},
    ).fetchall()
    assert tables == [("run-1",), ("run-2",)]  # no temporary table left


def test_keys_hold_across_many_row_groups_on_two_threads(con) -> None:
    """Pairing by position relies on insertion order; here it spans several row groups."""
    con.execute("SET threads = 2")
    rng = random.Random(7)
    ids = [f"id-{i}" for i in range(250_000)]
    rng.shuffle(ids)  # file order, not id order
    first = {customer: rng.randrange(1, 6) for customer in ids}
    appended = {f"new-{i}": rng.randrange(1, 6) for i in range(100_000)}
    second = {customer: rng.randrange(1, 6) for customer in ids} | appended
    third = dict(list(second.items())[:-1000])  # the last customers gone
    fourth = dict(rng.sample(sorted(second.items()), len(second)))  # another order
    runs = {"run-1": first, "run-2": second, "run-3": third, "run-4": fourth}

    for run, by_position in (("run-1", True), ("run-2", True), ("run-3", True), ("run-4", False)):
        _write(con, run, runs[run])
        assert history_keys.key_run(con, SCHEMA, run) == by_position

    for run, segments in runs.items():
        assert _read(con, run) == segments
    assert _keys_are_unique(con)


def test_unused_keys_are_deleted_once_they_outnumber_the_used_ones(con) -> None:
    runs = {"run-1": {"a": 1, "b": 2}, "run-2": {"c": 1, "d": 2}, "run-3": {"e": 1, "f": 2}}
    tables = {run: f'{SCHEMA}."{run}"' for run in [*runs, "run-4"]}
    for run in ("run-1", "run-2"):
        _write(con, run, runs[run])
        history_keys.key_run(con, SCHEMA, run)
    con.execute(f"DROP TABLE {tables['run-1']}")  # pruned: a and b are no longer used
    assert history_keys.drop_unused_keys(con, [tables["run-2"]]) == 0  # 4 keys: not yet

    _write(con, "run-3", runs["run-3"])
    history_keys.key_run(con, SCHEMA, "run-3")
    assert history_keys.drop_unused_keys(con, [tables["run-2"], tables["run-3"]]) == 2

    keys = con.execute(f"SELECT customer_id FROM {history_keys.KEYS_TABLE} ORDER BY 1")  # noqa: S608
    assert [row[0] for row in keys.fetchall()] == ["c", "d", "e", "f"]
    assert _read(con, "run-2") == runs["run-2"]
    assert _read(con, "run-3") == runs["run-3"]
    # the key table's order still pairs a run in the same order, past the deleted keys
    fourth = {"c": 2, "d": 2, "e": 2, "f": 2, "g": 1}
    _write(con, "run-4", fourth)
    assert history_keys.key_run(con, SCHEMA, "run-4")
    assert _read(con, "run-4") == fourth
    assert _keys_are_unique(con)
