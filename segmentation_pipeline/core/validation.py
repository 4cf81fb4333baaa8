"""Checks of staged customers, run before anything is published.

They re-assert on the loaded table what ingest promises (unique ids, no missing
values, values in range) and hold the run back when too many rows were rejected, so
that a badly broken file cannot replace good published results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from segmentation_pipeline.core import history
from segmentation_pipeline.core.schema import CANONICAL_COLUMNS, Column
from segmentation_pipeline.core.warehouse import has_table

_EXAMPLES = 5


@dataclass(frozen=True)
class CheckOutcome:
    """A check's verdict, a sentence for people, and figures for the UI."""

    passed: bool
    description: str
    metadata: dict[str, float | int | str] = field(default_factory=dict)


def ids_strictly_increasing(
    con: duckdb.DuckDBPyConnection, relation: str, probe_rows: int = 1000
) -> bool:
    """Whether every customer_id of ``relation`` is above the one before it: then no id
    repeats, and no grouping is needed to prove it.

    Exports sorted by a zero-padded id are common. Comparing neighbours took 0.25 s over
    10 million ids, grouping them 0.83-0.92 s. ``lag() OVER ()`` gives each row the row
    before it in one ordering of the whole relation (a single window partition; DuckDB
    runs it as one streaming pass), and a repeated id in any such ordering forces a step
    that is not increasing somewhere between its two rows. The first ``probe_rows`` are
    compared first, so an unsorted file costs almost nothing here. A missing id is never
    "increasing".
    """
    increasing = (
        "SELECT count(*) FILTER (WHERE customer_id IS NULL OR previous >= customer_id) = 0 "
        "FROM (SELECT customer_id, lag(customer_id) OVER () AS previous FROM ({}))"
    )
    head = f"SELECT customer_id FROM ({relation}) LIMIT {int(probe_rows)}"  # noqa: S608 - ours
    if not con.execute(increasing.format(head)).fetchone()[0]:
        return False
    return bool(con.execute(increasing.format(relation)).fetchone()[0])


def unique_customer_ids(con: duckdb.DuckDBPyConnection) -> CheckOutcome:
    """Repeated ids, found by grouping a 64-bit hash of the id (cheap at any size) and then
    the few candidate ids exactly; ids in increasing order need no grouping."""
    if ids_strictly_increasing(con, "SELECT customer_id FROM customers"):
        return CheckOutcome(True, "every customer_id is unique", {"duplicated_ids": 0})
    duplicated = con.execute(
        "SELECT customer_id, count(*) AS n FROM customers WHERE hash(customer_id) IN ("
        "  SELECT key FROM (SELECT hash(customer_id) AS key FROM customers)"
        "  GROUP BY key HAVING count(*) > 1) "
        "GROUP BY customer_id HAVING n > 1 ORDER BY customer_id"
    ).fetchall()
    if duplicated:
        shown = ", ".join(f"{cid!r} ({n} rows)" for cid, n in duplicated[:_EXAMPLES])
        return CheckOutcome(
            False,
            f"{len(duplicated)} customer_id value(s) repeat: {shown}",
            {"duplicated_ids": len(duplicated)},
        )
    return CheckOutcome(True, "every customer_id is unique", {"duplicated_ids": 0})


def required_fields_present(con: duckdb.DuckDBPyConnection) -> CheckOutcome:
    counts = ", ".join(
        f"count(*) FILTER (WHERE {_missing_sql(c)}) AS {c.name}" for c in CANONICAL_COLUMNS
    )
    row = con.execute(f"SELECT {counts} FROM customers").fetchone()  # noqa: S608 - schema
    missing = {c.name: int(n) for c, n in zip(CANONICAL_COLUMNS, row, strict=True)}
    bad = {name: n for name, n in missing.items() if n}
    metadata: dict[str, float | int | str] = {f"missing_{k}": v for k, v in missing.items()}
    if bad:
        shown = ", ".join(f"{name}: {n}" for name, n in bad.items())
        return CheckOutcome(False, f"missing values in required columns ({shown})", metadata)
    return CheckOutcome(True, "no missing values in required columns", metadata)


def _missing_sql(column: Column) -> str:
    """SQL that is true when the column's value is missing: NULL, or text of nothing but
    spaces (``trim`` removes Unicode spaces too).

    A text value that starts with a printable ASCII character other than a space cannot
    trim to nothing, and ids and genders almost all do: comparing that first byte is cheap,
    so ``trim`` runs on the few other values only (0.36 s -> 0.14 s over 10 million rows).
    """
    name = column.name
    if column.kind != "text":
        return f"{name} IS NULL"
    starts_printable = f"{name} >= '!' AND {name} < chr(127)"
    return f"CASE WHEN {starts_printable} THEN false ELSE {name} IS NULL OR trim({name}) = '' END"


def values_in_range(con: duckdb.DuckDBPyConnection) -> CheckOutcome:
    conditions = []
    for column in CANONICAL_COLUMNS:
        if column.minimum is not None:
            conditions.append((column.name, f"{column.name} < {column.minimum}"))
        if column.maximum is not None:
            conditions.append((column.name, f"{column.name} > {column.maximum}"))
        if column.sql_type == "DOUBLE":
            conditions.append((column.name, f"NOT isfinite({column.name})"))
    counts = ", ".join(f"count(*) FILTER (WHERE {cond})" for _, cond in conditions)
    row = con.execute(f"SELECT {counts} FROM customers").fetchone()  # noqa: S608 - schema
    broken: dict[str, int] = {}
    for (name, _), n in zip(conditions, row, strict=True):
        broken[name] = broken.get(name, 0) + int(n)
    metadata: dict[str, float | int | str] = {f"out_of_range_{k}": v for k, v in broken.items()}
    bad = {name: n for name, n in broken.items() if n}
    if bad:
        shown = ", ".join(f"{name}: {n}" for name, n in bad.items())
        return CheckOutcome(False, f"values outside their range ({shown})", metadata)
    return CheckOutcome(True, "every value is inside its range", metadata)


def reject_share_within_limit(
    con: duckdb.DuckDBPyConnection, run_id: str, max_fraction: float
) -> CheckOutcome:
    """The share of rejected rows of this run's load against the configured limit."""
    row = con.execute(
        "SELECT run_id, source, n_rows_read, n_rejected FROM ingest_runs "
        "ORDER BY run_id = $run_id DESC, loaded_at DESC LIMIT 1",
        {"run_id": run_id},
    ).fetchone()
    if row is None:
        return CheckOutcome(False, "no load recorded in ingest_runs")
    load_run_id, source, n_rows, n_rejected = row
    fraction = n_rejected / n_rows if n_rows else 0.0
    metadata: dict[str, float | int | str] = {
        "rows_read": n_rows,
        "rejected_rows": n_rejected,
        "reject_fraction": fraction,
        "max_reject_fraction": max_fraction,
    }
    summary = (
        f"{n_rejected:,} of {n_rows:,} rows of {source} rejected ({fraction:.2%}; "
        f"limit {max_fraction:.2%})"
    )
    if fraction <= max_fraction:
        return CheckOutcome(True, summary, metadata)
    examples = con.execute(
        "SELECT line_number, reason FROM rejected_rows WHERE run_id = $run_id "
        "ORDER BY line_number LIMIT $limit",
        {"run_id": load_run_id, "limit": _EXAMPLES},
    ).fetchall()
    shown = "; ".join(f"{source}, line {line}: {reason}" for line, reason in examples)
    return CheckOutcome(False, f"{summary}. First rejected rows: {shown}", metadata)


def customer_count_kept(
    con: duckdb.DuckDBPyConnection, run_id: str, max_drop: float
) -> CheckOutcome:
    """The staged customers against the latest earlier run of the same file.

    A nightly export with far fewer customers than the night before is more often cut
    short than a customer base that shrank, and published, it would replace the segments
    and their ids with those of a fragment. Runs of other files in between (a one-off
    analysis) do not hide it: the comparison is with the last run that read this file. A
    file never run before is a deliberate switch (the README's own example follows the
    demo data with the Kaggle file): not compared.
    """
    n_customers = con.execute("SELECT count(*) FROM customers").fetchone()[0]
    metadata: dict[str, float | int | str] = {"customers": n_customers, "max_drop": max_drop}
    current = con.execute(
        "SELECT source FROM ingest_runs WHERE run_id = $run_id", {"run_id": run_id}
    ).fetchone()
    has_runs = has_table(con, "segmentation_runs")
    if current is None or not has_runs or history.previous_run_id(con, run_id) is None:
        return CheckOutcome(True, "no previous run to compare the customer count with", metadata)
    source = current[0]
    # Runs before sources were recorded by the path given stored it resolved: a path through
    # a linked folder is the same file as its resolved form.
    previous = con.execute(
        "SELECT run_id, n_customers FROM segmentation_runs "
        "WHERE run_id <> $run_id AND source IN ($source, $resolved) AND n_customers > 0 "
        "ORDER BY finished_at DESC, run_id LIMIT 1",
        {"run_id": run_id, "source": source, "resolved": str(Path(source).resolve())},
    ).fetchone()
    if previous is None:
        return CheckOutcome(True, f"no earlier run of {source}: not compared", metadata)
    previous_run_id, n_previous = previous
    drop = max(0.0, 1 - n_customers / n_previous)
    metadata.update(previous_customers=n_previous, previous_run_id=previous_run_id, drop=drop)
    if n_customers == n_previous:
        change = "the same count"
    elif drop > 0:
        change = f"{drop:.1%} fewer"
    else:
        change = f"{n_customers / n_previous - 1:.1%} more"
    summary = (
        f"customer count {n_customers:,} against {n_previous:,} in the last run "
        f"{previous_run_id} of the same file ({change}; limit {max_drop:.0%} fewer)"
    )
    if drop <= max_drop:
        return CheckOutcome(True, summary, metadata)
    return CheckOutcome(
        False,
        f"{summary}: is the file cut short? To publish it anyway, raise max_customer_drop "
        "(`--max-customer-drop 1`)",
        metadata,
    )


def staged_in_run(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """Whether this run loaded its customers into its work database (``raw_customers``
    records each load in ``ingest_runs``). A run that did not (re-executed from a later step,
    or a selection without ``raw_customers``) holds a copy of the published warehouse, whose
    customers are an earlier run's: checked, fitted and published, they would pass as new."""
    return has_table(con, "ingest_runs") and bool(
        con.execute(
            "SELECT count(*) FROM ingest_runs WHERE run_id = $run_id", {"run_id": run_id}
        ).fetchone()[0]
    )


def run_is_complete(con: duckdb.DuckDBPyConnection, run_id: str) -> CheckOutcome:
    """Everything published belongs to this run: as many assignments of this run as customers
    (assignments are made from the customers table, one per row) and none of another run,
    each segment a profile, and the run recorded. A partial re-materialization (say, only
    the ingest) must not publish new customers next to old segments."""
    problems = []
    n_customers, n_assigned, n_other_runs = con.execute(
        "SELECT (SELECT count(*) FROM customers), "
        "(SELECT count(*) FROM segment_assignments WHERE run_id = $run_id), "
        "(SELECT count(*) FROM segment_assignments WHERE run_id <> $run_id)",
        {"run_id": run_id},
    ).fetchone()
    if n_assigned != n_customers or n_other_runs:
        problems.append(
            f"{n_customers:,} customers but {n_assigned:,} assignments of this run "
            f"and {n_other_runs:,} of other runs"
        )
    unnamed = con.execute(
        "SELECT count(*) FROM (SELECT DISTINCT segment_id FROM segment_assignments) s "
        "ANTI JOIN (SELECT segment_id FROM segment_profiles WHERE run_id = $run_id) p "
        "USING (segment_id)",
        {"run_id": run_id},
    ).fetchone()[0]
    if unnamed:
        problems.append(f"{unnamed} segment(s) have no profile for this run")
    recorded = con.execute(
        "SELECT count(*) FROM segmentation_runs WHERE run_id = $run_id AND n_customers IS NOT NULL",
        {"run_id": run_id},
    ).fetchone()[0]
    if not recorded:
        problems.append("the run is not recorded in segmentation_runs")
    if problems:
        return CheckOutcome(False, "; ".join(problems))
    return CheckOutcome(True, f"{n_customers:,} customers, all assigned and profiled")
