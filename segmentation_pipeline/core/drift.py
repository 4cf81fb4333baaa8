"""Drift between a run and the previous one: how much did the segmentation move overnight?

Four signals, each with a threshold, each a warning rather than a stop (a changed customer
base is news for the analysts, not a reason to withhold the new results):

- **share shift**: the population stability index (PSI) of the segment shares, over the
  stable segment ids. A segment that appears or disappears counts with a floor share, so it
  shows up as a large shift.
- **centroid movement**: for each segment present in both runs, how far its centroid moved,
  in standard deviations of this (the current) run's features; the largest movement is
  compared. `centroid_shifts` is the one definition: the report's drift table uses it too.
- **assignment agreement**: the adjusted Rand index of the customers in both runs (recorded
  by the run as `ari_vs_previous`).
- **silhouette drop**: how much cluster separation the new model lost.

Centroids and silhouettes only compare between models of the same features: when the
features changed, the centroid and silhouette checks pass with a description saying so (as
on a first run). The share shift and the assignment agreement compare which customers are
in which segment, which a feature change does change, so they still judge it and name the
change (no segment keeps its id across it: the stable ids only match the same features).
Silhouettes also compare only within one engine (MLlib's uses squared distances), so the
silhouette check passes, saying so, when the engine changed.

The functions here are pure (numbers in, verdicts out) except `load_snapshot`, which reads
one run's figures from the warehouse with plain SQL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import duckdb

# A share of 0 has no logarithm: a segment missing from one run counts as this share.
PSI_EPSILON = 1e-4

FIRST_RUN = "first run, nothing to compare"

DEFAULT_MAX_SHARE_PSI = 0.2
DEFAULT_MAX_CENTROID_SHIFT = 0.5
DEFAULT_MIN_ARI = 0.8
DEFAULT_MAX_SILHOUETTE_DROP = 0.05


@dataclass(frozen=True)
class RunSnapshot:
    """What drift compares of one run: segment shares, centroids, scaling and quality."""

    run_id: str
    previous_run_id: str | None
    silhouette: float | None
    ari_vs_previous: float | None
    shares: Mapping[int, float]
    centroids: Mapping[int, Mapping[str, float]]  # original units, per segment and feature
    stds: Mapping[str, float]  # the run's feature standard deviations
    features: tuple[str, ...]  # as recorded in segmentation_runs.features
    engine: str | None  # local or spark; their silhouettes differ (MLlib's: squared distances)


@dataclass(frozen=True)
class DriftOutcome:
    """A drift signal's verdict, a sentence for people, and figures for the UI."""

    passed: bool
    description: str
    metadata: dict[str, float | int | str] = field(default_factory=dict)


def features_changed(previous: RunSnapshot, current: RunSnapshot) -> str | None:
    """'features changed (old -> new)' when the runs clustered different sets of features,
    else None. Compared as sets: runs recorded before features were put in one order list
    the same set in another order, and their models do compare."""
    if set(previous.features) == set(current.features):
        return None
    return f"features changed ({','.join(previous.features)} -> {','.join(current.features)})"


def population_stability_index(
    previous: Mapping[int, float],
    current: Mapping[int, float],
    epsilon: float = PSI_EPSILON,
) -> tuple[float, dict[int, float]]:
    """PSI = sum over segments of (current - previous) * ln(current / previous).

    Returns the total and each segment's term. Shares below `epsilon` (including absent
    segments) are raised to it, so a segment that appears or vanishes gives a large but
    finite term. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large shift.
    """
    if epsilon <= 0:
        raise ValueError("epsilon must be positive")
    terms: dict[int, float] = {}
    for segment in sorted(set(previous) | set(current)):
        p = max(float(previous.get(segment, 0.0)), epsilon)
        q = max(float(current.get(segment, 0.0)), epsilon)
        terms[segment] = (q - p) * math.log(q / p)
    return sum(terms.values()), terms


def centroid_shifts(
    previous: Mapping[int, Mapping[str, float]],
    current: Mapping[int, Mapping[str, float]],
    stds: Mapping[str, float],
) -> dict[int, float]:
    """Euclidean distance each shared segment's centroid moved, in standard deviations.

    Each feature's difference is divided by its standard deviation in `stds`, so income in
    k$ and a 1-100 score weigh alike. Callers pass the CURRENT run's standard deviations:
    that is the scale the stable ids are matched on (core/alignment.py standardises both
    runs' centroids with the current scaling), so a segment that kept its id always shows a
    movement below `segment_match_distance`, and the drift check, the report and the id
    rule give one number for one movement. Only segments and features present in both runs
    (and with a positive standard deviation) are compared.
    """
    shifts: dict[int, float] = {}
    for segment in sorted(set(previous) & set(current)):
        before, after = previous[segment], current[segment]
        features = [f for f in before if f in after and stds.get(f, 0.0) > 0]
        if not features:
            continue
        shifts[segment] = math.sqrt(sum(((after[f] - before[f]) / stds[f]) ** 2 for f in features))
    return shifts


def share_shift(previous: RunSnapshot | None, current: RunSnapshot, max_psi: float) -> DriftOutcome:
    """Warn when the segment shares moved more than `max_psi` (PSI) since the last run."""
    if previous is None:
        return DriftOutcome(True, FIRST_RUN, {"max_psi": max_psi})
    psi, terms = population_stability_index(previous.shares, current.shares)
    added = sorted(set(current.shares) - set(previous.shares))
    retired = sorted(set(previous.shares) - set(current.shares))
    biggest = max(terms, key=lambda s: terms[s]) if terms else None
    metadata: dict[str, float | int | str] = {
        "psi": round(psi, 6),
        "max_psi": max_psi,
        "previous_run_id": previous.run_id,
        "segments_added": _ids(added),
        "segments_retired": _ids(retired),
    }
    detail = f"PSI {psi:.3f} over {len(terms)} segment(s) vs run {previous.run_id}"
    if biggest is not None:
        detail += f"; largest change: segment {biggest} {_share_change(previous, current, biggest)}"
    if added or retired:
        detail += f"; new segment(s): {_ids(added)}; retired: {_ids(retired)}"
    changed = _note_feature_change(previous, current, metadata)
    if changed:
        detail += f"; {changed}, so no segment kept its id"
    if psi > max_psi:
        return DriftOutcome(
            False, f"segment shares shifted: {detail} (limit {max_psi:g})", metadata
        )
    return DriftOutcome(True, f"segment shares stable: {detail} (limit {max_psi:g})", metadata)


def centroid_movement(
    previous: RunSnapshot | None, current: RunSnapshot, max_shift: float
) -> DriftOutcome:
    """Warn when a segment's centroid moved more than `max_shift` standard deviations (of
    this run's features, see `centroid_shifts`)."""
    if previous is None:
        return DriftOutcome(True, FIRST_RUN, {"max_shift_std": max_shift})
    not_comparable = _not_comparable(previous, current, "centres", {"max_shift_std": max_shift})
    if not_comparable is not None:
        return not_comparable
    shifts = centroid_shifts(previous.centroids, current.centroids, current.stds)
    metadata: dict[str, float | int | str] = {
        "max_shift_std": max_shift,
        "previous_run_id": previous.run_id,
        "segments_compared": len(shifts),
        **{f"shift_segment_{s}": round(d, 6) for s, d in shifts.items()},
    }
    if not shifts:
        return DriftOutcome(
            True,
            f"no segment of run {previous.run_id} kept its id, so no centroid to compare "
            "(see the share shift for new and retired segments)",
            metadata,
        )
    worst = max(shifts, key=lambda s: shifts[s])
    metadata["largest_shift_std"] = round(shifts[worst], 6)
    detail = (
        f"largest centroid movement {shifts[worst]:.3f} std (segment {worst}) over "
        f"{len(shifts)} segment(s) kept since run {previous.run_id} (limit {max_shift:g})"
    )
    if shifts[worst] > max_shift:
        return DriftOutcome(False, f"segment centres moved: {detail}", metadata)
    return DriftOutcome(True, f"segment centres stable: {detail}", metadata)


def assignment_agreement(
    previous: RunSnapshot | None, current: RunSnapshot, min_ari: float
) -> DriftOutcome:
    """Warn when customers in both runs were regrouped: ARI below `min_ari`."""
    if previous is None:
        return DriftOutcome(True, FIRST_RUN, {"min_ari": min_ari})
    metadata: dict[str, float | int | str] = {
        "min_ari": min_ari,
        "previous_run_id": previous.run_id,
    }
    changed = _note_feature_change(previous, current, metadata)
    ari = current.ari_vs_previous
    if ari is None:
        return DriftOutcome(
            False,
            f"no customer is in both this run and run {previous.run_id}, so the segmentations "
            "cannot be compared: the customer base was replaced",
            metadata,
        )
    metadata["ari"] = round(ari, 6)
    detail = f"adjusted Rand index {ari:.3f} vs run {previous.run_id} (minimum {min_ari:g})"
    if changed:
        detail += f"; {changed}"
    if ari < min_ari:
        return DriftOutcome(False, f"customers were regrouped: {detail}", metadata)
    return DriftOutcome(True, f"customers kept their groups: {detail}", metadata)


def silhouette_drop(
    previous: RunSnapshot | None, current: RunSnapshot, max_drop: float
) -> DriftOutcome:
    """Warn when the silhouette fell by more than `max_drop` (absolute) since the last run."""
    if previous is None:
        return DriftOutcome(True, FIRST_RUN, {"max_drop": max_drop})
    not_comparable = _not_comparable(previous, current, "silhouettes", {"max_drop": max_drop})
    if not_comparable is not None:
        return not_comparable
    if previous.engine and current.engine and previous.engine != current.engine:
        return DriftOutcome(
            True,
            f"engine changed ({previous.engine} -> {current.engine}) since run "
            f"{previous.run_id}: silhouettes of different engines are not comparable "
            "(Spark's uses squared distances), nothing to compare",
            {"max_drop": max_drop, "previous_run_id": previous.run_id},
        )
    metadata: dict[str, float | int | str] = {
        "max_drop": max_drop,
        "previous_run_id": previous.run_id,
    }
    if previous.silhouette is None or current.silhouette is None:
        return DriftOutcome(
            True, "silhouette not recorded for both runs; nothing to compare", metadata
        )
    drop = previous.silhouette - current.silhouette
    metadata.update(
        silhouette=round(current.silhouette, 6),
        previous_silhouette=round(previous.silhouette, 6),
        drop=round(drop, 6),
    )
    detail = (
        f"silhouette {current.silhouette:.3f}, was {previous.silhouette:.3f} in run "
        f"{previous.run_id} (drop {drop:+.3f}, limit {max_drop:g})"
    )
    if drop > max_drop:
        return DriftOutcome(False, f"segments are less separated: {detail}", metadata)
    return DriftOutcome(True, f"separation held: {detail}", metadata)


def load_snapshot(con: duckdb.DuckDBPyConnection, run_id: str) -> RunSnapshot | None:
    """One run's drift figures from the warehouse tables, or None if the run is not there."""
    run = con.execute(
        "SELECT previous_run_id, silhouette, ari_vs_previous, features, engine "
        "FROM segmentation_runs WHERE run_id = $run_id",
        {"run_id": run_id},
    ).fetchone()
    if run is None:
        return None
    shares = con.execute(
        "SELECT segment_id, share FROM segment_profiles WHERE run_id = $run_id",
        {"run_id": run_id},
    ).fetchall()
    stds = load_stds(con, run_id)
    return RunSnapshot(
        run_id=run_id,
        previous_run_id=run[0],
        silhouette=_float_or_none(run[1]),
        ari_vs_previous=_float_or_none(run[2]),
        shares={int(s): float(v) for s, v in shares},
        centroids=load_centroids(con, run_id),
        stds=stds,
        features=tuple(str(run[3]).split(",")) if run[3] else tuple(stds),
        engine=run[4],
    )


def load_centroids(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[int, dict[str, float]]:
    """One run's centroids in original units, per segment and feature."""
    centroids: dict[int, dict[str, float]] = {}
    for segment, feature, value in con.execute(
        "SELECT segment_id, feature, centroid FROM segment_centroids WHERE run_id = $run_id",
        {"run_id": run_id},
    ).fetchall():
        centroids.setdefault(int(segment), {})[feature] = float(value)
    return centroids


def load_stds(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, float]:
    """One run's feature standard deviations (the scale of its model)."""
    rows = con.execute(
        "SELECT feature, std FROM feature_scaling WHERE run_id = $run_id",
        {"run_id": run_id},
    ).fetchall()
    return {f: float(v) for f, v in rows}


def run_centroid_shifts(
    con: duckdb.DuckDBPyConnection, run_id: str, previous_run_id: str
) -> dict[int, float]:
    """`centroid_shifts` of ``run_id`` against ``previous_run_id``, read from the warehouse."""
    return centroid_shifts(
        load_centroids(con, previous_run_id),
        load_centroids(con, run_id),
        load_stds(con, run_id),
    )


def latest_run_id(con: duckdb.DuckDBPyConnection) -> str | None:
    """The most recently finished run recorded in the warehouse."""
    row = con.execute(
        "SELECT run_id FROM segmentation_runs ORDER BY finished_at DESC, run_id LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def _note_feature_change(
    previous: RunSnapshot, current: RunSnapshot, metadata: dict[str, float | int | str]
) -> str | None:
    """The feature change between the runs, if any, also put in ``metadata``."""
    changed = features_changed(previous, current)
    if changed:
        metadata.update(
            previous_features=",".join(previous.features), features=",".join(current.features)
        )
    return changed


def _not_comparable(
    previous: RunSnapshot,
    current: RunSnapshot,
    what: str,
    metadata: dict[str, float | int | str],
) -> DriftOutcome | None:
    """A pass saying why, when the two models were fitted on different features: their
    ``what`` (centres, silhouettes) do not compare, as on a first run."""
    metadata = {**metadata, "previous_run_id": previous.run_id}
    changed = _note_feature_change(previous, current, metadata)
    if changed is None:
        return None
    return DriftOutcome(
        True,
        f"{changed} since run {previous.run_id}: {what} of models on different features "
        "are not comparable, nothing to compare",
        metadata,
    )


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _ids(ids: list[int]) -> str:
    return ", ".join(str(i) for i in ids) or "none"


def _share_change(previous: RunSnapshot, current: RunSnapshot, segment: int) -> str:
    before = previous.shares.get(segment, 0.0)
    after = current.shares.get(segment, 0.0)
    return f"{before:.1%} -> {after:.1%}"
