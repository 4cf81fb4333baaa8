"""The published warehouse file and the private work files that replace it atomically.

A DuckDB file held open read-write by one process cannot be opened by any other, and an
open reader blocks a writer. So a run never writes the published file: it starts from a
copy (which carries the history tables along), builds everything in its own work file,
validates it, CHECKPOINTs, closes it, and renames it over the published file. Readers
that had the old file open keep their snapshot; new connections see the new one. A run
that fails or is killed leaves the published file exactly as it was.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
from filelock import FileLock, Timeout

from segmentation_pipeline.core import drift
from segmentation_pipeline.core.errors import (
    PublishError,
    WarehouseBusyError,
    WarehousePathError,
)
from segmentation_pipeline.core.sql_text import literal

# Read-only connections made while a refresh renames its file into place (see
# Warehouse.connect_read_only).
CONNECT_ATTEMPTS = 5
DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file
# The database name of a read-only connection to the published file (connect_read_only).
ATTACHED_NAME = "warehouse"


@dataclass(frozen=True)
class PublishResult:
    """What was published: where, and how many rows each required table holds."""

    path: Path
    row_counts: dict[str, int]
    size_bytes: int
    warning: str | None = None  # published, but with a caveat the operator should read


@dataclass(frozen=True)
class Warehouse:
    """The published DuckDB file at ``path`` and the run work files beside it.

    ``memory_limit`` caps DuckDB's memory on work connections; beyond it DuckDB spills to a
    temporary folder inside the work folder, so a run's memory stays bounded at any size.
    """

    path: Path
    memory_limit: str = "1GB"

    @property
    def work_dir(self) -> Path:
        """Hidden folder next to the warehouse: same file system, so rename is atomic."""
        return self.path.parent / f".{self.path.name}.work"

    @property
    def previous_path(self) -> Path:
        """The results published before the current ones, kept for a manual roll-back."""
        return self.path.with_name(f"{self.path.stem}.previous{self.path.suffix}")

    @property
    def lock_path(self) -> Path:
        return self.path.parent / f".{self.path.name}.lock"

    def work_path(self, run_id: str) -> Path:
        return self.work_dir / f"{run_id}.duckdb"

    @contextmanager
    def writer_lock(
        self, timeout_seconds: float, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """Hold the single-writer lock, so two refreshes never build and publish at once.

        The lock is an OS file lock: it is released when the holder exits, even by SIGKILL.
        When another run holds it, ``on_wait`` is told before this one waits (a run that
        sits silent for minutes looks hung).
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Publishing renames a new file into this folder: find out now, not after the
            # whole run, that it cannot be written.
            with tempfile.NamedTemporaryFile(dir=self.path.parent, prefix=f".{self.path.name}."):
                pass
        except OSError as error:
            raise PublishError(
                f"cannot use {self.path.parent} as the warehouse folder: {error.strerror};"
                " a run writes its new warehouse there and renames it into place, so the"
                " folder must be writable"
            ) from None
        lock = FileLock(self.lock_path, timeout=timeout_seconds)
        try:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                if on_wait is not None:
                    on_wait(
                        f"Waiting for another refresh of {self.path} to finish (it holds "
                        f"{self.lock_path}; up to {timeout_seconds:g} s)."
                    )
                lock.acquire()
        except Timeout:
            raise PublishError(
                f"another refresh of {self.path} is running (lock {self.lock_path} held for "
                f"more than {timeout_seconds:g} s); try again when it has finished"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def check_path(self) -> None:
        """Raise WarehousePathError when the path is a folder or a file that is not a DuckDB
        database; a path that does not exist yet is fine (the first run creates it)."""
        if self.path.exists():
            _check_is_duckdb_file(self.path)

    def ensure_work_file(self, run_id: str) -> Path:
        """The run's work file, created on first use as a copy of the published warehouse."""
        work = self.work_path(run_id)
        if work.exists():
            return work
        self.check_path()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            partial = work.with_suffix(".copying")
            partial.unlink(missing_ok=True)
            if not self._copy_compacted_if_mostly_free(partial, run_id):
                shutil.copyfile(self.path, partial)
            os.replace(partial, work)
        return work

    def _copy_compacted_if_mostly_free(self, target: Path, run_id: str) -> bool:
        """Rewrite the published warehouse into ``target`` when most of its file is free
        blocks; returns whether it did.

        DuckDB reuses the blocks of dropped tables but never shrinks the file, so a file
        whose history was stored against keys on an upgrade (see ``history_keys``) keeps
        its old size: 1.8 GB, 1.5 GB of it free, at 10M customers and 30 runs, which every
        run would copy. Rewriting copies only what is in use (10 s there, once, against a
        2 s byte copy every run); a file in the steady state is about a quarter free, and
        is copied byte for byte.
        """
        con = duckdb.connect(
            config={
                "memory_limit": self.memory_limit,
                "temp_directory": str(self.work_dir / f"{run_id}.tmp"),
            }
        )
        try:
            con.execute("SET enable_progress_bar = false")
            _attach_published(con, self.path)
            used, free = con.execute(
                "SELECT used_blocks, free_blocks FROM pragma_database_size() "
                "WHERE database_name = 'published'"
            ).fetchone()
            if free <= used:
                return False
            con.execute(f"ATTACH {literal(str(target))} AS compacted")
            con.execute("COPY FROM DATABASE published TO compacted")
            con.execute("DETACH compacted")
            return True
        finally:
            con.close()

    @contextmanager
    def work_connection(self, run_id: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection to the run's work file, closed on exit."""
        work = self.ensure_work_file(run_id)
        con = duckdb.connect(
            str(work),
            config={
                "memory_limit": self.memory_limit,
                "temp_directory": str(self.work_dir / f"{run_id}.tmp"),
            },
        )
        con.execute("SET enable_progress_bar = false")
        try:
            yield con
        finally:
            con.close()

    def publish(
        self,
        run_id: str,
        required_tables: Sequence[str],
        known_row_counts: Mapping[str, int] | None = None,
    ) -> PublishResult:
        """Validate the run's work file and rename it over the published warehouse.

        Every required table (or view) must exist; each is counted, unless its count is
        in ``known_row_counts`` (for a view whose count would cost a join).
        """
        work = self.work_path(run_id)
        if not work.exists():
            raise PublishError(f"run {run_id} has no work file at {work}; nothing to publish")
        con = duckdb.connect(str(work))
        try:
            row_counts = _required_row_counts(con, required_tables, work, known_row_counts or {})
            con.execute("CHECKPOINT")
        finally:
            con.close()
        wal = work.with_name(work.name + ".wal")
        if wal.exists():
            raise PublishError(
                f"{work} still has a write-ahead log after CHECKPOINT; not published"
            )
        _fsync_file(work)
        size_bytes = work.stat().st_size
        if self.path.exists():
            _take_access_of(work, self.path)
            _replace_with_hard_link(self.path, self.previous_path)
        os.replace(work, self.path)
        # Published. Nothing from here on may fail the step: its retry would publish again.
        try:
            _fsync_dir(self.path.parent)
        except OSError as error:  # some network file systems refuse fsync on a folder
            return PublishResult(
                self.path,
                row_counts,
                size_bytes,
                warning=f"published, but the folder {self.path.parent} could not be synced "
                f"({error.strerror}): a crash of the machine soon after could bring back the "
                "previous file",
            )
        return PublishResult(self.path, row_counts, size_bytes)

    def holds_run(self, run_id: str) -> bool:
        """Whether the published warehouse has this run's results (its segmentation_runs row
        is written in the run's own work file, so it is published with them and only so)."""
        if not self.path.exists():
            return False
        con = self.connect_read_only()
        try:
            return has_table(con, "segmentation_runs") and bool(
                con.execute(
                    "SELECT count(*) FROM segmentation_runs WHERE run_id = $run_id",
                    {"run_id": run_id},
                ).fetchone()[0]
            )
        finally:
            con.close()

    def latest_run_id(self) -> str | None:
        """The run whose results the published warehouse holds; None before the first."""
        if not self.path.exists():
            return None
        con = self.connect_read_only()
        try:
            return drift.latest_run_id(con) if has_table(con, "segmentation_runs") else None
        finally:
            con.close()

    def published_by(self, run_id: str) -> bool:
        """Whether an earlier attempt of this run's publish step already renamed its work file
        into place: the work file is gone and the published warehouse holds the run.

        A retried publish must then stop: it would copy the published file into a new work
        file and publish that, replacing the roll-back copy (``*.previous.duckdb``) with the
        run's own results."""
        return not self.work_path(run_id).exists() and self.holds_run(run_id)

    def discard_work_file(self, run_id: str) -> None:
        """Remove what a run left in the work folder: its work file when it did not publish,
        the WAL, DuckDB's spill folder."""
        for path in self.work_dir.glob(f"{run_id}.*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def clean_stale_work_files(self) -> list[Path]:
        """Delete work files left by runs that died; call only while holding the writer lock."""
        if not self.work_dir.exists():
            return []
        removed = sorted(self.work_dir.iterdir())
        for path in removed:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        return removed

    def connect_read_only(self, run_id: str | None = None) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the published warehouse; never blocks a refresh.

        Given the ``run_id`` of the pipeline run reading it, the connection keeps to the run's
        memory cap and spill folder, like the work connections.

        DuckDB opens a database file three times while connecting (the magic number, the
        headers, then the file it keeps), so a connection made at the very moment a refresh
        renames the new file into place can pair the old file's headers with the new file:
        it then fails, at once or at a later query. So the file at the path is noted before
        and after connecting, and a connection that may straddle a rename is made again
        (``CONNECT_ATTEMPTS`` times at most; a rename takes microseconds).
        """
        if not self.path.exists():
            raise FileNotFoundError(
                f"no published warehouse at {self.path}; run `segmentation run` first"
            )
        _check_is_duckdb_file(self.path)
        config = {}
        if run_id is not None:
            config = {
                "memory_limit": self.memory_limit,
                "temp_directory": str(self.work_dir / f"{run_id}.tmp"),
            }
        for attempt in range(1, CONNECT_ATTEMPTS):
            before = _file_identity(self.path)
            try:
                con = _attach_read_only(self.path, config)
            except WarehouseBusyError:
                raise  # another process holds it read-write: no rename race, no use waiting
            except duckdb.Error:
                time.sleep(0.05 * attempt)
                continue
            if _file_identity(self.path) == before:
                return _without_progress_bar(con)
            con.close()
        return _without_progress_bar(_attach_read_only(self.path, config))


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the connection's current database and schema hold a table of that name (a
    warehouse's first run, or one written by an older version, may not)."""
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = current_schema() AND table_name = $name",
            {"name": name},
        ).fetchone()[0]
    )


def _attach_published(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Attach the published warehouse read-only as ``published``."""
    try:
        con.execute(f"ATTACH {literal(str(path))} AS published (READ_ONLY)")
    except duckdb.IOException as error:
        raise _busy_error(path, error) or error from None


def _busy_error(path: Path, error: duckdb.IOException) -> WarehouseBusyError | None:
    """DuckDB's "Could not set lock on file" worded with its cause and fix, naming the
    process that holds the file open read-write; None for any other error."""
    holder = re.search(r"Conflicting lock is held in (.*?) \(PID (\d+)\)", str(error))
    if holder is None:
        return None
    return WarehouseBusyError(
        f"{path} is open read-write in another process ({Path(holder[1]).name}, PID "
        f"{holder[2]}): no other process can read it until that connection closes (a "
        "refresh, `segmentation sql` and the report need every other connection to be "
        "read-only). Close that connection, or connect with read_only=True (the duckdb "
        "command line: -readonly)"
    )


def _attach_read_only(path: Path, config: dict[str, str]) -> duckdb.DuckDBPyConnection:
    """A database of its own, in memory, with the file attached read-only and in use.

    ``duckdb.connect(path)`` shares one open database per file within a process: while any
    connection to the path is still open there, a new one is handed that database, and so
    keeps reading a file a refresh has since replaced. An attachment opens the file now.
    It is always named ``warehouse``: a name taken from the file could be one DuckDB keeps
    for itself (main.duckdb, temp.duckdb, Memory.duckdb, …) and fail to attach.
    """
    con = duckdb.connect(":memory:", config=config)
    try:
        con.execute(f"ATTACH {literal(str(path))} AS {ATTACHED_NAME} (READ_ONLY)")
        con.execute(f"USE {ATTACHED_NAME}")
    except duckdb.IOException as error:
        con.close()
        raise _busy_error(path, error) or error from None
    except duckdb.Error:
        con.close()
        raise
    return con


def _check_is_duckdb_file(path: Path) -> None:
    """Name a warehouse path that is a folder, or a file that is not a DuckDB database
    (DuckDB 2.0 says "Cannot launch in-memory database in read-only mode!" for a CSV file
    passed as the warehouse, and a folder ended in a traceback)."""
    if path.is_dir():
        raise WarehousePathError(
            f"{path} is a folder; the warehouse is a DuckDB file: name one, such as "
            f"{path / 'warehouse.duckdb'}"
        )
    with path.open("rb") as handle:
        header = handle.read(12)
    if header[8:12] != DUCKDB_MAGIC:
        raise WarehousePathError(
            f"{path} is not a DuckDB database file (the warehouse is the published "
            ".duckdb file, not the input CSV)"
        )


def _without_progress_bar(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """The connection with DuckDB's progress bar off: it is on by default and prints to
    standard output during queries over 2 s (at 100 million customers it was drawn among
    `segmentation run`'s summary lines, from the report's queries)."""
    con.execute("SET enable_progress_bar = false")
    return con


def _file_identity(path: Path) -> tuple[int, int, int, int]:
    """What changes when another file is renamed to ``path``: inode, device, size, mtime."""
    status = path.stat()
    return (status.st_ino, status.st_dev, status.st_size, status.st_mtime_ns)


def _required_row_counts(
    con: duckdb.DuckDBPyConnection,
    required_tables: Sequence[str],
    work: Path,
    known_row_counts: Mapping[str, int],
) -> dict[str, int]:
    present = {
        row[0]
        for row in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' UNION ALL SELECT view_name FROM duckdb_views() "
            "WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal"
        ).fetchall()
    }
    missing = [name for name in required_tables if name not in present]
    if missing:
        raise PublishError(f"{work} lacks table(s) {', '.join(missing)}; not published")
    counts = {}
    for name in required_tables:
        if name in known_row_counts:  # still bound, so a view of a missing table fails here
            con.execute(f'SELECT * FROM "{name}" LIMIT 0')  # noqa: S608
            counts[name] = known_row_counts[name]
        else:
            counts[name] = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]  # noqa: S608
    return counts


def _replace_with_hard_link(source: Path, target: Path) -> None:
    """Make ``target`` another name of ``source``'s current file, replacing it atomically."""
    temporary = target.with_name(f".{target.name}.linking")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:  # file systems without hard links: a copy will do for a roll-back file
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _take_access_of(work: Path, published: Path) -> None:
    """Give the work file the mode and group of the published file it is to replace.

    A new file gets the writer's umask and group, so without this every refresh undid
    an administrator's `chmod 600` or `chgrp analysts` on the warehouse (customer data).
    The owner is whoever runs the refresh: only root may give a file away."""
    status = published.stat()
    os.chmod(work, stat.S_IMODE(status.st_mode))
    if work.stat().st_gid != status.st_gid:
        try:
            os.chown(work, -1, status.st_gid)
        except PermissionError as error:
            raise PublishError(
                f"cannot give the new warehouse the group of {published} (gid "
                f"{status.st_gid}): {error.strerror}; run the refresh as a member of that "
                "group, or change the warehouse's group"
            ) from None


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def storable(value: object) -> object:
    """A Python value as a warehouse table stores it: NaN (a score or statistic that could
    not be computed) becomes NULL, as pandas' NaN did when tables were written from frames."""
    return None if isinstance(value, float) and math.isnan(value) else value
