"""Resources: the warehouse a run publishes to, and the settings a run uses.

Both are configurable from the launchpad and from `segmentation run` flags; their
defaults come from environment variables (shown as such in the UI when set) and
otherwise point inside the project folder.
"""

import gc
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Self

import dagster as dg
import duckdb
from pydantic import Field, PrivateAttr, model_validator

from segmentation_pipeline.core import drift, locations, workers
from segmentation_pipeline.core.engine import (
    DEFAULT_SPARK_MASTER,
    SPARK_MASTER_ENV,
    SegmentationEngine,
    check_spark_available,
    check_spark_master,
    get_engine,
    spark_master_from_env,
)
from segmentation_pipeline.core.features import parse_features
from segmentation_pipeline.core.schema import DEFAULT_FEATURES
from segmentation_pipeline.core.selection import ALGORITHMS, algorithms_for
from segmentation_pipeline.core.validation import staged_in_run
from segmentation_pipeline.core.warehouse import Warehouse

# Why a step after raw_customers cannot run in a run that did not load the customers.
NOT_STAGED = (
    "this run did not load the customers: raw_customers did not run in it (a re-execution "
    "from a later step, or a selection without raw_customers), and every run works on its "
    "own copy of the warehouse. Materialize the whole segmentation group (segmentation_job), "
    "or re-execute all of the run's steps"
)


class WarehouseResource(dg.ConfigurableResource):
    """The published DuckDB warehouse, and this run's private work file beside it.

    For the duration of a run it holds the single-writer lock, so two refreshes never
    build and publish at once; at the end of a run that did not publish, it removes the
    run's work file, so the published file is the only thing a failed run leaves behind.
    """

    path: str = Field(
        default="",
        description="Published DuckDB file that analysts query; empty: $SEGMENTATION_WAREHOUSE, "
        "else data/warehouse.duckdb.",
    )
    lock_timeout_seconds: float = Field(
        default=900.0,
        description="How long a run waits for another refresh of the same warehouse to finish.",
    )
    memory_limit: str = Field(
        default="1GB",
        description="DuckDB memory cap for the run (it spills to disk beyond it), e.g. 1GB.",
    )

    _stack: ExitStack | None = PrivateAttr(default=None)

    @property
    def warehouse(self) -> Warehouse:
        path = Path(self.path).expanduser().resolve() if self.path.strip() else None
        return Warehouse(path or locations.warehouse_path(), self.memory_limit)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.warehouse.check_path()  # a folder or a CSV as the path: before any lock file
        stack = ExitStack()
        on_wait = context.log.info if context.log else None
        stack.enter_context(self.warehouse.writer_lock(self.lock_timeout_seconds, on_wait))
        removed = self.warehouse.clean_stale_work_files()
        if removed and context.log:
            context.log.info(f"Removed {len(removed)} work file(s) left by interrupted runs.")
        self._stack = stack

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if context.run is not None:
            self.warehouse.discard_work_file(context.run.run_id)
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    @contextmanager
    def work_connection(self, run_id: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """Read-write connection to the run's work file (a copy of the published one)."""
        with self.warehouse.work_connection(run_id) as con:
            yield con

    @contextmanager
    def staged_connection(self, run_id: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """``work_connection`` for a step after ``raw_customers``, which needs the customers
        this run loaded. In a run that did not load them (see ``validation.staged_in_run``)
        the step fails at once, not retried, with NOT_STAGED: else it would work on the
        published warehouse's customers, and publish them again as a new run."""
        files = self.warehouse
        if files.work_path(run_id).exists():
            with files.work_connection(run_id) as con:
                if staged_in_run(con, run_id):
                    yield con
                    return
        raise dg.Failure(description=NOT_STAGED, allow_retries=False)


class SegmentationSettings(dg.ConfigurableResource):
    """What a run reads and how strict it is, and whether it starts a worker server."""

    # Config given at launch replaces the bound values as a whole: a launchpad setting only
    # `k_max` must still find the source, so an empty value means the environment's.
    source_csv: str = Field(
        default="",
        description="Input CSV in the Mall Customers schema; empty: $SEGMENTATION_SOURCE_CSV, "
        "else the demo data in data/.",
    )
    max_reject_fraction: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="A run fails and publishes nothing when a larger share of rows is rejected.",
    )
    max_customer_drop: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="A run fails and publishes nothing when it has this share fewer customers "
        "than the last run of the same file (a truncated export); 1 lets any count through.",
    )
    engine: str = Field(
        default="local",
        description="Engine for the heavy steps: local (DuckDB + scikit-learn) or spark "
        "(Spark SQL + MLlib; needs the `spark` extra).",
    )
    spark_master: str = Field(
        default="",
        description="Spark master for engine spark: local[*], a cluster (spark://host:7077, "
        "yarn, k8s://...) or Spark Connect (sc://host:15002); empty: "
        f"${SPARK_MASTER_ENV}, else {DEFAULT_SPARK_MASTER}.",
    )
    features: list[str] = Field(
        default=list(DEFAULT_FEATURES),
        description="Clustering features: any of age, annual_income, spending_score, gender, "
        "in any order: customer_features puts them in that order (core/features.py "
        "parse_features, the only reader), so one set of features gives one result.",
    )
    k_min: int = Field(default=2, ge=2, description="Smallest number of segments tried.")
    k_max: int = Field(default=10, ge=2, description="Largest number of segments tried.")
    algorithms: list[str] = Field(
        default=list(ALGORITHMS),
        description="Algorithms tried: kmeans, gmm, ward (engine local); kmeans, "
        "bisecting_kmeans (engine spark, where this default list means both).",
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,  # segmentation_runs.seed is an INTEGER
        description="Seed for sampling and fitting (reproducible runs).",
    )
    sample_size: int = Field(
        default=200_000, ge=100, description="Customers sampled for model selection and fit."
    )
    history_runs_kept: int = Field(
        default=30,
        ge=2,
        description="Runs whose per-customer assignments stay in customer_segments_history "
        "(one row per customer per run); run summaries, centroids and migrations are kept "
        "for every run.",
    )
    segment_match_distance: float = Field(
        default=1.0,
        gt=0,
        description="A new segment keeps a previous segment's id when their centroids are "
        "closer than this, in standard deviations.",
    )

    worker_server: bool = Field(
        default=True,
        description="Start a worker server when the run starts, which imports scikit-learn "
        "and matplotlib on another core while the first steps run; the model search, the "
        "segment names and the report are then computed in processes forked from it. Needs "
        "fork and two cores; `segmentation run` always starts one.",
    )

    @model_validator(mode="after")
    def _k_range_is_not_empty(self) -> Self:
        """Checked when the run starts, not after the input was loaded and checked."""
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) must be >= k_min ({self.k_min})")
        return self

    @model_validator(mode="after")
    def _the_engine_knows_the_settings(self) -> Self:
        """Checked when the run starts: a misspelt algorithm or feature failed only at its
        step, after the input was loaded and checked."""
        parse_features(self.features)
        algorithms_for(self.engine, self.algorithms)
        if self.engine == "spark":
            check_spark_master(self.spark_master_url)
        return self

    @property
    def source_path(self) -> Path:
        if not self.source_csv.strip():
            return locations.source_csv()
        return locations.source_path(self.source_csv)

    @property
    def spark_master_url(self) -> str:
        return self.spark_master.strip() or spark_master_from_env()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Only runs compute: a sensor that reads the settings (in the code server) must not
        # start a server.
        if self.worker_server and context.run is not None and not workers.server_running():
            message = _start_worker_server()
            if context.log:
                context.log.info(message)


def _start_worker_server() -> str:
    """Start the worker server (core/workers.py) in a run that `segmentation run` did not
    start (launched from the UI, by the schedule, or from Python); says how it went.

    Started, it keeps scikit-learn, SciPy, matplotlib and pandas out of this process, so
    what remains here for the garbage collector is Dagster and the definitions, loaded before
    the run and alive until the process ends: frozen out of its sight, as `segmentation run`
    does (about 0.3-0.6 s of full collections per run, measured). In a notebook that also
    freezes what the session holds at its first run, once.
    """
    in_process = "the model search, segment names and report are computed in this process"
    rerun = workers.main_script_rerun_by_workers()
    if rerun is not None:
        return (
            f"No worker server: every worker would run {rerun} again (Python's "
            f"multiprocessing imports the main script in each process it starts); {in_process}."
        )
    try:
        started = workers.start_server()
    except OSError as error:  # e.g. no usable temporary folder for its socket
        return f"No worker server ({error}); {in_process}."
    if not started:
        return f"No worker server (it needs fork and two cores); {in_process}."
    gc.freeze()
    return (
        "Worker server started: it imports scikit-learn and matplotlib on another core, and "
        "the model search, segment names and report are computed in processes forked from it."
    )


class DriftThresholds(dg.ConfigurableResource):
    """When the drift checks warn: how far this run may move from the previous one.

    The checks never stop a run (severity WARN); these limits only decide when the UI
    flags a refresh for an analyst to look at.
    """

    max_share_psi: float = Field(
        default=drift.DEFAULT_MAX_SHARE_PSI,
        ge=0.0,
        description="Largest population stability index of the segment shares "
        "(0.1 moderate, 0.25 large shift).",
    )
    max_centroid_shift: float = Field(
        default=drift.DEFAULT_MAX_CENTROID_SHIFT,
        ge=0.0,
        description="Largest movement of a kept segment's centre, in standard deviations.",
    )
    min_ari: float = Field(
        default=drift.DEFAULT_MIN_ARI,
        ge=-1.0,
        le=1.0,
        description="Smallest adjusted Rand index between this run's and the previous run's "
        "assignments of the same customers.",
    )
    max_silhouette_drop: float = Field(
        default=drift.DEFAULT_MAX_SILHOUETTE_DROP,
        ge=0.0,
        description="Largest fall of the silhouette score since the previous run.",
    )


def engine_for(settings: SegmentationSettings) -> SegmentationEngine:
    """The engine a run's settings ask for.

    The Spark engine gets its session from dagster-pyspark (imported only then, as pyspark
    is an optional extra); the session is process-wide, so the steps of a run (executed in
    one process) share it. An engine that cannot run here fails the step without retries,
    with the fix in the message.
    """
    try:
        if settings.engine != "spark":
            return get_engine(settings.engine)
        check_spark_available(settings.spark_master_url)
        return get_engine("spark", spark_session=_spark_session(settings.spark_master_url))
    except ValueError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None


def _spark_session(master: str):  # noqa: ANN202 - a pyspark SparkSession
    from dagster_pyspark.resources import spark_session_from_config

    from segmentation_pipeline.core.spark.session import (
        prepare_environment,
        quiet_session,
        session_config,
    )

    prepare_environment(master)
    session = spark_session_from_config(session_config(master))
    quiet_session(session, master)
    return session


def _from_env(name: str, default: Path | str) -> str | dg.EnvVar:
    """The environment variable when it is set (the UI then shows where the value comes
    from), else the project default, so that a bare `dg dev` works out of the box."""
    return dg.EnvVar(name) if os.environ.get(name, "").strip() else str(default)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "warehouse": WarehouseResource(
                path=_from_env(locations.WAREHOUSE_ENV, locations.DEFAULT_WAREHOUSE)
            ),
            "settings": SegmentationSettings(
                source_csv=_from_env(locations.SOURCE_ENV, locations.DEFAULT_SOURCE_CSV),
                spark_master=_from_env(SPARK_MASTER_ENV, DEFAULT_SPARK_MASTER),
            ),
            "drift_thresholds": DriftThresholds(),
        }
    )
