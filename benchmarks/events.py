"""Where a run's time went, from its own Dagster event log.

Event timestamps (STEP_START, STEP_SUCCESS, ...) are written by the run itself, so they
are more precise than the CLI's one-second progress lines and need no log parsing. The
process's launch and exit frame them, so the parts add up to the wall time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.process import ProcessResult

BEFORE_RUN = "(start-up: interpreter, imports, definitions)"
BETWEEN_STEPS = "(Dagster between steps)"
AFTER_RUN = "(after the run: summary, exit)"
FRAME = (BEFORE_RUN, AFTER_RUN)
DAGSTER_CONFIG = "telemetry:\n  enabled: false\n"


@dataclass(frozen=True)
class StepTimes:
    """Seconds per step of one run, plus the pseudo-steps that make them add up to the wall."""

    seconds: dict[str, float]

    @property
    def in_run(self) -> float:
        """The run's first to last event: the wall time minus start-up and exit."""
        return sum(v for k, v in self.seconds.items() if k not in FRAME)


def prepare_home(home: Path) -> None:
    """A Dagster home whose storage already exists, as on a machine in use: the one-off
    creation of the SQLite run index is not part of any timed run."""
    import dagster as dg

    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(DAGSTER_CONFIG)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs_count()


def read_step_times(home: Path, run_id: str, result: ProcessResult) -> StepTimes | None:
    """The step times of run `run_id` recorded in the instance at `home`."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.all_logs(run_id)
    return step_times(records, result)


def step_times(records: list, result: ProcessResult) -> StepTimes | None:  # noqa: ANN001
    """Per-step seconds from the run's event log, framed by the process's launch and exit.

    Run start is the run's first event (Dagster logs the planned materializations just
    before RUN_START); run end is its last. Time between a step's success and the next
    step's start is Dagster's own bookkeeping and is summed separately.
    """
    events = [record for record in records if record.dagster_event is not None]
    if not events:
        return None
    starts: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for record in events:
        kind = record.dagster_event.event_type_value
        if kind == "STEP_START":
            starts[record.step_key] = record.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and record.step_key in starts:
            seconds[record.step_key] = record.timestamp - starts[record.step_key]
    run_start, run_end = events[0].timestamp, events[-1].timestamp
    finished_at = result.started_at + result.wall_seconds
    return StepTimes(
        {
            BEFORE_RUN: run_start - result.started_at,
            **seconds,
            BETWEEN_STEPS: (run_end - run_start) - sum(seconds.values()),
            AFTER_RUN: finished_at - run_end,
        }
    )
