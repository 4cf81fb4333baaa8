"""Run the two reference points (Dagster floor, notebook baseline) the same way as the CLI.

Both run as fresh `python -m ...` processes measured by `run_measured`, so start-up and
imports count for them exactly as they count for `segmentation run`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.events import StepTimes, prepare_home, read_step_times
from benchmarks.inputs import DATA_DIR, REPO_ROOT, BenchInput
from benchmarks.process import ProcessResult, run_measured

# Past this size the notebook's full silhouette (all pairs of customers, for 9 values of k)
# takes many minutes per repeat on a small machine; it is not attempted.
NOTEBOOK_MAX_ROWS = 50_000
_FLOOR_RUN_ID = re.compile(r"floor run ([0-9a-f-]{36})")
NOT_ATTEMPTED = "not attempted: full silhouette is O(n²) (every pair of customers, for each k)"


@dataclass(frozen=True)
class NotebookOutput:
    """What one notebook run printed: its chosen k and how good that was."""

    k: int
    silhouette: float
    ari: float | None
    compute_seconds: float


@dataclass
class NotebookCase:
    """All repeats of the notebook baseline on one input, with what it chose."""

    bench_input: BenchInput
    runs: list[ProcessResult] = field(default_factory=list)
    outputs: list[NotebookOutput] = field(default_factory=list)

    @property
    def ok_runs(self) -> list[ProcessResult]:
        return [run for run in self.runs if run.ok]


@dataclass
class FloorCase:
    """All repeats of the trivial three-asset Dagster job, and where their time went."""

    runs: list[ProcessResult] = field(default_factory=list)
    steps: list[StepTimes] = field(default_factory=list)

    @property
    def ok_runs(self) -> list[ProcessResult]:
        return [run for run in self.runs if run.ok]


class FloorBench:
    """The Dagster floor on a persistent instance in a scratch DAGSTER_HOME."""

    def __init__(self) -> None:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="floor_", dir=DATA_DIR))
        self.home = self.scratch / "dagster_home"
        prepare_home(self.home)
        self.case = FloorCase()

    def run_once(self, log_stem: Path, record: bool = True) -> ProcessResult:
        env = dict(os.environ, DAGSTER_HOME=str(self.home))
        command = [sys.executable, "-m", "benchmarks.dagster_floor"]
        result = run_measured(command, env, log_stem, cwd=REPO_ROOT, timeout_seconds=600)
        if record:
            self.case.runs.append(result)
            match = _FLOOR_RUN_ID.search(result.stdout)
            if result.ok and match:
                steps = read_step_times(self.home, match.group(1), result)
                if steps is not None:
                    self.case.steps.append(steps)
        return result

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def run_notebook_once(case: NotebookCase, log_stem: Path, timeout_seconds: float | None) -> None:
    """One notebook run on the case's input; its JSON line is kept when it succeeds."""
    command = [sys.executable, "-m", "benchmarks.notebook", str(case.bench_input.path)]
    result = run_measured(
        command, dict(os.environ), log_stem, cwd=REPO_ROOT, timeout_seconds=timeout_seconds
    )
    case.runs.append(result)
    if result.ok:
        printed = json.loads(result.stdout.strip().splitlines()[-1])
        case.outputs.append(
            NotebookOutput(
                k=int(printed["k"]),
                silhouette=float(printed["silhouette"]),
                ari=None if printed["ari"] is None else float(printed["ari"]),
                compute_seconds=float(printed["compute_seconds"]),
            )
        )
