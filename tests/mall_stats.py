"""The Mall file and per-segment statistics computed with pandas the way the pipeline's SQL
computes them (population standard deviation), shared by the profiling and report tests."""

from __future__ import annotations

import pandas as pd

from tests.conftest import MALL_CSV

FEATURES = ("age", "annual_income", "spending_score")


def mall_customers() -> pd.DataFrame:
    """The real Mall file in canonical column names, ids kept as text."""
    frame = pd.read_csv(MALL_CSV, dtype={"CustomerID": str})
    frame.columns = ["customer_id", "gender", "age", "annual_income", "spending_score"]
    return frame


def segment_stats(customers: pd.DataFrame) -> pd.DataFrame:
    """Per-segment statistics of customers that carry a segment_id column."""
    grouped = customers.groupby("segment_id")
    stats = pd.DataFrame({"n_customers": grouped.size()})
    for feature in FEATURES:
        stats[f"avg_{feature}"] = grouped[feature].mean()
        stats[f"median_{feature}"] = grouped[feature].median()
        stats[f"std_{feature}"] = grouped[feature].std(ddof=0)
    stats["female_share"] = grouped["gender"].apply(lambda g: (g == "Female").mean())
    return stats.reset_index()


def overall_stats(customers: pd.DataFrame) -> dict[str, float]:
    """Whole-base statistics."""
    overall: dict[str, float] = {"n_customers": float(len(customers))}
    for feature in FEATURES:
        overall[f"mean_{feature}"] = float(customers[feature].mean())
        overall[f"std_{feature}"] = float(customers[feature].std(ddof=0))
    overall["female_share"] = float((customers["gender"] == "Female").mean())
    return overall
