"""Run history in the warehouse: centroids, stable ids, assignments over time, migrations.

Every run adds to the history instead of replacing it, so the warehouse can answer
"which segment was this customer in last month" and "how many customers moved from
segment 2 to segment 5 last night". The previous run is the latest one recorded in
``segmentation_runs``; the work database starts as a copy of the published one, so the
history is there when a run begins.

Each run's assignments are written once, into their own table in the
``assignment_history`` schema (named by the run id), and kept there as that run's history:
``segment_assignments`` is a view of the current run's table, ``customer_segments_history``
a view over all the kept tables. Copying every run's assignments into one history table
took 1.4 s of a 10-million-customer run; keeping a run is now free, and dropping an old
one is a DROP TABLE instead of a DELETE from a table of hundreds of millions of rows.
Once a run is no longer the current one, its table keeps only integer customer keys and
segment ids (see ``history_keys``): a tenth of the size, which every later run copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np

from segmentation_pipeline.core import history_keys, workers
from segmentation_pipeline.core.alignment import align_segment_ids, ari_from_contingency
from segmentation_pipeline.core.features import FeatureScaling
from segmentation_pipeline.core.selection import CANDIDATE_COLUMNS, Candidate
from segmentation_pipeline.core.sql_text import identifier, literal
from segmentation_pipeline.core.warehouse import storable

ASSIGNMENT_HISTORY_SCHEMA = "assignment_history"

HISTORY_DDL = (
    """CREATE TABLE IF NOT EXISTS segmentation_runs (
        run_id VARCHAR, finished_at TIMESTAMPTZ, source VARCHAR, source_sha256 VARCHAR,
        n_customers BIGINT, n_rejected BIGINT, algorithm VARCHAR, n_segments INTEGER,
        features VARCHAR, silhouette DOUBLE, davies_bouldin DOUBLE, calinski_harabasz DOUBLE,
        inertia DOUBLE, stability DOUBLE, ari_vs_previous DOUBLE, previous_run_id VARCHAR,
        selection_rule VARCHAR, seed INTEGER, sample_size BIGINT, engine VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS model_candidates (
        run_id VARCHAR, algorithm VARCHAR, k INTEGER, silhouette DOUBLE, davies_bouldin DOUBLE,
        calinski_harabasz DOUBLE, inertia DOUBLE, stability DOUBLE, selected BOOLEAN)""",
    """CREATE TABLE IF NOT EXISTS segment_centroids (
        run_id VARCHAR, segment_id INTEGER, feature VARCHAR, centroid DOUBLE,
        centroid_scaled DOUBLE, outlier_distance DOUBLE)""",
    f"CREATE SCHEMA IF NOT EXISTS {ASSIGNMENT_HISTORY_SCHEMA}",
    """CREATE TABLE IF NOT EXISTS segment_migrations (
        run_id VARCHAR, previous_run_id VARCHAR, from_segment_id INTEGER,
        to_segment_id INTEGER, n_customers BIGINT)""",
)


@dataclass(frozen=True)
class PreviousModel:
    """The last published run's segments, as needed to keep their ids."""

    run_id: str
    segment_ids: tuple[int, ...]
    centroids: np.ndarray  # original units, rows in segment_ids order


def ensure_history_tables(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in HISTORY_DDL:
        con.execute(ddl)


def previous_run_id(con: duckdb.DuckDBPyConnection, run_id: str) -> str | None:
    """The latest run recorded before this one, if any."""
    row = con.execute(
        "SELECT run_id FROM segmentation_runs WHERE run_id <> $run_id "
        "ORDER BY finished_at DESC, run_id LIMIT 1",
        {"run_id": run_id},
    ).fetchone()
    return row[0] if row else None


def previous_model(
    con: duckdb.DuckDBPyConnection, run_id: str, features: Sequence[str]
) -> PreviousModel | None:
    """The previous run's centroids, when it used the same features (else ids can't match)."""
    previous = previous_run_id(con, run_id)
    if previous is None:
        return None
    rows = con.execute(
        "SELECT segment_id, feature, centroid FROM segment_centroids WHERE run_id = $run_id",
        {"run_id": previous},
    ).fetchall()
    if not rows or {feature for _, feature, _ in rows} != set(features):
        return None
    centroids: dict[int, dict[str, float]] = {}
    for segment_id, feature, centroid in rows:
        centroids.setdefault(int(segment_id), {})[feature] = float(centroid)
    segment_ids = tuple(sorted(centroids))
    return PreviousModel(
        run_id=previous,
        segment_ids=segment_ids,
        centroids=np.array(
            [[centroids[i][f] for f in features] for i in segment_ids], dtype=np.float64
        ),
    )


def next_free_segment_id(con: duckdb.DuckDBPyConnection) -> int:
    """Ids are never reused: a retired segment's id stays retired."""
    row = con.execute("SELECT max(segment_id) FROM segment_centroids").fetchone()
    return int(row[0]) + 1 if row and row[0] is not None else 1


def stable_segment_ids(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    scaling: FeatureScaling,
    centroids_scaled: np.ndarray,
    max_distance: float,
) -> list[int]:
    """Ids for the new centroids: a segment that is still there keeps its id.

    The matching needs SciPy, which this process does not import under `segmentation
    run` (0.5 s); the worker server has it loaded (see ``workers``).
    """
    previous = previous_model(con, run_id, scaling.features)
    if previous is None:  # nothing to match: fresh ids, no SciPy
        return align_segment_ids(
            centroids_scaled, None, None, next_free_segment_id(con), max_distance
        )
    return workers.call(
        align_segment_ids,
        centroids_scaled,
        scaling.to_scaled(previous.centroids),
        list(previous.segment_ids),
        next_free_segment_id(con),
        max_distance,
    )


def record_model(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    scaling: FeatureScaling,
    segment_ids: Sequence[int],
    centroids_scaled: np.ndarray,
    thresholds: np.ndarray,
    candidates: Sequence[Candidate],
) -> None:
    """Centroids (scaled and original units) and all candidates, as rows of this run."""
    original = scaling.to_original(centroids_scaled)
    rows = [
        (
            run_id,
            int(segment_id),
            feature,
            float(original[i, j]),
            float(centroids_scaled[i, j]),
            float(thresholds[i]),
        )
        for i, segment_id in enumerate(segment_ids)
        for j, feature in enumerate(scaling.features)
    ]
    con.execute("DELETE FROM segment_centroids WHERE run_id = $run_id", {"run_id": run_id})
    con.executemany("INSERT INTO segment_centroids VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.execute("DELETE FROM model_candidates WHERE run_id = $run_id", {"run_id": run_id})
    placeholders = ", ".join("?" for _ in range(len(CANDIDATE_COLUMNS) + 1))
    con.executemany(
        f"INSERT INTO model_candidates VALUES ({placeholders})",  # noqa: S608 - placeholders only
        [
            (run_id, *(storable(getattr(candidate, name)) for name in CANDIDATE_COLUMNS))
            for candidate in candidates
        ],
    )


def assignments_table(run_id: str) -> str:
    """The qualified name of the table holding ``run_id``'s assignments."""
    return f"{ASSIGNMENT_HISTORY_SCHEMA}.{identifier(run_id)}"


def prepare_assignment_history(con: duckdb.DuckDBPyConnection) -> None:
    """Make the history ready for a run's assignments; idempotent, one transaction.

    A warehouse written before the history had one table per run (one
    ``customer_segments_history`` table and a ``segment_assignments`` table) is converted,
    once, without losing a run.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {ASSIGNMENT_HISTORY_SCHEMA}")
        _convert_single_table_history(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def key_past_runs(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """Store every run but ``run_id`` against customer keys (see ``history_keys``).

    Only the previous run needs it on a nightly run; older ones were keyed by the runs
    after them, and a run interrupted before this point is keyed by the next. Then
    deletes keys no kept run uses any more, when there are many; returns how many.
    """
    keyed = []
    for run in archived_runs(con):
        if run == run_id:
            continue
        if not history_keys.is_keyed(_columns(con, run)):
            history_keys.key_run(con, ASSIGNMENT_HISTORY_SCHEMA, run)
        keyed.append(assignments_table(run))
    return history_keys.drop_unused_keys(con, keyed)


def history_row_count(con: duckdb.DuckDBPyConnection) -> int:
    """Rows of ``customer_segments_history``, from its tables (the view joins the keys)."""
    return sum(
        con.execute(f"SELECT count(*) FROM {assignments_table(run)}").fetchone()[0]  # noqa: S608
        for run in archived_runs(con)
    )


def archived_runs(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The runs whose assignments the warehouse holds, in name order."""
    return [
        row[0]
        for row in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = $schema ORDER BY table_name",
            {"schema": ASSIGNMENT_HISTORY_SCHEMA},
        ).fetchall()
    ]


def _columns(con: duckdb.DuckDBPyConnection, run_id: str) -> list[str]:
    return [
        row[0]
        for row in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
            "AND schema_name = $schema AND table_name = $table ORDER BY column_index",
            {"schema": ASSIGNMENT_HISTORY_SCHEMA, "table": run_id},
        ).fetchall()
    ]


def _table_type(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """'BASE TABLE', 'VIEW' or None for a relation in the main schema."""
    row = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_catalog = "
        "current_database() AND table_schema = 'main' AND table_name = $name",
        {"name": name},
    ).fetchone()
    return row[0] if row else None


def _convert_single_table_history(con: duckdb.DuckDBPyConnection) -> None:
    """Split an older warehouse's history tables into one table per run (once).

    The single ``customer_segments_history`` table holds every kept run; the
    ``segment_assignments`` table the last one (already in the history, unless the history
    was lost). A run that already has its table keeps it.
    """
    for legacy in ("customer_segments_history", "segment_assignments"):
        if _table_type(con, legacy) != "BASE TABLE":
            continue
        runs = con.execute(f"SELECT DISTINCT run_id FROM {legacy} ORDER BY run_id").fetchall()  # noqa: S608
        for (run,) in runs:
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {assignments_table(run)} AS "  # noqa: S608
                f"SELECT customer_id, segment_id FROM {legacy} WHERE run_id = $run_id",
                {"run_id": run},
            )
        con.execute(f"DROP TABLE {legacy}")


def define_history_views(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """``segment_assignments``: this run's table; ``customer_segments_history``: every
    kept run's customer_id and segment_id, with the run id (a constant per table, so
    DuckDB reads only the matching run's table for a filter on run_id).

    Call once ``run_id``'s table is written: a view of a missing table is an error.
    """
    this_run = assignments_table(run_id)
    con.execute(f"CREATE OR REPLACE VIEW segment_assignments AS SELECT * FROM {this_run}")  # noqa: S608
    branches = [
        f"SELECT CAST({literal(run)} AS VARCHAR) AS run_id, customer_id, segment_id "  # noqa: S608
        f"FROM ({_customer_segments(con, run)})"
        for run in archived_runs(con)
    ]
    con.execute(
        "CREATE OR REPLACE VIEW customer_segments_history AS " + " UNION ALL ".join(branches)
    )


def _customer_segments(con: duckdb.DuckDBPyConnection, run: str) -> str:
    """A query of ``run``'s customer_id and segment_id, whether keyed or not."""
    table = assignments_table(run)
    if history_keys.is_keyed(_columns(con, run)):
        return history_keys.branch(table)
    return f"SELECT customer_id, segment_id FROM {table}"  # noqa: S608


def record_assignment_history(
    con: duckdb.DuckDBPyConnection, run_id: str, previous: str | None
) -> float | None:
    """Count this run's migrations from the previous run; return ARI against it.

    Reads both runs' tables, so call it once ``run_id``'s table is written.
    """
    con.execute("DELETE FROM segment_migrations WHERE run_id = $run_id", {"run_id": run_id})
    if previous is None or previous not in archived_runs(con):  # every customer is new
        moves = con.execute(
            f"SELECT NULL, segment_id, count(*) FROM {assignments_table(run_id)} "  # noqa: S608
            "GROUP BY segment_id"
        ).fetchall()
    else:
        moves = _moves_by_position(con, run_id, previous) or _moves_by_customer_id(
            con, run_id, previous
        )
    con.executemany(
        "INSERT INTO segment_migrations VALUES (?, ?, ?, ?, ?)",
        [
            (run_id, previous, source, target, n)
            for source, target, n in sorted(moves, key=_nulls_first)
        ],
    )
    counts = [(source, target, n) for source, target, n in moves if None not in (source, target)]
    if previous is None or not counts:
        return None
    rows = sorted({r[0] for r in counts})
    cols = sorted({r[1] for r in counts})
    table = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for source, target, n in counts:
        table[rows.index(source), cols.index(target)] = n
    return ari_from_contingency(table)


def _moves_by_customer_id(
    con: duckdb.DuckDBPyConnection, run_id: str, previous: str
) -> list[tuple[int | None, int | None, int]]:
    """(from, to, customers) over every customer of either run (NULL: not in that run)."""
    return con.execute(
        "SELECT before.segment_id, now.segment_id, count(*) "  # noqa: S608
        f"FROM ({_customer_segments(con, run_id)}) AS now "
        f"FULL OUTER JOIN ({_customer_segments(con, previous)}) AS before USING (customer_id) "
        "GROUP BY ALL"
    ).fetchall()


def _moves_by_position(
    con: duckdb.DuckDBPyConnection, run_id: str, previous: str, probe_rows: int = 1000
) -> list[tuple[int | None, int | None, int]] | None:
    """The moves, when both runs list their customers in the same order; else None.

    A nightly export in a stable order (unchanged, or with new customers appended) pairs
    the runs' customers row by row: a POSITIONAL JOIN (0.36 s at 10 million customers)
    instead of the join on customer_id (0.87-1.03 s). The same query counts the pairs
    whose ids differ, so the result is used only when there are none; the shorter run is
    padded with NULLs, which are exactly its missing customers, since ids are unique in a
    run. The first ``probe_rows`` are compared first (padding aside), so that a
    reordered file costs almost nothing here. A previous run already stored against keys
    (a run interrupted after keying) is left to the join.
    """
    if history_keys.is_keyed(_columns(con, previous)):
        return None
    now = assignments_table(run_id)
    before = assignments_table(previous)
    head = con.execute(
        "SELECT count(*) FILTER (WHERE now.customer_id <> before.customer_id) "  # noqa: S608
        f"FROM (SELECT customer_id FROM {now} LIMIT {int(probe_rows)}) now "
        f"POSITIONAL JOIN (SELECT customer_id FROM {before} LIMIT {int(probe_rows)}) before"
    ).fetchone()[0]
    if head:
        return None
    rows = con.execute(
        "SELECT before.segment_id, now.segment_id, count(*), "  # noqa: S608
        "count(*) FILTER (WHERE now.customer_id <> before.customer_id) "
        f"FROM {now} now POSITIONAL JOIN {before} before GROUP BY ALL"
    ).fetchall()
    if any(misaligned for *_, misaligned in rows):
        return None
    return [(source, target, n) for source, target, n, _ in rows]


def _nulls_first(move: tuple[int | None, int | None, int]) -> tuple:
    """Sort key: from, then to, NULL (new or gone customers) before any id."""
    source, target, _ = move
    return (source is not None, source or 0, target is not None, target or 0)


def prune_assignment_history(con: duckdb.DuckDBPyConnection, run_id: str, runs_kept: int) -> int:
    """Keep the assignments of the latest ``runs_kept`` runs; return the rows dropped.

    The history grows by one row per customer per run (10M rows a night for a
    10M-customer base), so it keeps a window of runs; each older run's table is dropped.
    Everything per run that is small (segmentation_runs, segment_centroids,
    model_candidates, segment_migrations) is kept for good. At least the latest two runs
    stay: the next run compares against the latest, and the `segment_changes_last_run`
    view joins the latest with the one before. ``run_id``'s own table always stays; call
    ``define_history_views`` after, so that the history view no longer names dropped tables.
    """
    if runs_kept < 2:
        raise ValueError(f"runs_kept must be at least 2, got {runs_kept}")
    kept = {
        row[0]
        for row in con.execute(
            "SELECT run_id FROM segmentation_runs ORDER BY finished_at DESC, run_id "
            "LIMIT $runs_kept",
            {"runs_kept": runs_kept},
        ).fetchall()
    } | {run_id}
    dropped = 0
    for run in archived_runs(con):
        if run not in kept:
            dropped += con.execute(
                f"SELECT count(*) FROM {assignments_table(run)}"  # noqa: S608
            ).fetchone()[0]
            con.execute(f"DROP TABLE {assignments_table(run)}")
    return dropped


# A run's finished_at: now, but never before a run already recorded. Runs are ordered by
# finished_at (the latest run, the previous one), and a clock set back (an NTP step, a run
# from another host sharing the warehouse) must not make an older run the latest.
FINISHED_AT_SQL = (
    "(SELECT greatest(now(), max(finished_at) + INTERVAL 1 MICROSECOND) "
    "FROM segmentation_runs WHERE run_id <> $run_id)"
)


def record_run(con: duckdb.DuckDBPyConnection, run: dict[str, object]) -> None:
    """One row in ``segmentation_runs`` (replacing a retry's row of the same run).

    Written when the model is chosen; ``finish_run`` completes it after assignment.
    """
    con.execute("DELETE FROM segmentation_runs WHERE run_id = $run_id", {"run_id": run["run_id"]})
    columns = [
        "run_id",
        "finished_at",
        "source",
        "source_sha256",
        "n_customers",
        "n_rejected",
        "algorithm",
        "n_segments",
        "features",
        "silhouette",
        "davies_bouldin",
        "calinski_harabasz",
        "inertia",
        "stability",
        "ari_vs_previous",
        "previous_run_id",
        "selection_rule",
        "seed",
        "sample_size",
        "engine",
    ]
    values = {**run, "features": ",".join(run["features"])}  # type: ignore[arg-type]
    placeholders = ", ".join(FINISHED_AT_SQL if c == "finished_at" else f"${c}" for c in columns)
    con.execute(
        f"INSERT INTO segmentation_runs ({', '.join(columns)}) VALUES ({placeholders})",  # noqa: S608
        {c: values.get(c) for c in columns if c != "finished_at"},
    )


def finish_run(
    con: duckdb.DuckDBPyConnection, run_id: str, n_customers: int, ari: float | None
) -> None:
    con.execute(
        "UPDATE segmentation_runs SET n_customers = $n, ari_vs_previous = $ari, "  # noqa: S608
        f"finished_at = {FINISHED_AT_SQL} WHERE run_id = $run_id",
        {"n": n_customers, "ari": ari, "run_id": run_id},
    )
