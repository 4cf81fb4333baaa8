"""Metadata helpers: what the Dagster UI shows about a table in the work database."""

import dagster as dg
import duckdb

from segmentation_pipeline.core.markdown import value_table


def column_schema(con: duckdb.DuckDBPyConnection, table: str) -> dg.TableSchema:
    """The table's columns and types, for the UI's schema view."""
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE table_name = $table AND database_name = current_database() ORDER BY column_index",
        {"table": table},
    ).fetchall()
    return dg.TableSchema(columns=[dg.TableColumn(name, data_type) for name, data_type in rows])


def markdown_preview(
    con: duckdb.DuckDBPyConnection,
    query: str,
    parameters: dict[str, object] | None = None,
    limit: int = 10,
) -> dg.MetadataValue:
    """The first rows of a query (values bound as parameters) as a Markdown table."""
    result = con.execute(
        f"SELECT * FROM ({query}) LIMIT {int(limit)}",  # noqa: S608 - our own constant queries
        parameters or {},
    )
    headers = [column[0] for column in result.description]
    rows = result.fetchall()
    if not rows:
        return dg.MetadataValue.md("_no rows_")
    return dg.MetadataValue.md(value_table(headers, rows))
