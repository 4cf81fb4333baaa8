"""The publish mechanism on real DuckDB files: atomic replace, readers, locks, stale files."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from segmentation_pipeline.core.errors import PublishError, WarehouseBusyError
from segmentation_pipeline.core.warehouse import Warehouse
from tests.conftest import file_sha256

HOLD_READ_WRITE = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("open", flush=True)
time.sleep(60)
"""

BUSY_REASON = (
    "no other process can read it until that connection closes (a refresh, `segmentation "
    "sql` and the report need every other connection to be read-only). Close that "
    "connection, or connect with read_only=True (the duckdb command line: -readonly)"
)


def build(warehouse: Warehouse, run_id: str, n_rows: int) -> None:
    with warehouse.work_connection(run_id) as con:
        con.execute(
            "CREATE OR REPLACE TABLE customers AS SELECT range AS id FROM range($n)", {"n": n_rows}
        )


def count(path: Path) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM customers").fetchone()[0]
    finally:
        con.close()


def test_publish_replaces_the_warehouse_and_keeps_the_previous_file(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build(warehouse, "run-1", 3)
    result = warehouse.publish("run-1", ["customers"])
    assert result.row_counts == {"customers": 3}
    assert count(warehouse.path) == 3

    build(warehouse, "run-2", 5)
    warehouse.publish("run-2", ["customers"])

    assert count(warehouse.path) == 5
    assert count(warehouse.previous_path) == 3
    assert not warehouse.work_path("run-2").exists()
    assert not list(warehouse.work_dir.iterdir())


def test_a_run_starts_from_a_copy_of_the_published_warehouse(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build(warehouse, "run-1", 3)
    warehouse.publish("run-1", ["customers"])
    with warehouse.work_connection("run-2") as con:
        assert con.execute("SELECT count(*) FROM customers").fetchone()[0] == 3


def _blocks(path: Path) -> tuple[int, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT used_blocks, free_blocks FROM pragma_database_size()").fetchone()
    finally:
        con.close()


def _contents(path: Path) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return [
            *con.execute("SELECT sum(id), count(*) FROM history.kept").fetchall(),
            *con.execute("SELECT * FROM kept_view ORDER BY ALL").fetchall(),
            *con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL"
            ).fetchall(),
        ]
    finally:
        con.close()


def test_a_published_file_mostly_free_is_copied_compacted(tmp_path):
    """Dropped tables leave free blocks that DuckDB never gives back: the copy drops them."""
    warehouse = Warehouse(tmp_path / "w.duckdb")
    with warehouse.work_connection("run-1") as con:
        con.execute("CREATE SCHEMA history")
        con.execute("CREATE TABLE history.kept AS SELECT range AS id FROM range(100000)")
        con.execute("CREATE TABLE customers AS SELECT range::VARCHAR AS id FROM range(3000000)")
        con.execute("CREATE VIEW kept_view AS SELECT count(*) AS n FROM history.kept")
        con.execute("CHECKPOINT")
        con.execute("CREATE OR REPLACE TABLE customers AS SELECT 1 AS id")
    warehouse.publish("run-1", ["customers", "kept_view"])
    used, free = _blocks(warehouse.path)
    assert free > used  # most of the published file is the dropped table's blocks

    work = warehouse.ensure_work_file("run-2")

    assert _blocks(work)[1] == 0
    assert work.stat().st_size < warehouse.path.stat().st_size / 2
    assert _contents(work) == _contents(warehouse.path)
    assert not list(warehouse.work_dir.glob("*.copying"))
    # a file in use is copied byte for byte
    warehouse.publish("run-2", ["customers", "kept_view"])
    assert file_sha256(warehouse.ensure_work_file("run-3")) == file_sha256(warehouse.path)


def test_a_count_given_to_publish_is_reported_and_its_view_still_checked(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build(warehouse, "run-1", 3)
    with warehouse.work_connection("run-1") as con:
        con.execute("CREATE TABLE part AS SELECT 1 AS x")
        con.execute("CREATE VIEW joined AS SELECT * FROM customers, part")
    result = warehouse.publish("run-1", ["customers", "joined"], {"joined": 42})
    assert result.row_counts == {"customers": 3, "joined": 42}

    build(warehouse, "run-2", 5)
    with warehouse.work_connection("run-2") as con:
        con.execute("DROP TABLE part")  # the view now names a missing table
    before = file_sha256(warehouse.path)
    with pytest.raises(duckdb.Error, match="part"):
        warehouse.publish("run-2", ["customers", "joined"], {"joined": 42})
    assert file_sha256(warehouse.path) == before


def test_missing_required_table_is_not_published(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build(warehouse, "run-1", 3)
    warehouse.publish("run-1", ["customers"])
    before = file_sha256(warehouse.path)

    with warehouse.work_connection("run-2") as con:
        con.execute("DROP TABLE customers")
    with pytest.raises(PublishError, match="lacks table"):
        warehouse.publish("run-2", ["customers"])
    assert file_sha256(warehouse.path) == before


def build_run(warehouse: Warehouse, run_id: str) -> None:
    """A work file that records its run, as the pipeline's does in segmentation_runs."""
    with warehouse.work_connection(run_id) as con:
        con.execute("CREATE TABLE IF NOT EXISTS segmentation_runs (run_id VARCHAR)")
        con.execute("INSERT INTO segmentation_runs VALUES ($run_id)", {"run_id": run_id})


def test_a_run_renamed_into_place_is_known_as_published_so_a_retry_stops(tmp_path):
    """A publish step that fails after its rename is retried; the retry must see that the
    run is published, or it would publish a copy of it and lose the roll-back file."""
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build_run(warehouse, "run-1")
    warehouse.publish("run-1", ["segmentation_runs"])
    build_run(warehouse, "run-2")
    assert not warehouse.published_by("run-2")  # its work file is still to be published

    warehouse.publish("run-2", ["segmentation_runs"])

    assert warehouse.published_by("run-2")
    assert warehouse.holds_run("run-1") and warehouse.holds_run("run-2")
    assert not warehouse.published_by("run-3")
    previous = Warehouse(warehouse.previous_path)
    assert previous.holds_run("run-1") and not previous.holds_run("run-2")
    assert not Warehouse(tmp_path / "none.duckdb").holds_run("run-1")


def test_a_new_connection_sees_a_refresh_while_an_old_one_is_still_open_in_the_process(
    tmp_path,
):
    """DuckDB hands a new `connect(path)` the database a connection still open in the same
    process has, so a notebook that reconnects without closing kept reading the old file."""
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build(warehouse, "run-1", 3)
    warehouse.publish("run-1", ["customers"])
    plain = duckdb.connect(str(warehouse.path), read_only=True)
    ours = warehouse.connect_read_only()
    build(warehouse, "run-2", 5)
    warehouse.publish("run-2", ["customers"])

    fresh = warehouse.connect_read_only()

    assert fresh.execute("SELECT count(*) FROM customers").fetchone() == (5,)
    assert fresh.execute("SELECT current_database()").fetchone() == ("warehouse",)
    assert ours.execute("SELECT count(*) FROM customers").fetchone() == (3,)  # its snapshot
    assert plain.execute("SELECT count(*) FROM customers").fetchone() == (3,)
    for con in (fresh, ours, plain):
        con.close()


def test_a_refresh_keeps_the_mode_and_group_an_administrator_gave_the_warehouse(tmp_path):
    """A rename puts a new file in place: it had the writer's umask and group, so a
    warehouse restricted to `600` became world-readable on the next refresh."""
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build(warehouse, "run-1", 3)
    warehouse.publish("run-1", ["customers"])
    group = next(g for g in (1, 2, os.getgid()) if g != warehouse.path.stat().st_gid)
    if os.geteuid() == 0 or group in os.getgroups():
        os.chown(warehouse.path, -1, group)
    else:
        group = warehouse.path.stat().st_gid
    warehouse.path.chmod(0o640)
    build(warehouse, "run-2", 5)

    warehouse.publish("run-2", ["customers"])

    status = warehouse.path.stat()
    assert count(warehouse.path) == 5
    assert (stat.S_IMODE(status.st_mode), status.st_gid) == (0o640, group)


def test_a_refresh_names_the_process_that_holds_the_warehouse_open_read_write(tmp_path):
    """`duckdb.connect(path)` is read-write by default and locks the file against every
    other process: the refresh said only DuckDB's "Could not set lock on file"."""
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build(warehouse, "run-1", 3)
    warehouse.publish("run-1", ["customers"])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_READ_WRITE, str(warehouse.path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(WarehouseBusyError) as error:
            warehouse.ensure_work_file("run-2")
    finally:
        holder.kill()
        holder.wait()

    assert str(error.value) == (
        f"{warehouse.path} is open read-write in another process "
        f"({Path(sys.executable).resolve().name}, PID {holder.pid}): {BUSY_REASON}"
    )
    assert not warehouse.work_path("run-2").exists()


@pytest.mark.parametrize("name", ["main", "temp", "Memory", "system", "information_schema"])
def test_a_warehouse_named_like_a_duckdb_database_is_read(tmp_path, name):
    """Attached under its file's name, main.duckdb failed: the report, the summary and
    `segmentation sql` could not read the warehouse just published."""
    warehouse = Warehouse(tmp_path / f"{name}.duckdb")
    build(warehouse, "run-1", 3)
    warehouse.publish("run-1", ["customers"])

    con = warehouse.connect_read_only()

    assert con.execute("SELECT count(*) FROM customers").fetchone() == (3,)
    con.close()


def test_a_folder_that_cannot_be_synced_after_the_rename_is_a_warning_not_a_failure(
    tmp_path, monkeypatch
):
    """fsync on a folder fails on some network file systems (EINVAL). The file is in place
    by then: failing the step would have it retried and publish the run twice."""
    real_fsync = os.fsync

    def fsync_refused_on_folders(descriptor: int) -> None:
        if stat.S_ISDIR(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync_refused_on_folders)
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build(warehouse, "run-1", 3)

    result = warehouse.publish("run-1", ["customers"])

    assert count(warehouse.path) == 3
    assert result.warning == (
        f"published, but the folder {tmp_path} could not be synced (Invalid argument): a "
        "crash of the machine soon after could bring back the previous file"
    )


def test_publishing_a_run_without_work_file_fails(tmp_path):
    with pytest.raises(PublishError, match="no work file"):
        Warehouse(tmp_path / "w.duckdb").publish("ghost", ["customers"])


def test_reader_in_another_process_neither_blocks_nor_sees_a_mix(tmp_path):
    """A read-only connection held open in another process across a publish: the publish
    succeeds, the reader keeps its snapshot, and a new connection sees the new file."""
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build(warehouse, "run-1", 3)
    warehouse.publish("run-1", ["customers"])
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys\n"
            "con = duckdb.connect(sys.argv[1], read_only=True)\n"
            "print(con.execute('SELECT count(*) FROM customers').fetchone()[0], flush=True)\n"
            "sys.stdin.readline()\n"
            "print(con.execute('SELECT count(*) FROM customers').fetchone()[0], flush=True)\n",
            str(warehouse.path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "3"
        build(warehouse, "run-2", 7)
        warehouse.publish("run-2", ["customers"])
        assert count(warehouse.path) == 7
        out, _ = reader.communicate("go\n", timeout=30)
        assert out.strip() == "3"
    finally:
        reader.kill()


def test_writer_lock_is_exclusive_and_times_out_with_a_reason(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom pathlib import Path\n"
            "from segmentation_pipeline.core.warehouse import Warehouse\n"
            f"with Warehouse(Path({str(warehouse.path)!r})).writer_lock(5):\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        told: list[str] = []
        with pytest.raises(PublishError, match="another refresh"):
            with warehouse.writer_lock(0.2, on_wait=told.append):
                pass
        # a run that waits says so (it sat silent for minutes while another one ran)
        assert told == [
            f"Waiting for another refresh of {warehouse.path} to finish (it holds "
            f"{warehouse.lock_path}; up to 0.2 s)."
        ]
    finally:
        holder.communicate("\n", timeout=30)
    told.clear()
    with warehouse.writer_lock(1, on_wait=told.append):  # released when the holder ended
        pass
    assert told == []


def test_stale_work_files_are_cleaned(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build(warehouse, "dead-run", 3)
    (warehouse.work_dir / "dead-run.duckdb.wal").write_bytes(b"x")
    removed = warehouse.clean_stale_work_files()
    assert {p.name for p in removed} == {"dead-run.duckdb", "dead-run.duckdb.wal"}
    assert not list(warehouse.work_dir.iterdir())


def test_read_only_connection_cannot_write(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build(warehouse, "run-1", 3)
    warehouse.publish("run-1", ["customers"])
    con = warehouse.connect_read_only()
    try:
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("DELETE FROM customers")
    finally:
        con.close()
    assert count(warehouse.path) == 3


_PROGRESS_BAR_SETTING = """
import sys
from pathlib import Path
from segmentation_pipeline.core.warehouse import Warehouse
warehouse = Warehouse(Path(sys.argv[1]))
reader = warehouse.connect_read_only(sys.argv[2] or None)
print(reader.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0])
"""


@pytest.mark.parametrize("run_id", ["", "run-2"])
def test_readers_draw_no_progress_bar_on_standard_output(tmp_path, run_id):
    # DuckDB draws one on stdout during queries over 2 s (on by default in a plain
    # process, though not under pytest), so the setting is read in a process of its own.
    warehouse = Warehouse(tmp_path / "w.duckdb")
    build(warehouse, "run-1", 3)
    warehouse.publish("run-1", ["customers"])
    result = subprocess.run(
        [sys.executable, "-c", _PROGRESS_BAR_SETTING, str(warehouse.path), run_id],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"


def test_connect_read_only_without_warehouse_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="segmentation run"):
        Warehouse(tmp_path / "none.duckdb").connect_read_only()
