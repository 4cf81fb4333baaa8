"""The pipeline end to end through its real CLI, where each run's time goes, and model quality.

Each repeat is a first run into an empty warehouse (the deterministic case: no history to
copy, nothing carried over from the previous repeat), recorded on a Dagster instance in a
scratch DAGSTER_HOME that is created for the input and removed afterwards. Refreshes are
the nightly case: another run on the same input into the warehouse the last run published,
so it copies that warehouse, compares with its run and keeps its history. The steady
nightly case has a full history window: for it the warehouse's history is first topped up
to the window with copies of its last past run's table (``history_fill``). Step durations
come from the run's own STEP_START / STEP_SUCCESS event timestamps, read back from that
instance; they are more precise than the CLI's one-second progress lines.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import numpy as np

from benchmarks.events import StepTimes, prepare_home, read_step_times
from benchmarks.inputs import DATA_DIR, REPO_ROOT, BenchInput
from benchmarks.launched_run import COMMAND as LAUNCHED_COMMAND
from benchmarks.process import ProcessResult, run_measured
from segmentation_pipeline.core.alignment import ari_from_contingency
from segmentation_pipeline.core.generate import ID_COLUMN, SEGMENTS, TRUTH_COLUMN

ARI_THRESHOLD = 0.95
_RUN_ID = re.compile(r"(?:Published run|run failed \(run) ([0-9a-f-]{36})")


@dataclass(frozen=True)
class Quality:
    """The published model, and (for generated inputs) how it matches the latent segments."""

    k: int
    silhouette: float
    algorithm: str
    sample_size: int
    customers: int
    true_k: int | None = None  # None: the input carries no truth (the real Mall file)
    ari: float | None = None
    matched_rows: int = 0

    @property
    def passed(self) -> bool | None:
        if self.true_k is None or self.ari is None:
            return None
        return self.k == self.true_k and self.ari >= ARI_THRESHOLD


@dataclass
class RefreshSeries:
    """Refreshes of one input into warehouses holding the same kind of history."""

    history: str  # what the warehouse held, as the report says it
    runs: list[ProcessResult] = field(default_factory=list)
    steps: list[StepTimes] = field(default_factory=list)
    warehouse_bytes: list[int] = field(default_factory=list)


@dataclass
class PipelineCase:
    """All repeats of the CLI on one input."""

    bench_input: BenchInput
    engine: str = "local"
    runs: list[ProcessResult] = field(default_factory=list)
    steps: list[StepTimes] = field(default_factory=list)
    refreshes: list[RefreshSeries] = field(default_factory=list)
    quality: Quality | None = None
    quality_error: str = ""

    @property
    def ok_runs(self) -> list[ProcessResult]:
        return [run for run in self.runs if run.ok]

    @property
    def failed_runs(self) -> list[ProcessResult]:
        return [run for run in self.runs if not run.ok]


class PipelineBench:
    """Runs `segmentation run` on one input, repeatedly, in its own scratch folder; with
    ``launched``, the job as the UI's and the schedule's run worker executes it instead."""

    def __init__(
        self,
        bench_input: BenchInput,
        timeout_seconds: float | None,
        engine: str = "local",
        launched: bool = False,
    ) -> None:
        self.bench_input = bench_input
        self.timeout_seconds = timeout_seconds
        self.engine = engine
        self.launched = launched
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        prefix = f"run_{'launched' if launched else engine}_"
        self.scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=DATA_DIR))
        self.home = self.scratch / "dagster_home"
        self.warehouse = self.scratch / "warehouse" / "warehouse.duckdb"
        self.case = PipelineCase(bench_input, engine)
        prepare_home(self.home)

    def run_once(self, log_stem: Path) -> ProcessResult:
        """One first run into an empty warehouse; its step times are recorded if it finished."""
        shutil.rmtree(self.warehouse.parent, ignore_errors=True)
        self.warehouse.parent.mkdir(parents=True)
        result = self._measured(log_stem)
        self.case.runs.append(result)
        self._record_steps(result, self.case.steps)
        return result

    def refresh_once(self, log_stem: Path, history: str) -> ProcessResult:
        """One more run into the warehouse the last run published (the nightly refresh),
        recorded with the other refreshes into a warehouse holding ``history``."""
        series = next((s for s in self.case.refreshes if s.history == history), None)
        if series is None:
            series = RefreshSeries(history)
            self.case.refreshes.append(series)
        result = self._measured(log_stem)
        series.runs.append(result)
        self._record_steps(result, series.steps)
        if result.ok:
            series.warehouse_bytes.append(self.warehouse.stat().st_size)
        return result

    def _measured(self, log_stem: Path) -> ProcessResult:
        return run_measured(
            self.command(),
            self._env(),
            log_stem,
            cwd=REPO_ROOT,
            timeout_seconds=self.timeout_seconds,
        )

    def _record_steps(self, result: ProcessResult, into: list[StepTimes]) -> None:
        run_id = _run_id(result)
        if run_id is not None and result.ok:
            steps = read_step_times(self.home, run_id, result)
            if steps is not None:
                into.append(steps)

    def command(self) -> list[str]:
        if self.launched:
            source, warehouse = str(self.bench_input.path), str(self.warehouse)
            return [sys.executable, "-c", LAUNCHED_COMMAND, source, warehouse]
        cli = Path(sys.executable).parent / "segmentation"
        return [
            str(cli),
            "run",
            "--source",
            str(self.bench_input.path),
            "--warehouse",
            str(self.warehouse),
            "--engine",
            self.engine,
        ]

    def measure_quality(self) -> None:
        """Quality of the last published run (every repeat is the same deterministic run)."""
        # a refresh publishes over the first runs
        runs = [run for series in self.case.refreshes for run in series.runs] or self.case.runs
        last = runs[-1] if runs else None
        if last is None or not last.ok:
            self.case.quality_error = "no published run to check"
            return
        truth = self.bench_input.path if self.bench_input.has_truth else None
        try:
            self.case.quality = model_quality(self.warehouse, truth, _run_id(last))
        except (duckdb.Error, ValueError, TypeError) as error:
            self.case.quality_error = f"{type(error).__name__}: {error}"

    def close(self) -> None:
        """Remove the scratch folder (warehouses can be gigabytes); inputs stay cached."""
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTATION_")}
        env["DAGSTER_HOME"] = str(self.home)
        return env


def model_quality(warehouse: Path, truth_csv: Path | None, run_id: str | None) -> Quality:
    """k and silhouette of a published run and, given the truth file, k and ARI against it.

    The ARI comes from a contingency table counted by DuckDB (a GROUP BY over the join of
    the published segments with the CSV's truth column), so even 10M customers never become
    a pandas frame. Ids are read as text, since they are zero-padded.
    """
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        run = con.execute(
            "SELECT run_id, n_segments, silhouette, algorithm, sample_size, n_customers "
            "FROM segmentation_runs WHERE run_id = coalesce($run_id, run_id) "
            "ORDER BY finished_at DESC LIMIT 1",
            {"run_id": run_id},
        ).fetchone()
        if run is None:
            raise ValueError(f"run {run_id} is not in segmentation_runs")
        counts = [] if truth_csv is None else _truth_counts(con, truth_csv, run[0])
    finally:
        con.close()
    quality = Quality(
        k=int(run[1]),
        silhouette=float(run[2]),
        algorithm=str(run[3]),
        sample_size=int(run[4]),
        customers=int(run[5]),
    )
    if truth_csv is None:
        return quality
    return replace(
        quality,
        true_k=len(SEGMENTS),
        ari=ari_from_contingency(_contingency(counts)),
        matched_rows=sum(int(n) for _, _, n in counts),
    )


def _truth_counts(
    con: duckdb.DuckDBPyConnection, truth_csv: Path, run_id: str
) -> list[tuple[object, object, int]]:
    """(segment_id, latent_segment, customers) for every pair that occurs."""
    return con.execute(
        f"SELECT s.segment_id, t.{TRUTH_COLUMN}, count(*) "  # noqa: S608 - fixed names
        "FROM customer_segments s JOIN read_csv($path, header = true, all_varchar = true) t "
        f'ON t."{ID_COLUMN}" = s.customer_id WHERE s.run_id = $run_id GROUP BY ALL',
        {"path": str(truth_csv), "run_id": run_id},
    ).fetchall()


def _contingency(counts: list[tuple[object, object, int]]) -> np.ndarray:
    """(segment, truth, count) rows as a segments x truths matrix."""
    segments = sorted({segment for segment, _, _ in counts}, key=str)
    truths = sorted({truth for _, truth, _ in counts}, key=str)
    table = np.zeros((len(segments), len(truths)), dtype=np.int64)
    row = {segment: i for i, segment in enumerate(segments)}
    column = {truth: j for j, truth in enumerate(truths)}
    for segment, truth, n in counts:
        table[row[segment], column[truth]] = n
    return table


def _run_id(result: ProcessResult) -> str | None:
    """The Dagster run id the CLI prints, on success (stdout) or failure (stderr)."""
    match = _RUN_ID.search(result.stdout) or _RUN_ID.search(result.stderr)
    return match.group(1) if match else None
