"""The example queries in sql/ answer their questions on a real published warehouse.

The warehouse comes from two real runs of `segmentation_job` (the Mall file, then a
version where some customers changed), so questions about history and about customers
who changed segment have answers too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from segmentation_pipeline.core.views import VIEWS
from segmentation_pipeline.core.warehouse import Warehouse
from segmentation_pipeline.definitions import defs
from segmentation_pipeline.defs.assets.publish import PUBLISHED_TABLES
from tests.conftest import REPO_ROOT, subprocess_env
from tests.test_operations import shifted_mall_csv

SQL_DIR = REPO_ROOT / "sql"
EXAMPLES = sorted(SQL_DIR.glob("*.sql"))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, mall_csv) -> Path:
    root = tmp_path_factory.mktemp("sql_examples")
    path = root / "warehouse.duckdb"
    job = defs().resolve_job_def("segmentation_job")
    for source in (mall_csv, shifted_mall_csv(mall_csv, root / "shifted.csv")):
        result = job.execute_in_process(
            run_config={
                "resources": {
                    "settings": {"config": {"source_csv": str(source)}},
                    "warehouse": {"config": {"path": str(path)}},
                }
            },
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
        assert result.success
    return path


def _query(path: Path, sql: str, parameters: dict | None = None) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, parameters or {}).fetchall()
    finally:
        con.close()


def test_there_are_examples_and_each_says_what_it_answers():
    assert len(EXAMPLES) >= 5
    for path in EXAMPLES:
        first = path.read_text().splitlines()[0]
        assert first.startswith("-- ") and len(first) > 15, path.name


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_query_returns_rows(warehouse, example):
    rows = _query(warehouse, example.read_text())
    assert rows, f"{example.name} returned no rows"


def test_views_exist_in_the_published_warehouse(warehouse):
    views = {
        row[0]
        for row in _query(warehouse, "SELECT view_name FROM duckdb_views() WHERE NOT internal")
    }
    assert set(VIEWS) <= views


def test_views_answer_consistently(warehouse):
    latest = _query(warehouse, "SELECT run_id, previous_run_id FROM latest_segmentation_run")
    assert len(latest) == 1 and latest[0][1] is not None
    run_id, previous = latest[0]
    assert _query(warehouse, "SELECT count(*), count(segment_name) FROM customer_latest_segment")[
        0
    ] == (200, 200)
    assert _query(warehouse, "SELECT DISTINCT run_id FROM customer_latest_segment") == [(run_id,)]
    # the changes view agrees with the migration counts the run recorded
    moved = _query(
        warehouse,
        "SELECT coalesce(sum(n_customers), 0) FROM segment_migrations "
        "WHERE run_id = $run_id AND from_segment_id <> to_segment_id",
        {"run_id": run_id},
    )[0][0]
    changes = _query(warehouse, "SELECT count(*) FROM segment_changes_last_run")[0][0]
    assert changes == moved > 0
    assert _query(
        warehouse,
        "SELECT count(*) FROM segment_changes_last_run "
        "WHERE from_segment_name IS NULL OR to_segment_name IS NULL "
        "OR from_segment_id = to_segment_id",
    ) == [(0,)]
    runs = _query(
        warehouse, "SELECT count(DISTINCT run_id), max(run_number) FROM segment_sizes_by_run"
    )
    assert runs == [(2, 2)]
    shares = _query(warehouse, "SELECT run_number, sum(share) FROM segment_sizes_by_run GROUP BY 1")
    assert all(abs(total - 1.0) < 1e-9 for _, total in shares)
    assert previous != run_id


def test_every_published_table_view_and_column_carries_its_description(warehouse):
    """BI tools (DBeaver, Metabase, dbt docs) show the catalog's comments: each relation and
    column says what it holds and in what unit, read as analysts read it (attached read-only)."""
    con = Warehouse(warehouse).connect_read_only()
    try:
        relations = con.execute(
            "SELECT table_name, comment FROM duckdb_tables() "
            "WHERE database_name = current_database() AND schema_name = 'main' "
            "UNION ALL SELECT view_name, comment FROM duckdb_views() "
            "WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal"
        ).fetchall()
        columns = con.execute(
            "SELECT table_name, column_name, comment FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal"
        ).fetchall()
    finally:
        con.close()
    published = {*PUBLISHED_TABLES, *VIEWS, "segment_assignments", "customer_features"}
    assert published <= {name for name, _ in relations}
    assert [name for name, comment in relations if not (comment or "").strip()] == []
    assert [(t, c) for t, c, comment in columns if not (comment or "").strip()] == []
    said = {(table, column): comment for table, column, comment in columns}
    assert "k$" in said["customers", "annual_income"]
    assert "k$" in said["segment_profiles", "avg_annual_income"]
    assert "fraction" in said["segment_profiles", "share"]
    assert "fraction" in said["segment_sizes_by_run", "share"]
    assert "standard deviations" in said["customer_segments", "distance"]
    assert "99th percentile" in said["customer_segments", "is_outlier"]
    assert "1-100" in said["customers", "spending_score"]
    assert "Dagster run id" in said["segmentation_runs", "run_id"]


def test_an_example_runs_through_the_segmentation_cli(warehouse):
    example = SQL_DIR / "segment_sizes_over_runs.sql"
    done = subprocess.run(
        [
            str(REPO_ROOT / ".venv" / "bin" / "segmentation"),
            "sql",
            example.read_text(),
            "--warehouse",
            str(warehouse),
            "--format",
            "csv",
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.strip().splitlines()
    assert header.startswith("run_number,finished_at,segment_id,segment_name")
    assert rows
