"""Operations: the nightly schedule, the source-file sensor, the failure alert and drift.

Schedules and sensors are evaluated with Dagster's own test contexts (no daemon); drift is
tested as pure arithmetic and then end to end over real runs of `segmentation_job`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import dagster as dg
import duckdb
import pytest

from segmentation_pipeline.core import drift, locations
from segmentation_pipeline.core.report_inputs import drift_against
from segmentation_pipeline.definitions import defs
from segmentation_pipeline.defs import schedules
from segmentation_pipeline.defs.assets.profiles import segment_profiles
from segmentation_pipeline.defs.drift_checks import (
    ASSIGNMENT_AGREEMENT,
    CENTROID_MOVEMENT,
    SHARE_SHIFT,
    SILHOUETTE_DROP,
    segment_drift,
)
from segmentation_pipeline.defs.jobs import CODE_LOCATION
from segmentation_pipeline.defs.resources import (
    DriftThresholds,
    SegmentationSettings,
    WarehouseResource,
)
from segmentation_pipeline.defs.sensors import (
    file_sha256,
    segmentation_run_failed,
    source_file_changed,
)

DRIFT_CHECKS = {SHARE_SHIFT, CENTROID_MOVEMENT, ASSIGNMENT_AGREEMENT, SILHOUETTE_DROP}


# --- schedule -------------------------------------------------------------------------------


@pytest.fixture
def no_schedule_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(schedules.CRON_ENV, raising=False)
    monkeypatch.delenv(schedules.TIMEZONE_ENV, raising=False)


def test_nightly_schedule_defaults_to_two_am_utc_and_running(no_schedule_env):
    schedule = schedules.build_nightly_schedule()

    assert schedule.name == "nightly_segmentation"
    assert schedule.job_name == "segmentation_job"
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_schedule_cron_and_timezone_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(schedules.CRON_ENV, "30 4 * * 1-5")
    monkeypatch.setenv(schedules.TIMEZONE_ENV, "Europe/Berlin")

    schedule = schedules.build_nightly_schedule()

    assert schedule.cron_schedule == "30 4 * * 1-5"
    assert schedule.execution_timezone == "Europe/Berlin"


def test_unknown_timezone_is_refused_with_the_variable_named(monkeypatch):
    monkeypatch.setenv(schedules.TIMEZONE_ENV, "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="SEGMENTATION_SCHEDULE_TIMEZONE"):
        schedules.build_nightly_schedule()


def test_invalid_cron_is_refused_with_the_variable_named(monkeypatch):
    monkeypatch.setenv(schedules.CRON_ENV, "0 2 * *")
    with pytest.raises(ValueError, match="SEGMENTATION_SCHEDULE_CRON='0 2 \\* \\*' is not a cron"):
        schedules.build_nightly_schedule()


def test_schedule_tick_requests_one_run_of_the_job(no_schedule_env):
    schedule = schedules.build_nightly_schedule()
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
    )

    requests = schedule.evaluate_tick(context).run_requests

    assert requests is not None and len(requests) == 1
    assert requests[0].tags["segmentation/trigger"] == "schedule"
    assert not requests[0].run_config  # resources come from the code location's defaults


def test_code_location_has_the_schedule_and_sensors():
    definitions = defs()
    schedule = definitions.resolve_schedule_def("nightly_segmentation")
    assert schedule.job_name == "segmentation_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    changed = definitions.resolve_sensor_def("source_file_changed")
    assert changed.default_status == dg.DefaultSensorStatus.STOPPED
    assert changed.job_name == "segmentation_job"
    failed = definitions.resolve_sensor_def("segmentation_run_failed")
    assert failed.default_status == dg.DefaultSensorStatus.RUNNING
    orphans = definitions.resolve_sensor_def("orphaned_cli_runs")
    assert orphans.default_status == dg.DefaultSensorStatus.RUNNING


def test_the_launchpad_can_set_one_setting_alone(tmp_path, monkeypatch, mall_csv):
    """`resources: settings: config: {k_max: 4}` was refused with "Missing required config
    entry source_csv" (and the warehouse's settings with "path"): config given at launch
    replaces the bound values as a whole, and these had no default."""
    warehouse = tmp_path / "w.duckdb"
    monkeypatch.setenv("SEGMENTATION_SOURCE_CSV", str(mall_csv))
    monkeypatch.setenv("SEGMENTATION_WAREHOUSE", str(warehouse))
    job = defs().resolve_job_def("segmentation_job")
    launchpad = {
        "resources": {
            "settings": {"config": {"k_max": 4}},
            "warehouse": {"config": {"memory_limit": "512MB"}},
        }
    }

    with dg.instance_for_test() as instance:
        result = job.execute_in_process(run_config=launchpad, instance=instance)

    assert result.success
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        source, largest_k = con.execute(
            "SELECT source, (SELECT max(k) FROM model_candidates) FROM segmentation_runs"
        ).fetchone()
    finally:
        con.close()
    assert (source, largest_k) == (str(mall_csv), 4)


def test_settings_the_engines_do_not_know_fail_the_run_before_it_reads_anything(tmp_path):
    """A misspelt algorithm (launchpad) failed only at segmentation_model, after the input
    was loaded and checked, and the alert showed pydantic's dump when it did fail early."""
    with pytest.raises(ValueError, match="known: "):
        SegmentationSettings(algorithms=["kmeans", "bogus"])
    with pytest.raises(ValueError, match="unknown feature"):
        SegmentationSettings(features=["age", "income"])
    with pytest.raises(ValueError, match="the Spark engine fits kmeans and bisecting_kmeans"):
        SegmentationSettings(engine="spark", algorithms=["ward"])

    with dg.instance_for_test() as instance:
        result = _run_job(
            instance,
            tmp_path / "any.csv",
            tmp_path / "w.duckdb",
            settings={"algorithms": ["kmeans", "bogus"]},
        )
        assert not result.success
        assert not [e for e in result.all_events if e.event_type_value == "STEP_START"]
        alert = _alert_for(instance, result)
    assert alert.endswith(
        "failed before any step ran: invalid settings: unknown algorithm(s) ['bogus']; known: "
        "['kmeans', 'gmm', 'ward']"
    )


def test_committed_instance_config_queues_writers_one_at_a_time(tmp_path, monkeypatch):
    shutil.copy(Path(__file__).resolve().parents[1] / "dagster_home" / "dagster.yaml", tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        # this location's runs only: other locations of a shared instance keep their own
        assert {"key": "dagster/code_location", "value": CODE_LOCATION, "limit": 1} in limits
        # the key of homes set up before, which segmentation_job still carries
        assert {"key": "segmentation/writer", "limit": 1} in limits
        assert not instance.telemetry_enabled
    job = defs().resolve_job_def("segmentation_job")
    assert job.tags["segmentation/writer"] == "warehouse"


# --- source file sensor ---------------------------------------------------------------------


def _settled(path: Path, seconds_ago: float = 120.0) -> Path:
    """The file as if last written ``seconds_ago`` (the sensor waits for a file to settle)."""
    then = time.time() - seconds_ago
    os.utime(path, (then, then))
    return path


def _evaluate(source: Path, cursor: str | None, warehouse: Path | None = None):
    """One tick; the published warehouse it compares with is ``warehouse`` (none by default)."""
    context = dg.build_sensor_context(
        cursor=cursor, resources={"settings": SegmentationSettings(source_csv=str(source))}
    )
    published = warehouse or source.parent / "no_warehouse_here.duckdb"
    with mock.patch.dict(os.environ, {locations.WAREHOUSE_ENV: str(published)}):
        return source_file_changed(context), context


def test_sensor_runs_on_first_sight_and_stores_the_sha256(mall_csv, tmp_path):
    source = tmp_path / "customers.csv"
    shutil.copy(mall_csv, source)
    _settled(source)

    result, _ = _evaluate(source, None)

    assert isinstance(result, dg.SensorResult)
    assert len(result.run_requests) == 1
    sha = file_sha256(source)
    assert result.run_requests[0].tags["segmentation/source_sha256"] == sha
    assert json.loads(result.cursor)["sha256"] == sha


def test_sensor_skips_unchanged_and_touched_files_and_runs_on_new_content(mall_csv, tmp_path):
    source = tmp_path / "customers.csv"
    shutil.copy(mall_csv, source)
    _settled(source)
    first, _ = _evaluate(source, None)

    unchanged, _ = _evaluate(source, first.cursor)
    assert isinstance(unchanged, dg.SkipReason)
    assert "unchanged" in unchanged.skip_message

    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # `touch`
    touched, context = _evaluate(source, first.cursor)
    assert isinstance(touched, dg.SkipReason)
    assert json.loads(context.cursor)["mtime_ns"] == stat.st_mtime_ns + 5_000_000_000

    source.write_text(mall_csv.read_text() + "0201,Female,30,50,50\n")
    changed, _ = _evaluate(_settled(source), context.cursor)
    assert isinstance(changed, dg.SensorResult)
    assert len(changed.run_requests) == 1
    assert json.loads(changed.cursor)["sha256"] == file_sha256(source)
    assert changed.cursor != first.cursor


def test_sensor_waits_for_a_file_being_written_to_settle(mall_csv, tmp_path):
    """An export written in place, caught halfway, was published as a fragment: a file
    changed within the last minute is not read yet."""
    source = tmp_path / "customers.csv"
    shutil.copy(mall_csv, source)

    writing, context = _evaluate(source, None)
    assert isinstance(writing, dg.SkipReason)
    assert "waiting until it has not changed for 60 s" in writing.skip_message
    assert context.cursor is None  # not seen yet

    settled, _ = _evaluate(_settled(source, seconds_ago=61), None)
    assert isinstance(settled, dg.SensorResult) and len(settled.run_requests) == 1


def test_sensor_turned_on_skips_the_file_the_published_warehouse_was_built_from(mall_csv, tmp_path):
    """Turning the sensor on refreshed the warehouse although it held that very file."""
    source = tmp_path / "customers.csv"
    shutil.copy(mall_csv, source)
    _settled(source)
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "CREATE TABLE segmentation_runs AS SELECT 'r1' AS run_id, "
            "TIMESTAMPTZ '2026-01-01' AS finished_at, $sha AS source_sha256",
            {"sha": file_sha256(source)},
        )

    same, context = _evaluate(source, None, warehouse)
    assert isinstance(same, dg.SkipReason)
    assert "is what the published warehouse was built from" in same.skip_message
    assert json.loads(context.cursor)["sha256"] == file_sha256(source)

    source.write_text(mall_csv.read_text() + "0201,Female,30,50,50\n")
    changed, _ = _evaluate(_settled(source), None, warehouse)
    assert isinstance(changed, dg.SensorResult) and len(changed.run_requests) == 1


def test_sensor_skips_with_a_reason_when_the_file_is_missing(tmp_path):
    missing = tmp_path / "not_there.csv"

    result, _ = _evaluate(missing, None)

    assert isinstance(result, dg.SkipReason)
    assert str(missing) in result.skip_message
    assert "does not exist" in result.skip_message


def test_sensor_treats_an_unreadable_cursor_as_first_sight(mall_csv):
    result, _ = _evaluate(mall_csv, "not json")
    assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1


# --- failure alert --------------------------------------------------------------------------


def _run_job(instance: dg.DagsterInstance, source: Path, warehouse: Path, **resources: dict):
    job = defs().resolve_job_def("segmentation_job")
    config = {
        "settings": {"config": {"source_csv": str(source)}},
        "warehouse": {"config": {"path": str(warehouse)}},
        **{key: {"config": value} for key, value in resources.items()},
    }
    return job.execute_in_process(
        run_config={"resources": config}, instance=instance, raise_on_error=False
    )


class _Lines(logging.Handler):
    """The messages a logger was given."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _logged_alerts(instance: dg.DagsterInstance, result) -> list[str]:
    """The lines the failure sensor logs for a failed run (none for a run not ours)."""
    context = dg.build_run_status_sensor_context(
        sensor_name="segmentation_run_failed",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()
    logged = _Lines()
    context.log.addHandler(logged)
    segmentation_run_failed(context)
    return logged.lines


def _alert_for(instance: dg.DagsterInstance, result) -> str:
    [alert] = _logged_alerts(instance, result)
    return alert


def test_failure_alert_names_job_run_step_and_reason(tmp_path):
    with dg.instance_for_test() as instance:
        result = _run_job(instance, tmp_path / "missing.csv", tmp_path / "w.duckdb")
        assert not result.success

        alert = _alert_for(instance, result)

    assert "\n" not in alert
    assert alert.startswith(f"ALERT segmentation_job run {result.run_id} failed at step ")
    assert "raw_customers" in alert
    assert "missing.csv" in alert


def test_failure_alert_gives_a_failed_checks_own_reason(tmp_path, write_csv):
    bad = write_csv(
        "customer_id,gender,age,annual_income,spending_score\n1,Female,30,40,50\n2,Male,-4,40,50\n"
    )
    with dg.instance_for_test() as instance:
        result = _run_job(instance, bad, tmp_path / "w.duckdb")
        assert not result.success

        alert = _alert_for(instance, result)

    assert "check reject_share_within_limit failed" in alert
    assert "line 3" in alert


def test_failure_alert_before_any_step_gives_the_resources_own_reason(tmp_path):
    """A warehouse that cannot be set up fails the run before its first step; the alert
    said only 'DagsterResourceFunctionError: Error executing resource_fn on
    ResourceDefinition warehouse'."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the warehouse folder should be")
    with dg.instance_for_test() as instance:
        result = _run_job(instance, tmp_path / "any.csv", blocker / "w.duckdb")
        assert not result.success

        alert = _alert_for(instance, result)

    assert alert.startswith(f"ALERT segmentation_job run {result.run_id} failed before any step")
    assert f"failed before any step ran: cannot use {blocker} as the warehouse folder" in alert
    assert "DagsterResourceFunctionError" not in alert and "PublishError" not in alert


def test_the_alert_of_a_run_that_failed_after_publishing_says_it_published(tmp_path, mall_csv):
    """A report that failed after the publish raised an alert that read as a refresh that
    did not land, while the new results were live."""
    warehouse = tmp_path / "w.duckdb"
    (tmp_path / "reports").write_text("a file where the reports folder goes")
    with dg.instance_for_test() as instance:
        result = _run_job(instance, mall_csv, warehouse)
        assert not result.success

        alert = _alert_for(instance, result)

    assert f"run {result.run_id} failed at step segment_report: " in alert
    assert alert.endswith(
        "; its results were published before that (materialize segment_report to render the "
        "report again)"
    )
    assert warehouse.exists()


def test_failed_runs_of_the_assets_page_are_alerted_too(tmp_path):
    """The Assets page's *Materialize* runs Dagster's implicit asset job, whose failures were
    never alerted: the sensor kept to segmentation_job. Runs of other code locations are
    not ours, even of an asset with one of our names."""

    @dg.asset(name="raw_customers")
    def someone_elses() -> None:
        raise ValueError("not ours")

    with dg.instance_for_test() as instance:
        ours = (
            defs()
            .resolve_implicit_global_asset_job_def()
            .execute_in_process(
                run_config={
                    "resources": {
                        "settings": {"config": {"source_csv": str(tmp_path / "missing.csv")}},
                        "warehouse": {"config": {"path": str(tmp_path / "w.duckdb")}},
                    }
                },
                asset_selection=[dg.AssetKey("raw_customers")],
                instance=instance,
                raise_on_error=False,
                # as Dagster tags the runs it launches from a code location
                tags={"dagster/code_location": CODE_LOCATION},
            )
        )
        other = dg.materialize(
            [someone_elses],
            instance=instance,
            raise_on_error=False,
            tags={"dagster/code_location": "another_team"},
        )
        assert not ours.success and not other.success

        [alert] = _logged_alerts(instance, ours)
        assert _logged_alerts(instance, other) == []
    assert alert.startswith(f"ALERT __ASSET_JOB run {ours.run_id} failed at step raw_customers: ")
    assert "missing.csv" in alert


# --- drift arithmetic -----------------------------------------------------------------------


def test_psi_is_zero_for_equal_shares_and_symmetric():
    shares = {1: 0.2, 2: 0.3, 3: 0.5}
    assert drift.population_stability_index(shares, shares)[0] == 0.0
    a, b = {1: 0.5, 2: 0.5}, {1: 0.6, 2: 0.4}
    assert drift.population_stability_index(a, b)[0] == pytest.approx(
        drift.population_stability_index(b, a)[0]
    )


def test_psi_matches_the_formula():
    psi, terms = drift.population_stability_index({1: 0.5, 2: 0.5}, {1: 0.6, 2: 0.4})
    expected = 0.1 * math.log(0.6 / 0.5) + (-0.1) * math.log(0.4 / 0.5)
    assert psi == pytest.approx(expected)
    assert psi == pytest.approx(0.040546, abs=1e-6)
    assert set(terms) == {1, 2}


def test_psi_counts_a_new_segment_with_the_floor_share():
    psi, terms = drift.population_stability_index({1: 1.0}, {1: 0.5, 2: 0.5})
    eps = drift.PSI_EPSILON
    assert terms[1] == pytest.approx(-0.5 * math.log(0.5))
    assert terms[2] == pytest.approx((0.5 - eps) * math.log(0.5 / eps))
    assert psi > 4


def test_psi_refuses_a_non_positive_epsilon():
    with pytest.raises(ValueError):
        drift.population_stability_index({1: 1.0}, {1: 1.0}, epsilon=0)


def test_centroid_shift_is_in_standard_deviations_of_shared_segments():
    before = {1: {"x": 0.0, "y": 0.0}, 2: {"x": 1.0, "y": 1.0}}
    after = {1: {"x": 3.0, "y": 4.0}, 3: {"x": 9.0, "y": 9.0}}

    assert drift.centroid_shifts(before, after, {"x": 1.0, "y": 1.0}) == {1: pytest.approx(5.0)}
    assert drift.centroid_shifts(before, after, {"x": 3.0, "y": 4.0})[1] == pytest.approx(
        math.sqrt(2)
    )
    # a feature without spread (or unknown to the other run) is left out, not divided by 0
    assert drift.centroid_shifts(before, after, {"x": 1.0, "y": 0.0})[1] == pytest.approx(3.0)


def _snapshot(run_id: str, **fields) -> drift.RunSnapshot:
    values = {
        "previous_run_id": None,
        "silhouette": 0.5,
        "ari_vs_previous": None,
        "shares": {1: 0.5, 2: 0.5},
        "centroids": {1: {"x": 0.0}, 2: {"x": 10.0}},
        "stds": {"x": 2.0},
        "features": ("x",),
        "engine": "local",
        **fields,
    }
    return drift.RunSnapshot(run_id=run_id, **values)


def test_every_signal_passes_on_the_first_run():
    current = _snapshot("r1")
    outcomes = [
        drift.share_shift(None, current, 0.2),
        drift.centroid_movement(None, current, 0.5),
        drift.assignment_agreement(None, current, 0.8),
        drift.silhouette_drop(None, current, 0.05),
    ]
    assert all(o.passed for o in outcomes)
    assert all(o.description == drift.FIRST_RUN for o in outcomes)


def test_thresholds_decide_each_signal():
    before = _snapshot("r1")
    after = _snapshot(
        "r2",
        previous_run_id="r1",
        silhouette=0.4,
        ari_vs_previous=0.7,
        shares={1: 0.8, 2: 0.2},
        centroids={1: {"x": 1.5}, 2: {"x": 10.0}},
    )
    psi = drift.population_stability_index(before.shares, after.shares)[0]  # about 0.416

    assert not drift.share_shift(before, after, 0.2).passed
    assert drift.share_shift(before, after, psi + 0.01).passed
    movement = drift.centroid_movement(before, after, 0.5)  # segment 1 moved 0.75 std
    assert not movement.passed
    assert movement.metadata["largest_shift_std"] == pytest.approx(0.75)
    assert drift.centroid_movement(before, after, 0.8).passed
    assert not drift.assignment_agreement(before, after, 0.8).passed
    assert drift.assignment_agreement(before, after, 0.7).passed  # at the limit is fine
    drop = drift.silhouette_drop(before, after, 0.05)
    assert not drop.passed and drop.metadata["drop"] == pytest.approx(0.1)
    assert drift.silhouette_drop(before, after, 0.15).passed
    assert drift.silhouette_drop(after, before, 0.0).passed  # an improvement never warns


def test_a_feature_change_leaves_centres_and_silhouette_uncompared_but_judges_customers():
    """Models on other features have centres and silhouettes that do not compare (a
    2-feature silhouette of 0.555 'fell' to 0.429 with 3 features): those checks pass and
    say why; the share shift and the agreement still judge the customers' segments."""
    before = _snapshot("r1", features=("y", "x"), stds={"y": 1.0, "x": 2.0})
    after = _snapshot(
        "r2",
        previous_run_id="r1",
        silhouette=0.1,
        ari_vs_previous=0.5,
        shares={3: 0.5, 4: 0.5},
        centroids={1: {"x": 9.0}, 2: {"x": 10.0}},
    )
    changed = "features changed (y,x -> x)"

    for outcome in (
        drift.centroid_movement(before, after, 0.5),
        drift.silhouette_drop(before, after, 0.05),
    ):
        assert outcome.passed
        assert outcome.description.startswith(f"{changed} since run r1")
        assert "not comparable" in outcome.description
        assert outcome.metadata["previous_features"] == "y,x"
    for outcome in (
        drift.share_shift(before, after, 0.2),
        drift.assignment_agreement(before, after, 0.8),
    ):
        assert not outcome.passed
        assert changed in outcome.description
        assert outcome.metadata["features"] == "x"
    # the same set in another order (recorded before features had one order) compares
    reordered = _snapshot("r1", features=("x", "y"), silhouette=0.5)
    same_set = _snapshot("r2", previous_run_id="r1", features=("y", "x"), silhouette=0.1)
    assert drift.features_changed(reordered, same_set) is None
    assert not drift.silhouette_drop(reordered, same_set, 0.05).passed


def test_silhouettes_of_different_engines_are_not_compared():
    """Spark's silhouette uses squared distances (0.741 against 0.555 on one model)."""
    spark = _snapshot("r1", silhouette=0.741, engine="spark")
    local = _snapshot("r2", previous_run_id="r1", silhouette=0.555, engine="local")
    outcome = drift.silhouette_drop(spark, local, 0.05)
    assert outcome.passed
    assert outcome.description.startswith("engine changed (spark -> local) since run r1")
    same_engine = _snapshot("r2", previous_run_id="r1", silhouette=0.555, engine="spark")
    assert not drift.silhouette_drop(spark, same_engine, 0.05).passed


def test_no_shared_customers_is_a_warning_not_a_crash():
    outcome = drift.assignment_agreement(
        _snapshot("r1"), _snapshot("r2", previous_run_id="r1"), 0.8
    )
    assert not outcome.passed
    assert "customer base was replaced" in outcome.description


# --- drift checks over real runs ------------------------------------------------------------


def shifted_mall_csv(mall_csv: Path, target: Path) -> Path:
    """The Mall file with its high-income big spenders turned into savers: a real drift."""
    lines = mall_csv.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        cid, gender, age, income, score = line.split(",")
        if int(income) >= 70 and int(score) >= 60:
            score = str(int(score) - 60)
        out.append(",".join([cid, gender, age, income, score]))
    target.write_text("\n".join(out) + "\n")
    return target


def _drift_evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey("segment_profiles")
    }


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, mall_csv):
    """One published run of the Mall file, shared by the drift tests (a run takes seconds)."""
    warehouse = tmp_path_factory.mktemp("first") / "warehouse.duckdb"
    result = _run_job(dg.DagsterInstance.ephemeral(), mall_csv, warehouse)
    assert result.success
    return warehouse, result


def test_drift_checks_pass_on_the_first_run_before_publishing(first_run):
    _, result = first_run
    evaluations = _drift_evaluations(result)

    assert set(evaluations) == DRIFT_CHECKS
    assert all(e.passed for e in evaluations.values())
    assert all("first run" in e.description for e in evaluations.values())
    steps = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
    assert steps.index("segment_drift") < steps.index("published_warehouse")


@pytest.fixture(scope="module")
def second_run(first_run, mall_csv, tmp_path_factory):
    """A second run, on shifted data, over a copy of the first run's warehouse."""
    root = tmp_path_factory.mktemp("second")
    warehouse = root / "warehouse.duckdb"
    shutil.copy(first_run[0], warehouse)
    shifted = shifted_mall_csv(mall_csv, root / "shifted.csv")
    return warehouse, _run_job(dg.DagsterInstance.ephemeral(), shifted, warehouse)


def test_second_run_on_shifted_data_warns_but_still_publishes(second_run):
    warehouse, result = second_run

    assert result.success
    evaluations = _drift_evaluations(result)
    warned = {name for name, e in evaluations.items() if not e.passed}
    assert SHARE_SHIFT in warned
    assert ASSIGNMENT_AGREEMENT in warned
    assert all(e.severity == dg.AssetCheckSeverity.WARN for e in evaluations.values())
    assert "PSI" in evaluations[SHARE_SHIFT].description
    assert evaluations[SHARE_SHIFT].metadata["psi"].value > drift.DEFAULT_MAX_SHARE_PSI
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        runs = con.execute("SELECT count(*) FROM segmentation_runs").fetchall()
    finally:
        con.close()
    assert runs == [(2,)]  # published despite the warnings


def test_a_kept_segments_movement_is_one_number_in_this_runs_standard_deviations(second_run):
    """The id rule, the centroid check and the report's drift table measure one movement on
    one scale, this run's standard deviations: a segment that kept its id moved less than
    segment_match_distance (1), and the check and the report show the same figure (the check
    divided by the previous run's deviations: 1.016 in the warning, 0.84 in the report)."""
    warehouse, result = second_run
    metadata = _drift_evaluations(result)[CENTROID_MOVEMENT].metadata
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        now, before = (
            r[0]
            for r in con.execute(
                "SELECT run_id FROM segmentation_runs ORDER BY finished_at DESC"
            ).fetchall()
        )
        report = drift_against(con, now, before).dropna(subset=["centroid_shift"])
        centroids: dict[str, dict[int, dict[str, float]]] = {now: {}, before: {}}
        for run, segment, feature, value in con.execute(
            "SELECT run_id, segment_id, feature, centroid FROM segment_centroids"
        ).fetchall():
            centroids[run].setdefault(segment, {})[feature] = value
        stds: dict[str, dict[str, float]] = {now: {}, before: {}}
        for run, feature, std in con.execute(
            "SELECT run_id, feature, std FROM feature_scaling"
        ).fetchall():
            stds[run][feature] = std
    finally:
        con.close()

    assert stds[now] != stds[before]  # the shifted file changed the spreads: scales differ
    kept = sorted(set(centroids[now]) & set(centroids[before]))
    assert kept and report["segment_id"].tolist() == kept
    for segment, shift in zip(report["segment_id"], report["centroid_shift"], strict=True):
        by_hand = math.sqrt(
            sum(
                ((centroids[now][segment][f] - centroids[before][segment][f]) / stds[now][f]) ** 2
                for f in stds[now]
            )
        )
        assert shift == pytest.approx(by_hand, rel=1e-12)
        assert metadata[f"shift_segment_{segment}"].value == pytest.approx(shift, abs=1e-6)
        assert shift < 1.0  # kept its id: closer than segment_match_distance


def test_drift_checks_run_alone_compare_the_published_runs(second_run):
    """'Execute checks' in the UI: no work file, so the published warehouse is read."""
    warehouse, full = second_run
    job = dg.define_asset_job("drift_only", selection=dg.AssetSelection.checks(segment_drift))
    definitions = dg.Definitions(
        assets=[segment_profiles],
        asset_checks=[segment_drift],
        jobs=[job],
        resources={
            "warehouse": WarehouseResource(path=str(warehouse)),
            "drift_thresholds": DriftThresholds(),
        },
    )
    before = file_sha256(warehouse)

    result = definitions.resolve_job_def("drift_only").execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )

    assert result.success
    alone = {n: e.passed for n, e in _drift_evaluations(result).items()}
    assert alone == {n: e.passed for n, e in _drift_evaluations(full).items()}
    assert file_sha256(warehouse) == before
    assert not list(warehouse.parent.glob(".warehouse.duckdb.work/*"))


def test_a_feature_change_is_named_instead_of_a_silhouette_drop(tmp_path, mall_csv):
    """2 features (silhouette 0.555), then the default 3 (0.429) on the same file: the
    silhouette and centre checks pass saying the features changed (before, silhouette_drop
    warned of a fall); the share shift warns that every segment is new, and says why."""
    warehouse = tmp_path / "warehouse.duckdb"
    two = {"source_csv": str(mall_csv), "features": ["annual_income", "spending_score"]}
    instance = dg.DagsterInstance.ephemeral()
    assert _run_job(instance, mall_csv, warehouse, settings=two).success

    result = _run_job(instance, mall_csv, warehouse)

    assert result.success
    evaluations = _drift_evaluations(result)
    changed = "features changed (annual_income,spending_score -> age,annual_income,spending_score)"
    for name in (SILHOUETTE_DROP, CENTROID_MOVEMENT):
        assert evaluations[name].passed, evaluations[name].description
        assert evaluations[name].description.startswith(changed)
    assert not evaluations[SHARE_SHIFT].passed
    assert changed in evaluations[SHARE_SHIFT].description
    assert changed in evaluations[ASSIGNMENT_AGREEMENT].description


def test_drift_thresholds_are_configurable(first_run, mall_csv, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(first_run[0], warehouse)
    shifted = shifted_mall_csv(mall_csv, tmp_path / "shifted.csv")
    lenient = {
        "max_share_psi": 100.0,
        "max_centroid_shift": 100.0,
        "min_ari": -1.0,
        "max_silhouette_drop": 1.0,
    }

    result = _run_job(dg.DagsterInstance.ephemeral(), shifted, warehouse, drift_thresholds=lenient)

    assert result.success
    evaluations = _drift_evaluations(result)
    assert all(e.passed for e in evaluations.values()), {
        n: e.description for n, e in evaluations.items()
    }
    assert evaluations[SHARE_SHIFT].metadata["max_psi"].value == 100.0
