"""Sensors: refresh when the source file's content changes, and alert when a run fails.

`source_file_changed` keeps the sha256 of the source CSV in its cursor and requests a
run only when the content differs from what it last saw, and only once the file has not
changed for a minute (an export written in place must not be read halfway); touching
the file or copying the same bytes over it does not trigger a refresh. Size and
modification time are kept too, so an unchanged file is not re-hashed every minute. It
is off by default: the nightly schedule is the normal trigger; turn the sensor on in the
UI for a refresh as soon as a new export lands.

`segmentation_run_failed` writes one alert line per failed run of segmentation_job or of
its assets from the Assets page (job, run id, failed step, reason) to the daemon's log and
the sensor's tick log.

`orphaned_cli_runs` ends the runs of a `segmentation run` process that was killed (SIGKILL,
the OOM killer): such a run stays STARTED and, as the warehouse's writer, would hold the run
queue for good. Ended as failed, it also raises the failure alert.
"""

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import dagster as dg
import duckdb

from segmentation_pipeline.core import locations
from segmentation_pipeline.core.errors import error_text
from segmentation_pipeline.core.process_identity import process_is_gone
from segmentation_pipeline.core.warehouse import Warehouse
from segmentation_pipeline.defs.checks import run_check_evaluations
from segmentation_pipeline.defs.jobs import CODE_LOCATION, segmentation_job
from segmentation_pipeline.defs.resources import SegmentationSettings

_CHUNK = 1 << 20
# A file must have stayed unchanged this long before the sensor reads it: an export written
# in place, caught halfway, was published as a fragment (the run also fails and retries when
# the file changes while it reads it).
SETTLE_SECONDS = 60
# The tag of a run started by `segmentation run`: the identity of the process running it.
# Dagster's tag of the code location that launched a run (none on `segmentation run`'s).
CODE_LOCATION_TAG = "dagster/code_location"
PROCESS_TAG = "segmentation/process"
# NOT_STARTED too: a `segmentation run` killed in its first seconds leaves its run so.
_IN_PROGRESS = (
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


@dataclass(frozen=True)
class SourceFingerprint:
    """What the sensor remembers of the source file between ticks (its cursor)."""

    path: str
    sha256: str
    size: int
    mtime_ns: int

    def to_cursor(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_cursor(cursor: str | None) -> "SourceFingerprint | None":
        """The stored fingerprint; None for no cursor or one this version cannot read."""
        if not cursor:
            return None
        try:
            return SourceFingerprint(**json.loads(cursor))
        except (ValueError, TypeError):
            return None


def file_sha256(path: Path) -> str:
    """Content hash, read in chunks so a multi-gigabyte export needs no memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(path: Path, previous: SourceFingerprint | None) -> SourceFingerprint:
    """The file's fingerprint; the content hash is reused when size and mtime are unchanged."""
    stat = path.stat()
    same_file = (
        previous is not None
        and previous.path == str(path)
        and previous.size == stat.st_size
        and previous.mtime_ns == stat.st_mtime_ns
    )
    sha = previous.sha256 if same_file and previous else file_sha256(path)
    return SourceFingerprint(str(path), sha, stat.st_size, stat.st_mtime_ns)


@dg.sensor(
    job=segmentation_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Run segmentation_job when the source CSV's content (sha256) changes, once "
    "the file has not changed for a minute.",
)
def source_file_changed(
    context: dg.SensorEvaluationContext, settings: SegmentationSettings
) -> dg.SensorResult | dg.SkipReason:
    """Request a refresh for new content; skip, saying why, for a missing or unchanged file."""
    path = settings.source_path
    if not path.is_file():
        return dg.SkipReason(
            f"source file {path} does not exist; waiting for it (set SEGMENTATION_SOURCE_CSV "
            "or the settings resource's source_csv to change the path)"
        )
    since_change = time.time() - path.stat().st_mtime
    if since_change < SETTLE_SECONDS:
        return dg.SkipReason(
            f"source file {path} changed {since_change:.0f} s ago; waiting until it has not "
            f"changed for {SETTLE_SECONDS} s (an export may still be writing it)"
        )
    previous = SourceFingerprint.from_cursor(context.cursor)
    current = fingerprint(path, previous)
    if previous is not None and previous.sha256 == current.sha256:
        # Remember a new mtime (e.g. after `touch`) so the next tick does not hash again.
        if current != previous:
            context.update_cursor(current.to_cursor())
        return dg.SkipReason(f"source file {path} unchanged (sha256 {current.sha256[:12]}…)")
    if previous is None and current.sha256 == published_source_sha256():
        context.update_cursor(current.to_cursor())
        return dg.SkipReason(
            f"source file {path} is what the published warehouse was built from "
            f"(sha256 {current.sha256[:12]}…)"
        )
    reason = (
        "first time seen" if previous is None else f"content changed from {previous.sha256[:12]}…"
    )
    context.log.info(f"Requesting a refresh: {path} {reason} (sha256 {current.sha256[:12]}…).")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                tags={
                    "segmentation/trigger": "source_file_changed",
                    "segmentation/source_sha256": current.sha256,
                }
            )
        ],
        cursor=current.to_cursor(),
    )


def published_source_sha256() -> str | None:
    """The sha256 of the file the latest published run read, from the default warehouse
    ($SEGMENTATION_WAREHOUSE), so that turning the sensor on does not refresh what is
    already published; None when there is no readable warehouse."""
    try:
        con = Warehouse(locations.warehouse_path()).connect_read_only()
    except (OSError, ValueError, duckdb.Error):
        return None
    try:
        row = con.execute(
            "SELECT source_sha256 FROM segmentation_runs ORDER BY finished_at DESC, run_id LIMIT 1"
        ).fetchone()
    except duckdb.Error:
        return None
    finally:
        con.close()
    return row[0] if row else None


def failure_alert(context: dg.RunFailureSensorContext) -> str:
    """One line naming the job, the run, the failed step and the reason."""
    run = context.dagster_run
    steps = context.get_step_failure_events()
    reason = _failed_check_reason(context) or _step_reason(steps) or _run_reason(context)
    if steps:
        where = f"at step {steps[0].step_key}"
    elif unfinished := _unfinished_step(context):
        where = f"during step {unfinished}"  # the process was killed, or the run ended
    else:
        where = "before any step ran"
    text = " ".join(reason.split())  # one line, whatever the error looked like
    if _published(context):
        text += (
            "; its results were published before that (materialize segment_report to render "
            "the report again)"
        )
    return f"ALERT {run.job_name} run {run.run_id} failed {where}: {text}"


def _published(context: dg.RunFailureSensorContext) -> bool:
    """Whether the failed run published its results before it failed (the report is the
    one step after the publish): the alert must not read as a refresh that did not land."""
    records = context.instance.get_records_for_run(
        context.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    return any(
        record.event_log_entry.dagster_event.asset_key == dg.AssetKey("published_warehouse")
        for record in records
    )


def _failed_check_reason(context: dg.RunFailureSensorContext) -> str | None:
    """A failed blocking check's own description says more than the step's error."""
    for evaluation in run_check_evaluations(context.instance, context.dagster_run.run_id):
        if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            return f"check {evaluation.check_name} failed: {evaluation.description}"
    return None


def _unfinished_step(context: dg.RunFailureSensorContext) -> str | None:
    """The step a run was in when it ended without a step failure (its process killed, or
    the run marked as failed from outside): started, neither succeeded nor failed."""
    records = context.instance.get_records_for_run(
        context.dagster_run.run_id,
        of_type={
            dg.DagsterEventType.STEP_START,
            dg.DagsterEventType.STEP_SUCCESS,
            dg.DagsterEventType.STEP_FAILURE,
        },
    ).records
    started: dict[str, None] = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = None
        else:
            started.pop(event.step_key, None)
    return next(reversed(started), None)


def _step_reason(steps: list[dg.DagsterEvent]) -> str | None:
    for event in steps:
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return data.user_failure_data.description
        if data.error is not None:
            return error_text(data.error)
    return None


def _run_reason(context: dg.RunFailureSensorContext) -> str:
    event = context.failure_event
    data = event.event_specific_data
    error = getattr(data, "error", None)
    if error is not None:
        return error_text(error)
    return event.message or "no reason recorded; see the run's logs"


@dg.run_failure_sensor(
    name="segmentation_run_failed",
    # Runs of `segmentation run` belong to no code location (they execute in the CLI's own
    # process), so `monitored_jobs` would never match them: watch every run, keep the job's.
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Log one alert line (job, run, failed step, reason) per failed refresh, "
    "whether the UI, the schedule, a sensor or `segmentation run` started it.",
)
def segmentation_run_failed(context: dg.RunFailureSensorContext) -> None:
    """Alert on a failed refresh; the published warehouse is unchanged by design."""
    if is_segmentation_run(context.dagster_run):
        context.log.error(failure_alert(context))


def is_segmentation_run(run: dg.DagsterRun) -> bool:
    """A run of segmentation_job (launched, or of `segmentation run`, which has no code
    location), or any run this code location launched: from the Assets page, Dagster's
    implicit asset job, whatever its selection. Other locations' runs are not ours, even
    with an asset of the same name."""
    location = run.tags.get(CODE_LOCATION_TAG)
    if location is not None:
        return location == CODE_LOCATION
    return run.job_name == segmentation_job.name


def end_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark as failed every in-progress run of segmentation_job whose `segmentation run`
    process is gone from this host; one line per run ended."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=segmentation_job.name, statuses=list(_IN_PROGRESS))
    )
    ended = []
    for run in runs:
        identity = run.tags.get(PROCESS_TAG)
        if identity and process_is_gone(identity):
            message = (
                f"the `segmentation run` process that ran it ({identity}: host, pid, start) "
                "is gone, killed before it could end the run; ended as failed so that queued "
                "runs can start"
            )
            instance.report_run_failed(run, message=message)
            ended.append(f"Ended run {run.run_id}: {message}.")
    return ended


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="End the runs of a killed `segmentation run` process (they would stay "
    "STARTED and hold the run queue).",
)
def orphaned_cli_runs(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Requests no runs: it ends runs left behind, and says what it did."""
    ended = end_orphaned_runs(context.instance)
    for line in ended:
        context.log.warning(line)
    if ended:
        return dg.SkipReason(" ".join(ended))
    return dg.SkipReason("no run left behind by a killed `segmentation run`")
