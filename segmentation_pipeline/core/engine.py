"""The narrow interface behind which the heavy steps run.

The Dagster assets call an engine for everything that scales with the number of
customers: loading and validating the input, statistics, sampling, fitting and
assigning. The local engine does it with DuckDB and scikit-learn on one machine; a
distributed engine (Spark) implements the same methods and writes the same tables into
the run's work database, so assets, checks, tables and reports stay unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np

from segmentation_pipeline.core import assignment, features, ingest, selection
from segmentation_pipeline.core.features import FeatureScaling
from segmentation_pipeline.core.ingest import IngestSummary
from segmentation_pipeline.core.selection import ModelSelection

ENGINE_NAMES = ("local", "spark")
SPARK_MASTER_ENV = "SEGMENTATION_SPARK_MASTER"
DEFAULT_SPARK_MASTER = "local[*]"


class SegmentationEngine(Protocol):
    """What an engine must do; each method works on the run's work database."""

    name: str

    def stage_customers(
        self, con: duckdb.DuckDBPyConnection, source: Path, run_id: str
    ) -> IngestSummary:
        """Load and validate the input into ``customers``, quarantining bad rows."""
        ...

    def feature_scaling(
        self, con: duckdb.DuckDBPyConnection, feature_names: Sequence[str]
    ) -> FeatureScaling:
        """Mean and standard deviation of each feature over all customers."""
        ...

    def sample_features(
        self, con: duckdb.DuckDBPyConnection, scaling: FeatureScaling, size: int, seed: int
    ) -> np.ndarray:
        """A deterministic, order-independent sample of standardised feature rows."""
        ...

    def select_model(self, sample: np.ndarray, **options: object) -> ModelSelection:
        """Candidates over algorithms and k, the chosen one, and its centroids."""
        ...

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
        """Write every customer's assignment into ``table`` (replaced); return the count.

        Columns: run_id, customer_id, segment_id, distance, second_segment_id,
        second_distance, is_outlier (see ``assignment.assign_customers``).
        """
        ...


class LocalEngine:
    """DuckDB for loading, statistics, sampling and storage; scikit-learn for fitting."""

    name = "local"

    def stage_customers(
        self, con: duckdb.DuckDBPyConnection, source: Path, run_id: str
    ) -> IngestSummary:
        return ingest.stage_customers(con, source, run_id)

    def feature_scaling(
        self, con: duckdb.DuckDBPyConnection, feature_names: Sequence[str]
    ) -> FeatureScaling:
        return features.compute_scaling(con, feature_names)

    def sample_features(
        self, con: duckdb.DuckDBPyConnection, scaling: FeatureScaling, size: int, seed: int
    ) -> np.ndarray:
        return features.sample_features(con, scaling, size, seed)

    def select_model(self, sample: np.ndarray, **options: object) -> ModelSelection:
        return selection.select_model(sample, **options)  # type: ignore[arg-type]

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
        return assignment.assign_customers(
            con, scaling, centroids, segment_ids, thresholds, run_id, table
        )


def get_engine(
    name: str, *, spark_master: str = DEFAULT_SPARK_MASTER, spark_session: Any = None
) -> SegmentationEngine:
    """The engine called ``name``; a clear error for one that cannot run here.

    The Spark engine runs on ``spark_session`` when given (the Dagster wiring builds it with
    dagster-pyspark), else on a session for ``spark_master`` built here.
    """
    if name == "local":
        return LocalEngine()
    if name == "spark":
        check_spark_available(spark_master)
        from segmentation_pipeline.core.spark.engine import SparkEngine
        from segmentation_pipeline.core.spark.session import build_session

        return SparkEngine(spark_session or build_session(spark_master))
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")


# The forms of a Spark master URL: local mode, a standalone, YARN, Kubernetes or Mesos
# cluster, or a Spark Connect server.
_SPARK_MASTER_URL = re.compile(
    r"local(\[(\*|[1-9]\d*)(,\s*[1-9]\d*)?\])?|local-cluster\[.+\]|yarn|(spark|k8s|mesos|sc)://\S+"
)


def check_spark_master(spark_master: str) -> None:
    """Raise ValueError for what is not a Spark master URL: Spark took 35 s to fail on one,
    with a Java stack trace that did not name it."""
    if not _SPARK_MASTER_URL.fullmatch(spark_master):
        raise ValueError(
            f"{spark_master!r} is not a Spark master URL: use local[*], local[N], "
            "spark://host:7077, yarn, k8s://https://host:443 or a Spark Connect server, "
            "sc://host:15002"
        )


def check_spark_available(spark_master: str) -> None:
    """Raise ValueError naming the fix when the Spark engine cannot start on this machine:
    not a master URL, pyspark missing (an optional extra), or no Java for a Spark driver
    started here (a Spark Connect client needs none)."""
    check_spark_master(spark_master)
    if importlib.util.find_spec("pyspark") is None:
        raise ValueError(
            "engine 'spark' needs the optional `spark` extra (pyspark, dagster-pyspark), which "
            "is not installed: run `uv sync --extra spark` (or `make install`), or use "
            "--engine local"
        )
    if spark_master.startswith("sc://"):
        _check_spark_connect_client(spark_master)
    elif _java() is None:
        raise ValueError(
            "engine 'spark' needs Java 17 or newer to start Spark, and no `java` was found on "
            "PATH or in $JAVA_HOME: install a JDK (e.g. `apt-get install "
            "openjdk-17-jre-headless`), point $SEGMENTATION_SPARK_MASTER at a Spark Connect "
            "server (sc://host:15002), or use --engine local"
        )


def _check_spark_connect_client(spark_master: str) -> None:
    """The Connect client needs gRPC packages that plain pyspark does not install."""
    try:
        import pyspark.sql.connect  # noqa: F401 - its import checks the client's dependencies
    except ImportError as error:
        raise ValueError(
            f"engine 'spark' with Spark Connect ({spark_master}) needs pyspark's Connect client "
            f"({error}): install `pyspark[connect]` (e.g. `uv pip install 'pyspark[connect]'`), "
            "or use a Spark master (local[*], spark://...)"
        ) from None


def spark_master_from_env() -> str:
    """$SEGMENTATION_SPARK_MASTER, else local[*] (every core of this machine)."""
    return os.environ.get(SPARK_MASTER_ENV, "").strip() or DEFAULT_SPARK_MASTER


def _java() -> str | None:
    """The java executable Spark's launcher would use ($JAVA_HOME first, then PATH)."""
    home = os.environ.get("JAVA_HOME", "").strip()
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")
