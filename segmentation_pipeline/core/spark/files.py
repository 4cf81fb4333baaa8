"""Where the engine's Parquet goes (next to the run's work database) and how Spark and DuckDB
name it."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

_GLOB_CHARACTERS = re.compile(r"([\\{}\[\]*?])")


def spark_folder(con: duckdb.DuckDBPyConnection) -> Path:
    """``<run_id>.spark/`` beside the work database ``<run_id>.duckdb``.

    The run's clean-up removes everything named ``<run_id>.*`` in the work folder, so the
    Parquet goes with the work file.
    """
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    if not row or not row[0]:
        raise ValueError("the Spark engine needs a work database file, not an in-memory one")
    database = Path(row[0]).resolve()
    return database.with_name(f"{database.stem}.spark")


def hadoop_uri(path: Path, glob: bool = False) -> str:
    """A file URI for Spark; glob characters are escaped for reads, which expand globs."""
    text = str(path.resolve())
    if glob:
        text = _GLOB_CHARACTERS.sub(r"\\\1", text)
    return f"file://{text}"


def parquet_glob(folder: Path) -> str:
    """The Parquet part files Spark wrote into ``folder``, for DuckDB's read_parquet."""
    return str(folder / "*.parquet")


def parquet_scalar(con: duckdb.DuckDBPyConnection, sql: str, folder: Path) -> int:
    row = con.execute(sql, {"path": parquet_glob(folder)}).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
