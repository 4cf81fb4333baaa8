"""End to end through the Dagster UI's own API: `dg dev` (webserver and daemon) in a subprocess.

One `dg dev` serves the whole test, to keep it near a minute and a half on a 2-core machine:
it loads the code location, the GraphQL API shows the assets, checks, job, schedule and
sensors, a run launched through GraphQL publishes the warehouse, and, with the schedule's
cron set to every minute, the daemon fires the schedule and that run publishes too. The
committed dagster.yaml (QueuedRunCoordinator, one run of the code location at a time) is
the instance config, so those runs, and one launched like the Assets page's *Materialize
all*, must not overlap. Only 127.0.0.1 is used. The process
group is taken down at the end, whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.conftest import KAGGLE_HEADER, MALL_CSV, PIPELINE_ASSETS, REPO_ROOT, subprocess_env

pytestmark = pytest.mark.e2e

LOCATION = "segmentation_pipeline"
REPOSITORY = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
LOAD_TIMEOUT = 180.0
RUN_TIMEOUT = 180.0
SCHEDULE_TIMEOUT = 180.0  # first tick within a minute, then queued behind the manual run


REPOSITORY_QUERY = """
query Repository($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository {
      jobs { name }
      schedules { name cronSchedule executionTimezone scheduleState { status } }
      sensors { name sensorState { status } }
      assetNodes {
        assetKey { path }
        assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
      }
    }
    ... on PythonError { message }
  }
}
"""

LAUNCH_MUTATION = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
  }
}
"""

RUNS_QUERY = """
query Runs {
  runsOrError {
    ... on Runs { results { runId jobName status startTime endTime tags { key value } } }
  }
}
"""

RUN_LOGS_QUERY = """
query RunLogs($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on MessageEvent { message } } }
    ... on PythonError { message }
  }
}
"""

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DagsterDev:
    """A running `dg dev` and a small GraphQL client for it."""

    def __init__(self, process: subprocess.Popen, port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.log = log

    def gql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
        assert "errors" not in payload, payload["errors"]
        return payload["data"]

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until_loaded(self) -> None:
        """Poll GraphQL until the code location has loaded (or failed to)."""
        query = """{ workspaceOrError { ... on Workspace { locationEntries {
            name loadStatus locationOrLoadError { __typename ... on PythonError { message } }
        } } } }"""
        deadline = time.monotonic() + LOAD_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"dg dev exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                entries = self.gql(query)["workspaceOrError"]["locationEntries"]
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                entries = []
            entry = next((e for e in entries if e["name"] == LOCATION), None)
            if entry and entry["loadStatus"] == "LOADED":
                error = entry["locationOrLoadError"]
                assert error["__typename"] == "RepositoryLocation", error
                return
            time.sleep(1)
        pytest.fail(f"code location not loaded after {LOAD_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def runs(self) -> list[dict]:
        return self.gql(RUNS_QUERY)["runsOrError"]["results"]

    def run_messages(self, run_id: str) -> list[str]:
        logs = self.gql(RUN_LOGS_QUERY, {"runId": run_id})["logsForRun"]
        assert "events" in logs, logs
        return [event.get("message") or "" for event in logs["events"]]

    def wait_for_run(self, predicate, timeout: float, what: str) -> dict:
        """The first run matching `predicate` once it has finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.runs():
                if predicate(run) and run["status"] in TERMINAL:
                    return run
            time.sleep(2)
        pytest.fail(f"{what} not finished after {timeout:.0f} s: {self.runs()}\n{self.log_tail()}")


def _stop(process: subprocess.Popen) -> None:
    """Graceful first (dg dev turns SIGTERM into its own shutdown), then the whole group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # run workers, code servers, anything left
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ui_e2e")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return {"home": home, "warehouse": root / "out" / "warehouse.duckdb", "log": root / "dev.log"}


@pytest.fixture(scope="module")
def dev(paths) -> Iterator[DagsterDev]:
    if not MALL_CSV.is_file():
        pytest.fail(f"reference data missing: {MALL_CSV}")
    port = _free_port()
    env = subprocess_env(
        DAGSTER_HOME=paths["home"],
        SEGMENTATION_WAREHOUSE=paths["warehouse"],
        SEGMENTATION_SOURCE_CSV=MALL_CSV,
        SEGMENTATION_SCHEDULE_CRON="* * * * *",
    )
    with paths["log"].open("wb") as log:
        process = subprocess.Popen(
            [
                str(REPO_ROOT / ".venv" / "bin" / "dg"),
                "dev",
                "-w",
                "workspace.yaml",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so nothing outlives the test
        )
    server = DagsterDev(process, port, paths["log"])
    try:
        server.wait_until_loaded()
        yield server
    finally:
        _stop(process)


def test_ui_shows_assets_checks_job_schedule_and_sensors(dev):
    repository = dev.gql(REPOSITORY_QUERY, {"selector": REPOSITORY})["repositoryOrError"]
    assert repository["__typename"] == "Repository", repository

    assets = {"/".join(node["assetKey"]["path"]) for node in repository["assetNodes"]}
    assert set(PIPELINE_ASSETS) <= assets
    checks = {
        check["name"]: check["blocking"]
        for node in repository["assetNodes"]
        for check in node["assetChecksOrError"].get("checks", [])
    }
    assert checks["reject_share_within_limit"] is True
    assert checks["segment_share_shift"] is False
    assert {"customer_ids_unique", "assignment_agreement", "silhouette_drop"} <= set(checks)
    assert "segmentation_job" in {job["name"] for job in repository["jobs"]}
    schedules = {s["name"]: s for s in repository["schedules"]}
    nightly = schedules["nightly_segmentation"]
    assert nightly["scheduleState"]["status"] == "RUNNING"
    assert nightly["cronSchedule"] == "* * * * *"  # SEGMENTATION_SCHEDULE_CRON
    assert nightly["executionTimezone"] == "UTC"
    sensors = {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]}
    assert sensors == {
        "source_file_changed": "STOPPED",
        "segmentation_run_failed": "RUNNING",
        "orphaned_cli_runs": "RUNNING",
    }


def test_launched_and_scheduled_runs_publish_one_at_a_time(dev, paths):
    params = {"selector": {**REPOSITORY, "jobName": "segmentation_job"}, "runConfigData": {}}
    launched = dev.gql(LAUNCH_MUTATION, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    # The Assets page's *Materialize all* launches Dagster's implicit job, without the tags
    # of segmentation_job: it started beside the launched run, both racing for the lock.
    selection = [{"path": [name]} for name in PIPELINE_ASSETS]
    assets_page = {
        "selector": {**REPOSITORY, "jobName": "__ASSET_JOB", "assetSelection": selection},
        "runConfigData": {},
    }
    from_assets = dev.gql(LAUNCH_MUTATION, {"params": assets_page})["launchRun"]
    assert from_assets["__typename"] == "LaunchRunSuccess", from_assets
    assets_run_id = from_assets["run"]["runId"]

    manual = dev.wait_for_run(lambda r: r["runId"] == run_id, RUN_TIMEOUT, "launched run")
    assert manual["status"] == "SUCCESS", dev.log_tail()
    materialized = dev.wait_for_run(
        lambda r: r["runId"] == assets_run_id, RUN_TIMEOUT, "Assets page run"
    )
    assert materialized["status"] == "SUCCESS", dev.log_tail()
    scheduled = dev.wait_for_run(
        lambda r: {"key": "dagster/schedule_name", "value": "nightly_segmentation"} in r["tags"],
        SCHEDULE_TIMEOUT,
        "scheduled run",
    )
    assert scheduled["status"] == "SUCCESS", dev.log_tail()

    # Both run workers started the worker server (defs/resources.py): a launched run has
    # no main script that the server's workers would run again.
    for run in (manual, scheduled):
        started = [m for m in dev.run_messages(run["runId"]) if "worker server" in m.lower()]
        assert len(started) == 1 and started[0].startswith("Worker server started"), started

    # The run queue let only one run of the code location be in progress at a time.
    first, second, third = sorted([manual, materialized, scheduled], key=lambda r: r["startTime"])
    assert second["startTime"] >= first["endTime"]
    assert third["startTime"] >= second["endTime"]

    con = duckdb.connect(str(paths["warehouse"]), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM customers").fetchall() == [(200,)]
        published_runs = {
            row[0] for row in con.execute("SELECT run_id FROM segmentation_runs").fetchall()
        }
        latest = con.execute("SELECT run_id FROM latest_segmentation_run").fetchall()
        n_latest = con.execute("SELECT count(*) FROM customer_latest_segment").fetchall()
    finally:
        con.close()
    assert {run_id, assets_run_id, scheduled["runId"]} <= published_runs
    # the last of them, unless the schedule has published yet another run since
    succeeded = [r for r in dev.runs() if r["status"] == "SUCCESS"]
    assert latest[0][0] in {r["runId"] for r in succeeded if r["startTime"] >= third["startTime"]}
    assert n_latest == [(200,)]


TERMINATE_MUTATION = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunFailure { message }
    ... on PythonError { message }
  }
}
"""

STEP_EVENTS_QUERY = """
query StepEvents($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on StepEvent { stepKey } } }
  }
}
"""


def test_terminate_stops_the_run_without_retrying_or_publishing(dev, tmp_path):
    """Terminate in the UI during the model search: Dagster would retry an interrupted
    step that has a retry policy, and the run went on to publish; it must end canceled."""
    from segmentation_pipeline.core.generate import write_customers_csv

    source = write_customers_csv(tmp_path / "c20k.csv", rows=20_000, seed=1)  # a search of >1 s
    warehouse = tmp_path / "terminated" / "warehouse.duckdb"
    config = {
        "resources": {
            "settings": {"config": {"source_csv": str(source)}},
            "warehouse": {"config": {"path": str(warehouse)}},
        }
    }
    params = {"selector": {**REPOSITORY, "jobName": "segmentation_job"}, "runConfigData": config}
    launched = dev.gql(LAUNCH_MUTATION, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def step_events() -> list[tuple[str, str]]:
        logs = dev.gql(STEP_EVENTS_QUERY, {"runId": run_id})["logsForRun"]
        return [(e["__typename"], e.get("stepKey")) for e in logs["events"]]

    deadline = time.monotonic() + RUN_TIMEOUT  # queued behind a scheduled run, perhaps
    while ("ExecutionStepStartEvent", "segmentation_model") not in step_events():
        assert time.monotonic() < deadline, dev.log_tail()
        time.sleep(0.1)
    time.sleep(0.5)  # into the search itself
    terminated = dev.gql(TERMINATE_MUTATION, {"runId": run_id})["terminateRun"]
    assert terminated["__typename"] == "TerminateRunSuccess", terminated

    run = dev.wait_for_run(lambda r: r["runId"] == run_id, RUN_TIMEOUT, "terminated run")
    assert run["status"] == "CANCELED", dev.log_tail()
    kinds = [kind for kind, _ in step_events()]
    assert "ExecutionStepUpForRetryEvent" not in kinds
    assert ("ExecutionStepStartEvent", "published_warehouse") not in step_events()
    assert not warehouse.exists()


def test_a_failed_segmentation_run_from_the_cli_raises_the_alert(dev, paths, tmp_path):
    """`segmentation run` executes in its own process, outside any code location, so the
    alert sensor, watching its code location's jobs only, never saw its failures."""
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{KAGGLE_HEADER}\n0001,Male,-4,15,39\n")
    done = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "segmentation"), "run", "--source", str(bad)],
        env=subprocess_env(
            DAGSTER_HOME=paths["home"], SEGMENTATION_WAREHOUSE=tmp_path / "w.duckdb"
        ),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 1, done.stderr
    run_id = done.stderr.split("segmentation run failed (run ", 1)[1].split(")", 1)[0]

    alert = f"ALERT segmentation_job run {run_id} failed at step staged_customer_checks"
    deadline = time.monotonic() + 120  # the sensor is evaluated every 30 s
    while alert not in paths["log"].read_text(errors="replace"):
        assert time.monotonic() < deadline, dev.log_tail()
        time.sleep(2)
