"""The Dagster assets and checks, materialized for real against DuckDB files."""

from __future__ import annotations

import csv
import random
import re
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from segmentation_pipeline.core.profiling import level_of
from segmentation_pipeline.definitions import defs
from segmentation_pipeline.defs.resources import NOT_STAGED, SegmentationSettings, WarehouseResource
from tests.conftest import KAGGLE_HEADER, file_sha256

DEFINITIONS = defs()


def materialize(
    source: Path, warehouse: Path, selection: dg.AssetSelection | None = None, **settings: object
) -> dg.ExecuteInProcessResult:
    """Every asset and check of the code location (or the selection), materialized for real."""
    return dg.materialize(
        [*DEFINITIONS.assets, *DEFINITIONS.asset_checks],
        selection=selection,
        resources={
            **DEFINITIONS.resources,
            "warehouse": WarehouseResource(path=str(warehouse)),
            "settings": SegmentationSettings(source_csv=str(source), **settings),
        },
        raise_on_error=False,
    )


def published(warehouse: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    return tmp_path / "out" / "warehouse.duckdb"


@pytest.fixture
def published_mall(mall_csv: Path, warehouse: Path) -> Path:
    result = materialize(mall_csv, warehouse)
    assert result.success
    return warehouse


def test_mall_file_is_staged_checked_and_published(mall_csv, warehouse):
    result = materialize(mall_csv, warehouse)

    assert result.success
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert {
        "customer_ids_unique",
        "required_fields_present",
        "values_in_range",
        "reject_share_within_limit",
        "customer_count_kept",
    } <= set(evaluations)
    assert all(evaluations.values())
    assert published(warehouse, "SELECT count(*), count(DISTINCT customer_id) FROM customers") == [
        (200, 200)
    ]
    metadata = result.asset_materializations_for_node("raw_customers")[0].metadata
    assert metadata["dagster/row_count"].value == 200
    assert metadata["rejected_rows"].value == 0
    assert (
        metadata["source_sha256"].value
        == published(warehouse, "SELECT source_sha256 FROM ingest_runs")[0][0]
    )
    assert "| 0001 " in metadata["preview"].value
    columns = [c.name for c in metadata["dagster/column_schema"].value.columns]
    assert columns == ["customer_id", "gender", "age", "annual_income", "spending_score"]
    assert not list((warehouse.parent / f".{warehouse.name}.work").iterdir())
    # the features are FLOAT: read as doubles, they showed -1.424568772315979
    features = result.asset_materializations_for_node("customer_features")[0].metadata
    numbers = re.findall(r"-?\d+\.\d+", features["preview"].value)
    assert numbers and all(len(number.split(".")[1]) <= 4 for number in numbers)


def test_rejected_rows_within_the_limit_are_published_in_quarantine(mall_csv, warehouse, write_csv):
    text = mall_csv.read_text() + "0201,Female,abc,40,50\n"
    result = materialize(write_csv(text), warehouse)

    assert result.success
    assert published(warehouse, "SELECT count(*) FROM customers") == [(200,)]
    assert published(warehouse, "SELECT line_number, column_name, value FROM rejected_rows") == [
        (202, "age", "abc")
    ]


def test_too_many_rejects_fail_the_blocking_check_and_publish_nothing(published_mall, write_csv):
    before = file_sha256(published_mall)
    path = write_csv(f"{KAGGLE_HEADER}\n0001,Male,19,15,39\n0002,Female,21,15,101\n")

    result = materialize(path, published_mall, max_reject_fraction=0.0)

    assert not result.success
    [failed] = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed.check_name == "reject_share_within_limit"
    assert "1 of 2 rows" in failed.description
    assert "line 3: spending_score: '101' is out of range (1 to 100)" in failed.description
    assert str(path) in failed.description
    assert not result.asset_materializations_for_node("published_warehouse")
    assert file_sha256(published_mall) == before


def test_a_file_with_far_fewer_customers_publishes_nothing_unless_allowed(
    mall_csv, warehouse, write_csv
):
    """The nightly file cut short (its first 60 customers of 200) must not replace the
    published segments; with the limit raised, it publishes."""
    lines = mall_csv.read_text().splitlines()
    nightly = write_csv("\n".join(lines) + "\n")
    assert materialize(nightly, warehouse).success
    before = file_sha256(warehouse)
    write_csv("\n".join(lines[:61]) + "\n")  # the same path, cut short

    refused = materialize(nightly, warehouse)

    assert not refused.success
    [failed] = [e for e in refused.get_asset_check_evaluations() if not e.passed]
    assert failed.check_name == "customer_count_kept"
    assert failed.description.startswith("customer count 60 against 200 in the last run ")
    assert "(70.0% fewer; limit 50% fewer): is the file cut short?" in failed.description
    assert not refused.asset_materializations_for_node("published_warehouse")
    assert file_sha256(warehouse) == before

    allowed = materialize(nightly, warehouse, max_customer_drop=1.0)

    assert allowed.success
    assert published(warehouse, "SELECT count(*) FROM customers") == [(60,)]


def test_a_link_rotated_to_each_nights_export_is_one_source_for_the_count_guard(
    mall_csv, warehouse, tmp_path
):
    """Exports land as dated files and `latest.csv` is linked to the newest: the runs record
    the link, so a cut-short export is compared with the night before, not taken for a
    file never seen."""
    lines = mall_csv.read_text().splitlines()
    first_night = tmp_path / "export_1.csv"
    first_night.write_text("\n".join(lines) + "\n")
    cut_short = tmp_path / "export_2.csv"
    cut_short.write_text("\n".join(lines[:61]) + "\n")
    latest = tmp_path / "latest.csv"
    latest.symlink_to(first_night)
    assert materialize(latest, warehouse).success
    before = file_sha256(warehouse)
    latest.unlink()
    latest.symlink_to(cut_short)

    refused = materialize(latest, warehouse)

    assert not refused.success
    [failed] = [e for e in refused.get_asset_check_evaluations() if not e.passed]
    assert failed.check_name == "customer_count_kept"
    assert failed.description.startswith("customer count 60 against 200 in the last run ")
    assert file_sha256(warehouse) == before
    assert published(warehouse, "SELECT source FROM segmentation_runs") == [(str(latest),)]


def test_file_level_failure_names_the_problem_and_keeps_the_warehouse(published_mall, write_csv):
    before = file_sha256(published_mall)
    path = write_csv("CustomerID,Genre,Age\n0001,Male,19\n")

    result = materialize(path, published_mall)

    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert (
        f"{path}, line 1: missing required column(s): annual_income, spending_score" in description
    )
    assert file_sha256(published_mall) == before
    assert published(published_mall, "SELECT count(*) FROM customers") == [(200,)]


def test_missing_source_fails_without_retrying(published_mall, tmp_path):
    result = materialize(tmp_path / "absent.csv", published_mall)
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "file not found" in failure.step_failure_data.user_failure_data.description
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_history_tables_carry_over_between_runs(published_mall, mall_csv):
    assert materialize(mall_csv, published_mall).success
    assert published(published_mall, "SELECT count(DISTINCT run_id) FROM ingest_runs") == [(2,)]


def test_kept_segments_keep_their_names_when_a_few_customers_leave(
    published_mall, mall_csv, tmp_path
):
    """QA's case: 5 of the 200 Mall customers removed (the same 5) moved a kept segment's
    z_age from 0.479 to 0.509, across the 0.5 threshold, and renamed it from 'Low income, low
    spending' to 'Older, ...' with another recommendation. Hysteresis keeps both."""
    with mall_csv.open(newline="") as source:
        header, *rows = list(csv.reader(source))
    dropped = set(random.Random(6).sample(range(len(rows)), 5))
    variant = tmp_path / "mall_minus_5.csv"
    with variant.open("w", newline="") as target:
        csv.writer(target).writerows([header, *(r for i, r in enumerate(rows) if i not in dropped)])

    assert materialize(variant, published_mall).success

    profiles = published(
        published_mall,
        "SELECT p.segment_id, r.n_customers, p.z_age, p.segment_name, p.recommendation "
        "FROM segment_profiles p JOIN segmentation_runs r USING (run_id) "
        "ORDER BY r.finished_at, p.segment_id",
    )
    first = {row[0]: row for row in profiles if row[1] == 200}
    second = {row[0]: row for row in profiles if row[1] == 195}
    kept = sorted(first.keys() & second.keys())
    crossed = [s for s in kept if level_of(first[s][2]) != level_of(second[s][2])]
    assert crossed, "no kept segment's z_age crossed the plain threshold: the case is gone"
    for segment in kept:
        assert second[segment][3:] == first[segment][3:]  # name and recommendation
    levels = published(
        published_mall,
        "SELECT segment_id, count(DISTINCT level_age) FROM segment_profiles GROUP BY ALL",
    )
    assert all(n == 1 for s, n in levels if s in crossed)  # the stored level held
    names = [row[3] for row in second.values()]
    assert len(set(names)) == len(names)


# Every failure named by the ingest rules, through a real run over a published warehouse: the
# run fails with a message naming what and where, and the published file is byte-identical.
GOOD = "0001,Male,19,15,39\n0002,Female,21,15,81\n"
FAILING_INPUTS = {
    "missing value": (f"{KAGGLE_HEADER}\n{GOOD}0003,Male,,15,39\n", "line 4: age: missing value"),
    "question mark": (f"{KAGGLE_HEADER}\n{GOOD}0003,?,30,15,39\n", "line 4: gender: '?' missing"),
    "non-numeric": (
        f"{KAGGLE_HEADER}\n{GOOD}0003,Male,30,lots,39\n",
        "line 4: annual_income: 'lots' is not a number",
    ),
    "out of range": (
        f"{KAGGLE_HEADER}\n{GOOD}0003,Male,30,15,0\n",
        "line 4: spending_score: '0' is out of range (1 to 100)",
    ),
    "conflicting duplicate id": (
        f"{KAGGLE_HEADER}\n{GOOD}0002,Male,21,15,81\n",
        "line 3: customer_id: '0002' conflicting duplicate",
    ),
    "empty file": ("", "file is empty"),
    "missing column": ("CustomerID,Genre,Age\n0001,Male,19\n", "line 1: missing required column"),
    "undecodable bytes": (
        f"{KAGGLE_HEADER}\n{GOOD}0003,M\xe4nnlich,30,15,39\n".encode("latin-1"),
        ("line 4, column gender, value 'M\xe4nnlich'", "not UTF-8 text (byte 0xe4"),
    ),
    "wrong delimiter": (
        KAGGLE_HEADER.replace(",", ";") + "\n0001;Male;19;15;39\n",
        ("line 1, value", "separated by semicolons"),
    ),
    "short row": (
        f"{KAGGLE_HEADER}\n{GOOD}0003,Male\n",
        ("line 4, value '0003,Male'", "Expected Number of Columns: 5 Found: 2"),
    ),
    "line of spaces": (
        f"{KAGGLE_HEADER}\n{GOOD}  \t \n0003,Male,30,15,39\n",
        "line 4: the line holds only spaces or tabs, not a customer row; delete it",
    ),
}


@pytest.mark.parametrize("case", list(FAILING_INPUTS))
def test_each_failure_names_file_line_and_reason_and_keeps_the_warehouse(
    case, published_mall, write_csv
):
    content, message = FAILING_INPUTS[case]
    path = write_csv(content, name=f"{case.replace(' ', '_')}.csv")
    before = file_sha256(published_mall)

    result = materialize(path, published_mall, max_reject_fraction=0.0)

    assert not result.success
    reasons = [
        e.step_failure_data.user_failure_data.description
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data.user_failure_data
    ] + [e.description for e in result.get_asset_check_evaluations() if not e.passed]
    fragments = (str(path), *((message,) if isinstance(message, str) else message))
    assert any(all(f in reason for f in fragments) for reason in reasons), reasons
    assert not result.asset_materializations_for_node("published_warehouse")
    assert file_sha256(published_mall) == before


def test_a_folder_as_the_warehouse_fails_the_run_at_once_naming_it(mall_csv, tmp_path):
    """Launched from the UI with the warehouse set to a folder: the ingest step failed on
    DuckDB's "Is a directory", was retried twice (20 s) and left a lock file beside it."""
    result = materialize(mall_csv, tmp_path)

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    assert f"{tmp_path} is a folder; the warehouse is a DuckDB file" in str(
        failure.event_specific_data
    )
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert not (tmp_path.parent / f".{tmp_path.name}.lock").exists()


def test_missing_path_and_directory_as_source(published_mall, tmp_path):
    before = file_sha256(published_mall)
    for source, message in ((tmp_path / "nope.csv", "file not found"), (tmp_path, "directory")):
        result = materialize(source, published_mall)
        [failure] = [e for e in result.all_events if e.is_step_failure]
        assert message in failure.step_failure_data.user_failure_data.description
    assert file_sha256(published_mall) == before


# --- runs that did not load the customers: a re-execution from failure, a partial selection ---


def _job_of_the_code_location() -> dg.JobDefinition:
    """segmentation_job, reconstructable (re-execution from failure needs one)."""
    return defs().resolve_job_def("segmentation_job")


def _run_config(source: Path, warehouse: Path) -> dict:
    return {
        "resources": {
            "settings": {"config": {"source_csv": str(source)}},
            "warehouse": {"config": {"path": str(warehouse)}},
        }
    }


def test_re_executing_a_run_stopped_by_its_checks_from_failure_publishes_nothing(
    mall_csv, warehouse, write_csv
):
    """The UI's "Re-execute from failure" on a run whose blocking checks failed ran the checks
    on a fresh copy of the published warehouse: they passed on the earlier customers, and the
    run published them again as a new run, with no source recorded."""
    rows = mall_csv.read_text().splitlines()
    bad = write_csv("\n".join(rows[:11] + [f"{r.split(',')[0]},Male,abc,1,1" for r in rows[11:21]]))
    job = dg.reconstructable(_job_of_the_code_location)
    with dg.instance_for_test() as instance:
        first = dg.execute_job(job, instance, run_config=_run_config(mall_csv, warehouse))
        assert first.success
        stopped = dg.execute_job(job, instance, run_config=_run_config(bad, warehouse))
        assert not stopped.success
        before = file_sha256(warehouse)

        again = dg.execute_job(
            job,
            instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(stopped.run_id, instance),
        )

        assert not again.success
        evaluations = again.get_asset_check_evaluations()
        assert evaluations and all(not e.passed for e in evaluations)
        assert all(e.description == NOT_STAGED for e in evaluations)
        assert not again.asset_materializations_for_node("published_warehouse")
    assert file_sha256(warehouse) == before


def test_a_selection_without_raw_customers_fails_at_once_and_publishes_nothing(published_mall):
    """Materializing customer_features and what follows (to re-fit with other settings) fitted
    and published the published warehouse's customers as a new run, with no source; one of
    the later assets alone failed after 20 s of retries with "Table ... does not exist"."""
    before = file_sha256(published_mall)
    result = materialize(
        published_mall, published_mall, dg.AssetSelection.assets("customer_features").downstream()
    )

    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "customer_features"
    assert failure.step_failure_data.user_failure_data.description == NOT_STAGED
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert file_sha256(published_mall) == before


def test_the_blocking_checks_run_alone_fail_instead_of_checking_the_published_data(
    published_mall, mall_csv
):
    """Executed on their own (the UI offers it), the checks passed on the published
    customers, next to a materialization of raw_customers that had failed them."""
    result = materialize(
        mall_csv, published_mall, dg.AssetSelection.checks_for_assets("raw_customers")
    )

    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 5
    assert all(not e.passed and e.description == NOT_STAGED for e in evaluations)


def test_the_report_alone_renders_the_latest_published_run_again(published_mall, mall_csv):
    """A report lost after publishing could not be rendered again: segment_report alone
    failed after two retries with "run ... is not in segmentation_runs"."""
    reports = published_mall.parent / "reports"
    [published_run] = published(published_mall, "SELECT run_id FROM segmentation_runs")
    shutil.rmtree(reports)

    result = materialize(mall_csv, published_mall, dg.AssetSelection.assets("segment_report"))

    assert result.success
    assert (reports / f"{published_run[0]}.html").exists()
    assert published_run[0] in (reports / "latest.md").read_text()


def test_raw_customers_alone_says_that_nothing_is_published(mall_csv, warehouse):
    """Materialized alone from the Assets page, it succeeded with full metadata, and its
    customers were silently discarded at the end of the run."""
    job = defs().resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            run_config=_run_config(mall_csv, warehouse),
            asset_selection=[dg.AssetKey("raw_customers")],
            instance=instance,
        )
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]

    assert result.success
    assert any(
        "This run does not publish (published_warehouse is not selected)" in m for m in messages
    )
    assert not warehouse.exists()


def test_assets_launched_without_their_checks_publish_nothing(published_mall, mall_csv, write_csv):
    """The launchpad's "Include asset checks" unticked ran the assets alone: a file with 5 %
    of its rows rejected (limit 1 %) was published, and the run ended green."""
    rows = mall_csv.read_text().splitlines()
    bad = write_csv("\n".join(rows[:11] + [f"{r.split(',')[0]},Male,abc,1,1" for r in rows[11:21]]))
    before = file_sha256(published_mall)

    result = materialize(
        bad, published_mall, dg.AssetSelection.all() - dg.AssetSelection.all_asset_checks()
    )

    assert not result.success
    assert not result.get_asset_check_evaluations()  # the checks were left out
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "published_warehouse"
    assert failure.step_failure_data.user_failure_data.description.startswith(
        "not published: the blocking checks customer_ids_unique, required_fields_present, "
        "values_in_range, reject_share_within_limit, customer_count_kept did not run"
    )
    assert file_sha256(published_mall) == before
