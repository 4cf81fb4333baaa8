"""The benchmark's full history window: copies of a past run, recorded as older runs."""

from __future__ import annotations

import duckdb
import pytest

from benchmarks.history_fill import fill_history
from segmentation_pipeline.core import history
from tests.test_history import _assign


def test_the_history_is_topped_up_to_the_window_and_pruned_as_real_runs(tmp_path) -> None:
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    history.ensure_history_tables(con)
    _assign(con, "run-1", {"a": 1, "b": 2}, runs_kept=5)
    con.close()
    with pytest.raises(ValueError, match="no past run"):
        fill_history(path, 5)
    con = duckdb.connect(str(path))
    _assign(con, "run-2", {"a": 2, "b": 2}, runs_kept=5)
    con.close()

    assert fill_history(path, 5) == 3
    assert fill_history(path, 5) == 0  # already full

    con = duckdb.connect(str(path))
    try:
        assert len(history.archived_runs(con)) == 5
        oldest_first = [
            row[0]
            for row in con.execute(
                "SELECT run_id FROM segmentation_runs ORDER BY finished_at"
            ).fetchall()
        ]
        assert oldest_first[-2:] == ["run-1", "run-2"]  # the copies are older
        _assign(con, "run-3", {"a": 1, "b": 1}, runs_kept=5)  # the next refresh
        assert len(history.archived_runs(con)) == 5
        assert oldest_first[0] not in history.archived_runs(con)  # the oldest copy went
        copied = con.execute(
            "SELECT customer_id, segment_id FROM customer_segments_history "
            "WHERE run_id = $run_id ORDER BY ALL",
            {"run_id": oldest_first[1]},
        ).fetchall()
        assert copied == [("a", 1), ("b", 2)]  # run-1's assignments
    finally:
        con.close()
