"""Spark reads and checks the customer CSV by the local engine's rules, with the same reasons,
duplicate handling and physical line numbers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation_pipeline.core import ingest
from segmentation_pipeline.core.errors import InputError
from segmentation_pipeline.core.ingest import IngestSummary
from segmentation_pipeline.core.schema import CANONICAL_COLUMNS, MISSING_TOKENS, Column
from segmentation_pipeline.core.source_file import (
    SourceDigest,
    SourceHeader,
)
from segmentation_pipeline.core.spark.dialect import (
    OPENS,
    STAYS_OPEN,
    duckdb_number,
    is_plain,
    split_fields,
    unpadded,
    unquoted_value,
)
from segmentation_pipeline.core.spark.files import hadoop_uri, parquet_glob, parquet_scalar

_MALFORMED_ROW_BYTES = 1 << 20  # at most this much of a broken record goes to DuckDB

# --------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class _Spans:
    """Records whose quoted values run over line breaks: first and last physical line."""

    spans: tuple[tuple[int, int], ...] = ()
    unterminated: int | None = None  # line of a quoted value still open at the end of file


class Staging:
    """One CSV read by Spark: physical lines, records, checked values, and the outputs.

    ``write`` produces ``staged/`` (one row per record: line number, typed values, whether
    it is structurally broken or breaks a rule, and for rejected rows the reason);
    ``write_results`` produces ``customers/`` and ``rejects/`` from it.
    """

    def __init__(
        self, session: SparkSession, source: Path, header: SourceHeader, folder: Path
    ) -> None:
        self.session = session
        self.source = source
        self.header = header
        self.folder = folder
        self.spans = _Spans()
        self.n_lines = 0
        self.n_openers = 0
        self.n_crlf = 0  # lines ending with CRLF (Spark splits at LF and keeps the CR)

    # ---------------------------------------------------------------- physical lines

    def lines(self) -> DataFrame:
        """Every physical line with its 1-based line number, without the line break.

        Spark reads the file in blocks, in parallel; within a block,
        monotonically_increasing_id counts lines in order, so a line's number is the lines
        of all earlier blocks plus its position in its block (what RDD.zipWithIndex does,
        kept in the DataFrame API so that Spark Connect runs it too). The same pass counts
        the lines that open a quoted value running over a line break (usually none).
        """
        raw = (
            self.session.read.option("lineSep", "\n")
            .text(hadoop_uri(self.source, glob=True))
            .select(
                F.col("value").alias("raw"),
                F.regexp_replace("value", r"\r\z", "").alias("text"),
                # on the bytes as read: text functions turn bad bytes into U+FFFD
                F.is_valid_utf8("value").alias("utf8"),
                F.col("_metadata.file_block_start").alias("block"),
                F.monotonically_increasing_id().alias("row_id"),
            )
        )
        opens = F.when(F.col("raw").contains('"'), F.col("text").rlike(OPENS))
        blocks = raw.groupBy("block").agg(
            F.count("*").alias("n"),
            F.min("row_id").alias("first"),
            F.count_if(opens).alias("openers"),
            F.count_if(F.col("raw").endswith("\r")).alias("crlf"),
        )
        shift: dict[int, int] = {}
        for block in blocks.orderBy("block").collect():
            shift[block.block] = self.n_lines + 1 - block.first
            self.n_lines += block.n
            self.n_openers += block.openers
            self.n_crlf += block.crlf
        mapping = F.create_map(*[F.lit(v).cast("long") for pair in shift.items() for v in pair])
        return raw.select(
            (F.col("row_id") + mapping[F.col("block")]).alias("line_number"),
            "raw",
            "text",
            "utf8",
            opens.alias("opens"),
        )

    def may_mix_line_endings(self) -> bool:
        """Whether some line ends otherwise than the header (DuckDB's reader, in the local
        engine, stops at such a line; Spark would read on). Counted in the lines' pass; only
        then is the file walked in Python to find the line (a CRLF file without a final line
        break has one line without CR, its last)."""
        with self.source.open("rb") as handle:
            header_crlf = handle.readline().endswith(b"\r\n")
            handle.seek(-1, 2)
            ends_with_break = handle.read(1) == b"\n"
        if not header_crlf:
            return self.n_crlf > 0
        return self.n_crlf < self.n_lines - (0 if ends_with_break else 1)

    # ---------------------------------------------------------------- records

    def records(self, lines: DataFrame) -> DataFrame:
        """Data records: line_number (the first physical line) and text, blank lines skipped.

        A record is one line, except where a quoted value holds line breaks; those (rare)
        records are found from the lines that open a quoted value and joined here.
        """
        data = lines.filter(F.col("line_number") > 1)
        if self.n_openers:
            self.spans = _find_spans(self.session, data, self.n_lines)
        if not self.spans.spans:
            return data.filter(F.col("text") != "").select("line_number", "text", "utf8")
        members = (
            self.session.createDataFrame(
                pa.table(
                    {
                        "first": [first for first, _ in self.spans.spans],
                        "last": [last for _, last in self.spans.spans],
                    }
                )
            )
            .select(
                F.explode(F.sequence("first", "last")).alias("line_number"),
                F.col("first").alias("record_line"),
            )
            .hint("broadcast")
        )
        lines_with_records = data.join(members, "line_number", "left")
        single = lines_with_records.filter(F.col("record_line").isNull() & (F.col("text") != ""))
        joined = (
            lines_with_records.filter(F.col("record_line").isNotNull())
            .groupBy("record_line")
            .agg(
                F.sort_array(F.collect_list(F.struct("line_number", "raw"))).alias("parts"),
                F.bool_and("utf8").alias("utf8"),
            )
            .select(
                F.col("record_line").alias("line_number"),
                F.regexp_replace(
                    F.array_join(F.transform("parts", lambda part: part["raw"]), "\n"),
                    r"\r\z",
                    "",
                ).alias("text"),
                "utf8",
            )
        )
        return single.select("line_number", "text", "utf8").unionByName(joined)

    # ---------------------------------------------------------------- outputs

    def write(self) -> None:
        """``staged/``: every record parsed, checked and typed (one pass, no shuffle)."""
        self._write("staged", _checked_records(self.records(self.lines()), self.header))

    def write_results(self) -> None:
        """``duplicates/``, ``customers/`` and ``rejects/`` from the staged records."""
        staged = self.staged().filter(~F.col("empty"))
        valid = staged.filter(~F.col("rejected"))
        self._write("duplicates", _duplicates(valid))
        duplicates = self._read("duplicates")
        self._write("customers", _unique_customers(valid, duplicates))
        self._write("rejects", _rejects(staged, valid, duplicates))

    def staged(self) -> DataFrame:
        return self._read("staged")

    def _write(self, name: str, frame: DataFrame) -> None:
        frame.write.mode("overwrite").parquet(hadoop_uri(self.folder / name))

    def _read(self, name: str) -> DataFrame:
        return self.session.read.parquet(hadoop_uri(self.folder / name, glob=True))


def _duplicates(valid: DataFrame) -> DataFrame:
    """Ids on more than one valid row: their count, first line, values, and whether the
    values conflict (identical rows collapse into one customer; conflicting ones are all
    rejected, as nothing says which is right)."""
    values = [c.name for c in CANONICAL_COLUMNS if c.name != "customer_id"]
    differs = F.lit(False)
    for name in values:
        differs = differs | (F.min(name) != F.max(name))
    return (
        valid.groupBy("customer_id")
        .agg(
            F.count("*").alias("n_rows"),
            F.min("line_number").alias("line_number"),
            *[F.min(name).alias(name) for name in values],
            differs.alias("conflicting"),
        )
        .filter(F.col("n_rows") > 1)
    )


def _unique_customers(valid: DataFrame, duplicates: DataFrame) -> DataFrame:
    """One row per id: unique valid rows, and each collapsed duplicate at its first line."""
    names = ["line_number", *(c.name for c in CANONICAL_COLUMNS)]
    return (
        valid.join(duplicates.select("customer_id"), "customer_id", "left_anti")
        .select(*names)
        .unionByName(duplicates.filter(~F.col("conflicting")).select(*names))
    )


def _rejects(staged: DataFrame, valid: DataFrame, duplicates: DataFrame) -> DataFrame:
    """What core/ingest.py calls ``_rejects``: rows breaking a rule, with their reason, and
    every row of a conflicting id (its reason is worded when written to rejected_rows)."""
    conflicting = duplicates.filter(F.col("conflicting")).select("customer_id")
    broken_rules = staged.filter(F.col("rejected")).select(
        "line_number",
        F.col("raw_customer_id").alias("customer_id"),
        "column_name",
        "value",
        "reason",
        F.lit(False).alias("conflicting"),
    )
    conflicts = valid.join(conflicting, "customer_id", "left_semi").select(
        "line_number",
        "customer_id",
        F.lit("customer_id").alias("column_name"),
        F.col("customer_id").alias("value"),
        F.lit(None).cast("string").alias("reason"),
        F.lit(True).alias("conflicting"),
    )
    return broken_rules.unionByName(conflicts)


def _find_spans(session: SparkSession, data: DataFrame, last_line: int) -> _Spans:
    """Where quoted values run over line breaks.

    A line opens such a record when, read from outside quotes, it ends inside a quoted
    value. The lines after each opener are fetched (a few at first, more while a value goes
    on) and followed on the driver until the value closes.
    """
    openers = [
        row.line_number
        for row in data.filter("opens").select("line_number").orderBy("line_number").collect()
    ]
    window = 8
    stays_open = _fetch_stays_open(session, data, [o + 1 for o in openers], window, last_line)
    while True:
        spans, unterminated, missing = _follow_openers(openers, stays_open, last_line)
        if missing is None:
            return _Spans(tuple(spans), unterminated)
        window *= 8
        stays_open |= _fetch_stays_open(session, data, [missing], window, last_line)


def _follow_openers(
    openers: list[int], stays_open: dict[int, bool], last_line: int
) -> tuple[list[tuple[int, int]], int | None, int | None]:
    """Walk the openers in file order over the lines fetched so far.

    Returns the spans found, the line of an unterminated quoted value (it runs to the end
    of the file), and the first line that must be fetched to go on (None when done).
    """
    spans: list[tuple[int, int]] = []
    end = 0
    for opener in openers:
        if opener <= end:  # inside the previous record: not an opener after all
            continue
        line = opener + 1
        while line <= last_line and stays_open.get(line, False):
            line += 1
        if line > last_line:
            return spans, opener, None
        if line not in stays_open:
            return spans, None, line
        spans.append((opener, line))
        end = line
    return spans, None, None


def _fetch_stays_open(
    session: SparkSession, data: DataFrame, starts: list[int], window: int, last_line: int
) -> dict[int, bool]:
    """For ``window`` lines from each start: does the line keep a quoted value open?"""
    starts = [start for start in starts if start <= last_line]
    if not starts:
        return {}
    wanted = session.createDataFrame(pa.table({"start": starts})).select(
        F.explode(
            F.sequence("start", F.least(F.col("start") + window - 1, F.lit(last_line)))
        ).alias("line_number")
    )
    rows = (
        data.join(wanted.hint("broadcast"), "line_number", "left_semi")
        .select("line_number", F.col("text").rlike(STAYS_OPEN).alias("open"))
        .collect()
    )
    return {row.line_number: bool(row.open) for row in rows}


def _checked_records(records: DataFrame, header: SourceHeader) -> DataFrame:
    """Records split into fields, checked by the schema's rules, typed (core/ingest.py)."""
    plain = is_plain(F.col("text"))
    fields = split_fields(F.col("text"), plain)
    n_columns = len(header.cells)
    covered = F.aggregate("fields", F.lit(0), lambda total, f: total + F.length(f) + 1)
    broken = (
        ~F.col("utf8")
        | (F.size("fields") != n_columns)
        | (~plain & (covered != F.length("text") + 1))
    )
    with_fields = records.select("line_number", "text", "utf8", fields.alias("fields"))
    raw = {
        c.name: unquoted_value(F.get(F.col("fields"), header.positions[c.name]), plain)
        for c in CANONICAL_COLUMNS
    }
    parsed = with_fields.select(
        "line_number",
        broken.alias("broken"),
        *[value.alias(f"raw_{name}") for name, value in raw.items()],
    ).select(
        "*",
        *[
            duckdb_number(c).alias(f"number_{c.name}")
            for c in CANONICAL_COLUMNS
            if c.kind != "text"
        ],
    )
    checked = parsed.select(
        "*", *[_problem(c).alias(f"problem_{c.name}") for c in CANONICAL_COLUMNS]
    )
    rejected = F.lit(False)
    for c in CANONICAL_COLUMNS:
        rejected = rejected | F.col(f"problem_{c.name}").isNotNull()
    # every column empty (`,,,,`, a spreadsheet's empty row): skipped like a blank line
    empty = F.coalesce(*[F.col(f"raw_{c.name}") for c in CANONICAL_COLUMNS]).isNull()
    return checked.select(
        "line_number",
        "broken",
        empty.alias("empty"),
        rejected.alias("rejected"),
        *[_typed(c).alias(c.name) for c in CANONICAL_COLUMNS],
        *_reject_details(rejected),
    )


def _problem(column: Column) -> SparkColumn:
    """Why a raw value breaks the column's rule (the local engine's reasons), or NULL."""
    raw = F.col(f"raw_{column.name}")
    missing = raw.isNull() | F.lower(unpadded(raw)).isin(list(MISSING_TOKENS))
    if column.kind == "text":
        return F.when(missing, F.lit("missing value"))
    value = F.col(f"number_{column.name}")
    well_formed = value.isNotNull() & (F.abs(value) < F.lit(float("inf")))
    return (
        F.when(well_formed, _range_problem(column, value))
        .when(missing, F.lit("missing value"))
        .otherwise(F.lit("is not a number"))
    )


def _range_problem(column: Column, value: SparkColumn) -> SparkColumn:
    """For a well-formed number: not whole, out of range or below the minimum, else NULL."""
    problem = F.lit(None).cast("string")
    if column.minimum is not None and column.maximum is not None:
        bounds = f"{column.minimum:g} to {column.maximum:g}"
        outside = (value < column.minimum) | (value > column.maximum)
        problem = F.when(outside, F.lit(f"is out of range ({bounds})"))
    elif column.minimum is not None:
        problem = F.when(
            value < column.minimum, F.lit(f"is below the minimum ({column.minimum:g})")
        )
    if column.kind == "integer":
        # value % 1 rather than floor(value): floor gives a BIGINT, which overflows (an error
        # under ANSI mode) for a huge number such as 1e300.
        problem = F.when(value % 1 != 0, F.lit("is not a whole number")).otherwise(problem)
    return problem


def _typed(column: Column) -> SparkColumn:
    """The value in its canonical type, NULL where the column's rule is broken."""
    raw = F.col(f"raw_{column.name}")
    if column.kind == "text":
        return unpadded(raw)
    spark_type = "int" if column.sql_type == "INTEGER" else "double"
    number = F.col(f"number_{column.name}")
    return F.when(F.col(f"problem_{column.name}").isNull(), number.cast(spark_type))


def _reject_details(rejected: SparkColumn) -> list[SparkColumn]:
    """reason, column_name, value and the raw id of a rejected row, as core/ingest.py words
    them ('age: '-5' is out of range (0 to 120); ...'), NULL for accepted rows."""
    parts = []
    first_column = F.lit(None).cast("string")
    first_value = F.lit(None).cast("string")
    for c in reversed(CANONICAL_COLUMNS):
        problem, raw = F.col(f"problem_{c.name}"), F.col(f"raw_{c.name}")
        first_column = F.when(problem.isNotNull(), F.lit(c.name)).otherwise(first_column)
        first_value = F.when(problem.isNotNull(), raw).otherwise(first_value)
    for c in CANONICAL_COLUMNS:
        problem, raw = F.col(f"problem_{c.name}"), F.col(f"raw_{c.name}")
        quoted = F.coalesce(F.concat(F.lit("'"), raw, F.lit("' ")), F.lit(""))
        parts.append(F.when(problem.isNotNull(), F.concat(F.lit(f"{c.name}: "), quoted, problem)))
    return [
        F.when(rejected, F.concat_ws("; ", *parts)).alias("reason"),
        F.when(rejected, first_column).alias("column_name"),
        F.when(rejected, first_value).alias("value"),
        F.when(rejected, F.col("raw_customer_id")).alias("raw_customer_id"),
    ]


def raise_for_malformed_rows(
    con: duckdb.DuckDBPyConnection, source: Path, header: SourceHeader, staging: Staging
) -> int:
    """Stop at the first structurally broken record, worded as the local engine words it;
    otherwise return the number of records (empty rows, skipped, not counted)."""
    n_rows, first_broken = con.execute(
        "SELECT count(*) FILTER (WHERE NOT empty), min(line_number) FILTER (WHERE broken) "
        "FROM read_parquet($path)",
        {"path": parquet_glob(staging.folder / "staged")},
    ).fetchone()
    candidates = [line for line in (first_broken, staging.spans.unterminated) if line]
    if not candidates:
        return int(n_rows)
    line = min(candidates)
    last = next((last for start, last in staging.spans.spans if start == line), line)
    if line == staging.spans.unterminated:
        last = None  # the quoted value runs to the end of the file
    raise _malformed_row_error(con, source, header, staging.folder, line, last)


def _malformed_row_error(
    con: duckdb.DuckDBPyConnection,
    source: Path,
    header: SourceHeader,
    folder: Path,
    line: int,
    last: int | None,
) -> InputError:
    """DuckDB's reader on the header and the broken record alone gives the local engine's
    wording (reason and the row as it shows it); the line is the record's physical line."""
    sample = folder / "malformed_row.csv"
    sample.write_bytes(
        _raw_lines(source, 1, 1) + _raw_lines(source, line, last, _MALFORMED_ROW_BYTES)
    )
    try:
        con.execute(
            f"SELECT * FROM read_csv($path, {ingest.read_options(header)})",  # noqa: S608
            {"path": str(sample)},
        ).fetchall()
    except duckdb.Error as error:
        worded = ingest.csv_error(source, error)
        at = line + worded.line - 2 if worded.line is not None else None
        located = InputError(source, worded.reason, line=at, value=worded.value)
        return ingest.explain_broken_line(source, header, located)
    finally:
        sample.unlink(missing_ok=True)
    text = _raw_lines(source, line, last, _MALFORMED_ROW_BYTES)
    return InputError(
        source,
        f"malformed CSV row: the row does not split into the header's {len(header.cells)} fields",
        line=line,
        value=text.decode("utf-8", "replace").strip(),
    )


def _raw_lines(source: Path, first: int, last: int | None, limit: int = 1 << 20) -> bytes:
    """The bytes of physical lines ``first`` to ``last`` (to the end of file if None), at most
    ``limit`` bytes. A pass over the file on the driver, made only to word one broken record."""
    chunks: list[bytes] = []
    size = 0
    with source.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if number < first:
                continue
            if (last is not None and number > last) or size >= limit:
                break
            chunks.append(line)
            size += len(line)
    return b"".join(chunks)[:limit]


def load_customers(con: duckdb.DuckDBPyConnection, folder: Path) -> None:
    """``customers`` in the local engine's column order and types, in file order."""
    columns = ", ".join(f"CAST({c.name} AS {c.sql_type}) AS {c.name}" for c in CANONICAL_COLUMNS)
    con.execute(
        f"CREATE OR REPLACE TABLE customers AS SELECT {columns} "  # noqa: S608 - fixed names
        "FROM read_parquet($path) ORDER BY line_number",
        {"path": parquet_glob(folder / "customers")},
    )


def record_load(
    con: duckdb.DuckDBPyConnection,
    source: Path,
    header: SourceHeader,
    digest: SourceDigest,
    folder: Path,
    n_rows: int,
    run_id: str,
) -> IngestSummary:
    """The quarantine into ``rejected_rows`` and the load into ``ingest_runs``, in one
    transaction, with the local engine's own helpers (same wording, same columns)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _rejects AS SELECT line_number, customer_id, column_name,"
        " value, reason, conflicting FROM read_parquet($path)",
        {"path": parquet_glob(folder / "rejects")},
    )
    n_collapsed = parquet_scalar(
        con,
        "SELECT sum(n_rows - 1) FROM read_parquet($path) WHERE NOT conflicting",
        folder / "duplicates",
    )
    con.execute("BEGIN TRANSACTION")
    try:
        ingest.write_rejected_rows(con, source, run_id)
        summary = IngestSummary(
            source=str(source),
            source_sha256=digest.sha256,
            size_bytes=digest.size_bytes,
            n_rows_read=n_rows,
            n_customers=con.execute("SELECT count(*) FROM customers").fetchone()[0],
            n_rejected=con.execute("SELECT count(*) FROM _rejects").fetchone()[0],
            n_duplicates_collapsed=n_collapsed,
            columns={name: header.header_for(name) for name in header.positions},
            ignored_columns=header.ignored,
        )
        ingest.record_ingest_run(con, summary, run_id)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS _rejects")
    return summary
