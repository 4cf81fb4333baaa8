"""The model's rows in the history tables, read back as the next run reads them."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from segmentation_pipeline.core import history
from segmentation_pipeline.core.features import FeatureScaling
from segmentation_pipeline.core.selection import Candidate
from segmentation_pipeline.core.views import create_views

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


def test_a_clock_set_back_does_not_make_an_older_run_the_latest(con) -> None:
    """Runs are ordered by finished_at: a run from a host whose clock is behind (or after an
    NTP step back) must still come after the runs already recorded."""
    _record(con, "run-1", np.array([[-1.0, 1.0], [1.0, -1.0]]))
    con.execute("UPDATE segmentation_runs SET finished_at = now() + INTERVAL 1 DAY")
    _record(con, "run-2", np.array([[-1.0, 1.0], [1.0, -1.0]]))
    history.finish_run(con, "run-2", 2, None)

    order = con.execute("SELECT run_id FROM segmentation_runs ORDER BY finished_at").fetchall()

    assert order == [("run-1",), ("run-2",)]
    assert history.previous_run_id(con, "run-3") == "run-2"


def test_the_next_run_reads_the_previous_centroids_by_segment_id(con) -> None:
    scaled = np.array([[-1.0, 1.0], [1.0, -1.0]])
    _record(con, "run-1", scaled)
    previous = history.previous_model(con, "run-2", SCALING.features)
    assert previous is not None
    assert previous.run_id == "run-1"
    assert previous.segment_ids == (3, 7)  # ascending ids; segment 7 was the first centroid
    np.testing.assert_allclose(previous.centroids, SCALING.to_original(scaled[::-1]))
    assert history.previous_model(con, "run-2", ("age", "spending_score")) is None


def _write(con: duckdb.DuckDBPyConnection, run_id: str, segments: dict[str, int]) -> None:
    """This run's assignments as the engines write them (every column), in this order."""
    history.prepare_assignment_history(con)
    con.execute(
        f"CREATE OR REPLACE TABLE {history.assignments_table(run_id)} AS "  # noqa: S608
        "SELECT $run_id AS run_id, customer_id, segment_id, 1.0::FLOAT AS distance, "
        "NULL::INTEGER AS second_segment_id, NULL::FLOAT AS second_distance, "
        "false AS is_outlier FROM (SELECT unnest($ids) AS customer_id, "
        "unnest($segments)::INTEGER AS segment_id)",
        {"run_id": run_id, "ids": list(segments), "segments": list(segments.values())},
    )
    history.record_run(con, {"run_id": run_id, "features": SCALING.features})


def _assign(
    con: duckdb.DuckDBPyConnection, run_id: str, segments: dict[str, int], runs_kept: int = 2
) -> None:
    """A run's assignments written and recorded in the history as `customer_segments` does."""
    _write(con, run_id, segments)
    history.record_assignment_history(con, run_id, history.previous_run_id(con, run_id))
    history.prune_assignment_history(con, run_id, runs_kept=runs_kept)
    history.key_past_runs(con, run_id)
    history.define_history_views(con, run_id)


def _history(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute(
        "SELECT run_id, customer_id, segment_id FROM customer_segments_history ORDER BY ALL"
    ).fetchall()


def test_each_run_keeps_its_own_table_and_past_runs_keep_only_keys_and_segments(con) -> None:
    _assign(con, "run-1", {"a": 1, "b": 2})
    _assign(con, "run-2", {"a": 2, "c": 1})

    assert history.archived_runs(con) == ["run-1", "run-2"]
    assert _history(con) == [
        ("run-1", "a", 1),
        ("run-1", "b", 2),
        ("run-2", "a", 2),
        ("run-2", "c", 1),
    ]
    past = con.execute(f"DESCRIBE {history.assignments_table('run-1')}").fetchall()
    assert [column[0] for column in past] == ["customer_key", "segment_id"]
    assert history.history_row_count(con) == 4
    current = con.execute("SELECT run_id, customer_id, distance FROM segment_assignments")
    assert sorted(current.fetchall()) == [("run-2", "a", 1.0), ("run-2", "c", 1.0)]


def test_runs_beyond_the_window_are_dropped_with_their_rows_counted(con) -> None:
    _assign(con, "run-1", {"a": 1, "b": 2})
    _assign(con, "run-2", {"a": 2})
    history.prepare_assignment_history(con)
    con.execute(
        f"CREATE TABLE {history.assignments_table('run-3')} AS "
        "SELECT 'run-3' AS run_id, 'a' AS customer_id, 1 AS segment_id"
    )
    history.record_run(con, {"run_id": "run-3", "features": SCALING.features})

    assert history.prune_assignment_history(con, "run-3", runs_kept=2) == 2
    history.define_history_views(con, "run-3")
    assert history.archived_runs(con) == ["run-2", "run-3"]
    assert _history(con) == [("run-2", "a", 2), ("run-3", "a", 1)]
    with pytest.raises(ValueError, match="at least 2"):
        history.prune_assignment_history(con, "run-3", runs_kept=1)


def test_a_single_table_history_from_an_older_warehouse_is_split_per_run(con) -> None:
    """The layout before per-run tables: one history table and the last run's table."""
    con.execute(
        "CREATE TABLE customer_segments_history AS SELECT * FROM (VALUES "
        "('run-1', 'a', 1), ('run-1', 'b', 2), ('run-2', 'a', 2), ('run-2', 'b', 2)) "
        "AS t(run_id, customer_id, segment_id)"
    )
    con.execute(
        "CREATE TABLE segment_assignments AS SELECT run_id, customer_id, segment_id, "
        "1.0::FLOAT AS distance FROM customer_segments_history WHERE run_id = 'run-2'"
    )
    con.execute("CREATE TABLE old_run AS SELECT 'run-2' AS run_id")  # any other table stays
    before = _history(con)

    history.prepare_assignment_history(con)
    history.prepare_assignment_history(con)  # a retried step changes nothing
    history.define_history_views(con, "run-2")
    assert _history(con) == before
    history.key_past_runs(con, "run-2")
    history.define_history_views(con, "run-2")

    assert history.archived_runs(con) == ["run-1", "run-2"]
    assert _history(con) == before
    kinds = dict(
        con.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = 'main'"
        ).fetchall()
    )
    assert kinds["customer_segments_history"] == "VIEW"
    assert kinds["segment_assignments"] == "VIEW"
    assert kinds["old_run"] == "BASE TABLE"


def test_run_ids_with_quotes_name_their_tables_safely(con) -> None:
    run_id = """it's "quoted"; DROP TABLE segmentation_runs"""
    _assign(con, "run-1", {"b": 1}, runs_kept=3)
    _assign(con, run_id, {"a": 1}, runs_kept=3)
    _assign(con, "run-2", {"a": 2}, runs_kept=3)  # keys the quoted run's table, by a join
    assert _history(con) == [(run_id, "a", 1), ("run-1", "b", 1), ("run-2", "a", 2)]
    assert con.execute("SELECT count(*) FROM segmentation_runs").fetchone() == (3,)


def _moves(con: duckdb.DuckDBPyConnection, run_id: str) -> list[tuple]:
    return con.execute(
        "SELECT from_segment_id, to_segment_id, n_customers FROM segment_migrations "
        "WHERE run_id = $run_id ORDER BY from_segment_id NULLS FIRST, to_segment_id NULLS FIRST",
        {"run_id": run_id},
    ).fetchall()


BEFORE = {f"c{i:03d}": 1 + i % 3 for i in range(50)}
# The next run's customers after BEFORE's, and whether the two pair row by row (else they
# are joined on customer_id); shared with the tests of keyed history.
NEXT_RUN_ORDERS = [
    # the same customers in the same order, some moved
    ({c: (s % 3) + 1 if c < "c010" else s for c, s in BEFORE.items()}, True),
    # new customers appended
    ({**BEFORE, "n1": 2, "n2": 3, "n3": 3}, True),
    # the last customers gone
    (dict(list(BEFORE.items())[:45]), True),
    # the last customers gone and new ones in their places
    ({**dict(list(BEFORE.items())[:45]), "n1": 2, "n2": 3, "n3": 3}, False),
    # the same customers in another order
    (dict(reversed(BEFORE.items())), False),
    # a customer gone in the middle, beyond the probed head
    ({c: s for c, s in BEFORE.items() if c != "c030"}, False),
    # a new customer in the middle, beyond the probed head
    ({**dict(list(BEFORE.items())[:30]), "n1": 1, **dict(list(BEFORE.items())[30:])}, False),
]


@pytest.mark.parametrize(("now", "by_position"), NEXT_RUN_ORDERS)
def test_migrations_are_the_same_whether_paired_by_position_or_joined(con, now, by_position):
    _assign(con, "run-1", BEFORE)
    _write(con, "run-2", now)
    con.execute("BEGIN TRANSACTION")
    ari = history.record_assignment_history(con, "run-2", "run-1")
    con.execute("COMMIT")

    expected: dict[tuple, int] = {}
    for customer in BEFORE.keys() | now.keys():
        pair = (BEFORE.get(customer), now.get(customer))
        expected[pair] = expected.get(pair, 0) + 1
    expected_moves = sorted(((f, t, n) for (f, t), n in expected.items()), key=history._nulls_first)
    assert _moves(con, "run-2") == expected_moves
    for probe_rows in (20, 1000):  # within the runs, and longer than both
        paired = history._moves_by_position(con, "run-2", "run-1", probe_rows=probe_rows)
        assert (paired is not None) == by_position
    assert ari is not None and -1.0 <= ari <= 1.0

    # a retry after the previous run was stored against keys joins through the keys
    history.key_past_runs(con, "run-2")
    assert history._moves_by_position(con, "run-2", "run-1") is None
    assert history.record_assignment_history(con, "run-2", "run-1") == ari
    assert _moves(con, "run-2") == expected_moves


def test_the_first_run_counts_every_customer_as_new(con) -> None:
    _assign(con, "run-1", {"a": 1, "b": 2, "c": 2})
    assert history.record_assignment_history(con, "run-1", None) is None
    assert _moves(con, "run-1") == [(None, 1, 1), (None, 2, 2)]


def test_the_analyst_views_read_the_latest_two_runs_only(con) -> None:
    con.execute(
        "CREATE TABLE segment_profiles AS SELECT run_id, segment_id, "
        "'segment ' || segment_id AS segment_name, 1 AS n_customers, 0.5 AS share "
        "FROM (VALUES ('run-1'), ('run-2'), ('run-3')) r(run_id), range(1, 4) s(segment_id)"
    )
    con.execute(
        "CREATE TABLE customers AS SELECT unnest(['a', 'b', 'c']) AS customer_id, "
        "'Female' AS gender, 30 AS age, 50.0 AS annual_income, 50 AS spending_score"
    )
    _assign(con, "run-1", {"a": 1, "b": 1, "c": 1}, runs_kept=3)
    _assign(con, "run-2", {"a": 1, "b": 2, "c": 3}, runs_kept=3)
    _assign(con, "run-3", {"a": 2, "b": 2, "c": 1}, runs_kept=3)
    con.execute("UPDATE segmentation_runs SET previous_run_id = 'run-2' WHERE run_id = 'run-3'")
    create_views(con)

    changes = con.execute(
        "SELECT customer_id, from_segment_id, to_segment_id, previous_run_id, run_id "
        "FROM segment_changes_last_run ORDER BY customer_id"
    ).fetchall()
    assert changes == [("a", 1, 2, "run-2", "run-3"), ("c", 3, 1, "run-2", "run-3")]
    latest = con.execute(
        "SELECT customer_id, segment_id, segment_name, run_id FROM customer_latest_segment "
        "ORDER BY customer_id"
    ).fetchall()
    assert latest == [
        ("a", 2, "segment 2", "run-3"),
        ("b", 2, "segment 2", "run-3"),
        ("c", 1, "segment 1", "run-3"),
    ]
    for view in ("segment_changes_last_run", "customer_latest_segment"):
        explained = con.execute(f"EXPLAIN SELECT * FROM {view}").fetchall()  # noqa: S608
        plan = "\n".join(row[1] for row in explained)
        assert "run-1" not in plan, view  # the oldest run's table is not read
