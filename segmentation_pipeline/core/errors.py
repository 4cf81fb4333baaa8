"""Errors that stop a run, worded for the person who has to fix the input."""

from __future__ import annotations

from pathlib import Path

import duckdb


class InputError(Exception):
    """The input file cannot be used as a whole: missing, empty, malformed or unreadable.

    It names the file and, where known, the line, the column and the offending value, so that
    whoever reads the message can open the file at the right place.
    """

    def __init__(
        self,
        source: Path | str,
        reason: str,
        *,
        line: int | None = None,
        column: str | None = None,
        value: str | None = None,
    ) -> None:
        self.source = str(source)
        self.reason = reason
        self.line = line
        self.column = column
        self.value = value
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: 'file.csv, line 3, column age, value '-5': out of range 0..120'."""
        where = [self.source]
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column}")
        if self.value is not None:
            shown = self.value if len(self.value) <= 80 else self.value[:77] + "..."
            where.append(f"value {shown!r}")
        return f"{', '.join(where)}: {self.reason}"


class SourceChangedError(InputError):
    """The input file changed while the run read it: an export still being written. Unlike
    other input errors it can pass by itself, so the step is retried."""


class WarehouseBusyError(duckdb.IOException):
    """Another process holds the published warehouse open read-write, so neither a refresh
    nor a reader can open it. DuckDB's own "Could not set lock on file", worded with the fix;
    still a ``duckdb.IOException`` for the callers that handle those. It passes when that
    connection closes, so a step that meets it is retried."""


class WarehousePathError(duckdb.IOException):
    """The warehouse path names a folder, or a file that is not a DuckDB database (the input
    CSV given as the warehouse): a setting to correct, never retried. Still a
    ``duckdb.IOException``, as DuckDB's own error for such a file was."""


class PublishError(Exception):
    """The work database failed its last validation, so it was not published."""
