"""Nothing published is ever lost or half-written: readers during refreshes, SIGKILL at every
stage, two refreshes at once. Real processes, real DuckDB files, real Dagster runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from segmentation_pipeline.core.generate import write_customers_csv
from tests.conftest import REPO_ROOT, file_sha256, subprocess_env
from tests.test_pipeline import materialize

CLI = REPO_ROOT / ".venv" / "bin" / "segmentation"
FAST = {"features": ["annual_income", "spending_score"], "k_max": 6}

# An analyst's reader: connects through Warehouse.connect_read_only (as `segmentation sql`
# does), which connects again when it caught a refresh in the middle of DuckDB's connect.
READER = r"""
import json, sys, time
from pathlib import Path
from segmentation_pipeline.core.warehouse import Warehouse

warehouse, stop = Warehouse(Path(sys.argv[1])), Path(sys.argv[2])
reads = errors = inconsistent = 0
seen = set()
problems = []
while not stop.exists():
    try:
        con = warehouse.connect_read_only()
        try:
            row = con.execute('''
                SELECT r.run_id, r.n_customers, count(*), count(DISTINCT s.run_id),
                       count(*) FILTER (WHERE s.run_id = r.run_id)
                FROM customer_segments s
                CROSS JOIN (SELECT run_id, n_customers FROM segmentation_runs
                            ORDER BY finished_at DESC LIMIT 1) r
                GROUP BY ALL''').fetchone()
        finally:
            con.close()
        reads += 1
        latest, n_customers, rows, runs, matching = row
        seen.add(latest)
        if not (runs == 1 and matching == rows == n_customers):
            inconsistent += 1
            problems.append(str(row))
    except Exception as error:
        errors += 1
        problems.append(repr(error))
    time.sleep(0.002)
print(json.dumps({"reads": reads, "errors": errors, "inconsistent": inconsistent,
                  "runs_seen": len(seen), "problems": problems[:5]}))
"""


def test_readers_see_whole_results_across_ten_refreshes(tmp_path):
    source = write_customers_csv(tmp_path / "customers.csv", rows=2000, seed=5)
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    assert materialize(source, warehouse, **FAST).success
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(warehouse), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(10):
            assert materialize(source, warehouse, **FAST).success
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    report = json.loads(out)
    assert report["errors"] == 0, report
    assert report["inconsistent"] == 0, report
    assert report["reads"] > 100, report
    assert report["runs_seen"] >= 5, report  # the reader really saw the refreshes land


def test_a_reader_holding_the_warehouse_open_does_not_block_a_refresh(tmp_path, mall_csv):
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    assert materialize(mall_csv, warehouse, **FAST).success
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys\n"
            "con = duckdb.connect(sys.argv[1], read_only=True)\n"
            "q = 'SELECT count(*), min(run_id) FROM customer_segments'\n"
            "print(con.execute(q).fetchone(), flush=True)\n"
            "sys.stdin.readline()\n"
            "print(con.execute(q).fetchone(), flush=True)\n",
            str(warehouse),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        before = holder.stdout.readline().strip()
        started = time.monotonic()
        result = materialize(mall_csv, warehouse, **FAST)
        assert result.success
        assert time.monotonic() - started < 120  # no lock wait (the lock timeout is 900 s)
        out, _ = holder.communicate("\n", timeout=30)
    finally:
        holder.kill()
    assert out.strip() == before  # the reader kept its snapshot
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        [(run_id,)] = con.execute("SELECT DISTINCT run_id FROM customer_segments").fetchall()
    finally:
        con.close()
    assert run_id == result.run_id


# --- SIGKILL at each stage -----------------------------------------------------------------


def table_checksums(warehouse: Path) -> dict[str, str]:
    """A checksum of every table and view, for 'the published warehouse is unchanged'."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        names = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() UNION ALL "
            "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal ORDER BY ALL"
        ).fetchall()
        return {
            f"{schema}.{name}": con.execute(
                f'SELECT count(*) || \':\' || coalesce(sum(hash(t)), 0) FROM "{schema}"."{name}" t'  # noqa: S608
            ).fetchone()[0]
            for schema, name in names
        }
    finally:
        con.close()


def start_run(source: Path, warehouse: Path, home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(CLI), "run", "--source", str(source), "--warehouse", str(warehouse)],
        env=subprocess_env(DAGSTER_HOME=home),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=REPO_ROOT,
        start_new_session=True,
    )


def kill_at(process: subprocess.Popen[str], marker: str, delay: float) -> list[str]:
    """SIGKILL the whole run once its progress shows ``marker`` (plus ``delay`` seconds)."""
    seen = []
    for line in process.stderr:
        seen.append(line.rstrip())
        if marker in line:
            time.sleep(delay)
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    return seen


@pytest.fixture(scope="module")
def crash_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crash")
    paths = {
        "source": write_customers_csv(root / "customers.csv", rows=400_000, seed=9),
        "warehouse": root / "wh" / "warehouse.duckdb",
        "home": root / "home",
    }
    paths["home"].mkdir()
    first = start_run(paths["source"], paths["warehouse"], paths["home"])
    first.communicate(timeout=600)
    assert first.returncode == 0
    return paths


@pytest.mark.parametrize(
    ("marker", "delay"),
    [
        ("raw_customers: start", 0.3),  # while DuckDB reads the file
        ("segmentation_model: start", 1.0),  # while models are fitted
        ("segment_profiles: done", 0.0),  # just before publishing
    ],
    ids=["during-ingest", "during-fit", "before-publish"],
)
def test_sigkill_before_publishing_leaves_the_warehouse_as_it_was(crash_setup, marker, delay):
    warehouse = crash_setup["warehouse"]
    before = file_sha256(warehouse)
    run = start_run(crash_setup["source"], warehouse, crash_setup["home"])
    progress = kill_at(run, marker, delay)
    assert run.returncode == -signal.SIGKILL, progress
    assert file_sha256(warehouse) == before
    assert list((warehouse.parent / f".{warehouse.name}.work").iterdir())  # debris was left


def test_sigkill_during_publish_leaves_old_or_new_results_and_the_next_run_cleans_up(
    crash_setup,
):
    warehouse = crash_setup["warehouse"]
    before = table_checksums(warehouse)
    run = start_run(crash_setup["source"], warehouse, crash_setup["home"])
    kill_at(run, "published_warehouse: start", 0.0)

    after = table_checksums(warehouse)
    if after != before:  # the rename happened before the kill: the new results are whole
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            rows, runs, customers = con.execute(
                "SELECT count(*), count(DISTINCT run_id), (SELECT count(*) FROM customers) "
                "FROM customer_segments"
            ).fetchone()
        finally:
            con.close()
        assert (rows, runs) == (customers, 1)

    # The next run needs no manual clean-up and removes the debris of the killed ones.
    final = start_run(crash_setup["source"], warehouse, crash_setup["home"])
    _, stderr = final.communicate(timeout=600)
    assert final.returncode == 0, stderr
    assert not list((warehouse.parent / f".{warehouse.name}.work").iterdir())


# --- two refreshes at once -----------------------------------------------------------------


def test_two_refreshes_at_once_take_turns(tmp_path, mall_csv):
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    home = tmp_path / "home"
    home.mkdir()
    runs = [start_run(mall_csv, warehouse, home) for _ in range(2)]
    for run in runs:
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        spans = con.execute(
            "SELECT i.loaded_at, r.finished_at FROM ingest_runs i JOIN segmentation_runs r "
            "USING (run_id) ORDER BY i.loaded_at"
        ).fetchall()
        segments_runs = con.execute(
            "SELECT count(DISTINCT run_id) FROM customer_segments"
        ).fetchone()
    finally:
        con.close()
    assert len(spans) == 2
    (_, first_finished), (second_loaded, _) = spans
    assert second_loaded > first_finished  # the second built only after the first published
    assert segments_runs == (1,)


def test_nothing_in_the_package_unpickles():
    package = REPO_ROOT / "segmentation_pipeline"
    offenders = [
        str(path)
        for path in package.rglob("*.py")
        for word in ("import pickle", "joblib", "pickle.load", "cloudpickle")
        if word in path.read_text()
    ]
    assert offenders == []
