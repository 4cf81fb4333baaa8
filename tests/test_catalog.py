"""The catalog's descriptions: they match the README's tables, and apply to any warehouse.

That every relation and column of a real published warehouse is described is checked on
the warehouse of two real runs, in ``test_sql_examples.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from segmentation_pipeline.core.catalog import CATALOG, apply_comments
from segmentation_pipeline.core.schema import FEATURE_COLUMNS
from segmentation_pipeline.core.warehouse import Warehouse
from tests.conftest import REPO_ROOT


def _readme_relations() -> set[str]:
    """The relation names in the first column of the README's "Tables" and views tables."""
    readme = (REPO_ROOT / "README.md").read_text()
    tables = readme.split("## Tables", 1)[1].split("\n## ", 1)[0]
    views = readme.split("| view | answers |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `(\w+)`", tables + "\n" + views, flags=re.MULTILINE))


def test_the_catalog_describes_exactly_what_the_readme_lists():
    listed = _readme_relations()
    assert len(listed) >= 17
    assert listed == set(CATALOG)


def test_every_clustering_feature_is_described_in_customer_features():
    described = CATALOG["customer_features"]
    for feature in FEATURE_COLUMNS:
        assert described.column(feature), feature
    assert "k$" in described.column("annual_income")


def test_an_older_warehouse_is_described_as_far_as_it_goes(tmp_path: Path):
    """A column or view missing, a column the catalog does not know: no error."""
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE customers (customer_id VARCHAR, annual_income DOUBLE, legacy INT)")
    con.execute("CREATE VIEW customer_segments AS SELECT customer_id FROM customers")
    assert apply_comments(con) == 5  # 2 relations, 3 columns; legacy is left without one
    con.execute("CHECKPOINT")
    con.close()

    reader = Warehouse(path).connect_read_only()  # ATTACH ... (READ_ONLY), as analysts read
    try:
        tables = reader.execute(
            "SELECT table_name, comment FROM duckdb_tables() "
            "WHERE database_name = current_database() UNION ALL "
            "SELECT view_name, comment FROM duckdb_views() "
            "WHERE database_name = current_database() AND NOT internal ORDER BY 1"
        ).fetchall()
        columns = dict(
            reader.execute(
                "SELECT table_name || '.' || column_name, comment FROM duckdb_columns() "
                "WHERE database_name = current_database()"
            ).fetchall()
        )
    finally:
        reader.close()
    assert tables == [
        ("customer_segments", CATALOG["customer_segments"].comment),
        ("customers", CATALOG["customers"].comment),
    ]
    assert "k$" in columns["customers.annual_income"]
    assert columns["customer_segments.customer_id"] == columns["customers.customer_id"]
    assert columns["customers.legacy"] is None


def test_comments_are_applied_again_after_a_relation_is_recreated(tmp_path: Path):
    """Every run re-creates tables and views, and CREATE OR REPLACE drops their comments."""
    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    con.execute("CREATE TABLE segment_profiles (run_id VARCHAR, share DOUBLE)")
    apply_comments(con)
    con.execute("CREATE OR REPLACE TABLE segment_profiles (run_id VARCHAR, share DOUBLE)")
    assert con.execute(
        "SELECT comment FROM duckdb_columns() WHERE column_name = 'share'"
    ).fetchall() == [(None,)]
    apply_comments(con)
    (share,) = con.execute(
        "SELECT comment FROM duckdb_columns() WHERE column_name = 'share'"
    ).fetchone()
    con.close()
    assert "fraction" in share
