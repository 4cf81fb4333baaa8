"""End to end through the real `segmentation` command, in subprocesses."""

from __future__ import annotations

import html
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import (
    KAGGLE_HEADER,
    REPO_ROOT,
    file_sha256,
    published_segments,
    subprocess_env,
)
from tests.test_warehouse import BUSY_REASON, HOLD_READ_WRITE

CLI = REPO_ROOT / ".venv" / "bin" / "segmentation"
# Root reads and writes anywhere; without the capabilities to override file modes it does not.
UNPRIVILEGED = (
    ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
)


def segmentation(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, mall_csv: Path) -> dict[str, Path]:
    """One successful run of the Kaggle file through the CLI, shared by this module."""
    root = tmp_path_factory.mktemp("cli")
    paths = {
        "warehouse": root / "wh" / "warehouse.duckdb",
        "home": root / "dagster_home",
        "source": mall_csv,
    }
    env = subprocess_env(DAGSTER_HOME=paths["home"], SEGMENTATION_SOURCE_CSV=mall_csv)
    done = segmentation("run", "--warehouse", paths["warehouse"], env=env)
    assert done.returncode == 0, done.stderr
    paths["stdout"] = done.stdout  # type: ignore[assignment]
    paths["stderr"] = done.stderr  # type: ignore[assignment]
    return paths


def test_run_publishes_and_reports_where(published):
    assert str(published["warehouse"]) in published["stdout"]
    assert "customers:  200 (0 rows rejected)" in published["stdout"]
    assert "published_warehouse: done" in published["stderr"]  # progress on the terminal


def test_run_is_recorded_in_dagster_home(published):
    import dagster as dg

    with dg.DagsterInstance.from_config(str(published["home"])) as instance:
        runs = instance.get_runs()
    assert [(r.job_name, r.status) for r in runs] == [
        ("segmentation_job", dg.DagsterRunStatus.SUCCESS)
    ]


def test_without_a_worker_server_the_run_computes_in_its_own_process(published, tmp_path):
    """The worker server's socket lives in the temporary folder; a path too long for a Unix
    socket stops the server from starting, and the run says so and gives the same result."""
    long_tmp = tmp_path / ("t" * 60) / ("u" * 60)
    long_tmp.mkdir(parents=True)
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    env = subprocess_env(
        DAGSTER_HOME=tmp_path / "home",
        SEGMENTATION_SOURCE_CSV=published["source"],
        TMPDIR=long_tmp,
    )
    done = segmentation("run", "--warehouse", warehouse, env=env)

    assert done.returncode == 0, done.stderr
    assert "no worker server (AF_UNIX path too long)" in done.stderr
    assert "every worker would run" not in done.stderr  # the run does not try again
    assert published_segments(warehouse) == published_segments(published["warehouse"])


# `segmentation run`, with a probe that counts the objects each full collection walks.
GC_PROBE = textwrap.dedent(
    """
    import gc, json, sys

    walked = []

    def probe(phase, info):
        if phase == "start" and info["generation"] == 2:
            walked.append(sum(len(gc.get_objects(generation)) for generation in range(3)))

    gc.callbacks.append(probe)
    from segmentation_pipeline import cli

    code = cli.main(sys.argv[1:])
    print(json.dumps({"code": code, "walked": walked}))
    """
)


def test_run_never_walks_the_start_up_objects_in_a_full_collection(published, tmp_path):
    """Start-up leaves about 200,000 objects that live as long as the process (Dagster,
    DuckDB, the definitions). A full collection over them takes about 0.1 s, and without
    care four happen while they are created and one more after the run."""
    env = subprocess_env(
        DAGSTER_HOME=tmp_path / "home", SEGMENTATION_SOURCE_CSV=published["source"]
    )
    done = subprocess.run(
        [sys.executable, "-c", GC_PROBE, "run", "--warehouse", tmp_path / "wh.duckdb"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])

    assert outcome["code"] == 0, done.stderr
    assert all(objects < 25_000 for objects in outcome["walked"]), outcome["walked"]
    assert published_segments(tmp_path / "wh.duckdb") == published_segments(published["warehouse"])


def test_sql_formats(published):
    env = subprocess_env(SEGMENTATION_WAREHOUSE=published["warehouse"])
    query = "SELECT gender, count(*) AS n FROM customers GROUP BY gender ORDER BY gender"

    as_json = segmentation("sql", query, "--format", "json", env=env)
    assert json.loads(as_json.stdout) == [
        {"gender": "Female", "n": 112},
        {"gender": "Male", "n": 88},
    ]
    as_csv = segmentation("sql", query, "--format", "csv", env=env)
    assert as_csv.stdout.splitlines() == ["gender,n", "Female,112", "Male,88"]
    as_table = segmentation("sql", "SELECT customer_id FROM customers ORDER BY 1 LIMIT 1", env=env)
    assert as_table.stdout.split() == ["customer_id", "0001"]


def test_sql_json_keeps_every_digit_of_a_number(published):
    """pandas' JSON rounded to 10 decimals: 1e-12 became 0, and JSON and CSV disagreed."""
    env = subprocess_env(SEGMENTATION_WAREHOUSE=published["warehouse"])
    query = (
        "SELECT silhouette, 1e-12::DOUBLE AS tiny, 'inf'::DOUBLE AS inf, NULL AS gap, "
        "(SELECT distance FROM customer_segments ORDER BY customer_id LIMIT 1) AS distance "
        "FROM segmentation_runs"
    )

    [row] = json.loads(segmentation("sql", query, "--format", "json", env=env).stdout)
    [csv_row] = segmentation("sql", query, "--format", "csv", env=env).stdout.splitlines()[1:]

    silhouette, tiny, _, _, distance = csv_row.split(",")
    assert row == {
        "silhouette": float(silhouette),
        "tiny": 1e-12,
        "inf": "inf",
        "gap": None,
        "distance": float(distance),
    }
    # every digit of a DOUBLE, and a FLOAT's own (0.1, not the 0.10000000149011612 it widens to)
    assert (repr(row["silhouette"]), repr(row["distance"])) == (silhouette, distance)


def test_sql_json_timestamps_find_their_run_again(published):
    """JSON cut timestamps to milliseconds, so `WHERE finished_at = <value>` found nothing."""
    env = subprocess_env(SEGMENTATION_WAREHOUSE=published["warehouse"])
    as_json = segmentation(
        "sql", "SELECT finished_at FROM segmentation_runs", "--format", "json", env=env
    )
    [row] = json.loads(as_json.stdout)

    lookup = "SELECT count(*) AS n FROM segmentation_runs WHERE finished_at = $1"
    stamp = row["finished_at"]
    found = segmentation("sql", lookup.replace("$1", f"'{stamp}'"), "--format", "csv", env=env)

    assert found.stdout.splitlines() == ["n", "1"]


def test_sql_with_several_statements_says_which_result_it_shows(published):
    env = subprocess_env(SEGMENTATION_WAREHOUSE=published["warehouse"])

    done = segmentation("sql", "SELECT 1 AS a; SELECT 2 AS b", "--format", "csv", env=env)

    assert done.stdout.splitlines() == ["b", "2"]
    assert done.stderr == (
        "segmentation sql: ran 2 statements; the result shown is the last one's\n"
    )


def test_sql_table_shows_every_missing_value_as_null(published):
    env = subprocess_env(SEGMENTATION_WAREHOUSE=published["warehouse"])
    query = (
        "SELECT NULL::INTEGER AS an_int, NULL::DOUBLE AS a_double, NULL::VARCHAR AS a_text, "
        "NULL::BOOLEAN AS a_bool, 1.5::DOUBLE AS given"
    )
    done = segmentation("sql", query, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["an_int", "a_double", "a_text", "a_bool", "given"] + [
        "NULL"
    ] * 4 + ["1.5"]


def test_sql_is_read_only(published):
    before = file_sha256(published["warehouse"])
    env = subprocess_env()
    done = segmentation(
        "sql", "DROP TABLE customers", "--warehouse", published["warehouse"], env=env
    )
    assert done.returncode == 1
    assert "read-only" in done.stderr
    assert file_sha256(published["warehouse"]) == before


def test_sql_on_a_file_that_is_not_a_warehouse_says_so(published):
    done = segmentation("sql", "SELECT 1", "--warehouse", published["source"], env=subprocess_env())
    assert done.returncode == 1
    assert done.stderr == (
        f"segmentation sql: {published['source'].resolve()} is not a DuckDB database file (the "
        "warehouse is the published .duckdb file, not the input CSV)\n"
    )


def test_sql_names_the_process_that_holds_the_warehouse_open_read_write(published, tmp_path):
    """A GUI's default `duckdb.connect(path)` locks the file: `sql` showed DuckDB's "Could
    not set lock on file" without saying what to do."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(published["warehouse"], warehouse)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_READ_WRITE, str(warehouse)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "open\n"  # type: ignore[union-attr]
        done = segmentation("sql", "SELECT 1", "--warehouse", warehouse, env=subprocess_env())
    finally:
        holder.kill()
        holder.wait()

    assert done.returncode == 1
    assert done.stderr == (
        f"segmentation sql: {warehouse} is open read-write in another process "
        f"({Path(sys.executable).resolve().name}, PID {holder.pid}): {BUSY_REASON}\n"
    )


def test_sql_without_a_statement_says_so(published):
    env = subprocess_env(SEGMENTATION_WAREHOUSE=published["warehouse"])
    for query in ("", "-- a comment only"):
        done = segmentation("sql", query, env=env)
        assert done.returncode == 2
        assert done.stderr == "segmentation sql: the query has no statement to run\n"


def test_sql_piped_into_a_reader_that_stops_early_ends_quietly(published):
    """`segmentation sql ... | head`: the reader closes the pipe; no traceback."""
    env = subprocess_env(SEGMENTATION_WAREHOUSE=published["warehouse"])
    process = subprocess.Popen(
        [str(CLI), "sql", "SELECT * FROM range(1000000)", "--format", "csv"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    assert process.stdout.readline() == b"range\n"  # type: ignore[union-attr]
    process.stdout.close()  # type: ignore[union-attr]
    stderr = process.stderr.read()  # type: ignore[union-attr]
    assert process.wait(timeout=120) == 141  # as for a command stopped by SIGPIPE
    assert stderr == b""


def test_invalid_settings_are_refused_before_the_run_starts(published, tmp_path):
    env = subprocess_env(
        DAGSTER_HOME=tmp_path / "home", SEGMENTATION_SOURCE_CSV=published["source"]
    )
    warehouse = tmp_path / "warehouse.duckdb"

    empty_range = segmentation(
        "run", "--k-min", "5", "--k-max", "3", "--warehouse", warehouse, env=env
    )
    negative = segmentation("run", "--seed", "-1", "--warehouse", warehouse, env=env)
    # failed after the whole model search: the seed column is an INTEGER
    too_large = segmentation("run", "--seed", "3000000000", "--warehouse", warehouse, env=env)

    # took 35 s, retried, to end in a Java stack trace that did not name it
    bad_master = segmentation(
        "run", "--engine", "spark", "--spark-master", "bogus://x", "--warehouse", warehouse, env=env
    )

    assert bad_master.returncode == 2
    assert bad_master.stderr == (
        "segmentation run: 'bogus://x' is not a Spark master URL: use local[*], local[N], "
        "spark://host:7077, yarn, k8s://https://host:443 or a Spark Connect server, "
        "sc://host:15002\n"
    )
    assert empty_range.returncode == negative.returncode == too_large.returncode == 2
    assert too_large.stderr == (
        "segmentation run: --seed: Input should be less than or equal to 2147483647\n"
    )
    assert empty_range.stderr == "segmentation run: k_max (3) must be >= k_min (5)\n"
    assert (
        negative.stderr == "segmentation run: --seed: Input should be greater than or equal to 0\n"
    )
    assert not (tmp_path / "home").exists()  # no Dagster run was started
    assert not warehouse.exists()


def test_a_folder_or_a_csv_as_the_warehouse_is_refused_before_the_run_starts(published, tmp_path):
    """A folder as --warehouse was retried for 20 s and ended in a traceback, leaving a lock
    file and a work folder beside it; the input CSV as --warehouse failed with DuckDB's
    "Cannot launch in-memory database in read-only mode!"."""
    env = subprocess_env(
        DAGSTER_HOME=tmp_path / "home", SEGMENTATION_SOURCE_CSV=published["source"]
    )
    folder = tmp_path / "warehouses"
    folder.mkdir()
    csv_file = published["source"].resolve()

    into_folder = segmentation("run", "--warehouse", folder, env=env)
    into_csv = segmentation("run", "--warehouse", csv_file, env=env)
    query_folder = segmentation("sql", "SELECT 1", "--warehouse", folder, env=env)

    assert (into_folder.returncode, into_csv.returncode, query_folder.returncode) == (2, 2, 1)
    folder_reason = (
        f"{folder} is a folder; the warehouse is a DuckDB file: name one, such as "
        f"{folder / 'warehouse.duckdb'}\n"
    )
    assert into_folder.stderr == f"segmentation run: {folder_reason}"
    assert query_folder.stderr == f"segmentation sql: {folder_reason}"
    assert into_csv.stderr == (
        f"segmentation run: {csv_file} is not a DuckDB database file (the warehouse is the "
        "published .duckdb file, not the input CSV)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warehouses"]  # no lock, no run
    assert not any(folder.iterdir())


def test_an_unknown_flag_shows_the_commands_own_usage():
    """`segmentation run --bogus` showed the top level's usage, which lists no flag."""
    done = segmentation("run", "--bogus", env=subprocess_env())
    assert done.returncode == 2
    assert done.stderr.startswith("usage: segmentation run [-h] [--source SOURCE]")
    assert done.stderr.endswith("segmentation run: error: unrecognized arguments: --bogus\n")


def test_generate_refuses_a_negative_seed(tmp_path):
    done = segmentation(
        "generate",
        "--rows",
        "10",
        "--out",
        tmp_path / "c.csv",
        "--seed",
        "-1",
        env=subprocess_env(),
    )
    assert (done.returncode, done.stderr) == (
        2,
        "segmentation generate: --seed must be 0 or more\n",
    )
    assert not (tmp_path / "c.csv").exists()


def test_the_summary_repeats_the_drift_warnings_and_says_when_no_model_was_stable(
    published, tmp_path, mall_csv
):
    """Three customers replacing 200 publish (warnings never stop a run), but the summary
    said nothing of the warnings, logged far above it, nor that no model was stable."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(published["warehouse"], warehouse)
    tiny = tmp_path / "three.csv"
    tiny.write_text("".join(mall_csv.read_text().splitlines(keepends=True)[:4]))

    done = segmentation(
        "run",
        "--source",
        tiny,
        "--warehouse",
        warehouse,
        env=subprocess_env(DAGSTER_HOME=tmp_path / "home"),
    )

    assert done.returncode == 0, done.stderr
    summary = done.stdout.splitlines()
    assert (
        "  caution:    no model was stable under resampling: treat these segments as unstable"
        in summary
    )
    assert any(line.startswith("  warning:    assignment_agreement: ") for line in summary)
    assert any(line.startswith("  warning:    segment_share_shift: ") for line in summary)
    assert not any(
        line.startswith(("  caution:", "  warning:")) for line in published["stdout"].splitlines()
    )
    # The report said "segments are reasonably separated" and nothing of either.
    report = (tmp_path / "reports" / "latest.html").read_text()
    assert "<strong>Caution:</strong> no model was stable under resampling" in report
    warnings = [line.removeprefix("  warning:    ") for line in summary if "warning:" in line]
    for warning in warnings:
        assert f"<strong>Warning:</strong> {html.escape(warning)}</p>" in report
    first_report = (published["warehouse"].parent / "reports" / "latest.html").read_text()
    assert "<strong>Caution:" not in first_report and "<strong>Warning:" not in first_report


def test_failed_run_explains_on_stderr_and_keeps_the_warehouse(published, tmp_path):
    before = file_sha256(published["warehouse"])
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{KAGGLE_HEADER}\n0001,Male,19,15,39\n0002,Female,-4,15,81\n")
    env = subprocess_env(
        DAGSTER_HOME=published["home"], SEGMENTATION_WAREHOUSE=published["warehouse"]
    )

    done = segmentation("run", "--source", bad, "--max-reject-fraction", "0", env=env)

    assert done.returncode == 1
    assert f"{bad}, line 3: age: '-4' is out of range (0 to 120)" in done.stderr
    assert "is unchanged" in done.stderr
    # the failed check gives the reason; the check step's own failure would only repeat it
    assert "DagsterAssetCheckFailedError" not in done.stderr
    assert "Traceback" not in done.stderr
    assert file_sha256(published["warehouse"]) == before


def _run_until_step_starts(
    args: list[str | Path], env: dict[str, str], step: str
) -> tuple[subprocess.Popen[str], list[str]]:
    """``segmentation run`` started, and its stderr read up to the line saying ``step``
    started; returns the process (still running) and the lines read."""
    process = subprocess.Popen(
        [str(CLI), "run", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    seen = []
    for line in process.stderr:  # type: ignore[union-attr]
        seen.append(line)
        if line.rstrip().endswith(f"{step}: start"):
            break
    return process, seen


def _interrupted_run(
    args: list[str | Path], env: dict[str, str], step: str, signal_number: int, delay: float
) -> tuple[int, str, str]:
    """``segmentation run`` sent ``signal_number`` ``delay`` seconds after ``step`` starts
    (as Ctrl-C or a service manager's stop would); returns its exit code, stdout and
    stderr."""
    process, seen = _run_until_step_starts(args, env, step)
    time.sleep(delay)
    process.send_signal(signal_number)
    stdout, rest = process.communicate(timeout=300)
    return process.returncode, stdout, "".join(seen) + rest


def _step_events(home: Path, run_id: str) -> list[tuple[str | None, str]]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [
            (record.step_key, record.dagster_event.event_type_value)
            for record in instance.all_logs(run_id)
            if record.dagster_event is not None
        ]


def _run_id(stderr: str) -> str:
    return stderr.split("segmentation run interrupted (run ", 1)[1].split(")", 1)[0]


@pytest.fixture(scope="module")
def customers_20k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough customers for the model search to take a second or more."""
    from segmentation_pipeline.core.generate import write_customers_csv

    return write_customers_csv(tmp_path_factory.mktemp("c20k") / "c.csv", rows=20_000, seed=1)


def test_a_file_still_being_written_is_published_only_once_complete(tmp_path, customers_20k):
    """An export caught mid-write (the file sensor requested a run for it) was published as
    a fragment with every check green. Now the read notices the file changing, the step is
    retried, and the retry publishes the complete file."""
    source = tmp_path / "customers.csv"
    shutil.copy(customers_20k, source)
    stop = threading.Event()

    def export_still_writing() -> None:
        with source.open("a") as export:
            number = 0
            while not stop.is_set():
                number += 1
                export.write(f"W{number:07d},Female,40,60,50\n")
                export.flush()
                time.sleep(0.001)

    writer = threading.Thread(target=export_still_writing)
    writer.start()
    process = subprocess.Popen(
        [str(CLI), "run", "--source", str(source), "--warehouse", str(tmp_path / "w.duckdb")],
        env=subprocess_env(DAGSTER_HOME=tmp_path / "home"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    seen = []
    try:
        for line in process.stderr:  # type: ignore[union-attr]
            seen.append(line)
            if "raw_customers: failed: " in line:
                break  # the export is complete from now on
    finally:
        stop.set()
        writer.join()
    stdout, rest = process.communicate(timeout=300)
    stderr = "".join(seen) + rest

    assert process.returncode == 0, stderr
    assert f"{source}: the file changed while it was read" in seen[-1]
    assert "still being written" in seen[-1] and "; retrying in 5 s" in seen[-1]
    rows = len(source.read_text().splitlines()) - 1
    assert f"customers:  {rows:,} (0 rows rejected)" in stdout


def test_a_failed_first_run_says_nothing_was_published(tmp_path):
    """With no warehouse yet, 'the published warehouse is unchanged' would be false."""
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{KAGGLE_HEADER}\n0001,Male,19,15,39\n0002,Female,-4,15,81\n")
    warehouse = tmp_path / "warehouse.duckdb"
    env = subprocess_env(DAGSTER_HOME=tmp_path / "home")

    done = segmentation("run", "--source", bad, "--warehouse", warehouse, env=env)

    assert done.returncode == 1
    assert f"Nothing was published; there is no warehouse at {warehouse} yet." in done.stderr
    assert "is unchanged" not in done.stderr
    assert not warehouse.exists()
    # the new Dagster home got the project's instance settings, the run queue included
    config = (tmp_path / "home" / "dagster.yaml").read_text()
    assert config == (REPO_ROOT / "dagster_home" / "dagster.yaml").read_text()
    assert "QueuedRunCoordinator" in config


def test_an_interrupted_run_stops_without_retrying_and_publishes_nothing(published, customers_20k):
    """Ctrl-C during the model search: Dagster would retry a step with a retry policy that
    an interrupt stopped, and the run went on to publish; it must stop instead."""
    before = file_sha256(published["warehouse"])
    env = subprocess_env(DAGSTER_HOME=published["home"])
    args = ["--source", customers_20k, "--warehouse", published["warehouse"]]

    code, stdout, stderr = _interrupted_run(
        args,
        env,
        "segmentation_model",
        signal.SIGINT,
        delay=0.5,  # into the search (over 1 s)
    )

    assert code == 130, stderr
    assert "segmentation run interrupted" in stderr
    assert "segmentation_model: interrupted: the run was asked to stop" in stderr
    assert "is unchanged" in stderr
    assert "Published run" not in stdout
    assert file_sha256(published["warehouse"]) == before
    events = _step_events(published["home"], _run_id(stderr))
    assert ("segmentation_model", "STEP_FAILURE") in events
    assert not [kind for _, kind in events if kind == "STEP_UP_FOR_RETRY"]
    started = {step for step, kind in events if kind == "STEP_START"}
    assert started == {
        "raw_customers",
        "staged_customer_checks",
        "customer_features",
        "segmentation_model",
    }


def test_a_run_stopped_after_publishing_says_the_results_are_published(
    published, customers_20k, tmp_path
):
    """SIGTERM during the report: the new results are already published, and the run's
    message must not claim otherwise."""
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.write_bytes(published["warehouse"].read_bytes())
    env = subprocess_env(DAGSTER_HOME=published["home"])
    args = ["--source", customers_20k, "--warehouse", warehouse]

    code, stdout, stderr = _interrupted_run(
        args,
        env,
        "segment_report",
        signal.SIGTERM,
        delay=0.1,  # well before it ends
    )

    assert code == 130, stderr
    assert "segment_report: interrupted" in stderr
    assert f"The new results were published to {warehouse} before that." in stderr
    assert "is unchanged" not in stderr
    run_id = _run_id(stderr)
    assert f"Published run {run_id}" in stdout
    # The generated ids ("000001") share none with the Kaggle file's ("0001").
    assert "vs previous run: no customer in common with run " in stdout
    assert "first run" not in stdout
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert con.execute("SELECT DISTINCT run_id FROM customer_segments").fetchall() == [
            (run_id,)
        ]
    finally:
        con.close()


def test_a_report_that_cannot_be_written_is_retried_then_reported_after_the_publish(
    published, tmp_path
):
    """The report comes after the publish: when it keeps failing (here its folder is a
    file), the new results are published, and the message must say so."""
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.write_bytes(published["warehouse"].read_bytes())
    (tmp_path / "reports").write_text("a file where the reports folder should be")
    env = subprocess_env(
        DAGSTER_HOME=published["home"], SEGMENTATION_SOURCE_CSV=published["source"]
    )

    done = segmentation("run", "--warehouse", warehouse, env=env)

    assert done.returncode == 1
    retries = [line for line in done.stderr.splitlines() if "segment_report: failed: " in line]
    assert len(retries) == 2 and all("; retrying in " in line for line in retries)
    assert "segmentation run failed (run " in done.stderr
    assert f"The new results were published to {warehouse} before that." in done.stderr
    assert "Published run " in done.stdout
    assert "report:     not written (see the run log)" in done.stdout


def test_unusable_warehouse_folder_is_named(published, tmp_path, mall_csv):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the warehouse folder should be")
    env = subprocess_env(DAGSTER_HOME=published["home"], SEGMENTATION_SOURCE_CSV=mall_csv)

    done = segmentation("run", "--warehouse", blocker / "warehouse.duckdb", env=env)

    assert done.returncode == 1
    assert f"setting up the run: cannot use {blocker} as the warehouse folder" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_warehouse_folder_that_cannot_be_written_fails_the_run_before_it_starts(
    published, tmp_path, mall_csv
):
    """Publishing renames a new file into the folder. Before, a read-only folder (with a
    writable lock file in it) was found out only at the publish, after the whole run, and
    the publish was retried twice as if the error were transient."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    warehouse = folder / "warehouse.duckdb"
    shutil.copy(published["warehouse"], warehouse)
    lock = folder / ".warehouse.duckdb.lock"
    lock.touch(mode=0o666)
    folder.chmod(0o555)
    before = file_sha256(warehouse)
    env = subprocess_env(DAGSTER_HOME=published["home"], SEGMENTATION_SOURCE_CSV=mall_csv)
    try:
        done = subprocess.run(
            [*UNPRIVILEGED, str(CLI), "run", "--warehouse", str(warehouse)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO_ROOT,
        )
    finally:
        folder.chmod(0o755)

    assert done.returncode == 1
    assert (
        f"setting up the run: cannot use {folder} as the warehouse folder: Permission denied; "
        "a run writes its new warehouse there and renames it into place"
    ) in done.stderr
    assert "raw_customers: start" not in done.stderr
    assert "retrying" not in done.stderr
    assert file_sha256(warehouse) == before


def _killed_run(args: list[str | Path], env: dict[str, str], step: str) -> str:
    """The id of a ``segmentation run`` killed with SIGKILL once ``step`` has started."""
    process, _ = _run_until_step_starts(args, env, step)
    process.kill()
    process.communicate(timeout=60)
    import dagster as dg

    with dg.DagsterInstance.from_config(str(env["DAGSTER_HOME"])) as instance:
        (run,) = instance.get_runs(limit=1)
        assert run.status == dg.DagsterRunStatus.STARTED  # nothing could end it
        return run.run_id


def test_a_run_left_behind_by_a_killed_process_is_ended(tmp_path, mall_csv, customers_20k):
    """A `segmentation run` killed with SIGKILL stayed STARTED for good and, tagged as the
    warehouse's writer, held every UI, schedule and sensor run in the queue. The
    orphaned_cli_runs sensor (every minute, in the daemon) and the next `segmentation run`
    end such runs as failed."""
    import dagster as dg

    from segmentation_pipeline.defs.sensors import failure_alert, orphaned_cli_runs

    env = subprocess_env(DAGSTER_HOME=tmp_path / "home")
    args = ["--source", customers_20k, "--warehouse", tmp_path / "w.duckdb"]

    first = _killed_run(args, env, "segmentation_model")
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        tick = orphaned_cli_runs(dg.build_sensor_context(instance=instance))
        assert isinstance(tick, dg.SkipReason)
        assert f"Ended run {first}: the `segmentation run` process" in tick.skip_message
        assert instance.get_run_by_id(first).status == dg.DagsterRunStatus.FAILURE
        # The alert said "failed before any step ran".
        [failure] = instance.get_records_for_run(
            first, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        alert = failure_alert(
            dg.build_run_status_sensor_context(
                sensor_name="segmentation_run_failed",
                dagster_event=failure.event_log_entry.dagster_event,
                dagster_instance=instance,
                dagster_run=instance.get_run_by_id(first),
            ).for_run_failure()
        )
        assert f"run {first} failed during step segmentation_model: " in alert
        quiet = orphaned_cli_runs(dg.build_sensor_context(instance=instance))
        assert quiet.skip_message == "no run left behind by a killed `segmentation run`"

    second = _killed_run(args, env, "raw_customers")
    done = segmentation("run", "--source", mall_csv, "--warehouse", tmp_path / "w.duckdb", env=env)
    assert done.returncode == 0, done.stderr
    assert f"Ended run {second}: " in done.stderr
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        assert instance.get_run_by_id(second).status == dg.DagsterRunStatus.FAILURE


def test_a_run_whose_process_was_killed_before_it_started_is_ended(tmp_path):
    """A `segmentation run` killed in its first seconds left its run NOT_STARTED for good."""
    import dagster as dg

    from segmentation_pipeline.definitions import defs
    from segmentation_pipeline.defs.sensors import PROCESS_TAG, orphaned_cli_runs

    gone = subprocess.run(
        [
            sys.executable,
            "-c",
            "from segmentation_pipeline.core.process_identity import current_process_identity"
            " as i; print(i())",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    ).stdout.strip()
    home = tmp_path / "home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        job = defs().resolve_job_def("segmentation_job")
        run = instance.create_run_for_job(job, tags={PROCESS_TAG: gone})
        assert run.status == dg.DagsterRunStatus.NOT_STARTED

        tick = orphaned_cli_runs(dg.build_sensor_context(instance=instance))

        assert f"Ended run {run.run_id}: " in tick.skip_message
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE


def test_an_unreadable_source_fails_at_once_without_retries(tmp_path, mall_csv):
    """A file the run may not read is no transient error: it was retried twice (20 s)."""
    source = tmp_path / "customers.csv"
    shutil.copy(mall_csv, source)
    source.chmod(0o000)
    done = subprocess.run(
        [*UNPRIVILEGED, str(CLI), "run", "--source", str(source)],
        env=subprocess_env(
            DAGSTER_HOME=tmp_path / "home", SEGMENTATION_WAREHOUSE=tmp_path / "w.duckdb"
        ),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )

    assert done.returncode == 1
    assert f"raw_customers: {source}: cannot be read: Permission denied" in done.stderr
    assert "retrying" not in done.stderr


def test_unusable_dagster_home_is_named(tmp_path, mall_csv):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where DAGSTER_HOME's parent should be")
    env = subprocess_env(DAGSTER_HOME=blocker / "home", SEGMENTATION_SOURCE_CSV=mall_csv)

    done = segmentation("run", "--warehouse", tmp_path / "wh" / "warehouse.duckdb", env=env)

    assert done.returncode == 2
    assert f"segmentation run: cannot use {blocker / 'home'} as DAGSTER_HOME" in done.stderr
    assert "Traceback" not in done.stderr

    done = segmentation(
        "run",
        "--warehouse",
        tmp_path / "wh" / "warehouse.duckdb",
        env={**env, "DAGSTER_HOME": str(blocker)},
    )
    assert done.returncode == 2
    assert (
        f"segmentation run: cannot use {blocker} as DAGSTER_HOME: it is a file; DAGSTER_HOME "
        "must be a folder"
    ) in done.stderr  # not 'File exists'


def test_generate_into_a_folder_names_the_mistake(tmp_path):
    done = segmentation("generate", "--rows", "10", "--out", tmp_path, env=subprocess_env())
    assert done.returncode == 2
    assert done.stderr == f"segmentation generate: --out {tmp_path} is a folder; name a file\n"


def test_generate_writes_a_loadable_file(tmp_path):
    out = tmp_path / "gen.csv"
    done = segmentation(
        "generate", "--rows", "500", "--out", out, "--seed", "3", env=subprocess_env()
    )
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 501
    assert lines[0] == "CustomerID,Gender,Age,Annual Income (k$),Spending Score (1-100)"
