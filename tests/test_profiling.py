"""Segment profiling: z-scores, names that match the segment's place, actions, uniqueness."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.cluster import KMeans

from segmentation_pipeline.core.profiling import (
    NAMED,
    build_profiles,
    level_of,
    previous_levels,
    profile_records,
)
from tests.mall_stats import mall_customers, overall_stats, segment_stats

INCOME_SPENDING = ("annual_income", "spending_score")

# A base with round numbers so crafted segment means give obvious z-scores.
OVERALL = {
    "n_customers": 1000,
    "mean_age": 40.0,
    "std_age": 10.0,
    "mean_annual_income": 60.0,
    "std_annual_income": 20.0,
    "mean_spending_score": 50.0,
    "std_spending_score": 20.0,
    "female_share": 0.5,
}


def crafted_stats(rows: list[dict]) -> pd.DataFrame:
    """Segment stats from a few given means; the other columns get harmless defaults."""
    defaults = {
        "n_customers": 100,
        "avg_age": 40.0,
        "avg_annual_income": 60.0,
        "avg_spending_score": 50.0,
        "female_share": 0.5,
    }
    full = [{**defaults, **row} for row in rows]
    stats = pd.DataFrame(full)
    for feature in ("age", "annual_income", "spending_score"):
        stats[f"median_{feature}"] = stats[f"avg_{feature}"]
        stats[f"std_{feature}"] = 1.0
    return stats


def z(feature: str, value_z: float) -> float:
    """The segment mean that sits value_z base standard deviations from the base mean."""
    return OVERALL[f"mean_{feature}"] + value_z * OVERALL[f"std_{feature}"]


@pytest.fixture(scope="module")
def mall_profiles() -> pd.DataFrame:
    """Profiles of KMeans(5) on income x spending over the real Mall data."""
    customers = mall_customers()
    model = KMeans(5, n_init=10, random_state=42).fit(customers[list(INCOME_SPENDING)])
    customers["segment_id"] = model.labels_
    return build_profiles(segment_stats(customers), overall_stats(customers), INCOME_SPENDING)


def name_at(profiles: pd.DataFrame, income: float, spending: float) -> str:
    """Name of the segment whose mean is nearest to the given income x spending point."""
    distance = (profiles["avg_annual_income"] - income) ** 2 + (
        profiles["avg_spending_score"] - spending
    ) ** 2
    return str(profiles.loc[distance.idxmin(), "segment_name"]).lower()


def recommendation_at(profiles: pd.DataFrame, income: float, spending: float) -> str:
    """Recommendation of the segment nearest to the given income x spending point."""
    distance = (profiles["avg_annual_income"] - income) ** 2 + (
        profiles["avg_spending_score"] - spending
    ) ** 2
    return str(profiles.loc[distance.idxmin(), "recommendation"]).lower()


def test_mall_names_are_distinct_and_match_the_income_spending_plane(mall_profiles):
    names = mall_profiles["segment_name"]
    assert names.nunique() == 5

    high_high = name_at(mall_profiles, 86.5, 82.1)
    assert "high income" in high_high and "high spending" in high_high

    low_high = name_at(mall_profiles, 25.7, 79.4)
    assert "low income" in low_high and "high spending" in low_high
    assert "young" in low_high  # average age ~25 against ~39: a distinctive secondary trait

    high_low = name_at(mall_profiles, 88.2, 17.1)
    assert "high income" in high_low and "low spending" in high_low

    low_low = name_at(mall_profiles, 26.3, 20.9)
    assert "low income" in low_low and "low spending" in low_low

    average = name_at(mall_profiles, 55.3, 49.5)
    assert "average" in average and "high" not in average and "low" not in average


def test_mall_recommendations_differ_and_fit_the_segment(mall_profiles):
    assert mall_profiles["recommendation"].nunique() == 5
    assert "vip" in recommendation_at(mall_profiles, 86.5, 82.1)
    assert "convert" in recommendation_at(mall_profiles, 88.2, 17.1)
    low_high = recommendation_at(mall_profiles, 25.7, 79.4)
    assert "value bundles" in low_high and "social media" in low_high
    assert "reactivate" in recommendation_at(mall_profiles, 26.3, 20.9)
    assert "mainstream" in recommendation_at(mall_profiles, 55.3, 49.5)


def test_mall_profiles_keep_stats_and_add_share_and_z_scores(mall_profiles):
    assert list(mall_profiles["segment_id"]) == [0, 1, 2, 3, 4]
    assert mall_profiles["share"].sum() == pytest.approx(1.0)
    for column in ("z_age", "z_annual_income", "z_spending_score", "z_gender", "median_age"):
        assert column in mall_profiles.columns
    weighted = (mall_profiles["z_annual_income"] * mall_profiles["share"]).sum()
    assert weighted == pytest.approx(0.0, abs=1e-9)  # segment means average to the base mean


def test_z_score_is_segment_mean_against_base_mean_over_base_std():
    stats = crafted_stats([{"segment_id": 0, "avg_annual_income": 90.0, "female_share": 0.75}])
    profile = build_profiles(stats, OVERALL, INCOME_SPENDING).iloc[0]
    assert profile["z_annual_income"] == pytest.approx(1.5)
    assert profile["z_spending_score"] == pytest.approx(0.0)
    assert profile["z_gender"] == pytest.approx(0.25 / 0.5)  # base std of a 0/1 share of 0.5
    assert profile["share"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("income_z", "spending_z", "expected"),
    [
        (1.0, 1.0, "High income, high spending"),
        (1.0, -1.0, "High income, low spending"),
        (-1.0, 1.0, "Low income, high spending"),
        (-1.0, -1.0, "Low income, low spending"),
        (1.0, 0.0, "High income, moderate spending"),
        (0.0, -1.0, "Mid income, low spending"),
        (0.2, -0.3, "Average mainstream"),
    ],
)
def test_names_follow_income_and_spending_levels(income_z, spending_z, expected):
    stats = crafted_stats(
        [
            {
                "segment_id": 7,
                "avg_annual_income": z("annual_income", income_z),
                "avg_spending_score": z("spending_score", spending_z),
            }
        ]
    )
    profile = build_profiles(stats, OVERALL, INCOME_SPENDING).iloc[0]
    assert profile["segment_name"] == expected


def test_age_is_added_only_when_clearly_distinctive():
    stats = crafted_stats(
        [
            {"segment_id": 0, "avg_annual_income": z("annual_income", 1), "avg_age": z("age", -1)},
            {
                "segment_id": 1,
                "avg_annual_income": z("annual_income", -1),
                "avg_age": z("age", 0.6),
            },
        ]
    )
    names = list(build_profiles(stats, OVERALL, INCOME_SPENDING)["segment_name"])
    assert names == ["Young, high income, moderate spending", "Low income, moderate spending"]


def test_age_as_clustering_feature_is_named_from_the_primary_threshold():
    stats = crafted_stats([{"segment_id": 0, "avg_age": z("age", 0.6)}])
    profile = build_profiles(stats, OVERALL, ("age", "spending_score")).iloc[0]
    assert profile["segment_name"] == "Older, moderate spending"
    assert "email" in profile["recommendation"]


def test_single_gender_segment_from_gender_feature_is_named_plainly():
    stats = crafted_stats(
        [
            {"segment_id": 0, "female_share": 1.0, "avg_spending_score": z("spending_score", 1)},
            {"segment_id": 1, "female_share": 0.0, "avg_spending_score": z("spending_score", 1)},
        ]
    )
    names = list(build_profiles(stats, OVERALL, ("spending_score", "gender"))["segment_name"])
    assert names == ["High spending, female", "High spending, male"]


def test_duplicate_names_gain_the_next_most_distinctive_trait():
    high_high = {
        "avg_annual_income": z("annual_income", 1.2),
        "avg_spending_score": z("spending_score", 1.2),
    }
    # Neither age nor gender passes the secondary threshold, so both start with the same name;
    # segment 0 differs most by age, segment 1 by gender.
    stats = crafted_stats(
        [
            {"segment_id": 0, **high_high, "avg_age": z("age", -0.6), "female_share": 0.5},
            {"segment_id": 1, **high_high, "avg_age": z("age", 0.1), "female_share": 0.8},
        ]
    )
    names = list(build_profiles(stats, OVERALL, INCOME_SPENDING)["segment_name"])
    assert names == [
        "Young, high income, high spending",
        "High income, high spending, mostly female",
    ]


def test_identical_segments_are_numbered_in_segment_id_order():
    twin = {
        "avg_annual_income": z("annual_income", 1),
        "avg_spending_score": z("spending_score", 1),
    }
    stats = crafted_stats(
        [{"segment_id": 9, **twin}, {"segment_id": 3, **twin}, {"segment_id": 5, **twin}]
    )
    profiles = build_profiles(stats, OVERALL, INCOME_SPENDING)
    assert list(profiles["segment_id"]) == [3, 5, 9]
    names = list(profiles["segment_name"])
    assert len(set(names)) == 3
    assert [name[-3:] for name in names] == ["(1)", "(2)", "(3)"]


def test_segments_alike_but_for_the_clustered_feature_are_told_apart_by_its_mean():
    """Clustered on income alone, three high-income segments: average age, spending or
    gender would separate their names without being true of them ('mid-age', 'mixed
    gender'), so the names carry the income itself."""
    stats = crafted_stats(
        [
            {"segment_id": 1, "avg_annual_income": z("annual_income", 0.8), "avg_age": 42.0},
            {"segment_id": 2, "avg_annual_income": z("annual_income", 1.6), "female_share": 0.6},
            {"segment_id": 3, "avg_annual_income": z("annual_income", 2.9)},
            {"segment_id": 4, "avg_annual_income": z("annual_income", -1.2)},
        ]
    )
    names = list(build_profiles(stats, OVERALL, ("annual_income",))["segment_name"])
    assert names == [
        "High income (income 76k$)",
        "High income (income 92k$)",
        "High income (income 118k$)",
        "Low income",
    ]


def test_disambiguation_separates_two_average_segments_by_age():
    stats = crafted_stats(
        [
            {"segment_id": 0, "avg_age": z("age", -0.6)},
            {"segment_id": 1, "avg_age": z("age", 0.6)},
        ]
    )
    names = list(build_profiles(stats, OVERALL, INCOME_SPENDING)["segment_name"])
    assert names == ["Average mainstream, young", "Average mainstream, older"]


def test_output_is_deterministic_and_sorted_whatever_the_input_order():
    rows = [
        {"segment_id": i, "avg_annual_income": z("annual_income", (i % 3) - 1)} for i in range(6)
    ]
    forward = build_profiles(crafted_stats(rows), OVERALL, INCOME_SPENDING)
    backward = build_profiles(crafted_stats(rows[::-1]), OVERALL, INCOME_SPENDING)
    pd.testing.assert_frame_equal(forward, backward)
    assert forward["segment_name"].is_unique


def test_zero_base_std_gives_zero_z_instead_of_infinity():
    overall = {**OVERALL, "std_age": 0.0}
    stats = crafted_stats([{"segment_id": 0, "avg_age": 55.0}])
    profile = build_profiles(stats, overall, INCOME_SPENDING).iloc[0]
    assert profile["z_age"] == 0.0


def test_missing_inputs_are_reported_by_name():
    stats = crafted_stats([{"segment_id": 0}]).drop(columns=["female_share"])
    with pytest.raises(ValueError, match="female_share"):
        build_profiles(stats, OVERALL, INCOME_SPENDING)
    with pytest.raises(ValueError, match="unknown features"):
        build_profiles(crafted_stats([{"segment_id": 0}]), OVERALL, ("shoe_size",))


# Hysteresis: a segment that keeps its id keeps a trait level until its z-score is past the
# 0.5 threshold by the 0.1 margin; new segments and first runs use the plain threshold.
AGE_INCOME_SPENDING = ("age", "annual_income", "spending_score")


@pytest.mark.parametrize(
    ("z_value", "previous", "expected"),
    [
        (0.51, None, "high"),  # first run or new segment: the plain threshold
        (0.49, None, "average"),
        (-0.51, None, "low"),
        (0.55, "average", "average"),  # just across: not enough to change a kept level
        (-0.55, "average", "average"),
        (0.6, "average", "high"),  # across by the margin: changes
        (-0.6, "average", "low"),
        (0.45, "high", "high"),  # just below: a high level holds
        (0.4, "high", "high"),
        (-0.45, "low", "low"),
        (0.39, "high", "average"),  # below threshold minus margin: changes
        (-0.39, "low", "average"),
        (-0.55, "high", "average"),  # from high, low needs the margin too
        (-0.65, "high", "low"),
        (0.65, "low", "high"),
    ],
)
def test_level_of_holds_a_previous_level_within_the_margin(z_value, previous, expected):
    assert level_of(z_value, previous) == expected


def low_low_at_age(segment_id: int, age_z: float) -> dict:
    """A low income, low spending segment at the given age z-score."""
    return {
        "segment_id": segment_id,
        "avg_age": z("age", age_z),
        "avg_annual_income": z("annual_income", -1.0),
        "avg_spending_score": z("spending_score", -1.0),
    }


def test_a_kept_segment_just_across_the_threshold_keeps_its_name_and_recommendation():
    """The QA case: z_age 0.479 -> 0.509 renamed 'Low income, low spending' and changed its
    recommendation, though only other customers had left the base."""
    stats = crafted_stats([low_low_at_age(5, 0.509)])
    average_age = {5: {"age": "average", "annual_income": "low", "spending_score": "low"}}
    kept = build_profiles(stats, OVERALL, AGE_INCOME_SPENDING, average_age).iloc[0]
    new = build_profiles(stats, OVERALL, AGE_INCOME_SPENDING).iloc[0]

    assert kept["segment_name"] == "Low income, low spending"
    assert kept["level_age"] == "average"
    assert "Channel" not in kept["recommendation"]
    assert new["segment_name"] == "Older, low income, low spending"
    assert new["level_age"] == "high"
    assert "Channel: email" in new["recommendation"]


def test_only_segment_ids_of_the_previous_run_get_hysteresis():
    stats = crafted_stats([low_low_at_age(1, 0.55), {**low_low_at_age(2, -0.55), "avg_age": 20}])
    profiles = build_profiles(
        stats, OVERALL, AGE_INCOME_SPENDING, {1: {"age": "average"}, 9: {"age": "high"}}
    )
    assert list(profiles["segment_name"]) == [
        "Low income, low spending",  # kept at 0.55: still average
        "Young, low income, low spending",  # new id at z -2: plain threshold
    ]


def test_a_kept_segment_that_really_moved_changes_its_name():
    stats = crafted_stats([low_low_at_age(5, 0.35), low_low_at_age(6, 0.65)])
    previous = {5: {"age": "high"}, 6: {"age": "average"}}
    profiles = build_profiles(stats, OVERALL, AGE_INCOME_SPENDING, previous)
    assert list(profiles["level_age"]) == ["average", "high"]
    assert list(profiles["segment_name"]) == [
        "Low income, low spending",
        "Older, low income, low spending",
    ]
    assert "Channel: email" in profiles["recommendation"].iloc[1]


def test_names_stay_unique_when_hysteresis_keeps_two_segments_alike():
    """Segment 1 stays average-aged by hysteresis, segment 2 is new and average: the same
    levels, so the existing disambiguation still tells them apart."""
    stats = crafted_stats([low_low_at_age(1, 0.55), low_low_at_age(2, 0.1)])
    profiles = build_profiles(stats, OVERALL, AGE_INCOME_SPENDING, {1: {"age": "average"}})
    assert list(profiles["level_age"]) == ["average", "average"]
    assert profiles["segment_name"].is_unique
    assert all(n.startswith("Low income, low spending") for n in profiles["segment_name"])


def test_previous_profiles_without_stored_levels_use_the_plain_level_of_their_z():
    """Rows from before levels were stored were named by the plain threshold."""
    rows = [
        {"segment_id": 5, "z_age": 0.509, "level_age": None, "z_gender": None},
        {"segment_id": 6, "z_age": 0.3, "level_age": "high", "z_annual_income": -0.7},
    ]
    assert previous_levels(rows) == {
        5: {
            "age": "high",
            "annual_income": "average",
            "spending_score": "average",
            "gender": "average",
        },
        6: {
            "age": "high",
            "annual_income": "low",
            "spending_score": "average",
            "gender": "average",
        },
    }


def test_same_input_and_same_previous_run_give_the_same_names():
    stats = crafted_stats([low_low_at_age(i, 0.45 + 0.05 * i) for i in range(1, 5)])
    records = stats.to_dict("records")
    previous = [{"segment_id": i, "z_age": 0.5, "level_age": "high"} for i in (1, 2)]
    first = profile_records(records, OVERALL, AGE_INCOME_SPENDING, previous)
    again = profile_records(records[::-1], OVERALL, AGE_INCOME_SPENDING, previous[::-1])
    assert first == again
    assert len({r["segment_name"] for r in first}) == 4


INCOME_SPENDING = ("annual_income", "spending_score")


def test_a_mention_of_a_feature_not_clustered_on_holds_within_the_margin():
    """Age enters a name on income and spending from |z| 0.75. A kept segment named
    'Young' at z -0.76 lost the word at -0.74 though nothing about it changed."""
    stats = crafted_stats([low_low_at_age(1, -0.70), low_low_at_age(2, -0.80)])
    previous = {
        1: {NAMED: "age,annual_income,spending_score"},  # it was named young
        2: {NAMED: "annual_income,spending_score"},  # it was not
    }

    profiles = build_profiles(stats, OVERALL, INCOME_SPENDING, previous)

    assert list(profiles["segment_name"]) == [
        "Young, low income, low spending",  # held down to |z| 0.65
        "Low income, low spending",  # added only from |z| 0.85
    ]
    assert list(profiles["name_traits"]) == [
        "age,annual_income,spending_score",
        "annual_income,spending_score",
    ]


def test_a_mention_beyond_the_margin_changes_and_new_segments_use_the_plain_threshold():
    gone = build_profiles(
        crafted_stats([low_low_at_age(1, -0.60)]),
        OVERALL,
        INCOME_SPENDING,
        {1: {NAMED: "age,annual_income,spending_score"}},
    )
    new = build_profiles(crafted_stats([low_low_at_age(1, -0.76)]), OVERALL, INCOME_SPENDING)

    assert list(gone["segment_name"]) == ["Low income, low spending"]
    assert list(new["segment_name"]) == ["Young, low income, low spending"]


def test_the_features_a_name_mentioned_are_read_back_for_the_next_run():
    rows = [{"segment_id": 3, "z_age": -0.7, "name_traits": "age,annual_income,spending_score"}]
    assert previous_levels(rows)[3][NAMED] == "age,annual_income,spending_score"
    assert NAMED not in previous_levels([{"segment_id": 3, "z_age": -0.7}])[3]  # older rows
