"""Load a customer CSV into the work database: strict parse, row rules, quarantine.

DuckDB reads the file with a pinned dialect (no sniffing), every column as text, so
that no value is silently coerced. The row rules of the schema are then applied in SQL
over the whole load (never a count-only query, which could skip bad values). Rows that
break a rule go to ``rejected_rows`` with their physical line number and a reason;
exact duplicate rows collapse into one; ids that appear with conflicting values are
rejected on every line where they occur, since nothing says which line is right.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from segmentation_pipeline.core.errors import InputError
from segmentation_pipeline.core.schema import (
    CANONICAL_COLUMNS,
    MISSING_TOKENS,
    VALUE_PADDING,
    Column,
)
from segmentation_pipeline.core.source_file import (
    SourceHeader,
    check_source_file,
    digest_source,
    explain_mixed_line_endings,
    explain_undecodable_line,
    explain_whitespace_line,
    physical_line,
    read_header,
    record_start_lines,
    scan_line_layout,
)
from segmentation_pipeline.core.sql_text import literal
from segmentation_pipeline.core.validation import ids_strictly_increasing

# The reader's buffer size, set explicitly. Each buffer becomes one batch of the parallel
# CREATE TABLE AS, and each batch ends in a partial row group. With DuckDB's default size the
# partial row groups came out small enough for the next CHECKPOINT to merge them, rewriting
# the staging table: 1.3 s of 10 million rows (measured; the table alone took 120 MB on disk
# instead of 77 MB). With 8 MiB buffers (about 320,000 rows of a typical customer file) the
# row groups are left as written; 1 million rows load as fast as before. Same rows, same order.
_CSV_BUFFER_BYTES = 8 * 1024 * 1024
# A row whose columns are all empty (`,,,,`: the formatted but empty rows a spreadsheet
# exports) is skipped like a blank line: it holds no customer, so it is neither a customer
# nor a rejected row. The staging table marks it with an empty rejected_raw list.
EMPTY_ROW = "coalesce(len(rejected_raw) = 0, false)"

CSV_OPTIONS = (
    "header = true, delim = ',', quote = '\"', escape = '\"', auto_detect = false, "
    "strict_mode = true, null_padding = false, encoding = 'utf-8', "
    f"buffer_size = {_CSV_BUFFER_BYTES}"
)
_MAX_LINES_IN_REASON = 10
NOT_UTF8 = "not UTF-8 text"
_LONGEST_MISSING_TOKEN = max(len(token) for token in MISSING_TOKENS)


@dataclass(frozen=True)
class IngestSummary:
    """What one load did, for metadata, checks and the ``ingest_runs`` table."""

    source: str
    source_sha256: str
    size_bytes: int
    n_rows_read: int
    n_customers: int
    n_rejected: int
    n_duplicates_collapsed: int
    columns: dict[str, str] = field(default_factory=dict)
    ignored_columns: tuple[str, ...] = ()

    @property
    def reject_fraction(self) -> float:
        """Share of data rows quarantined; 0 for a file without data rows."""
        return self.n_rejected / self.n_rows_read if self.n_rows_read else 0.0


def stage_customers(con: duckdb.DuckDBPyConnection, source: Path, run_id: str) -> IngestSummary:
    """Load ``source`` into ``customers``, quarantine bad rows, record the load.

    Raises InputError for file-level problems; the work database is then left without a
    new ``customers`` table, and nothing published is touched.
    """
    source = Path(source)
    check_source_file(source)
    header = read_header(source)
    with ThreadPoolExecutor(max_workers=1) as pool:
        digest_future = pool.submit(digest_source, source)
        _load_staging_table(con, source, header)
        digest = digest_future.result()
    n_records, n_rows = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE NOT {EMPTY_ROW}) FROM _staged_rows"  # noqa: S608
    ).fetchone()
    if n_rows == 0:
        raise InputError(source, "the file has a header but no customer rows", line=2)
    # Row positions come from rowid, which is only a plain 0-based position for committed
    # tables (inside a transaction new rows get provisional ids), so all staging happens
    # before the transaction that records the load. `customers` is written by one statement,
    # atomic on its own and much faster outside a transaction, whose local storage would
    # copy millions of rows once more at COMMIT.
    try:
        _group_duplicate_ids(con)
        n_rejected = _locate_rejects(con, source, n_records)
        n_duplicate_ids = _scalar(con, "SELECT count(*) FROM _duplicate_ids")
        if n_rejected == 0 and n_duplicate_ids == 0 and n_rows == n_records:
            _promote_staging_to_customers(con)
        else:
            _write_customers(con)
    except BaseException:
        _drop_staging(con)
        raise
    con.execute("BEGIN TRANSACTION")
    try:
        write_rejected_rows(con, source, run_id)
        n_customers = _scalar(con, "SELECT count(*) FROM customers")
        n_collapsed = _scalar(
            con, "SELECT sum(n_rows - 1) FROM _duplicate_ids WHERE NOT conflicting"
        )
        summary = IngestSummary(
            source=str(source),
            source_sha256=digest.sha256,
            size_bytes=digest.size_bytes,
            n_rows_read=n_rows,
            n_customers=n_customers,
            n_rejected=n_rejected,
            n_duplicates_collapsed=n_collapsed,
            columns={name: header.header_for(name) for name in header.positions},
            ignored_columns=header.ignored,
        )
        record_ingest_run(con, summary, run_id)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        _drop_staging(con)
    return summary


def _drop_staging(con: duckdb.DuckDBPyConnection) -> None:
    for table in ("_rejects", "_duplicate_ids", "_staged_rows"):
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _load_staging_table(con: duckdb.DuckDBPyConnection, source: Path, header: SourceHeader) -> None:
    """Parse and check the whole file in one pass; DuckDB's strict reader names the line of a
    structurally broken row.

    Every value is read as text and converted here, so no value is coerced silently. The
    staging table keeps one row per data row, in file order (its rowid is the row's
    position, used for line numbers): the typed values, and ``rejected_raw``, the row's raw
    text as a list for a row that breaks a rule, NULL otherwise (reasons are worked out again
    from it, for those few rows only). One nullable column instead of a flag and a column
    per raw value: at 10 million rows, writing the six mostly empty columns cost 2.7 s.
    """
    position = {c.name: f"c{header.positions[c.name]}" for c in CANONICAL_COLUMNS}
    raw = ", ".join(f"{position[c.name]} AS raw_{c.name}" for c in CANONICAL_COLUMNS)
    rejected = " OR ".join(f"problem_{c.name} IS NOT NULL" for c in CANONICAL_COLUMNS)
    typed = ", ".join(f"{_typed_sql(c)} AS {c.name}" for c in CANONICAL_COLUMNS)
    raw_values = ", ".join(f"raw_{c.name}" for c in CANONICAL_COLUMNS)
    sql = f"""
        CREATE OR REPLACE TABLE _staged_rows AS
        WITH raw AS (SELECT {raw} FROM read_csv($source, {read_options(header)})),
             {_checked_ctes("raw")},
             flagged AS (SELECT *, ({rejected}) AS rejected FROM checked)
        SELECT {typed},
               CASE WHEN coalesce({raw_values}) IS NULL THEN []
                    WHEN rejected THEN [{raw_values}] END AS rejected_raw
        FROM flagged
    """  # noqa: S608 - identifiers are generated positions, the path is a bound parameter
    try:
        con.execute(sql, {"source": str(source)})
    except duckdb.Error as error:
        worded = csv_error(source, error)
        if worded.line is not None:  # DuckDB counts a multi-line record as one line
            line = physical_line(source, worded.line)
            located = InputError(source, worded.reason, line=line, value=worded.value)
            worded = explain_broken_line(source, header, located)
        elif "state machine reached an invalid state" in worded.reason:
            worded = explain_mixed_line_endings(source) or worded
        raise worded from None


def _checked_ctes(relation: str) -> str:
    """CTEs `parsed` (numbers, trimmed text) and `checked` (why each value breaks its rule)
    over a relation with raw_<column> text columns.

    A number is cast as it is first: the cast already accepts ASCII whitespace around it,
    so the padding (Unicode spaces such as a no-break space, zero-width characters) is
    stripped only from the values that fail. At 10 million rows that halves the parse of
    each number column.
    """
    numbers = ", ".join(
        f"coalesce(TRY_CAST(raw_{c.name} AS DOUBLE), TRY_CAST({unpadded(f'raw_{c.name}')} AS "
        f"DOUBLE)) AS number_{c.name}"
        for c in CANONICAL_COLUMNS
        if c.kind != "text"
    )
    texts = ", ".join(
        f"{unpadded(f'raw_{c.name}')} AS trimmed_{c.name}"
        for c in CANONICAL_COLUMNS
        if c.kind == "text"
    )
    problems = ", ".join(f"{_problem_sql(c)} AS problem_{c.name}" for c in CANONICAL_COLUMNS)
    parsed = f"parsed AS (SELECT *, {numbers}, {texts} FROM {relation})"  # noqa: S608 - fixed names
    return f"{parsed}, checked AS (SELECT *, {problems} FROM parsed)"  # noqa: S608


def unpadded(text: str) -> str:
    """SQL for the text value without the padding around it (schema.VALUE_PADDING).

    ``trim(text, characters)`` with that set costs several times DuckDB's plain ``trim``, so
    it runs only on values that start or end with anything but a printable ASCII character
    (a space included); ids and genders almost never do, and need no trimming at all.
    """
    plain = f"{text}[1] BETWEEN '!' AND '~' AND {text}[-1] BETWEEN '!' AND '~'"
    return f"CASE WHEN {plain} THEN {text} ELSE trim({text}, {literal(VALUE_PADDING)}) END"


def read_options(header: SourceHeader) -> str:
    """The pinned reader options with every column of the header read as text."""
    columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(header.cells)))
    return f"{CSV_OPTIONS}, columns = {{{columns}}}"


def _problem_sql(column: Column) -> str:
    """SQL giving why a raw text value breaks the column's rule, or NULL when it is fine.

    Numbers go through DuckDB's DOUBLE cast, which is strict about letters and separators
    but also takes '1_000' and 'inf': those are refused here explicitly.
    """
    raw = f"raw_{column.name}"
    tokens = ", ".join(f"'{token}'" for token in MISSING_TOKENS)
    missing = f"{raw} IS NULL OR lower({unpadded(raw)}) IN ({tokens})"
    if column.kind == "text":
        # Only a short value can be a missing-value token: lower() runs on those alone
        # (a CASE evaluates each branch only for the rows that reach it).
        trimmed = f"trimmed_{column.name}"
        return (
            f"CASE WHEN {trimmed} IS NULL THEN 'missing value' "
            f"WHEN length({trimmed}) > {_LONGEST_MISSING_TOKEN} THEN NULL "
            f"WHEN lower({trimmed}) IN ({tokens}) THEN 'missing value' END"
        )
    value = f"number_{column.name}"
    # The common case first: a well-formed number is only checked against its range.
    checks = []
    if column.kind == "integer":
        checks.append(f"WHEN {value} <> floor({value}) THEN 'is not a whole number'")
    if column.minimum is not None and column.maximum is not None:
        bounds = f"{column.minimum:g} to {column.maximum:g}"
        checks.append(
            f"WHEN {value} NOT BETWEEN {column.minimum} AND {column.maximum} "
            f"THEN 'is out of range ({bounds})'"
        )
    elif column.minimum is not None:
        checks.append(
            f"WHEN {value} < {column.minimum} THEN 'is below the minimum ({column.minimum:g})'"
        )
    well_formed = f"{value} IS NOT NULL AND isfinite({value}) AND NOT contains({raw}, '_')"
    cases = [
        f"WHEN {well_formed} THEN CASE {' '.join(checks)} END",
        f"WHEN {missing} THEN 'missing value'",
        "ELSE 'is not a number'",
    ]
    return f"CASE {' '.join(cases)} END"


def _typed_sql(column: Column) -> str:
    """The value in its canonical type, NULL where the column's rule is broken."""
    if column.kind == "text":
        return f"trimmed_{column.name}"
    return (
        f"CASE WHEN problem_{column.name} IS NULL "
        f"THEN CAST(number_{column.name} AS {column.sql_type}) END"
    )


def _group_duplicate_ids(con: duckdb.DuckDBPyConnection) -> None:
    """Ids on more than one valid row: exact duplicates collapse, conflicting ids are marked.

    Candidates are found by grouping on a 64-bit hash of the id (much cheaper than grouping
    millions of strings); only those few rows are then grouped exactly. Ids in increasing
    order cannot repeat, so a sorted file skips the grouping (the table stays empty).
    """
    value_columns = [c.name for c in CANONICAL_COLUMNS if c.name != "customer_id"]
    firsts = ", ".join(f"min({name}) AS {name}" for name in value_columns)
    differs = " OR ".join(f"min({name}) <> max({name})" for name in value_columns)
    valid_ids = "SELECT customer_id FROM _staged_rows WHERE rejected_raw IS NULL"
    candidates = (
        "false"
        if ids_strictly_increasing(con, valid_ids)
        else f"hash(customer_id) IN (SELECT key FROM (SELECT hash(customer_id) AS key "  # noqa: S608
        f"FROM ({valid_ids})) GROUP BY key HAVING count(*) > 1)"
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _duplicate_ids AS
        SELECT customer_id, count(*) AS n_rows, {firsts}, ({differs}) AS conflicting
        FROM _staged_rows
        WHERE rejected_raw IS NULL AND {candidates}
        GROUP BY customer_id HAVING count(*) > 1
    """)  # noqa: S608 - generated from the fixed schema


def _promote_staging_to_customers(con: duckdb.DuckDBPyConnection) -> None:
    """A clean file (the usual case): the staging table becomes `customers` without a copy."""
    con.execute("DROP TABLE IF EXISTS customers")
    con.execute("ALTER TABLE _staged_rows DROP COLUMN rejected_raw")
    con.execute("ALTER TABLE _staged_rows RENAME TO customers")


def _write_customers(con: duckdb.DuckDBPyConnection) -> None:
    """The clean customer table, one row per id (file order, collapsed duplicates last)."""
    names = ", ".join(c.name for c in CANONICAL_COLUMNS)
    con.execute(f"""
        CREATE OR REPLACE TABLE customers AS
        SELECT {names} FROM _staged_rows s ANTI JOIN _duplicate_ids d USING (customer_id)
        WHERE s.rejected_raw IS NULL
        UNION ALL
        SELECT {names} FROM _duplicate_ids WHERE NOT conflicting
    """)  # noqa: S608 - generated from the fixed schema


def _locate_rejects(con: duckdb.DuckDBPyConnection, source: Path, n_records: int) -> int:
    """Collect the rows that break a rule, with reasons and line numbers; return how many.
    ``n_records`` counts every record the reader returned, empty rows included."""
    problem_parts = ", ".join(
        f"CASE WHEN problem_{c.name} IS NOT NULL THEN '{c.name}: ' "
        f"|| coalesce('''' || raw_{c.name} || ''' ', '') || problem_{c.name} END"
        for c in CANONICAL_COLUMNS
    )
    first_column = " ".join(
        f"WHEN problem_{c.name} IS NOT NULL THEN '{c.name}'" for c in CANONICAL_COLUMNS
    )
    first_value = " ".join(
        f"WHEN problem_{c.name} IS NOT NULL THEN raw_{c.name}" for c in CANONICAL_COLUMNS
    )
    raw = ", ".join(
        f"rejected_raw[{i}] AS raw_{c.name}" for i, c in enumerate(CANONICAL_COLUMNS, start=1)
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _rejects AS
        WITH bad AS (SELECT rowid AS row_index, {raw} FROM _staged_rows
                     WHERE rejected_raw IS NOT NULL AND NOT {EMPTY_ROW}),
             {_checked_ctes("bad")}
        SELECT row_index, raw_customer_id AS customer_id,
               CASE {first_column} END AS column_name,
               CASE {first_value} END AS value,
               concat_ws('; ', {problem_parts}) AS reason,
               false AS conflicting
        FROM checked
        UNION ALL
        SELECT rowid, customer_id, 'customer_id', customer_id, NULL, true
        FROM _staged_rows
        WHERE rejected_raw IS NULL AND customer_id IN
            (SELECT customer_id FROM _duplicate_ids WHERE conflicting)
    """)  # noqa: S608 - generated from the fixed schema
    _add_line_numbers(con, source, n_records)
    return _scalar(con, "SELECT count(*) FROM _rejects")


def write_rejected_rows(con: duckdb.DuckDBPyConnection, source: Path, run_id: str) -> None:
    """Replace this run's quarantine rows; earlier runs' rows stay as history."""
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS rejected_rows (
            run_id VARCHAR, line_number BIGINT, reason VARCHAR, source VARCHAR,
            column_name VARCHAR, value VARCHAR, customer_id VARCHAR)
        """
    )
    con.execute("DELETE FROM rejected_rows WHERE run_id = $run_id", {"run_id": run_id})
    con.execute(
        f"""
        INSERT INTO rejected_rows
        SELECT $run_id, line_number,
               CASE WHEN conflicting THEN
                   'customer_id: ''' || customer_id || ''' conflicting duplicate, the same id '
                   || 'has different values on lines '
                   || array_to_string(list_slice(list(line_number) OVER (
                        PARTITION BY customer_id, conflicting ORDER BY line_number
                        ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING),
                        1, {_MAX_LINES_IN_REASON}), ', ')
               ELSE reason END,
               $source, column_name, value, customer_id
        FROM _rejects ORDER BY line_number
        """,  # noqa: S608 - only a constant is formatted in
        {"run_id": run_id, "source": str(source)},
    )


def _add_line_numbers(con: duckdb.DuckDBPyConnection, source: Path, n_rows: int) -> None:
    """Turn row positions into physical line numbers of the file.

    Row i (0-based) starts on line i + 2 (after the header), moved down by every blank
    line DuckDB skipped before it; when quoted fields hold newlines, the file is walked for
    the rows' starting lines instead. They do exactly when the file has more lines than the
    header, the rows and the blank lines: a quoted value over k line breaks adds k lines and
    at most k - 1 blank ones (its first and last lines hold its quotes), so one such value
    is enough to tell, whether or not the last line ends with a line break.
    """
    con.execute("ALTER TABLE _rejects ADD COLUMN line_number BIGINT")
    if _scalar(con, "SELECT count(*) FROM _rejects") == 0:
        return
    con.execute("UPDATE _rejects SET line_number = row_index + 2")
    layout = scan_line_layout(source)
    if layout.line_count > n_rows + 1 + len(layout.blank_lines):
        # Quoted values span lines (rare): walk the file for where the rejected rows start.
        rows = [r for (r,) in con.execute("SELECT DISTINCT row_index FROM _rejects").fetchall()]
        starts = record_start_lines(source, rows)
        con.execute(
            "UPDATE _rejects SET line_number = s.line FROM "
            "(SELECT unnest($rows) AS row_index, unnest($lines) AS line) AS s "
            "WHERE s.row_index = _rejects.row_index",
            {"rows": list(starts), "lines": list(starts.values())},
        )
    elif layout.blank_lines:
        # The j-th blank line (1-based) at line b displaces every row whose unshifted line
        # number is at least b - j + 1.
        thresholds = [b - j for j, b in enumerate(layout.blank_lines)]
        con.execute(
            "UPDATE _rejects SET line_number = line_number + "
            "len(list_filter($thresholds, lambda t: t <= line_number))",
            {"thresholds": thresholds},
        )


def record_ingest_run(con: duckdb.DuckDBPyConnection, summary: IngestSummary, run_id: str) -> None:
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS ingest_runs (
            run_id VARCHAR, loaded_at TIMESTAMPTZ, source VARCHAR, source_sha256 VARCHAR,
            size_bytes BIGINT, n_rows_read BIGINT, n_customers BIGINT, n_rejected BIGINT,
            n_duplicates_collapsed BIGINT)
        """
    )
    con.execute("DELETE FROM ingest_runs WHERE run_id = $run_id", {"run_id": run_id})
    con.execute(
        "INSERT INTO ingest_runs VALUES ($run_id, now(), $source, $sha, $size, $rows, "
        "$customers, $rejected, $duplicates)",
        {
            "run_id": run_id,
            "source": summary.source,
            "sha": summary.source_sha256,
            "size": summary.size_bytes,
            "rows": summary.n_rows_read,
            "customers": summary.n_customers,
            "rejected": summary.n_rejected,
            "duplicates": summary.n_duplicates_collapsed,
        },
    )


def explain_broken_line(source: Path, header: SourceHeader, error: InputError) -> InputError:
    """DuckDB's error at a physical line, explained from the line's bytes where they tell
    more: the column of a byte that is not UTF-8, or a line of only spaces."""
    if error.line is None:
        return error
    if NOT_UTF8 in error.reason:
        return explain_undecodable_line(source, error.line, header) or error
    return explain_whitespace_line(source, error.line) or error


def csv_error(source: Path, error: duckdb.Error) -> InputError:
    """Reword DuckDB's reader error as an InputError that names the line and the reason."""
    message = str(error)
    line_match = re.search(r"CSV Error on Line: (\d+)", message)
    # "Original Line: <row, possibly over several lines>\n<reason>\n\nPossible fixes: ..."
    block = re.search(r"Original Line: ?(.*?)(?:\nPossible|$)", message, flags=re.DOTALL)
    lines = [text.strip() for text in block.group(1).splitlines()] if block else []
    lines = [text for text in lines if text]
    reason = lines[-1] if lines else message.strip().splitlines()[0]
    original = " ".join(lines[:-1]) if len(lines) > 1 else None
    if "not utf-8 encoded" in reason.lower():
        reason = f"{NOT_UTF8} (invalid byte sequence); save the file as UTF-8"
    return InputError(
        source,
        f"malformed CSV row: {reason}",
        line=int(line_match.group(1)) if line_match else None,
        value=original,
    )


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
