"""Scaled features and nearest-centroid assignment as Spark column expressions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation_pipeline.core.features import FeatureScaling
from segmentation_pipeline.core.schema import FEMALE_VALUES

# Feature expressions, as in core/features.py: gender is a 0/1 female indicator.
FEATURES: dict[str, Callable[[], SparkColumn]] = {
    "age": lambda: F.col("age").cast("double"),
    "annual_income": lambda: F.col("annual_income").cast("double"),
    "spending_score": lambda: F.col("spending_score").cast("double"),
    "gender": lambda: F.when(F.lower(F.trim("gender")).isin(*FEMALE_VALUES), 1.0).otherwise(0.0),
}


def scaled_columns(scaling: FeatureScaling) -> list[SparkColumn]:
    """The standardised features as FLOAT, named after the features (as in DuckDB)."""
    return [
        ((FEATURES[name]() - F.lit(mean)) / F.lit(std)).cast("float").alias(name)
        for name, mean, std in zip(scaling.features, scaling.means, scaling.stds, strict=True)
    ]


def with_nearest(
    frame: DataFrame, features: Sequence[str], centroids: np.ndarray, runner_up: bool = True
) -> DataFrame:
    """Adds the nearest centroid's index and squared distance (_i1, _m1) and the runner-up's
    (_i2, _m2), ties to the lower index, as assign_nearest does.

    Features are read as DOUBLE from columns named after them. Each step is its own column
    (_d0.. first), so Spark computes every distance once instead of inlining it into every
    comparison (which grows the expression with the fourth power of k).
    """
    centres = np.asarray(centroids, dtype=np.float64)
    distances = [f"_d{j}" for j in range(len(centres))]
    frame = frame.select(
        "*",
        *[
            _squared_distance(features, centre).alias(d)
            for d, centre in zip(distances, centres, strict=True)
        ],
    )
    frame = frame.withColumn("_m1", _smallest([F.col(d) for d in distances]))
    frame = frame.withColumn("_i1", _first_index(distances, F.col("_m1"), set()))
    if not runner_up:
        return frame
    others = [
        F.when(F.col("_i1") == j, F.lit(float("inf"))).otherwise(F.col(d))
        for j, d in enumerate(distances)
    ]
    frame = frame.withColumn("_m2", _smallest(others) if len(others) > 1 else F.lit(float("inf")))
    return frame.withColumn("_i2", _first_index(distances, F.col("_m2"), {"_i1"}))


def _squared_distance(features: Sequence[str], centre: np.ndarray) -> SparkColumn:
    total = F.lit(0.0)
    for name, c in zip(features, centre, strict=True):
        total = total + (F.col(name).cast("double") - F.lit(float(c))) ** 2
    return total


def _smallest(columns: list[SparkColumn]) -> SparkColumn:
    return F.least(*columns) if len(columns) > 1 else columns[0]


def _first_index(distances: list[str], target: SparkColumn, excluded: set[str]) -> SparkColumn:
    """The lowest index j whose distance equals ``target`` (and is not in an excluded
    index column); NULL if none."""
    index = F.lit(None).cast("int")
    for j in reversed(range(len(distances))):
        match = F.col(distances[j]) == target
        for column in excluded:
            match = match & (F.col(column) != j)
        index = F.when(match, F.lit(j)).otherwise(index)
    return index


def pick(index: SparkColumn, values: Sequence[float | int]) -> SparkColumn:
    """values[index] as a column (NULL for a NULL index)."""
    picked = F.lit(None)
    for j in reversed(range(len(values))):
        picked = F.when(index == j, F.lit(values[j])).otherwise(picked)
    return picked
