"""Spark sessions: a local one bound to loopback with the UI off, a cluster's, or Spark Connect."""

from __future__ import annotations

import os
import re
import warnings

from pyspark.sql import SparkSession

# pyspark warns on every pandas/Arrow conversion that pandas 3 is "not yet fully supported";
# the engine exchanges data as Arrow tables only, so the warning says nothing about it.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")

APP_NAME = "segmentation_pipeline"


def is_spark_connect(master: str) -> bool:
    """Spark Connect URLs (sc://host:port) name a remote session, not a master."""
    return master.startswith("sc://")


def session_config(master: str) -> dict[str, str]:
    """The Spark settings of a run's session for ``master``.

    A local master binds to 127.0.0.1 with the UI off, so a run opens no port to the
    network, and uses as few shuffle partitions as it has cores (the default 200 tiny tasks
    cost more than the work on one machine). A cluster keeps its own defaults.
    """
    if is_spark_connect(master):
        return {"spark.remote": master}
    config = {
        "spark.master": master,
        "spark.app.name": APP_NAME,
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
    }
    if master.startswith("local"):
        config |= {
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": str(_local_cores(master)),
        }
    return config


def _local_cores(master: str) -> int:
    """Cores of a local master: local -> 1, local[4] -> 4, local[*] -> all of them."""
    found = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master)
    if found is None:  # "local", or local-cluster[...]
        return 1
    if found.group(1) == "*":
        return os.cpu_count() or 1
    return int(found.group(1))


def prepare_environment(master: str) -> None:
    """Before a local session starts its JVM: SPARK_LOCAL_IP=127.0.0.1 (unless set), so
    everything the JVM opens, not only the driver, binds to the loopback address."""
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def quiet_session(session: SparkSession, master: str) -> None:
    """Log level WARN: Spark's INFO lines would bury the run's own progress."""
    if not is_spark_connect(master):
        session.sparkContext.setLogLevel("WARN")


def build_session(master: str) -> SparkSession:
    """A session for ``master`` with the run settings (for use outside Dagster)."""
    prepare_environment(master)
    builder = SparkSession.builder
    for key, value in session_config(master).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    quiet_session(session, master)
    return session
