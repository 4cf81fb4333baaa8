"""Run `segmentation_job` through Dagster from the command line, and say how it went.

The run goes through the real job on a persistent Dagster instance (DAGSTER_HOME), so
it appears in the UI's run history like a run launched there. What failed is gathered
from the run's events: step failures raised with a reason (file, line, column, value)
and failed blocking checks.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segmentation_pipeline.core import locations
from segmentation_pipeline.core.errors import error_text
from segmentation_pipeline.core.markdown import counted
from segmentation_pipeline.core.process_identity import current_process_identity

JOB_NAME = "segmentation_job"
# Exceptions whose message is already written for the person running the pipeline.
_INTERRUPT_ERRORS = frozenset({"DagsterExecutionInterruptedError", "KeyboardInterrupt"})
_CHECKS_FAILED_ERROR = "DagsterAssetCheckFailedError"  # a blocking check's step


class RunSetupError(Exception):
    """The run could not start (e.g. an unusable DAGSTER_HOME); nothing was run."""


@dataclass
class RunOutcome:
    """The run's id, whether it succeeded and whether new results were published (a step
    after the publish, the report, can fail), and what to tell the user."""

    run_id: str
    succeeded: bool
    published: bool
    warehouse: Path
    interrupted: bool = False
    problems: list[str] = field(default_factory=list)
    summary: str = ""


def run_segmentation_job(
    settings_config: dict[str, object] | None = None,
    before_execute: Callable[[], None] | None = None,
) -> RunOutcome:
    """Execute the job in this process on the persistent instance; never raises for a
    failed run, so the caller decides how to report it (RunSetupError: it could not start).

    ``before_execute`` is called once Dagster and the definitions are loaded, just before
    the run starts."""
    home = locations.dagster_home()
    if home.exists() and not home.is_dir():
        raise RunSetupError(
            f"cannot use {home} as {locations.DAGSTER_HOME_ENV}: it is a file; "
            f"{locations.DAGSTER_HOME_ENV} must be a folder (it keeps the run history)"
        )
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunSetupError(
            f"cannot use {home} as {locations.DAGSTER_HOME_ENV}: {error.strerror} "
            f"({error.filename})"
        ) from None
    os.environ[locations.DAGSTER_HOME_ENV] = str(home)

    import dagster as dg

    from segmentation_pipeline.definitions import defs
    from segmentation_pipeline.defs.assets.common import INTERRUPTED
    from segmentation_pipeline.defs.sensors import PROCESS_TAG, end_orphaned_runs

    _ensure_instance_config(home)
    job = defs().resolve_job_def(JOB_NAME)
    asset_steps = frozenset(
        key.to_python_identifier() for key in job.asset_layer.selected_asset_keys
    )
    job = job.with_logger_defs({"progress": _progress_logger(asset_steps)})
    # The source and the warehouse are written into the run's config (they would default to
    # the same), so that the UI's run page shows which files this run read and wrote.
    settings = {"source_csv": str(locations.source_csv()), **(settings_config or {})}
    run_config: dict[str, object] = {
        "loggers": {"progress": {}},
        "resources": {
            "settings": {"config": settings},
            "warehouse": {"config": {"path": str(locations.warehouse_path())}},
        },
    }
    with _open_instance(home) as instance:
        for line in end_orphaned_runs(instance):  # a killed run must not hold the UI's queue
            print(line, file=sys.stderr)
        if before_execute is not None:
            before_execute()
        result = job.execute_in_process(
            run_config=run_config,
            instance=instance,
            raise_on_error=False,
            tags={PROCESS_TAG: current_process_identity()},
        )
    warehouse = locations.warehouse_path()
    published = any(
        event.asset_key == dg.AssetKey("published_warehouse")
        for event in result.get_asset_materialization_events()
    ) or (not result.success and _holds_run(warehouse, result.run_id))
    outcome = RunOutcome(
        run_id=result.run_id,
        succeeded=result.success,
        published=published,
        warehouse=warehouse,
    )
    if published:
        outcome.summary = published_summary(warehouse, result.run_id, _warnings(result))
    if not result.success:
        outcome.problems = _problems(result)
        outcome.interrupted = any(p.endswith(f": {INTERRUPTED}") for p in outcome.problems)
    return outcome


def _open_instance(home: Path):  # noqa: ANN202 - a DagsterInstance
    """The persistent instance; created under a lock, because two first runs on an empty
    DAGSTER_HOME would otherwise race to create Dagster's SQLite storage."""
    import dagster as dg
    from filelock import FileLock

    with FileLock(home / ".instance.lock", timeout=300):
        return dg.DagsterInstance.get()


def _ensure_instance_config(home: Path) -> None:
    """A Dagster home without dagster.yaml gets the project's (local storage, no telemetry,
    and the run queue that keeps UI, schedule and sensor runs to one writer at a time), so
    that `make dev` on that home later queues its runs as the README says."""
    config = home / "dagster.yaml"
    if not config.exists():
        if locations.INSTANCE_CONFIG.is_file():
            config.write_text(locations.INSTANCE_CONFIG.read_text())
        else:
            config.write_text("telemetry:\n  enabled: false\n")


class _ProgressHandler(logging.Handler):
    """One short line per asset step, check and message on stderr: reasons, not stack traces
    (those stay in the run's logs in the UI)."""

    def __init__(self, asset_steps: frozenset[str]) -> None:
        super().__init__()
        self.asset_steps = asset_steps

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None)
        if not meta:
            return
        step = meta.get("step_key") or meta.get("job_name") or ""
        event = meta.get("dagster_event")
        if event is None:
            message = (meta.get("orig_message") or "").strip().splitlines()
            if message and message[0].startswith("Dependencies for step"):
                self._write(f"{step}: skipped (an upstream step failed)")
            elif record.levelno >= logging.INFO and message:
                self._write(f"{step}: {message[0]}")
            return
        kind = event.event_type_value
        if kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            severity = getattr(evaluation.severity, "value", "ERROR")
            verdict = (
                "passed" if evaluation.passed else "warning" if severity == "WARN" else "FAILED"
            )
            self._write(f"check {evaluation.check_name}: {verdict}")
        elif kind == "STEP_FAILURE":
            self._write(f"{step}: FAILED")
        elif kind == "STEP_UP_FOR_RETRY":
            retry = event.event_specific_data
            reason = f": {error_text(retry.error)}" if retry.error else ""
            wait = f" in {retry.seconds_to_wait:g} s" if retry.seconds_to_wait else ""
            self._write(f"{step}: failed{reason}; retrying{wait}")
        elif step in self.asset_steps and kind == "STEP_START":
            self._write(f"{step}: start")
        elif step in self.asset_steps and kind == "STEP_SUCCESS":
            seconds = event.event_specific_data.duration_ms / 1000
            self._write(f"{step}: done ({seconds:.1f} s)")

    @staticmethod
    def _write(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


def _progress_logger(asset_steps: frozenset[str]):  # noqa: ANN202 - a LoggerDefinition
    import dagster as dg

    @dg.logger(description="Terse progress lines for the terminal.")
    def progress(_init_context: object) -> logging.Logger:
        logger = logging.getLogger("segmentation.progress")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.handlers = [_ProgressHandler(asset_steps)]
        return logger

    return progress


def _problems(result: object) -> list[str]:
    """Reasons from failed steps (the Failure's description) and failed checks; a step
    stopped by an interrupt ends with INTERRUPTED."""
    from segmentation_pipeline.defs.assets.common import INTERRUPTED

    problems: list[str] = []
    for event in result.all_events:  # type: ignore[attr-defined]
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                problems.append(f"{event.step_key}: {data.user_failure_data.description}")
            elif data.error is not None and data.error.cls_name == _CHECKS_FAILED_ERROR:
                continue  # the failed checks themselves are listed below, with reasons
            elif data.error is not None and data.error.cls_name in _INTERRUPT_ERRORS:
                problems.append(f"{event.step_key}: {INTERRUPTED}")  # stopped between steps
            elif data.error is not None:
                problems.append(f"{event.step_key}: {error_text(data.error)}")
        elif event.event_type_value == "RESOURCE_INIT_FAILURE":
            error = event.event_specific_data.error
            problems.append(f"setting up the run: {error_text(error)}")
    for evaluation in result.get_asset_check_evaluations():  # type: ignore[attr-defined]
        # Warnings (the drift checks) were shown as the run went; they fail nothing.
        if not evaluation.passed and getattr(evaluation.severity, "value", "ERROR") != "WARN":
            problems.append(f"check {evaluation.check_name} failed: {evaluation.description}")
    return problems or ["the run failed; see the run's logs in the Dagster UI"]


def _warnings(result: object) -> list[str]:
    """The drift checks that warned: they publish all the same, so the summary repeats them
    (in the log they scroll past above it)."""
    return [
        f"{evaluation.check_name}: {evaluation.description}"
        for evaluation in result.get_asset_check_evaluations()  # type: ignore[attr-defined]
        if not evaluation.passed and getattr(evaluation.severity, "value", "ERROR") == "WARN"
    ]


def _holds_run(warehouse: Path, run_id: str) -> bool:
    """Whether a failed run's results are published all the same: its publish step renamed
    the file into place, then failed before it could say so. A file this process cannot
    read (another holds it open read-write) is not one the run put there."""
    import duckdb

    from segmentation_pipeline.core.warehouse import Warehouse

    try:
        return Warehouse(warehouse).holds_run(run_id)
    except duckdb.Error:
        return False


def published_summary(warehouse: Path, run_id: str, warnings: Sequence[str] = ()) -> str:
    """What the run published, read back from the warehouse the way an analyst would."""
    from segmentation_pipeline.core.selection import UNSTABLE_CAUTION, UNSTABLE_CHOICE
    from segmentation_pipeline.core.warehouse import Warehouse

    con = Warehouse(warehouse).connect_read_only()
    try:
        run = con.execute(
            "SELECT r.source, r.n_customers, r.n_rejected, r.algorithm, r.n_segments, "
            "r.silhouette, r.features, r.ari_vs_previous, r.previous_run_id, r.selection_rule "
            "FROM segmentation_runs r "
            "WHERE r.run_id = $run_id",
            {"run_id": run_id},
        ).fetchone()
        segments = con.execute(
            "SELECT segment_id, segment_name, n_customers, share FROM segment_profiles "
            "WHERE run_id = $run_id ORDER BY segment_id",
            {"run_id": run_id},
        ).fetchall()
    finally:
        con.close()
    source, n_customers, n_rejected, algorithm, k, silhouette, features, ari, previous, rule = run
    if ari is not None:
        agreement = f"  vs previous run: ARI {ari:.3f}"
    elif previous is not None:  # the customer base was replaced
        agreement = f"  vs previous run: no customer in common with run {previous}"
    else:
        agreement = "  first run"
    caution = []
    if UNSTABLE_CHOICE in (rule or ""):
        caution = [f"  caution:    {UNSTABLE_CAUTION}"]
    report = warehouse.parent / "reports" / f"{run_id}.html"
    lines = [
        f"Published run {run_id}",
        f"  source:     {source}",
        f"  customers:  {n_customers:,} ({counted(n_rejected, 'row')} rejected)",
        f"  model:      {algorithm}, {k} segments on {features} (silhouette {silhouette:.3f})",
        *caution,
        agreement,
        *(f"  warning:    {warning}" for warning in warnings),
        "  segments:",
        *(
            f"    {segment_id:>3}  {name:<45} {n:>10,}  {share:6.1%}"
            for segment_id, name, n, share in segments
        ),
        f"  warehouse:  {warehouse}",
        f"  report:     {report if report.exists() else 'not written (see the run log)'}",
    ]
    return "\n".join(lines)
