"""The narrow interface behind which the heavy steps run.

The Dagster assets call an engine for everything that scales with the number of
customers: loading and validating the input, statistics, sampling, fitting and
assigning. The local engine does it with DuckDB and scikit-learn on one machine; a
distributed engine (Spark) implements the same methods and writes the same tables into
the run's work database, so assets, checks, tables and reports stay unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import duckdb
import numpy as np

from segmentation_pipeline.core import assignment, features, ingest, selection
from segmentation_pipeline.core.features import FeatureScaling
from segmentation_pipeline.core.ingest import IngestSummary
from segmentation_pipeline.core.selection import ModelSelection

ENGINE_NAMES = ("local", "spark")


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
    ) -> int:
        """Write ``segment_assignments`` for every customer; return the count."""
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
    ) -> int:
        return assignment.assign_customers(con, scaling, centroids, segment_ids, thresholds, run_id)


def get_engine(name: str) -> SegmentationEngine:
    """The engine called ``name``; a clear error for one that is not installed here."""
    if name == "local":
        return LocalEngine()
    if name == "spark":
        raise ValueError("engine 'spark' is not available in this release; use --engine local")
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
