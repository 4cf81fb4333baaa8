"""Descriptions of the published tables, views and columns, stored as DuckDB comments.

BI tools (DBeaver, Metabase, Superset, dbt docs) show the catalog's comments
(``duckdb_tables()``, ``duckdb_views()``, ``duckdb_columns()``), so the meaning and unit of
each column travel with the warehouse instead of living only in the README. The texts here
repeat the README's "Tables" section in one sentence each; change both together
(``tests/test_catalog.py`` checks that every relation the README lists is described here).

The comments are applied in the run's work database just before it is published, after
the views are (re)defined: ``CREATE OR REPLACE`` drops a relation's comments, and every run
re-creates some tables and views, so they are applied on every run. Only relations and
columns that exist are commented, so a warehouse written by an older version (a column
missing, a view not yet defined) is described as far as it goes, never refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from segmentation_pipeline.core.sql_text import identifier, literal

STANDARDISED = "in standard deviations of the standardised clustering features"

# Columns that mean the same wherever they appear; a relation may say more of its own.
COMMON_COLUMNS: dict[str, str] = {
    "run_id": "Dagster run id of the segmentation run the row belongs to.",
    "previous_run_id": "Dagster run id of the run before it (NULL on the first run).",
    "finished_at": "When the run finished (timestamp with time zone); never before an earlier "
    "run's, so runs sort in the order they ran even if a clock was set back.",
    "customer_id": 'Customer id from the input file, kept as text ("0001" stays "0001").',
    "gender": "Gender as given in the input (Female, F and Woman in any case count as female).",
    "age": "Age in years (integer 0-120).",
    "annual_income": "Annual income in thousands of dollars (k$), 0 to 10,000.",
    "spending_score": "Spending score, an integer 1-100.",
    "segment_id": "Segment id, stable across runs: a segment still there after a refresh "
    "keeps its id.",
    "segment_name": 'Segment name from how it differs from the whole base, e.g. "High income, '
    'low spending".',
    "share": "The segment's share of the run's customers, a fraction 0-1.",
    "source": "Path of the input CSV as given to the run (links kept).",
    "source_sha256": "SHA-256 of the input file's content (hex).",
    "n_customers": "Number of valid customers in the run.",
    "n_rejected": "Number of input rows quarantined in rejected_rows.",
    "algorithm": "Clustering algorithm: kmeans, gmm or ward (local engine), kmeans or "
    "bisecting_kmeans (Spark).",
    "silhouette": "Silhouette on the standardised features, -1 to 1, higher is better "
    "(on up to 4,000 sampled customers).",
    "davies_bouldin": "Davies-Bouldin index, at least 0, lower is better "
    "(on up to 20,000 sampled customers).",
    "calinski_harabasz": "Calinski-Harabasz index, higher is better "
    "(on up to 20,000 sampled customers).",
    "inertia": "Sum of squared distances to the nearest centroid, in squared standard "
    "deviations, over up to 20,000 sampled customers.",
    "stability": "Bootstrap stability: mean adjusted Rand index over resamples, up to 1 "
    "(candidates need 0.8); NULL where not measured.",
    "distance": f"Euclidean distance to the segment's centroid, {STANDARDISED}.",
    "second_segment_id": "Runner-up segment: the segment of the second-nearest centroid.",
    "second_distance": f"Distance to the runner-up segment's centroid, {STANDARDISED}.",
    "is_outlier": "True when distance is above the segment's 99th percentile "
    "(segment_centroids.outlier_distance).",
}

SEGMENTATION_RUN_COLUMNS: dict[str, str] = {
    "n_segments": "Number of segments the chosen model has.",
    "features": "Clustering features, comma-separated (gender as a 0/1 female indicator).",
    "ari_vs_previous": "Adjusted Rand index of the assignments against the previous run's "
    "(1 = identical; NULL on the first run).",
    "selection_rule": "How the model was chosen, in words (the choice rule as applied).",
    "seed": "Random seed of sampling and model fits.",
    "sample_size": "Customers in the model sample (up to 200,000), on which centroids and "
    "outlier thresholds are computed.",
    "engine": "Engine that ran the heavy steps: local or spark.",
}

ASSIGNMENT_COLUMNS: dict[str, str] = {
    "run_id": "Dagster run id of the latest run, whose assignments these are.",
}

FEATURE_SCALED = "standardised: (value - mean) / std from feature_scaling, in standard deviations."
PROFILE_FEATURES = {
    "age": "age in years",
    "annual_income": "annual income in k$",
    "spending_score": "spending score (1-100)",
}


def _profile_columns() -> dict[str, str]:
    """segment_profiles' per-feature statistics, in the feature's own unit."""
    columns: dict[str, str] = {}
    for feature, unit in PROFILE_FEATURES.items():
        columns[f"avg_{feature}"] = f"Mean {unit} of the segment's customers."
        columns[f"median_{feature}"] = f"Median {unit} of the segment's customers."
        columns[f"std_{feature}"] = f"Standard deviation of {unit} within the segment."
        columns[f"z_{feature}"] = (
            f"Segment's mean {feature} minus the whole base's, in the base's standard "
            "deviations (z-score)."
        )
    return columns


@dataclass(frozen=True)
class Described:
    """A relation's comment and the comments of its own columns (others: COMMON_COLUMNS)."""

    comment: str
    columns: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> str | None:
        return self.columns.get(name, COMMON_COLUMNS.get(name))


CATALOG: dict[str, Described] = {
    "customers": Described(
        "One row per valid customer of the latest run (input columns, canonical names)."
    ),
    "customer_segments": Described(
        "Every customer's segment in the latest run, with the distances and outlier flag.",
        ASSIGNMENT_COLUMNS,
    ),
    "segment_assignments": Described(
        "The latest run's assignments as stored (customer_segments adds the segment names).",
        ASSIGNMENT_COLUMNS,
    ),
    "segment_profiles": Described(
        "Each segment of every run in original units: size, share, means, medians, spreads, "
        "female share, z-scores, name and marketing recommendation.",
        {
            "n_customers": "Number of customers in the segment.",
            "female_share": "Fraction 0-1 of the segment's customers whose gender reads as female.",
            "z_gender": "Segment's female share minus the base's, in standard deviations of "
            "the 0/1 female indicator (z-score).",
            "recommendation": "Marketing recommendation derived from how the segment differs "
            "from the base.",
            **{
                f"level_{feature}": f"High, average or low: the {feature} trait the name and "
                "recommendation rest on (from the z-score, with hysteresis for kept segments)."
                for feature in ("age", "annual_income", "spending_score", "gender")
            },
            "name_traits": "Features the segment's name was built from (comma-separated), "
            "kept so the next run names the segment with hysteresis.",
            **_profile_columns(),
        },
    ),
    "segmentation_runs": Described(
        "One row per published run: input, chosen model, quality scores and agreement with "
        "the previous run.",
        SEGMENTATION_RUN_COLUMNS,
    ),
    "model_candidates": Described(
        "Every (algorithm, k) candidate scored in every run, the chosen one marked.",
        {
            "k": "Number of segments of the candidate.",
            "selected": "True for the candidate the run chose.",
        },
    ),
    "segment_centroids": Described(
        "Each segment's centre per feature, in original and standardised units, with its "
        "outlier threshold.",
        {
            "feature": "Clustering feature (age, annual_income, spending_score, or gender "
            "as a 0/1 female indicator).",
            "centroid": "Centre in the feature's original unit (years, k$, score 1-100, "
            "female fraction).",
            "centroid_scaled": "Centre in standard deviations from the base mean (standardised).",
            "outlier_distance": f"The segment's 99th percentile distance, {STANDARDISED}; "
            "customers beyond it are outliers.",
        },
    ),
    "feature_scaling": Described(
        "Mean and standard deviation of each clustering feature per run, used to standardise it.",
        {
            "position": "Position of the feature in the feature vector, from 0.",
            "feature": "Clustering feature (gender as a 0/1 female indicator).",
            "mean": "Mean over all customers, in the feature's original unit.",
            "std": "Population standard deviation over all customers, in the feature's "
            "original unit.",
        },
    ),
    "customer_segments_history": Described(
        "Every customer's segment in each of the last runs kept (--history-runs-kept, "
        "30 by default); WHERE run_id = ... reads only that run."
    ),
    "segment_migrations": Described(
        "Customers per (previous segment, new segment) pair since the previous run, those "
        "who stayed included.",
        {
            "from_segment_id": "Segment in the previous run (NULL: a new customer).",
            "to_segment_id": "Segment in this run (NULL: a customer gone).",
            "n_customers": "Customers who went from from_segment_id to to_segment_id "
            "(equal ids: stayed).",
        },
    ),
    "rejected_rows": Described(
        "Every quarantined input row of every run, with the reason.",
        {
            "line_number": "Line of the row in the source file (the header is line 1).",
            "reason": "Why the row was rejected.",
            "column_name": "Column whose value broke a rule (NULL for a whole-row problem).",
            "value": "The offending value, as text.",
            "customer_id": "The row's customer_id as given (may be empty or repeated).",
        },
    ),
    "ingest_runs": Described(
        "What each run read: the file, its hash and size, and row counts.",
        {
            "loaded_at": "When the file was read (timestamp with time zone).",
            "size_bytes": "Size of the input file in bytes.",
            "n_rows_read": "Data rows read from the file (header excluded).",
            "n_duplicates_collapsed": "Exact duplicate rows collapsed into one.",
        },
    ),
    "customer_features": Described(
        "customer_id and the standardised clustering features of the latest run.",
        {
            "age": f"Age {FEATURE_SCALED}",
            "annual_income": f"Annual income (k$) {FEATURE_SCALED}",
            "spending_score": f"Spending score {FEATURE_SCALED}",
            "gender": f"0/1 female indicator {FEATURE_SCALED}",
        },
    ),
    "latest_segmentation_run": Described(
        "The run the current results come from: the newest row of segmentation_runs.",
        SEGMENTATION_RUN_COLUMNS,
    ),
    "customer_latest_segment": Described(
        "Each customer's current segment, with its name and the customer's data.",
        {
            "run_id": ASSIGNMENT_COLUMNS["run_id"],
            "finished_at": "When the latest run finished (timestamp with time zone).",
        },
    ),
    "segment_sizes_by_run": Described(
        "Size and share of every segment in every run, oldest run first.",
        {
            "run_number": "The run's position in time: 1 for the oldest run, then 2, 3, ...",
            "n_customers": "Number of customers in the segment.",
        },
    ),
    "segment_changes_last_run": Described(
        "Customers whose segment changed in the latest run, with from/to ids and names.",
        {
            "from_segment_id": "Segment in the previous run.",
            "from_segment_name": "Name of the segment in the previous run.",
            "to_segment_id": "Segment in the latest run.",
            "to_segment_name": "Name of the segment in the latest run.",
            "previous_run_id": "Dagster run id of the run before the latest one.",
            "run_id": "Dagster run id of the latest run.",
        },
    ),
}


def comment_statements(con: duckdb.DuckDBPyConnection) -> list[str]:
    """``COMMENT ON`` statements for every described relation and column present in the main
    schema of the connection's database; what is absent (an older warehouse) is skipped."""
    kinds = dict(
        con.execute(
            "SELECT table_name, 'TABLE' FROM duckdb_tables() "
            "WHERE database_name = current_database() AND schema_name = 'main' "
            "UNION ALL SELECT view_name, 'VIEW' FROM duckdb_views() "
            "WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal"
        ).fetchall()
    )
    columns = con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal "
        "ORDER BY table_name, column_index"
    ).fetchall()
    statements = [
        f"COMMENT ON {kinds[name]} {identifier(name)} IS {literal(described.comment)}"
        for name, described in CATALOG.items()
        if name in kinds
    ]
    for table, column in columns:
        described = CATALOG.get(table)
        text = described.column(column) if described else None
        if text:
            statements.append(
                f"COMMENT ON COLUMN {identifier(table)}.{identifier(column)} IS {literal(text)}"
            )
    return statements


def apply_comments(con: duckdb.DuckDBPyConnection) -> int:
    """Describe the published relations and columns in one transaction; return how many
    comments were set.

    One explicit transaction: all of them or none, and one commit instead of one per
    statement (DuckDB autocommits each statement otherwise).
    """
    statements = comment_statements(con)
    con.execute("BEGIN TRANSACTION")
    try:
        for statement in statements:
            con.execute(statement)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return len(statements)
