"""`SparkEngine`: the engine interface (core/engine.py) on Spark SQL and MLlib."""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation_pipeline.core.errors import InputError
from segmentation_pipeline.core.features import FeatureScaling, constant_features_message
from segmentation_pipeline.core.ingest import IngestSummary
from segmentation_pipeline.core.selection import ModelSelection
from segmentation_pipeline.core.source_file import (
    check_source_file,
    digest_source,
    explain_mixed_line_endings,
    read_header,
)
from segmentation_pipeline.core.spark.assignment import FEATURES, pick, scaled_columns, with_nearest
from segmentation_pipeline.core.spark.files import hadoop_uri, parquet_glob, spark_folder
from segmentation_pipeline.core.spark.ingest import (
    Staging,
    load_customers,
    raise_for_malformed_rows,
    record_load,
)
from segmentation_pipeline.core.spark.model import ModelSearch


class SparkEngine:
    """Spark SQL and MLlib for the heavy steps; DuckDB holds the run's tables."""

    name = "spark"

    def __init__(self, session: SparkSession) -> None:
        self.session = session

    def stage_customers(
        self, con: duckdb.DuckDBPyConnection, source: Path, run_id: str
    ) -> IngestSummary:
        """Validate the CSV in Spark; load ``customers`` and the quarantine into DuckDB.

        Raises InputError for file-level problems, as the local engine does; the work
        database then has no new ``customers`` table.
        """
        source = Path(source)
        check_source_file(source)
        header = read_header(source)
        staging = Staging(self.session, source, header, spark_folder(con))
        with ThreadPoolExecutor(max_workers=1) as pool:
            digest = pool.submit(digest_source, source)  # checksum and size, while Spark reads
            staging.write()
            if staging.may_mix_line_endings() and (mixed := explain_mixed_line_endings(source)):
                raise mixed
            n_rows = raise_for_malformed_rows(con, source, header, staging)
            if n_rows == 0:
                raise InputError(source, "the file has a header but no customer rows", line=2)
            staging.write_results()
            load_customers(con, staging.folder)
            return record_load(con, source, header, digest.result(), staging.folder, n_rows, run_id)

    def feature_scaling(
        self, con: duckdb.DuckDBPyConnection, feature_names: Sequence[str]
    ) -> FeatureScaling:
        """Means and population standard deviations (as DuckDB's stddev_pop), the same on
        every run of the same file.

        Spark merges partial aggregates in the order their shuffle blocks arrive, and on a
        cluster it fetches remote blocks in random order (ShuffleBlockFetcherIterator), so
        a plain avg and stddev_pop can differ in their last digits from run to run, and
        every scaled value with them. Here each input partition's count, means and
        variances come from one task, which adds its rows in file order, and they are
        combined here in partition order (``combine_moments``): the result depends only on
        how the file is split, which the same file and settings repeat.
        """
        customers = self._customers(con)
        aggregates = [F.count(F.lit(1)).alias("n")]
        for name in feature_names:
            aggregates += [F.avg(FEATURES[name]()), F.var_pop(FEATURES[name]())]
        rows = customers.groupBy(F.spark_partition_id().alias("partition")).agg(*aggregates)
        partitions = sorted(rows.collect(), key=lambda row: row["partition"])  # no sort job
        means, stds = combine_moments(
            [(row["n"], row[2::2], row[3::2]) for row in partitions], len(feature_names)
        )
        constant = [name for name, std in zip(feature_names, stds, strict=True) if not std > 0]
        if constant:
            n_customers = sum(row["n"] for row in partitions)
            raise ValueError(constant_features_message(constant, n_customers))
        return FeatureScaling(tuple(feature_names), means, stds)

    def sample_features(
        self, con: duckdb.DuckDBPyConnection, scaling: FeatureScaling, size: int, seed: int
    ) -> np.ndarray:
        """Up to ``size`` customers' standardised features as float32 rows.

        All customers when there are at most ``size``; otherwise those with the smallest
        64-bit hash of (customer_id, seed), taken by Spark as a top-k: deterministic and
        independent of the input row order (the same rule as the local engine, with Spark's
        xxhash64 instead of DuckDB's hash, so a large base yields another, equally random,
        sample).
        """
        customers = self._customers(con)
        if customers.count() > size:
            key = F.xxhash64(F.col("customer_id"), F.lit(seed))
            customers = customers.orderBy(key, "customer_id").limit(size)
        else:
            customers = customers.orderBy("customer_id")
        table = customers.select(*scaled_columns(scaling)).toArrow()
        return np.column_stack(
            [table.column(name).to_numpy().astype(np.float32) for name in scaling.features]
        )

    def select_model(self, sample: np.ndarray, **options: object) -> ModelSelection:
        """MLlib KMeans (k-means||) and BisectingKMeans over the k range, chosen by the
        local engine's rule (see ``ModelSearch``)."""
        return ModelSearch(self.session, sample, **options).run()  # type: ignore[arg-type]

    def assign(
        self,
        con: duckdb.DuckDBPyConnection,
        scaling: FeatureScaling,
        centroids: np.ndarray,
        segment_ids: Sequence[int],
        thresholds: np.ndarray,
        run_id: str,
        table: str,
    ) -> int:
        """Nearest and runner-up centroid of every customer in Spark, loaded into ``table``.

        The same arithmetic as core/assignment.py: FLOAT standardised features, DOUBLE
        squared distances, ties to the lower centroid index, outlier when the distance as
        published (FLOAT) is above the segment's threshold.
        """
        folder = spark_folder(con)
        scaled = self._customers(con).select("customer_id", *scaled_columns(scaling))
        nearest = with_nearest(scaled, scaling.features, centroids)
        ids = [int(i) for i in segment_ids]
        limits = [float(t) for t in thresholds]
        assigned = nearest.select(
            "customer_id",
            pick(F.col("_i1"), ids).alias("segment_id"),
            F.sqrt("_m1").cast("float").alias("distance"),
            pick(F.col("_i2"), ids).alias("second_segment_id"),
            F.sqrt("_m2").cast("float").alias("second_distance"),
            (F.sqrt("_m1").cast("float") > pick(F.col("_i1"), limits)).alias("is_outlier"),
        )
        assigned.write.mode("overwrite").parquet(hadoop_uri(folder / "assignments"))
        con.execute(
            f"""
            CREATE OR REPLACE TABLE {table} AS
            SELECT CAST($run_id AS VARCHAR) AS run_id, customer_id,
                   CAST(segment_id AS INTEGER) AS segment_id, CAST(distance AS FLOAT) AS distance,
                   CAST(second_segment_id AS INTEGER) AS second_segment_id,
                   CAST(second_distance AS FLOAT) AS second_distance, is_outlier
            FROM read_parquet($path)
            """,  # noqa: S608 - the table name is ours
            {"run_id": run_id, "path": parquet_glob(folder / "assignments")},
        )
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608

    def _customers(self, con: duckdb.DuckDBPyConnection) -> DataFrame:
        """The run's staged customers as a Spark DataFrame.

        Read from the Parquet that stage_customers left in the run's Spark folder; when it
        is not there (the customers were staged by another engine or in another run), DuckDB
        exports the work database's `customers` first.
        """
        path = spark_folder(con) / "customers"
        if not path.is_dir():
            path.mkdir(parents=True)
            con.execute(
                "COPY (SELECT * FROM customers) TO $path (FORMAT parquet)",
                {"path": str(path / "part-00000.parquet")},
            )
        return self.session.read.parquet(hadoop_uri(path, glob=True))


def combine_moments(
    parts: Sequence[tuple[int, Sequence[float], Sequence[float]]], n_features: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Means and population standard deviations of the union of parts, given each part's
    (count, means, population variances), combined in the order given (Chan et al.'s
    pairwise update, as Spark merges its own partial variances)."""
    total = 0
    means = [0.0] * n_features
    squares = [0.0] * n_features  # sums of squared deviations from the mean
    for count, part_means, part_variances in parts:
        if not count:
            continue
        combined = total + count
        for i in range(n_features):
            delta = float(part_means[i]) - means[i]
            means[i] += delta * count / combined
            between = delta * delta * total * count / combined
            squares[i] += float(part_variances[i]) * count + between
        total = combined
    stds = [math.sqrt(max(square, 0.0) / total) if total else 0.0 for square in squares]
    return tuple(means), tuple(stds)
