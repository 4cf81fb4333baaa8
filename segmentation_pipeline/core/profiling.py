"""Segment profiles: how each segment differs from the whole base, a name and a marketing action.

The pipeline computes per-segment statistics in SQL; this module turns those numbers into
something a marketer can act on. Every difference is measured the same way, as a z-score of
the segment mean against the whole customer base ((segment mean - base mean) / base std), so
that names and recommendations rest on one comparable scale whatever the units.

Names are driven by the features the model clustered on (that is what separates the segments),
with age or gender added as a secondary trait only when clearly distinctive. Names are unique
within a run and the whole computation is deterministic.

z-scores are relative to the whole base, so they move when other segments change even if a
segment's own customers and centre do not. A hard threshold would then rename a kept segment
(and change its recommendation) on a change elsewhere, which breaks the campaigns and
dashboards keyed on its name. So a segment that keeps its id from the previous run keeps each
trait level with hysteresis (``level_of``): a level holds until its z-score is past the
threshold by ``HYSTERESIS_MARGIN`` the other way, and a new level needs the threshold crossed by
that margin. New segments and first runs use the plain threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

# |z| from which a clustering feature counts as high or low.
PRIMARY_THRESHOLD = 0.5
# How far past PRIMARY_THRESHOLD a kept segment's z-score must go to change a level it had
# in the previous run (see level_of).
HYSTERESIS_MARGIN = 0.1
# |z| from which a feature the model did not cluster on is worth naming.
SECONDARY_THRESHOLD = 0.75
# Female share from which a segment is described as all-female (or, mirrored, all-male).
SINGLE_GENDER_SHARE = 0.9

AGE = "age"
INCOME = "annual_income"
SPENDING = "spending_score"
GENDER = "gender"
# Order in which traits appear in a name; income and spending are the business axes.
TRAIT_ORDER: tuple[str, ...] = (AGE, INCOME, SPENDING, GENDER)
# Features always described when clustered on, even when average ("mid income").
ALWAYS_DESCRIBED: tuple[str, ...] = (INCOME, SPENDING)

REQUIRED_STATS: tuple[str, ...] = (
    "segment_id",
    "n_customers",
    "avg_age",
    "avg_annual_income",
    "avg_spending_score",
    "female_share",
)
REQUIRED_OVERALL: tuple[str, ...] = (
    "n_customers",
    "mean_age",
    "std_age",
    "mean_annual_income",
    "std_annual_income",
    "mean_spending_score",
    "std_spending_score",
    "female_share",
)

HIGH, AVERAGE, LOW = "high", "average", "low"
LEVELS: tuple[str, ...] = (HIGH, AVERAGE, LOW)

# Each segment's trait levels in the previous run, by segment id, then feature; under NAMED,
# the features its name mentioned (comma-separated), where the previous run recorded them.
PreviousLevels = Mapping[int, Mapping[str, str]]
NAMED = "named"

# The segment mean of each feature, and how it reads in a name that needs it to differ.
MEAN_COLUMNS: dict[str, str] = {
    AGE: "avg_age",
    INCOME: "avg_annual_income",
    SPENDING: "avg_spending_score",
    GENDER: "female_share",
}
MEAN_LABELS: dict[str, str] = {
    AGE: "age {:.0f}",
    INCOME: "income {:.0f}k$",
    SPENDING: "spending {:.0f}",
    GENDER: "{:.0%} female",
}

# Words for each feature and level. Gender extremes are refined in trait_phrase().
TRAIT_WORDS: dict[str, dict[str, str]] = {
    AGE: {HIGH: "older", AVERAGE: "mid-age", LOW: "young"},
    INCOME: {HIGH: "high income", AVERAGE: "mid income", LOW: "low income"},
    SPENDING: {HIGH: "high spending", AVERAGE: "moderate spending", LOW: "low spending"},
    GENDER: {HIGH: "mostly female", AVERAGE: "mixed gender", LOW: "mostly male"},
}
MAINSTREAM_NAME = "average mainstream"

# Core marketing action per (income level, spending level).
ACTIONS: dict[tuple[str, str], str] = {
    (HIGH, HIGH): (
        "Retain and grow: VIP tier, early access to premium collections and personal service; "
        "reward loyalty rather than discount."
    ),
    (HIGH, AVERAGE): (
        "Upsell: premium ranges and curated bundles to lift basket size; exclusive previews."
    ),
    (HIGH, LOW): (
        "Convert: targeted campaigns that show quality and exclusivity (invitation events, "
        "premium trials, concierge service); survey what holds them back."
    ),
    (AVERAGE, HIGH): (
        "Reward: loyalty points and member offers to keep frequent buyers; cross-sell "
        "complementary categories."
    ),
    (AVERAGE, AVERAGE): (
        "Broad mainstream campaigns: seasonal promotions, newsletter and best-sellers at mid "
        "prices; A/B test offers to find sub-groups that respond."
    ),
    (AVERAGE, LOW): (
        "Activate: first-purchase and comeback coupons, reminders of everyday value; keep "
        "contact cost low."
    ),
    (LOW, HIGH): (
        "Value bundles and loyalty points: multi-buy deals, flash sales and price-match; "
        "reward spending without pushing credit."
    ),
    (LOW, AVERAGE): (
        "Value offers: budget ranges, loyalty points and bundle deals to keep them coming back."
    ),
    (LOW, LOW): (
        "Reactivate at low cost: email/SMS reminders, clearance sales and discount coupons; "
        "keep acquisition spend minimal."
    ),
}
AGE_HINTS: dict[str, str] = {
    LOW: "Channel: social media and mobile app push, trend-led products.",
    HIGH: "Channel: email, catalogue and in-store events; stress service and comfort.",
}
GENDER_HINTS: dict[str, str] = {
    HIGH: "Creative: tailor imagery and ranges to a mostly female audience.",
    LOW: "Creative: tailor imagery and ranges to a mostly male audience.",
}


@dataclass(frozen=True)
class Trait:
    """One feature's difference from the base: the z-score and its level word, and the
    segment mean (female share for gender) itself."""

    feature: str
    z: float
    level: str
    phrase: str
    mean: float
    named_before: bool | None = None  # the previous run's name mentioned it (None: no record)


def build_profiles(
    stats: pd.DataFrame,
    overall: Mapping[str, float],
    features: Sequence[str],
    previous: PreviousLevels | None = None,
) -> pd.DataFrame:
    """Add share, z-scores, a unique name and a marketing recommendation to segment stats.

    Returns one row per segment, sorted by segment_id, with the input columns plus ``share``,
    ``z_age``, ``z_annual_income``, ``z_spending_score``, ``z_gender`` (female share against the
    base), ``level_age`` ... ``level_gender`` (the high/average/low levels that the name and the
    recommendation rest on), ``segment_name`` and ``recommendation``. All four z-scores are
    computed whatever the clustering features, because the report's heatmap shows them all.

    ``previous`` holds the levels of the previous run's segments, by segment id: a
    segment found there keeps its levels with hysteresis (``level_of``), so that a change
    elsewhere in the base does not rename it; other segments use the plain threshold.
    """
    check_inputs(stats, overall, features)
    previous = previous or {}
    profiles = stats.sort_values("segment_id", kind="stable").reset_index(drop=True).copy()
    profiles["share"] = profiles["n_customers"] / float(overall["n_customers"])
    for feature in TRAIT_ORDER:
        profiles[f"z_{feature}"] = segment_z_scores(profiles, overall, feature)
    traits = [
        row_traits(row, previous.get(int(row["segment_id"]))) for _, row in profiles.iterrows()
    ]
    for feature in TRAIT_ORDER:
        profiles[f"level_{feature}"] = [t[feature].level for t in traits]
    profiles["name_traits"] = [",".join(name_features(t, features)) for t in traits]
    profiles["segment_name"] = unique_names(traits, list(profiles["segment_id"]), features)
    profiles["recommendation"] = [recommend(t) for t in traits]
    return profiles


def profile_records(
    stats: Sequence[Mapping[str, object]],
    overall: Mapping[str, float],
    features: Sequence[str],
    previous: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, object]]:
    """``build_profiles`` of statistics given as records (one dict per segment, as
    ``segment_stats.segment_statistics`` returns them), as records of Python values;
    ``previous`` are the previous run's profiles (``segment_stats.previous_profiles``)."""
    frame = pd.DataFrame(list(stats))
    levels = previous_levels(previous)
    return build_profiles(frame, overall, features, levels).to_dict("records")


def previous_levels(previous: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, str]]:
    """The trait levels of the previous run's profiles, by segment id, then feature.

    Profiles written before levels were stored have none; they were named by the plain
    threshold, so their level is that of their z-score.
    """
    levels: dict[int, dict[str, str]] = {}
    for row in previous:
        levels[int(row["segment_id"])] = {
            feature: stored_level(row.get(f"level_{feature}"), row.get(f"z_{feature}"))
            for feature in TRAIT_ORDER
        }
        if isinstance(row.get("name_traits"), str):
            levels[int(row["segment_id"])][NAMED] = row["name_traits"]
    return levels


def stored_level(level: str | None, z: float | None) -> str:
    """A stored level, or for a row without one (or an unknown word) the plain level of its z."""
    if level in LEVELS:
        return str(level)
    return level_of(z if z is not None and math.isfinite(z) else 0.0)


def check_inputs(
    stats: pd.DataFrame, overall: Mapping[str, float], features: Sequence[str]
) -> None:
    """Fail early with the missing names, rather than with a KeyError deep inside."""
    missing_stats = [c for c in REQUIRED_STATS if c not in stats.columns]
    missing_overall = [k for k in REQUIRED_OVERALL if k not in overall]
    unknown_features = [f for f in features if f not in TRAIT_ORDER]
    problems = []
    if missing_stats:
        problems.append(f"stats lacks columns {missing_stats}")
    if missing_overall:
        problems.append(f"overall lacks keys {missing_overall}")
    if unknown_features:
        problems.append(f"unknown features {unknown_features} (expected {list(TRAIT_ORDER)})")
    if not features:
        problems.append("no clustering features given")
    if "segment_id" in stats.columns and stats["segment_id"].duplicated().any():
        problems.append("duplicate segment_id values in stats")
    if problems:
        raise ValueError("; ".join(problems))


def segment_z_scores(
    profiles: pd.DataFrame, overall: Mapping[str, float], feature: str
) -> pd.Series:
    """z-score of each segment's mean (or female share) against the whole base.

    Gender is a 0/1 female indicator, so its base std is sqrt(p(1-p)). A zero or missing std
    means the base does not vary on that feature, so no segment can differ: z is 0.
    """
    if feature == GENDER:
        values = profiles["female_share"].astype(float)
        mean = float(overall["female_share"])
        std = math.sqrt(max(mean * (1.0 - mean), 0.0))
    else:
        values = profiles[f"avg_{feature}"].astype(float)
        mean = float(overall[f"mean_{feature}"])
        std = float(overall[f"std_{feature}"])
    if not math.isfinite(std) or std <= 0:
        return pd.Series(0.0, index=profiles.index)
    return ((values - mean) / std).fillna(0.0)


def level_of(z: float, previous: str | None = None) -> str:
    """High, low or average, by the primary threshold, with hysteresis around a previous level.

    Without a previous level (a new segment, a first run): high from z >= 0.5, low from
    z <= -0.5. With one (the segment kept its id), the previous level holds while z stays
    within HYSTERESIS_MARGIN of its side of the threshold (high while z >= 0.4, low while
    z <= -0.4, average while -0.6 < z < 0.6), and any other level needs the threshold crossed
    by the margin (high from z >= 0.6, low from z <= -0.6). So z-scores that wander around
    0.5 because the rest of the base changed keep the level, hence the name; a segment that
    really moved still changes.
    """
    if previous is None:
        enter = PRIMARY_THRESHOLD
    else:
        keep = PRIMARY_THRESHOLD - HYSTERESIS_MARGIN
        if (previous == HIGH and z >= keep) or (previous == LOW and z <= -keep):
            return previous
        enter = PRIMARY_THRESHOLD + HYSTERESIS_MARGIN
    if z >= enter:
        return HIGH
    if z <= -enter:
        return LOW
    return AVERAGE


def trait_phrase(feature: str, level: str, female_share: float) -> str:
    """Words for one trait; a near single-gender segment is called plainly female or male."""
    if feature == GENDER and female_share >= SINGLE_GENDER_SHARE:
        return "female"
    if feature == GENDER and female_share <= 1.0 - SINGLE_GENDER_SHARE:
        return "male"
    return TRAIT_WORDS[feature][level]


def row_traits(row: pd.Series, previous: Mapping[str, str] | None = None) -> dict[str, Trait]:
    """All four traits of one segment, keyed by feature; ``previous`` holds the segment's
    levels in the previous run, if it was there (a feature missing from it: plain threshold)."""
    female_share = float(row["female_share"]) if pd.notna(row["female_share"]) else 0.5
    named = (previous or {}).get(NAMED)
    traits = {}
    for feature in TRAIT_ORDER:
        z = float(row[f"z_{feature}"])
        level = level_of(z, (previous or {}).get(feature))
        mean = float(row[MEAN_COLUMNS[feature]])
        phrase = trait_phrase(feature, level, female_share)
        before = None if named is None else feature in named.split(",")
        traits[feature] = Trait(feature, z, level, phrase, mean, before)
    return traits


def is_distinctive(trait: Trait) -> bool:
    """Whether a feature the model did not cluster on is worth naming: |z| from the
    secondary threshold; for a segment whose previous name is on record, with the same
    hysteresis as the levels (kept down to the threshold less the margin, added from the
    threshold plus it), so a z-score wandering around it does not rename the segment."""
    z = abs(trait.z)
    if trait.named_before is None:
        return z >= SECONDARY_THRESHOLD
    if trait.named_before:
        return z >= SECONDARY_THRESHOLD - HYSTERESIS_MARGIN
    return z >= SECONDARY_THRESHOLD + HYSTERESIS_MARGIN


def name_features(traits: Mapping[str, Trait], features: Sequence[str]) -> list[str]:
    """The features a segment's base name mentions.

    Clustered-on income and spending are always described (they are the business axes);
    other clustered-on features only when high or low; features the model did not use only
    when clearly distinctive (secondary threshold).
    """
    chosen = []
    for feature in TRAIT_ORDER:
        trait = traits[feature]
        if feature in features:
            keep = feature in ALWAYS_DESCRIBED or trait.level != AVERAGE
        else:
            keep = is_distinctive(trait)
        if keep:
            chosen.append(feature)
    return chosen


def is_mainstream(traits: Mapping[str, Trait], features: Sequence[str]) -> bool:
    """True when the segment is average on every clustering feature."""
    return all(traits[f].level == AVERAGE for f in features)


def compose_name(
    traits: Mapping[str, Trait], mentioned: Sequence[str], features: Sequence[str]
) -> str:
    """Join the mentioned traits in a fixed order into a capitalised name.

    A segment average on every clustering feature is 'Average mainstream'; its clustered
    'mid income' / 'moderate spending' would only repeat that, so they are left out.
    """
    ordered = [f for f in TRAIT_ORDER if f in mentioned]
    if not is_mainstream(traits, features):
        return capitalise(", ".join(traits[f].phrase for f in ordered))
    redundant = {f for f in ALWAYS_DESCRIBED if f in features}
    parts = [MAINSTREAM_NAME] + [traits[f].phrase for f in ordered if f not in redundant]
    return capitalise(", ".join(parts))


def capitalise(text: str) -> str:
    """Upper-case the first letter only (str.capitalize would lower-case the rest)."""
    return text[:1].upper() + text[1:]


def unique_names(
    all_traits: Sequence[Mapping[str, Trait]],
    segment_ids: Sequence[int],
    features: Sequence[str],
) -> list[str]:
    """Names for all segments, made unique deterministically.

    Colliding segments each gain their next most distinctive unmentioned trait that is high
    or low (largest |z|, ties in TRAIT_ORDER) until the names differ. An average trait
    ("mid-age", "mixed gender") would tell the segments apart without saying anything true
    about them, so when no such trait is left the names gain the segment mean of the
    clustering feature that differs most between them ("High income (income 102k$)");
    a numeral in segment_id order is the last resort.
    """
    mentioned = [name_features(t, features) for t in all_traits]
    names = [compose_name(t, m, features) for t, m in zip(all_traits, mentioned, strict=True)]
    while True:
        clashing = clashing_positions(names)
        grown = False
        for pos in clashing:
            extra = next_trait(all_traits[pos], mentioned[pos])
            if extra is not None:
                mentioned[pos].append(extra)
                names[pos] = compose_name(all_traits[pos], mentioned[pos], features)
                grown = True
        if not clashing or not grown:
            break
    named = with_distinct_means(names, all_traits, features)
    return number_duplicates(named, segment_ids)


def with_distinct_means(
    names: Sequence[str],
    all_traits: Sequence[Mapping[str, Trait]],
    features: Sequence[str],
) -> list[str]:
    """Each group of segments that still share a name gains, in brackets, the segment mean of
    the clustering feature whose z-scores spread most within the group (ties in feature
    order), when that tells every member apart."""
    result = list(names)
    for name in sorted(set(names)):
        group = [i for i, n in enumerate(names) if n == name]
        if len(group) < 2:
            continue
        zs = {f: [all_traits[i][f].z for i in group] for f in features}
        feature = max(features, key=lambda f: (max(zs[f]) - min(zs[f]), -features.index(f)))
        labels = [MEAN_LABELS[feature].format(all_traits[i][feature].mean) for i in group]
        if len(set(labels)) == len(labels):
            for i, label in zip(group, labels, strict=True):
                result[i] = f"{name} ({label})"
    return result


def clashing_positions(names: Sequence[str]) -> list[int]:
    """Positions whose name is shared with another segment."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [i for i, name in enumerate(names) if counts[name] > 1]


def next_trait(traits: Mapping[str, Trait], mentioned: Sequence[str]) -> str | None:
    """The most distinctive high or low feature not yet in the name, or None."""
    remaining = [f for f in TRAIT_ORDER if f not in mentioned and traits[f].level != AVERAGE]
    if not remaining:
        return None
    return max(remaining, key=lambda f: (abs(traits[f].z), -TRAIT_ORDER.index(f)))


def number_duplicates(names: Sequence[str], segment_ids: Sequence[int]) -> list[str]:
    """Append ' (1)', ' (2)', ... to names still shared, numbered in segment_id order."""
    result = list(names)
    for name in sorted(set(names)):
        positions = [i for i, n in enumerate(names) if n == name]
        if len(positions) < 2:
            continue
        for number, pos in enumerate(sorted(positions, key=lambda i: segment_ids[i]), start=1):
            result[pos] = f"{name} ({number})"
    return result


def recommend(traits: Mapping[str, Trait]) -> str:
    """A concrete marketing action from the income x spending levels, plus age/gender hints.

    The action matrix uses income and spending whatever the clustering features, since they
    decide what to offer; age decides the channel and gender the creative, when distinctive.
    """
    action = ACTIONS[(traits[INCOME].level, traits[SPENDING].level)]
    hints = [AGE_HINTS.get(traits[AGE].level, ""), GENDER_HINTS.get(traits[GENDER].level, "")]
    return " ".join([action, *[h for h in hints if h]])
