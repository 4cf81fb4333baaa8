"""The narrow interface behind which the heavy steps run.

The Dagster assets call an engine for everything that scales with the number of
customers: loading and validating the input, statistics, sampling, fitting and
assigning. The local engine does it with DuckDB and scikit-learn on one machine; a
distributed engine (Spark) implements the same methods and writes the same tables
into the run's work database, so assets, checks, tables and reports stay unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import duckdb

from segmentation_pipeline.core import ingest
from segmentation_pipeline.core.ingest import IngestSummary

ENGINE_NAMES = ("local", "spark")


class SegmentationEngine(Protocol):
    """What an engine must do; each method works on the run's work database."""

    name: str

    def stage_customers(
        self, con: duckdb.DuckDBPyConnection, source: Path, run_id: str
    ) -> IngestSummary:
        """Load and validate the input into ``customers``, quarantining bad rows."""
        ...


class LocalEngine:
    """DuckDB for loading, statistics and sampling; scikit-learn for fitting."""

    name = "local"

    def stage_customers(
        self, con: duckdb.DuckDBPyConnection, source: Path, run_id: str
    ) -> IngestSummary:
        return ingest.stage_customers(con, source, run_id)


def get_engine(name: str) -> SegmentationEngine:
    """The engine called ``name``; a clear error for one that is not installed here."""
    if name == "local":
        return LocalEngine()
    if name == "spark":
        raise ValueError("engine 'spark' is not available in this release; use --engine local")
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
