"""`python -m benchmarks.run` (what `make bench` runs): measure, then write BENCHMARKS.md.

Default: the pipeline at 200 (the real Mall file), 100k and 1M rows, three repeats each;
the Dagster floor; the notebook baseline at 200, 10k and 20k rows (and the pipeline at
those sizes too, for the ratio). About ten minutes on a 2-core machine.
`--quick` is one repeat at 200 and 100k rows; `--large` adds 10M rows (one repeat).
From 1M rows each size is also refreshed (as many runs, into the last published warehouse),
then refreshed again with a full history window (``history_fill``), the steady nightly case.
`--spark-sizes 1m,10m` also runs the Spark engine (local mode) at those sizes.
At 200 rows and 1M (and 10M with `--large`) the job is also run as the UI's and the
schedule's run worker runs it (`benchmarks/launched_run.py`), next to `segmentation run`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import machine
from benchmarks.baselines import (
    NOTEBOOK_MAX_ROWS,
    FloorBench,
    NotebookCase,
    run_notebook_once,
)
from benchmarks.history_fill import fill_history
from benchmarks.inputs import (
    DATA_DIR,
    DEFAULT_MALL_CSV,
    MALL_ROWS,
    REPO_ROOT,
    BenchInput,
    bench_input,
    parse_sizes,
    size_label,
)
from benchmarks.pipeline import PipelineBench, PipelineCase
from benchmarks.process import ProcessResult
from benchmarks.report import Session, render

DEFAULT_SIZES = "200,100k,1m"
LARGE_SIZES = "200,100k,1m,10m"
QUICK_SIZES = "200,100k"
DEFAULT_LAUNCHED_SIZES = "200,1m"
LARGE_LAUNCHED_SIZES = "10m"
QUICK_LAUNCHED_SIZES = "200"
DEFAULT_NOTEBOOK_SIZES = "200,10k,20k"
QUICK_NOTEBOOK_SIZES = "200"
SINGLE_REPEAT_ROWS = 10_000_000  # one repeat at and above this size: each takes minutes
REFRESH_MIN_ROWS = 1_000_000  # refreshes (runs into the last published warehouse) from here
# Sizes at most this big are "light": their repeats are interleaved with the floor's.
LIGHT_ROWS = 20_000
LOG_DIR = DATA_DIR / "logs"


def default_history_window() -> int:
    """The runs a warehouse keeps by default (`--history-runs-kept`)."""
    from segmentation_pipeline.defs.resources import SegmentationSettings

    return int(SegmentationSettings.model_fields["history_runs_kept"].default)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        sizes = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
        notebook_sizes = parse_sizes(
            args.notebook_sizes or (QUICK_NOTEBOOK_SIZES if args.quick else DEFAULT_NOTEBOOK_SIZES)
        )
    except ValueError as error:
        parser.error(str(error))
    if args.large:
        sizes = sorted(set(sizes) | set(parse_sizes(LARGE_SIZES)))
    try:
        spark_sizes = parse_sizes(args.spark_sizes) if args.spark_sizes else []
        launched_sizes = parse_sizes(
            args.launched_sizes or (QUICK_LAUNCHED_SIZES if args.quick else DEFAULT_LAUNCHED_SIZES)
        )
    except ValueError as error:
        parser.error(str(error))
    if args.large and args.launched_sizes is None:
        launched_sizes = sorted(set(launched_sizes) | set(parse_sizes(LARGE_LAUNCHED_SIZES)))
    repeats = 1 if args.quick and args.repeats is None else (args.repeats or 3)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = machine.load_average()
    notes: list[str] = []

    # The pipeline also runs at the notebook's sizes, so that every ratio compares equals;
    # the notebook table lists the larger pipeline sizes too, as not attempted.
    attempted = {n for n in notebook_sizes if n <= NOTEBOOK_MAX_ROWS}
    pipeline_sizes = sorted(set(sizes) | attempted | set(launched_sizes))
    notebook_sizes = sorted(set(notebook_sizes) | {n for n in sizes if n > NOTEBOOK_MAX_ROWS})
    measured_sizes = sorted(set(pipeline_sizes) | set(spark_sizes))
    inputs = {rows: bench_input(rows, args.mall) for rows in measured_sizes}
    for rows in notebook_sizes:
        inputs.setdefault(rows, bench_input(rows, args.mall, create=False))
    notes += sorted({i.note for i in inputs.values() if i.note})

    bench = _Bench(args.timeout)
    try:
        bench.warm_up(inputs[min(pipeline_sizes)])
        light = [inputs[n] for n in pipeline_sizes if n <= LIGHT_ROWS]
        for round_index in range(repeats):
            bench.floor_once(round_index)
            for item in light:
                bench.pipeline_once(item, round_index)
                if item.rows in launched_sizes:
                    bench.launched_once(item, round_index)
                if item.rows in attempted:
                    bench.notebook_once(item, round_index)
        for item in (inputs[n] for n in pipeline_sizes if n > LIGHT_ROWS):
            rounds = range(1 if item.rows >= SINGLE_REPEAT_ROWS else repeats)
            for round_index in rounds:
                bench.pipeline_once(item, round_index)
                if item.rows in launched_sizes:
                    bench.launched_once(item, round_index)
                if item.rows in attempted:
                    bench.notebook_once(item, round_index)
            if item.rows >= REFRESH_MIN_ROWS:
                for round_index in rounds:
                    history = "1 run" if len(rounds) == 1 else f"1–{len(rounds)} runs"
                    bench.refresh_once(item, round_index, history)
                for round_index in rounds:
                    bench.full_window_refresh_once(item, round_index)
        for item in (inputs[n] for n in spark_sizes):
            for round_index in range(1 if item.rows >= SINGLE_REPEAT_ROWS else repeats):
                bench.pipeline_once(item, round_index, engine="spark")
        bench.finish_quality()
    finally:
        bench.close()

    for rows in notebook_sizes:
        bench.notebook_case(inputs[rows])  # sizes not attempted still get a row
    session = Session(
        command=_command(argv),
        started=started,
        finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        machine=machine.machine_rows(),
        load_before=load_before,
        load_after=machine.load_average(),
        repeats=repeats,
        notes=notes,
    )
    cases = [bench.pipeline_cases[("local", rows)] for rows in pipeline_sizes]
    spark = [bench.pipeline_cases[("spark", rows)] for rows in spark_sizes]
    launched = [bench.launched[rows].case for rows in launched_sizes]
    notebooks = [bench.notebooks[rows] for rows in notebook_sizes]
    output = render(session, cases, bench.floor.case, notebooks, spark, launched)
    args.output.write_text(output)
    print(f"wrote {args.output}")
    everything = cases + spark + launched
    return 0 if all(case.ok_runs and not case.failed_runs for case in everything) else 1


class _Bench:
    """Keeps the per-input benches alive across interleaved rounds and logs progress."""

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self.floor = FloorBench()
        self.pipelines: dict[tuple[str, int], PipelineBench] = {}
        self.launched: dict[int, PipelineBench] = {}  # by rows
        self.notebooks: dict[int, NotebookCase] = {}

    @property
    def pipeline_cases(self) -> dict[tuple[str, int], PipelineCase]:
        """Cases by (engine, rows)."""
        return {key: bench.case for key, bench in self.pipelines.items()}

    def warm_up(self, item: BenchInput) -> None:
        """One untimed floor and pipeline run: the first process after a while pays for
        cold file caches (Python packages), which says nothing about the code."""
        _report("warm-up floor", self.floor.run_once(LOG_DIR / "warmup-floor", record=False))
        warm = PipelineBench(item, self.timeout_seconds)
        try:
            _report("warm-up pipeline", warm.run_once(LOG_DIR / "warmup-pipeline"))
        finally:
            warm.close()

    def floor_once(self, round_index: int) -> None:
        result = self.floor.run_once(LOG_DIR / f"floor-{round_index}")
        _report(f"floor #{round_index + 1}", result)

    def pipeline_once(self, item: BenchInput, round_index: int, engine: str = "local") -> None:
        key = (engine, item.rows)
        bench = self.pipelines.get(key)
        if bench is None:
            bench = self.pipelines[key] = PipelineBench(item, self.timeout_seconds, engine)
        stem = LOG_DIR / f"pipeline-{engine}-{size_label(item.rows)}-{round_index}"
        _report(f"pipeline ({engine}) {item.label} #{round_index + 1}", bench.run_once(stem))

    def launched_once(self, item: BenchInput, round_index: int) -> None:
        """The job as the run worker of a run launched from the UI or schedule executes it."""
        bench = self.launched.get(item.rows)
        if bench is None:
            bench = self.launched[item.rows] = PipelineBench(
                item, self.timeout_seconds, launched=True
            )
        stem = LOG_DIR / f"launched-local-{size_label(item.rows)}-{round_index}"
        _report(f"launched run {item.label} #{round_index + 1}", bench.run_once(stem))

    def refresh_once(self, item: BenchInput, round_index: int, history: str) -> None:
        """A local run into the warehouse that the size's last run published."""
        bench = self.pipelines[("local", item.rows)]
        stem = LOG_DIR / f"refresh-local-{size_label(item.rows)}-{round_index}"
        result = bench.refresh_once(stem, history)
        _report(f"refresh (local) {item.label} #{round_index + 1}", result)

    def full_window_refresh_once(self, item: BenchInput, round_index: int) -> None:
        """A refresh of a warehouse whose history holds the default window of runs."""
        bench = self.pipelines[("local", item.rows)]
        if not bench.case.refreshes or not bench.case.refreshes[0].runs[-1].ok:
            return  # no past run to copy
        window = default_history_window()
        fill_history(bench.warehouse, window)
        stem = LOG_DIR / f"window-refresh-local-{size_label(item.rows)}-{round_index}"
        result = bench.refresh_once(stem, f"{window} runs (topped up with copies)")
        _report(f"full-window refresh (local) {item.label} #{round_index + 1}", result)

    def notebook_once(self, item: BenchInput, round_index: int) -> None:
        case = self.notebook_case(item)
        stem = LOG_DIR / f"notebook-{size_label(item.rows)}-{round_index}"
        run_notebook_once(case, stem, self.timeout_seconds)
        _report(f"notebook {item.label} #{round_index + 1}", case.runs[-1])

    def notebook_case(self, item: BenchInput) -> NotebookCase:
        return self.notebooks.setdefault(item.rows, NotebookCase(item))

    def finish_quality(self) -> None:
        for bench in self.pipelines.values():
            bench.measure_quality()
            quality = bench.case.quality
            if quality is None:
                print(
                    f"quality ({bench.engine}) {bench.bench_input.label}: "
                    f"{bench.case.quality_error}",
                    flush=True,
                )
            elif quality.ari is not None:
                verdict = "PASS" if quality.passed else "FAIL"
                print(
                    f"quality ({bench.engine}) {bench.bench_input.label}: k={quality.k} "
                    f"(truth {quality.true_k}),"
                    f" ARI {quality.ari:.4f} -> {verdict}",
                    flush=True,
                )

    def close(self) -> None:
        """Remove every scratch folder (homes, warehouses); inputs and logs stay."""
        self.floor.close()
        for bench in [*self.pipelines.values(), *self.launched.values()]:
            bench.close()


def _report(what: str, result: ProcessResult) -> None:
    status = (
        "ok" if result.ok else ("TIMED OUT" if result.timed_out else f"exit {result.exit_code}")
    )
    print(
        f"{what}: {result.wall_seconds:.2f} s, peak {result.peak_rss_bytes / 1024**2:,.0f} MiB, "
        f"{status}",
        flush=True,
    )
    if not result.ok:
        print(result.stderr_tail(), flush=True)


def _command(argv: Sequence[str] | None) -> str:
    """The command line as typed from the repository root."""
    python = Path(sys.executable)
    try:
        python = python.relative_to(REPO_ROOT)
    except ValueError:
        pass
    arguments = list(sys.argv[1:] if argv is None else argv)
    return shlex.join([str(python), "-m", "benchmarks.run", *arguments])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description="Benchmarks, written to BENCHMARKS.md."
    )
    parser.add_argument(
        "--sizes",
        help=f"pipeline input sizes (default {DEFAULT_SIZES}; {MALL_ROWS} is the real Mall file)",
    )
    parser.add_argument("--large", action="store_true", help=f"also 10m (= --sizes {LARGE_SIZES})")
    parser.add_argument(
        "--quick", action="store_true", help=f"sizes {QUICK_SIZES}, one repeat, notebook at 200"
    )
    parser.add_argument(
        "--spark-sizes",
        help="also run the Spark engine (local mode) at these sizes, e.g. 1m,10m (default none)",
    )
    parser.add_argument(
        "--launched-sizes",
        help=f"also run the job as a launched run's worker does at these sizes (default "
        f"{DEFAULT_LAUNCHED_SIZES}, with --large also {LARGE_LAUNCHED_SIZES})",
    )
    parser.add_argument("--repeats", type=int, help="repeats per size below 10M (default 3)")
    parser.add_argument(
        "--notebook-sizes",
        help=f"notebook baseline sizes (default {DEFAULT_NOTEBOOK_SIZES}; "
        f"above {NOTEBOOK_MAX_ROWS:,} rows it is not attempted)",
    )
    parser.add_argument(
        "--mall", type=Path, default=DEFAULT_MALL_CSV, help="the real Mall_Customers.csv"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds before a single run is killed"
    )
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    return parser


if __name__ == "__main__":
    sys.exit(main())
