"""Past runs' assignments stored against integer customer keys instead of customer ids.

The nightly run copies the published warehouse into its work file, so every byte of
history is copied every night. A kept run of 10 million customers held 65 MB, most of
it the customer id strings (47 MB), and 30 kept runs made the copy and its write-back
cost a 10-million-customer refresh 3-6 s. So a run's table, once it is no longer the
current run, keeps (customer_key, segment_id): about 5.5 MB. ``customer_keys`` maps each
customer id in the history to its key, once; the history view joins it back.

Keys follow the order of the customer file: a nightly export in a stable order (unchanged,
or with customers appended) pairs a run's rows with the key table's row by row, which
costs a third of a join on the id. Keys no run refers to any more are deleted once they
are as many as the keys in use (``drop_unused_keys``).
"""

from __future__ import annotations

import duckdb

from segmentation_pipeline.core.sql_text import identifier

KEYS_SCHEMA = "assignment_keys"
KEYS_TABLE = f"{KEYS_SCHEMA}.customer_keys"
KEYED_COLUMNS = ("customer_key", "segment_id")
PROBE_ROWS = 1000  # rows compared before pairing a whole run by position


def ensure_keys_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {KEYS_SCHEMA}")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (customer_id VARCHAR, customer_key INTEGER)"
    )


def is_keyed(columns: list[str]) -> bool:
    """Whether a run's table, by its columns, is already stored against keys."""
    return "customer_key" in columns


def key_run(
    con: duckdb.DuckDBPyConnection, schema: str, name: str, probe_rows: int = PROBE_ROWS
) -> bool:
    """Replace table ``schema.name`` (customer_id, segment_id, ...) by (customer_key,
    segment_id); returns whether its rows were paired with the keys by position.

    Call inside a transaction: the table is rebuilt under a temporary name, dropped and
    the new one renamed, so a failure leaves the run as it was.
    """
    ensure_keys_table(con)
    table = f"{schema}.{identifier(name)}"
    keyed = f"{schema}.{identifier(name + '.keyed')}"
    con.execute(f"DROP TABLE IF EXISTS {keyed}")
    by_position = _key_by_position(con, table, keyed, int(probe_rows))
    if not by_position:
        _key_by_customer_id(con, table, keyed)
    con.execute(f"DROP TABLE {table}")
    con.execute(f"ALTER TABLE {keyed} RENAME TO {identifier(name)}")
    return by_position


def _key_by_position(
    con: duckdb.DuckDBPyConnection, table: str, keyed: str, probe_rows: int
) -> bool:
    """Key ``table`` row by row when its customers come in the key table's order.

    The run's first rows, as many as there are keys, are paired with the key table's
    rows; a pair whose ids differ gets a NULL key, and any NULL means the orders differ
    (the keyed table is then dropped and False returned). The run's later rows are new
    customers, since every id of the key table was paired with one of the run's and ids
    are unique within a run. Their keys follow from their row ids, computed the same way
    for the key table and the run's table, so no join pairs them. This needs the run's
    row ids to be 0, 1, 2, ... (a table written once), which is checked first.
    """
    n_rows, dense = con.execute(
        f"SELECT count(*), coalesce(max(rowid) + 1, 0) = count(*) FROM {table}"  # noqa: S608
    ).fetchone()
    if not dense:
        return False
    n_keys, next_key = con.execute(
        f"SELECT count(*), coalesce(max(customer_key) + 1, 0) FROM {KEYS_TABLE}"  # noqa: S608
    ).fetchone()
    head = min(n_keys, probe_rows)
    mismatched = con.execute(
        "SELECT count(*) FILTER (WHERE run.customer_id IS DISTINCT FROM keys.customer_id) "  # noqa: S608
        f"FROM (SELECT customer_id FROM {table} LIMIT {head}) run "
        f"POSITIONAL JOIN (SELECT customer_id FROM {KEYS_TABLE} LIMIT {head}) keys "
        "WHERE run.customer_id IS NOT NULL"
    ).fetchone()[0]
    if mismatched:
        return False
    con.execute(
        f"CREATE TABLE {keyed} AS SELECT CASE WHEN run.customer_id = keys.customer_id "  # noqa: S608
        "THEN keys.customer_key END AS customer_key, run.segment_id "
        f"FROM (SELECT customer_id, segment_id FROM {table} WHERE rowid < {n_keys}) run "
        f"POSITIONAL JOIN (SELECT customer_id, customer_key FROM {KEYS_TABLE}) keys "
        "WHERE run.customer_id IS NOT NULL"
    )
    unpaired = con.execute(
        f"SELECT count(*) FROM {keyed} WHERE customer_key IS NULL"  # noqa: S608
    ).fetchone()[0]
    if unpaired:
        con.execute(f"DROP TABLE {keyed}")
        return False
    if n_rows > n_keys:
        new_key = f"{int(next_key) - int(n_keys)} + rowid"
        con.execute(
            f"INSERT INTO {KEYS_TABLE} SELECT customer_id, {new_key} "  # noqa: S608
            f"FROM {table} WHERE rowid >= {n_keys}"
        )
        con.execute(
            f"INSERT INTO {keyed} SELECT {new_key}, segment_id "  # noqa: S608
            f"FROM {table} WHERE rowid >= {n_keys}"
        )
    return True


def _key_by_customer_id(con: duckdb.DuckDBPyConnection, table: str, keyed: str) -> None:
    """Key ``table`` by a join on customer_id; its new customers get new keys, in id order.

    One pass: a LEFT JOIN keys the known customers and keeps the ids of the new ones
    (typically few), which are then added to the key table and keyed. 1.9 s at 10
    million customers, against 2.8 s with a separate search for the new ids. The keyed
    rows keep the run's order, so that the history reads the same every time.
    """
    con.execute(
        f"CREATE TABLE {keyed} AS SELECT keys.customer_key, run.segment_id, "  # noqa: S608
        "CASE WHEN keys.customer_key IS NULL THEN run.customer_id END AS new_customer_id "
        f"FROM {table} run LEFT JOIN {KEYS_TABLE} keys USING (customer_id) ORDER BY run.rowid"
    )
    next_key = con.execute(
        f"SELECT coalesce(max(customer_key) + 1, 0) FROM {KEYS_TABLE}"  # noqa: S608
    ).fetchone()[0]
    con.execute(
        f"INSERT INTO {KEYS_TABLE} SELECT new_customer_id, "  # noqa: S608
        f"{int(next_key)} + row_number() OVER (ORDER BY new_customer_id) - 1 "
        f"FROM {keyed} WHERE new_customer_id IS NOT NULL"
    )
    con.execute(
        f"UPDATE {keyed} SET customer_key = keys.customer_key "  # noqa: S608
        f"FROM (SELECT * FROM {KEYS_TABLE} WHERE customer_key >= {int(next_key)}) keys "
        f"WHERE {keyed}.new_customer_id = keys.customer_id"
    )
    con.execute(f"ALTER TABLE {keyed} DROP COLUMN new_customer_id")


def branch(table: str) -> str:
    """The customer_id and segment_id of a keyed run's table, for the history view."""
    return (
        f"SELECT keys.customer_id, run.segment_id FROM {table} run "  # noqa: S608
        f"JOIN {KEYS_TABLE} keys USING (customer_key)"
    )


def drop_unused_keys(con: duckdb.DuckDBPyConnection, keyed_tables: list[str]) -> int:
    """Delete the keys of customers in no kept run, once they are as many as the used ones.

    Customers who left stay in the key table until the runs they were in are pruned;
    checking on every run would read every kept run each night, so the check runs only
    when the key table has grown to twice the size of the largest kept run. It narrows
    the candidates one run at a time (keys not in one run, then not in the next, ...),
    so that no join holds more than one run's keys: 2 s for 25 million keys and 30 runs
    of 10 million, where one join with all runs at once took 26 s and 8 GB. Returns the
    keys deleted.
    """
    if not keyed_tables:  # keyed runs exist only with the key table
        return 0
    n_keys = con.execute(f"SELECT count(*) FROM {KEYS_TABLE}").fetchone()[0]  # noqa: S608
    sizes = [
        con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        for table in keyed_tables
    ]
    if n_keys <= 2 * max(sizes):
        return 0
    con.execute(
        "CREATE OR REPLACE TEMPORARY TABLE unused_keys AS "  # noqa: S608
        f"SELECT customer_key FROM {KEYS_TABLE} ANTI JOIN {keyed_tables[-1]} USING (customer_key)"
    )
    for table in keyed_tables[:-1]:
        con.execute(
            f"DELETE FROM unused_keys WHERE customer_key IN (SELECT customer_key FROM {table})"  # noqa: S608
        )
    deleted = con.execute(
        f"DELETE FROM {KEYS_TABLE} WHERE customer_key IN (SELECT customer_key FROM unused_keys)"  # noqa: S608
    ).fetchone()[0]
    con.execute("DROP TABLE unused_keys")
    return deleted
