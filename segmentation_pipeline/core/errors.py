"""Errors that stop a run, worded for the person who has to fix the input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


# Our errors are worded for users: shown as they are, without their class name.
USER_WORDED_ERRORS = frozenset(
    cls.__name__
    for cls in (
        InputError,
        SourceChangedError,
        WarehouseBusyError,
        WarehousePathError,
        PublishError,
    )
)


# Classes with which Dagster wraps the error of the code it runs.
_DAGSTER_WRAPPERS = ("Dagster", "RetryRequested")


def error_text(error: Any) -> str:
    """How an error Dagster recorded (its ``SerializableErrorInfo``: ``cls_name``,
    ``message``, ``cause``) reads for users, on the command line and in the failure alert.

    Dagster's own wrappers ("DagsterExecutionStepExecutionError: Error occurred while
    executing op", "DagsterResourceFunctionError: Error executing resource_fn", a retry's
    "RetryRequestedFromPolicy") are skipped
    for the error of the code they wrap, but no further: below it lie its own causes, such
    as the traceback of a worker process. Our errors read as they are; others as
    "Class: message", the class named once and without its module path.
    """
    while error.cause is not None and error.cls_name.startswith(_DAGSTER_WRAPPERS):
        error = error.cause
    message = error.message.strip()
    head, separator, rest = message.partition(": ")
    if separator and head.rsplit(".", 1)[-1] == error.cls_name:
        message = rest
    if error.cls_name == "ValidationError":  # pydantic's, of the settings given at launch
        return f"invalid settings: {_validation_reasons(message)}"
    return message if error.cls_name in USER_WORDED_ERRORS else f"{error.cls_name}: {message}"


def _validation_reasons(message: str) -> str:
    """pydantic's ValidationError text without its input dump and links: 'k_max: Input
    should be greater than or equal to 2; k_max (3) must be >= k_min (5)'."""
    reasons: list[str] = []
    field = ""
    for line in message.splitlines()[1:]:  # the first says "N validation errors for X"
        if not line.startswith(" "):
            field = f"{line.strip()}: "
        elif not line.startswith("    "):
            reason = line.strip().removeprefix("Value error, ").split(" [type=")[0]
            reasons.append(field + reason)
            field = ""
    return "; ".join(reasons) or message
