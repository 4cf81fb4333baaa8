"""Clustering features: which columns, how they are standardised, and the model's sample.

Statistics are computed in DuckDB SQL over every customer (one pass, any size), and the
scaling parameters are stored as data with the run, so a model is fully described by its
centroids plus these numbers. The sample for model fitting is chosen by a hash of the
customer id and the seed, so it depends on which customers there are, not on the order of
the rows in the input file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np

from segmentation_pipeline.core.schema import FEATURE_COLUMNS, FEMALE_INDICATOR_SQL, FEMALE_VALUES

# The hash prefilter of sample_features lets through this many times the sample size.
_SAMPLE_FILTER_MARGIN = 1.1
# gender enters as a 0/1 female indicator, so it can be averaged and scaled.
_EXPRESSIONS = {
    "age": "CAST(age AS DOUBLE)",
    "annual_income": "CAST(annual_income AS DOUBLE)",
    "spending_score": "CAST(spending_score AS DOUBLE)",
    "gender": FEMALE_INDICATOR_SQL,
}


@dataclass(frozen=True)
class FeatureScaling:
    """Per-feature mean and population standard deviation: z = (x - mean) / std."""

    features: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]

    def to_original(self, scaled: np.ndarray) -> np.ndarray:
        """Standardised values (e.g. centroids) back in the features' own units."""
        return np.asarray(scaled, dtype=np.float64) * np.array(self.stds) + np.array(self.means)

    def to_scaled(self, original: np.ndarray) -> np.ndarray:
        return (np.asarray(original, dtype=np.float64) - np.array(self.means)) / np.array(self.stds)

    def scaled_columns_sql(self) -> str:
        """SELECT-list of the standardised features as FLOAT, named after the features."""
        return ", ".join(
            f"CAST(({_EXPRESSIONS[name]} - {mean!r}) / {std!r} AS FLOAT) AS {name}"
            for name, mean, std in zip(self.features, self.means, self.stds, strict=True)
        )


def parse_features(features: Sequence[str] | str) -> tuple[str, ...]:
    """Validate a feature list ('age,annual_income' or a sequence); clear error otherwise.

    The features come back in one canonical order, that of FEATURE_COLUMNS, whatever the
    order given: the columns' order changes the model's arithmetic (k-means++ and the
    sample's float sums), so 'spending_score,age,annual_income' gave another silhouette and
    moved 3 customers against the default order on the same file. One set of features is
    one configuration, with one published result, recorded in that order.
    """
    names = (
        [f.strip() for f in features.split(",")] if isinstance(features, str) else list(features)
    )
    names = [name for name in names if name]
    if not names:
        raise ValueError("no features given; choose from " + ", ".join(FEATURE_COLUMNS))
    unknown = [name for name in names if name not in FEATURE_COLUMNS]
    if unknown:
        raise ValueError(
            f"unknown feature(s) {', '.join(unknown)}; choose from {', '.join(FEATURE_COLUMNS)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"feature listed twice in {', '.join(names)}")
    return tuple(sorted(names, key=FEATURE_COLUMNS.index))


def compute_scaling(con: duckdb.DuckDBPyConnection, features: Sequence[str]) -> FeatureScaling:
    """Means and (population) standard deviations over all customers, the same on every run.

    DuckDB's avg and stddev_pop add up in whatever order its threads finish, so over a few
    million customers their last digits changed from run to run (14 different standard
    deviations in 15 runs at 10 million rows), and with them every scaled value downstream.
    favg adds with compensated (Kahan) summation, whose result does not depend on that
    order in practice; the deviation is then the root of the mean squared distance from
    that mean, a second pass (identical results in repeated runs at 10 million rows).
    """
    expressions = [_EXPRESSIONS[name] for name in features]
    sums = ", ".join(f"favg({expression})" for expression in expressions)
    n_customers, *averages = con.execute(f"SELECT count(*), {sums} FROM customers").fetchone()  # noqa: S608
    means = tuple(float(v) for v in averages)
    spreads = ", ".join(
        spread_sql(expression, mean) for expression, mean in zip(expressions, means, strict=True)
    )
    row = con.execute(f"SELECT {spreads} FROM customers").fetchone()  # noqa: S608 - fixed names
    stds = tuple(float(v) if v is not None else 0.0 for v in row)
    constant = [name for name, std in zip(features, stds, strict=True) if not std > 0]
    if constant:
        raise ValueError(constant_features_message(constant, n_customers))
    return FeatureScaling(tuple(features), means, stds)


def constant_features_message(constant: Sequence[str], n_customers: int) -> str:
    """Why features with no spread cannot be used, for both engines. Gender is a female
    indicator, so a gender column coded otherwise (0/1, codes) is constant though varied."""
    if n_customers < 2:
        return f"only {n_customers} customer: at least 2 are needed to form segments"
    message = (
        f"feature(s) {', '.join(constant)} have the same value for every customer, so they "
        "cannot separate segments; leave them out of --features"
    )
    if "gender" in constant:
        readings = ", ".join(FEMALE_VALUES)
        message += (
            f" (gender enters as a female indicator: no customer's gender reads as female "
            f"({readings}, in any case), or every one does)"
        )
    return message


def spread_sql(expression: str, centre: float) -> str:
    """SQL: the population standard deviation of ``expression``, the same on every run.

    The mean squared distance from a fixed ``centre`` less the squared distance of the mean
    from it. With the centre at or near the values' mean the subtraction loses no meaningful
    precision, and favg's compensated sums do not depend on the order DuckDB's threads add
    them in (stddev_pop's do). Works as an aggregate over groups too.
    """
    # A DOUBLE constant: a bare 42.04 would be a DECIMAL, and integer columns minus a
    # DECIMAL are computed in (slow) decimal arithmetic.
    offset = f"({expression} - CAST({centre!r} AS DOUBLE))"
    return f"sqrt(greatest(favg({offset} * {offset}) - pow(favg({offset}), 2), 0))"


def record_scaling(con: duckdb.DuckDBPyConnection, scaling: FeatureScaling, run_id: str) -> None:
    """Store the scaling parameters with the run, and a view of today's scaled features."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS feature_scaling "
        "(run_id VARCHAR, position INTEGER, feature VARCHAR, mean DOUBLE, std DOUBLE)"
    )
    con.execute("DELETE FROM feature_scaling WHERE run_id = $run_id", {"run_id": run_id})
    con.executemany(
        "INSERT INTO feature_scaling VALUES (?, ?, ?, ?, ?)",
        [
            (run_id, position, name, mean, std)
            for position, (name, mean, std) in enumerate(
                zip(scaling.features, scaling.means, scaling.stds, strict=True)
            )
        ],
    )
    con.execute(
        f"CREATE OR REPLACE VIEW customer_features AS "  # noqa: S608 - numbers and fixed names
        f"SELECT customer_id, {scaling.scaled_columns_sql()} FROM customers"
    )


def sample_features(
    con: duckdb.DuckDBPyConnection, scaling: FeatureScaling, size: int, seed: int
) -> np.ndarray:
    """Up to ``size`` customers' standardised features as float32 rows.

    All customers when there are at most ``size``; otherwise those with the smallest
    hash of (customer_id, seed): deterministic, and independent of the input row order.

    A top-``size`` over every customer keeps a heap of ``size`` rows (1.7 s for 200,000 of
    10 million), so customers are first filtered on the hash value, which is uniform over
    0..2^64: a bound that lets through about 10% more than ``size`` leaves only those few
    to sort (0.3 s). The smallest ``size`` hashes all pass the filter whenever at least
    ``size`` rows do, so the result is the same; when fewer pass (tens of standard
    deviations away at these sizes), the top-``size`` runs over every customer.
    """
    n_customers = con.execute("SELECT count(*) FROM customers").fetchone()[0]
    columns = f"SELECT {scaling.scaled_columns_sql()} FROM customers"  # noqa: S608 - fixed names
    if n_customers <= size:
        rows = con.execute(f"{columns} ORDER BY customer_id").fetchnumpy()
    else:
        top = "ORDER BY hash(customer_id, $seed), customer_id LIMIT $size"
        bound = min(2**64 - 1, int(2**64 * _SAMPLE_FILTER_MARGIN * size / n_customers))
        rows = con.execute(
            f"{columns} WHERE hash(customer_id, $seed) < CAST($bound AS UBIGINT) {top}",
            {"seed": seed, "size": size, "bound": bound},
        ).fetchnumpy()
        if len(rows[scaling.features[0]]) < size:
            rows = con.execute(f"{columns} {top}", {"seed": seed, "size": size}).fetchnumpy()
    return np.column_stack([rows[name] for name in scaling.features]).astype(np.float32)
