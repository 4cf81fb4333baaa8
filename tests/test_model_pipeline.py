"""The model through real Dagster runs: reference results, determinism, stable ids, migrations,
profiles and the report."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from segmentation_pipeline.core.generate import write_customers_csv
from tests.test_pipeline import materialize

TWO_FEATURES = ["annual_income", "spending_score"]
REFERENCE_CENTROIDS = [(55.3, 49.5), (86.5, 82.1), (25.7, 79.4), (88.2, 17.1), (26.3, 20.9)]


def query(warehouse: Path, sql: str, **parameters: object) -> pd.DataFrame:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql, parameters).df()
    finally:
        con.close()


def latest_run(warehouse: Path) -> pd.Series:
    return query(warehouse, "SELECT * FROM segmentation_runs ORDER BY finished_at DESC").iloc[0]


def assignments(warehouse: Path) -> dict[str, int]:
    frame = query(warehouse, "SELECT customer_id, segment_id FROM customer_segments")
    return dict(zip(frame.customer_id, frame.segment_id, strict=True))


@pytest.fixture(scope="module")
def mall_run(tmp_path_factory: pytest.TempPathFactory, mall_csv: Path) -> Path:
    warehouse = tmp_path_factory.mktemp("mall") / "warehouse.duckdb"
    assert materialize(mall_csv, warehouse, features=TWO_FEATURES).success
    return warehouse


def test_mall_reference_result(mall_run, mall_csv):
    run = latest_run(mall_run)
    assert run.n_segments == 5
    assert run.silhouette == pytest.approx(0.554, abs=0.005)
    assert run.features == "annual_income,spending_score"

    centroids = query(
        mall_run,
        "PIVOT (SELECT segment_id, feature, centroid FROM segment_centroids) "
        "ON feature USING first(centroid) ORDER BY segment_id",
    )
    found = centroids[TWO_FEATURES].to_numpy()
    for expected in REFERENCE_CENTROIDS:
        assert np.min(np.abs(found - expected).max(axis=1)) <= 1.0, expected

    raw = pd.read_csv(mall_csv, dtype={"CustomerID": str})
    plain = KMeans(5, n_init=10, random_state=42).fit_predict(raw.iloc[:, [3, 4]].to_numpy())
    ours = assignments(mall_run)
    assert adjusted_rand_score(plain, [ours[cid] for cid in raw.CustomerID]) >= 0.95


def test_mall_candidates_cover_every_algorithm_and_k(mall_run):
    candidates = query(mall_run, "SELECT * FROM model_candidates")
    assert set(candidates.algorithm) == {"kmeans", "gmm", "ward"}
    assert sorted(set(candidates.k)) == list(range(2, 11))
    assert candidates.selected.sum() == 1
    chosen = candidates[candidates.selected].iloc[0]
    assert (chosen.algorithm, chosen.k) == (latest_run(mall_run).algorithm, 5)
    assert candidates.loc[candidates.algorithm == "kmeans", "inertia"].notna().all()
    assert candidates.stability.between(-1, 1).all()


def test_every_customer_has_a_segment_distance_runner_up_and_outlier_flag(mall_run):
    segments = query(mall_run, "SELECT * FROM customer_segments")
    assert len(segments) == 200
    assert segments.segment_id.nunique() == 5
    assert (segments.distance <= segments.second_distance).all()
    assert (segments.segment_id != segments.second_segment_id).all()
    assert segments.segment_name.notna().all()
    assert 0 < segments.is_outlier.sum() <= 20


def test_first_run_counts_every_customer_as_new_in_its_segment(mall_run):
    moves = query(
        mall_run,
        "SELECT m.* FROM segment_migrations m WHERE run_id = "
        "(SELECT run_id FROM segmentation_runs ORDER BY finished_at LIMIT 1) ORDER BY 4",
    )
    sizes = query(
        mall_run,
        "SELECT segment_id, n_customers FROM segment_profiles WHERE run_id = $run_id "
        "ORDER BY segment_id",
        run_id=moves.run_id.iloc[0],
    )
    assert moves.previous_run_id.isna().all() and moves.from_segment_id.isna().all()
    assert moves.to_segment_id.tolist() == sizes.segment_id.tolist()
    assert moves.n_customers.tolist() == sizes.n_customers.tolist()


def test_mall_profiles_are_named_after_their_place_on_the_plane(mall_run):
    profiles = query(
        mall_run, "SELECT * FROM segment_profiles ORDER BY avg_annual_income, avg_spending_score"
    )
    assert profiles.segment_name.nunique() == 5
    assert profiles.recommendation.nunique() == 5
    assert profiles.share.sum() == pytest.approx(1.0)

    def name_at(income: float, spending: float) -> str:
        distance = (profiles.avg_annual_income - income) ** 2 + (
            profiles.avg_spending_score - spending
        ) ** 2
        return profiles.loc[distance.idxmin(), "segment_name"].lower()

    assert re.search(r"high income.*high spending", name_at(86.5, 82.1))
    assert re.search(r"high income.*low spending", name_at(88.2, 17.1))
    assert re.search(r"low income.*high spending", name_at(25.7, 79.4))
    assert re.search(r"low income.*low spending", name_at(26.3, 20.9))
    assert "mainstream" in name_at(55.3, 49.5) or "mid income" in name_at(55.3, 49.5)


def test_mall_report_is_written_self_contained(mall_run):
    reports = mall_run.parent / "reports"
    run_id = latest_run(mall_run).run_id
    html = (reports / f"{run_id}.html").read_text()
    assert (reports / "latest.html").read_text() == html
    assert (reports / f"{run_id}.md").exists()
    assert "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") >= 6
    for name in query(mall_run, "SELECT segment_name FROM segment_profiles").segment_name:
        assert name in html


def test_same_input_twice_gives_identical_assignments_and_ids(mall_run, mall_csv):
    before = assignments(mall_run)
    assert materialize(mall_csv, mall_run, features=TWO_FEATURES).success
    assert assignments(mall_run) == before
    run = latest_run(mall_run)
    assert run.ari_vs_previous == pytest.approx(1.0)
    moves = query(
        mall_run,
        "SELECT * FROM segment_migrations WHERE run_id = $run_id",
        run_id=run.run_id,
    )
    assert (moves.from_segment_id == moves.to_segment_id).all()
    assert moves.n_customers.sum() == 200


def test_shuffled_rows_give_the_same_segments_and_ids(tmp_path, mall_csv, mall_run):
    lines = mall_csv.read_text().splitlines()
    rng = np.random.default_rng(7)
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("\n".join([lines[0], *rng.permutation(lines[1:])]) + "\n")
    fresh = tmp_path / "fresh" / "warehouse.duckdb"

    assert materialize(shuffled, fresh, features=TWO_FEATURES).success
    assert assignments(fresh) == assignments(mall_run)


def test_the_same_features_in_another_order_give_the_same_published_result(tmp_path, mall_csv):
    """One set of features is one configuration: listed in another order, the features are
    used in the canonical order, so the model, the segments and the recorded features are
    the default's (before, 'spending_score,age,annual_income' gave silhouette 0.427 against
    0.429, and 3 customers in another segment)."""
    default = tmp_path / "default" / "warehouse.duckdb"
    reordered = tmp_path / "reordered" / "warehouse.duckdb"
    assert materialize(mall_csv, default).success
    assert materialize(
        mall_csv, reordered, features=["spending_score", "age", "annual_income"]
    ).success

    assert assignments(reordered) == assignments(default)
    assert latest_run(reordered).silhouette == latest_run(default).silhouette
    assert latest_run(reordered).features == "age,annual_income,spending_score"


def test_refresh_with_ten_percent_new_customers_keeps_ids_and_counts_movers(tmp_path):
    base = write_customers_csv(tmp_path / "base.csv", rows=1000, seed=1)
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    assert materialize(base, warehouse).success
    first = latest_run(warehouse)
    first_ids = set(query(warehouse, "SELECT segment_id FROM segment_profiles").segment_id)

    extra = write_customers_csv(tmp_path / "extra.csv", rows=1100, seed=2).read_text()
    new_rows = [
        line.replace(line.split(",")[0], f"N{i:04d}", 1)
        for i, line in enumerate(extra.splitlines()[1:101])
    ]
    grown = tmp_path / "grown.csv"
    grown.write_text(base.read_text() + "\n".join(new_rows) + "\n")
    assert materialize(grown, warehouse).success
    second = latest_run(warehouse)

    assert second.previous_run_id == first.run_id
    assert second.n_customers == 1100
    if second.n_segments == first.n_segments:
        profiles = query(
            warehouse,
            "SELECT segment_id FROM segment_profiles WHERE run_id = $run_id",
            run_id=second.run_id,
        )
        assert set(profiles.segment_id) == first_ids
    history = query(
        warehouse,
        "SELECT run_id, customer_id, segment_id FROM customer_segments_history",
    )
    old = history[history.run_id == first.run_id].set_index("customer_id").segment_id
    new = history[history.run_id == second.run_id].set_index("customer_id").segment_id
    joined = pd.concat([old.rename("from"), new.rename("to")], axis=1)
    expected = joined.fillna(-1).value_counts().sort_index()
    migrations = query(
        warehouse,
        "SELECT coalesce(from_segment_id, -1) AS f, coalesce(to_segment_id, -1) AS t, n_customers "
        "FROM segment_migrations WHERE run_id = $run_id",
        run_id=second.run_id,
    )
    got = migrations.set_index(["f", "t"]).n_customers.sort_index()
    assert got.to_dict() == {(int(f), int(t)): n for (f, t), n in expected.items()}
    assert got.loc[-1].sum() == 100  # the new customers arrive from nowhere


def test_report_escapes_text_from_the_input(tmp_path, mall_csv):
    text = mall_csv.read_text().replace("Female", "<script>alert(1)</script>", 3)
    source = tmp_path / "hostile.csv"
    source.write_text(text)
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    assert materialize(source, warehouse, features=TWO_FEATURES).success
    html = (warehouse.parent / "reports" / "latest.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_history_keeps_the_configured_window_of_runs(tmp_path, mall_csv):
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    for _ in range(3):
        assert materialize(mall_csv, warehouse, features=TWO_FEATURES, history_runs_kept=2).success
    runs = query(warehouse, "SELECT run_id FROM segmentation_runs ORDER BY finished_at, run_id")
    history = query(
        warehouse,
        "SELECT run_id, count(*) AS n FROM customer_segments_history GROUP BY run_id",
    )
    assert len(runs) == 3  # run summaries stay for good
    assert set(history.run_id) == set(runs.run_id[-2:])
    assert set(history.n) == {200}
    tables = query(
        warehouse,
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'assignment_history'",
    )
    assert set(tables.table_name) == set(runs.run_id[-2:])  # the oldest run's table dropped
    latest = query(warehouse, "SELECT count(*) AS n FROM customer_latest_segment")
    assert latest.n[0] == 200
