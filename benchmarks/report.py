"""BENCHMARKS.md: medians and ratios in Markdown tables, plus everything needed to reproduce.

Medians rather than means, because a concurrent job on a small machine slows single
repeats a lot and the median ignores one such outlier; ranges are shown so the noise is
visible. Ratios compare measurements taken in the same session on the same machine.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from benchmarks.baselines import NOT_ATTEMPTED, NOTEBOOK_MAX_ROWS, FloorCase, NotebookCase
from benchmarks.events import AFTER_RUN, BEFORE_RUN, BETWEEN_STEPS, StepTimes
from benchmarks.inputs import size_label
from benchmarks.pipeline import ARI_THRESHOLD, PipelineCase
from benchmarks.process import ProcessResult

FLOOR_TARGET = 1.5
# Below this size a time per million rows only restates the fixed start-up cost, and the
# difference between two small sizes is smaller than the run-to-run noise.
PER_MILLION_MIN_ROWS = 100_000
_MIB = 1024**2
_DASH = "—"


@dataclass(frozen=True)
class Session:
    """What the report needs besides the measurements: how and where they were taken."""

    command: str
    started: str
    finished: str
    machine: list[tuple[str, str]]
    load_before: str
    load_after: str
    repeats: int
    notes: list[str]


def render(
    session: Session,
    pipeline: Sequence[PipelineCase],
    floor: FloorCase,
    notebooks: Sequence[NotebookCase],
    spark: Sequence[PipelineCase] = (),
    launched: Sequence[PipelineCase] = (),
) -> str:
    """The whole BENCHMARKS.md."""
    sections = [
        _header(session),
        _end_to_end(pipeline),
        _steps(pipeline),
        _refresh(pipeline),
        _quality(pipeline),
        _floor(floor, pipeline),
        _notebook(notebooks, pipeline),
        _launched(launched, pipeline),
        _spark(spark, pipeline),
        _failures([*pipeline, *launched, *spark], floor, notebooks),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _header(session: Session) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run`); overwritten on every run.",
        "",
        f"- command: `{session.command}`",
        f"- started: {session.started}, finished: {session.finished}",
        f"- load average (1/5/15 min) before: {session.load_before}, after: {session.load_after}",
        f"- repeats: {session.repeats} per size (1 at 10M rows and above); tables show medians",
        *(f"- note: {note}" for note in session.notes),
        "",
        "## Machine",
        "",
        _table(["", ""], [list(row) for row in session.machine]),
        "",
        "## Method",
        "",
        "- **Pipeline**: `.venv/bin/segmentation run --source CSV --warehouse W` in a fresh "
        "process, a first run into an empty warehouse each time, on a persistent Dagster "
        "instance in a scratch DAGSTER_HOME (created before timing). Wall time includes "
        "interpreter start-up and imports.",
        "- **Peak RSS**: the largest resident set of any single process of the run: "
        "`ru_maxrss` from `wait4()` of the measured process (with the children it waited "
        "for), and the peak (VmHWM) of every other process descended from it, sampled from "
        "/proc every 50 ms (`segmentation run`'s worker server and the workers forked from "
        "it). Taken by a stdlib-only launcher (`benchmarks/launcher.py`, ~10 MiB, the floor "
        "of this column) so the harness's own memory is not folded in.",
        "- **CPU**: user + system seconds of the measured process and the children it "
        "waited for; the worker server's imports and the model search and report computed "
        "in its workers are not included.",
        "- **Steps**: STEP_START to STEP_SUCCESS event timestamps of the run, read back from "
        "the instance. Start-up is process launch to the run's first event; the rest of the "
        "run's time is Dagster's bookkeeping between steps.",
        "- **Inputs**: 200 rows is the real Kaggle Mall_Customers.csv; other sizes are "
        "`write_customers_csv(path, rows, seed=0, with_truth=True)`, cached in "
        "benchmarks/data/.",
        "- All repeats of the light cases (Dagster floor, pipeline and notebook at small "
        "sizes) run interleaved, after one untimed warm-up of the floor and of the pipeline, "
        "so a burst of load from other jobs hits them alike.",
    ]
    return "\n".join(lines)


def _end_to_end(cases: Sequence[PipelineCase]) -> str:
    rows = []
    previous: tuple[int, float] | None = None  # (rows, median in-run seconds)
    for case in cases:
        ok = case.ok_runs
        rows_n = case.bench_input.rows
        status = "ok" if not case.failed_runs else f"{len(case.failed_runs)} failed"
        if not ok:
            rows.append([case.bench_input.label, f"{rows_n:,}", "0", *[_DASH] * 7, status])
            continue
        wall = _median(run.wall_seconds for run in ok)
        in_run = _median(steps.in_run for steps in case.steps) if case.steps else None
        marginal = _DASH
        if previous is not None and in_run is not None and rows_n >= PER_MILLION_MIN_ROWS:
            marginal = _fmt((in_run - previous[1]) / (rows_n - previous[0]) * 1e6)
        rows.append(
            [
                case.bench_input.label,
                f"{rows_n:,}",
                str(len(ok)),
                _fmt(wall),
                _range(run.wall_seconds for run in ok),
                _fmt_opt(in_run),
                _fmt(_median(run.cpu_seconds for run in ok)),
                f"{_median(run.peak_rss_bytes for run in ok) / _MIB:,.0f}",
                _fmt(wall / rows_n * 1e6) if rows_n >= PER_MILLION_MIN_ROWS else _DASH,
                marginal,
                status,
            ]
        )
        if in_run is not None and rows_n >= PER_MILLION_MIN_ROWS:
            previous = (rows_n, in_run)
    headers = [
        "input",
        "rows",
        "runs",
        "wall (s)",
        "wall range (s)",
        "in Dagster run (s)",
        "CPU (s)",
        "peak RSS (MiB)",
        "wall per 1M rows (s)",
        "marginal per 1M rows (s)",
        "status",
    ]
    return "\n".join(
        [
            "## End to end: `segmentation run`",
            "",
            _table(headers, rows),
            "",
            "*In Dagster run* is the run's first to last event (wall minus start-up and exit). "
            "*Marginal per 1M rows* is the extra in-run time per million rows over the previous "
            f"size of at least {PER_MILLION_MIN_ROWS:,} rows: the slope of the scaling curve, "
            "without the fixed start-up cost. Below that size per-1M figures only restate the "
            "fixed cost, and differences between sizes are within the run-to-run noise.",
        ]
    )


def _steps(cases: Sequence[PipelineCase]) -> str:
    measured = [case for case in cases if case.steps]
    if not measured:
        return ""
    order: list[str] = []
    for case in measured:
        for name in case.steps[0].seconds:
            if name not in order:
                order.append(name)
    order = [n for n in order if n not in (BETWEEN_STEPS, AFTER_RUN)] + [BETWEEN_STEPS, AFTER_RUN]
    medians = {
        id(case): {name: _median_step(case.steps, name) for name in order} for case in measured
    }
    largest = measured[-1]
    largest_total = sum(v for v in medians[id(largest)].values() if v is not None)
    rows = []
    for name in order:
        row = [f"`{name}`" if not name.startswith("(") else name]
        row += [_fmt_opt(medians[id(case)][name]) for case in measured]
        share = medians[id(largest)][name]
        row.append(f"{share / largest_total:.0%}" if share is not None and largest_total else "")
        rows.append(row)
    rows.append(
        ["**wall (median run)**"]
        + [f"**{_fmt(_median(r.wall_seconds for r in case.ok_runs))}**" for case in measured]
        + [""]
    )
    headers = ["step (median s)"] + [size_label(c.bench_input.rows) for c in measured]
    headers.append(f"share at {size_label(largest.bench_input.rows)}")
    return "\n".join(
        [
            "## Where the time goes (median seconds per step)",
            "",
            _table(headers, rows),
            "",
            "`staged_customer_checks` runs the four blocking asset checks in one step, "
            "`segment_drift` the four drift checks. Per-step "
            "medians need not add up exactly to the median wall time.",
        ]
    )


def _refresh(cases: Sequence[PipelineCase]) -> str:
    """The nightly case next to the first run: the same input into the last warehouse."""
    rows = []
    for case in cases:
        first = _median(run.wall_seconds for run in case.ok_runs) if case.ok_runs else None
        for series in case.refreshes:
            ok = [run for run in series.runs if run.ok]
            failed = len(series.runs) - len(ok)
            wall = _median(run.wall_seconds for run in ok) if ok else None
            step = {
                name: (_median_step(series.steps, name), _median_step(case.steps, name))
                for name in ("raw_customers", "customer_segments", "published_warehouse")
            }
            sizes = series.warehouse_bytes
            rows.append(
                [
                    case.bench_input.label,
                    f"{case.bench_input.rows:,}",
                    series.history,
                    str(len(ok)),
                    _fmt_opt(wall),
                    _range(run.wall_seconds for run in ok) if ok else _DASH,
                    _fmt_opt(first),
                    f"{wall / first:.2f}x" if wall and first else _DASH,
                    *(f"{_fmt_opt(now)} / {_fmt_opt(before)}" for now, before in step.values()),
                    f"{_median(run.peak_rss_bytes for run in ok) / _MIB:,.0f}" if ok else _DASH,
                    f"{sizes[-1] / _MIB:,.0f}" if sizes else _DASH,
                    "ok" if not failed else f"{failed} failed",
                ]
            )
    if not rows:
        return ""
    headers = [
        "input",
        "rows",
        "history before the refresh",
        "refreshes",
        "refresh wall (s)",
        "refresh range (s)",
        "first-run wall (s)",
        "refresh / first run",
        "`raw_customers` (s) refresh / first",
        "`customer_segments` (s) refresh / first",
        "`published_warehouse` (s) refresh / first",
        "peak RSS (MiB)",
        "warehouse after (MiB)",
        "status",
    ]
    return "\n".join(
        [
            "## Nightly refresh: another run into the published warehouse",
            "",
            _table(headers, rows),
            "",
            "After the first runs of a size, the same command again, each time into the "
            "warehouse the previous run published: the run copies it into its work file, "
            "counts the moves against the previous run and keeps every run's assignments as "
            "history (the default window is 30 runs). *History before the refresh* is the "
            "runs the warehouse held when each refresh started. The steady nightly case, a "
            "month of nightly runs, holds the whole window: for it the history was topped up "
            "with copies of the last past run's table (`benchmarks/history_fill.py`), which "
            "the refresh copies, reads and prunes like real runs. Step columns are medians, "
            "refresh / first run.",
        ]
    )


def _quality(cases: Sequence[PipelineCase]) -> str:
    rows = []
    for case in cases:
        q = case.quality
        label, n = case.bench_input.label, f"{case.bench_input.rows:,}"
        if q is None:
            why = case.quality_error or "not measured"
            rows.append([label, n] + [_DASH] * 7 + [f"FAIL ({why})"])
            continue
        verdict = {True: "PASS", False: "FAIL", None: "no truth"}[q.passed]
        rows.append(
            [
                label,
                n,
                f"{q.matched_rows:,} / {q.customers:,}" if q.ari is not None else _DASH,
                q.algorithm,
                str(q.k),
                str(q.true_k) if q.true_k is not None else _DASH,
                f"{q.ari:.4f}" if q.ari is not None else _DASH,
                f"{q.silhouette:.3f}",
                f"{q.sample_size:,}",
                verdict,
            ]
        )
    if not rows:
        return ""
    headers = [
        "input",
        "rows",
        "matched / published",
        "algorithm",
        "k chosen",
        "true k",
        "ARI vs truth",
        "silhouette (sample)",
        "model sample",
        "verdict",
    ]
    return "\n".join(
        [
            "## Model quality against the generated truth",
            "",
            _table(headers, rows),
            "",
            f"Verdict: PASS when the chosen k equals the number of latent segments and the "
            f"adjusted Rand index between `customer_segments.segment_id` and the file's "
            f"`latent_segment` is at least {ARI_THRESHOLD} (the acceptance criterion applies at "
            "1M rows and above; smaller sizes are shown for information). The ARI is computed "
            "from a DuckDB GROUP BY contingency table over the published warehouse (read-only); "
            "*matched* counts published customers found in the file. k, silhouette and sample "
            "are as recorded in `segmentation_runs`.",
        ]
    )


def _floor(floor: FloorCase, cases: Sequence[PipelineCase]) -> str:
    mall = next((c for c in cases if c.bench_input.rows == 200 and c.ok_runs), None)
    measured = [("Dagster floor", floor.ok_runs, floor.steps)]
    if mall is not None:
        measured.append((f"pipeline, {mall.bench_input.label}", mall.ok_runs, mall.steps))
    headers = [
        "what",
        "runs",
        "wall (s)",
        "wall range (s)",
        "start-up (s)",
        "in Dagster run (s)",
        "after run (s)",
        "CPU (s)",
        "peak RSS (MiB)",
    ]
    rows = [
        [
            label,
            str(len(runs)),
            _fmt(_median(r.wall_seconds for r in runs)),
            _range(r.wall_seconds for r in runs),
            _fmt_opt(_median_of(steps, lambda t: t.seconds[BEFORE_RUN])),
            _fmt_opt(_median_of(steps, lambda t: t.in_run)),
            _fmt_opt(_median_of(steps, lambda t: t.seconds[AFTER_RUN])),
            _fmt(_median(r.cpu_seconds for r in runs)),
            f"{_median(r.peak_rss_bytes for r in runs) / _MIB:,.0f}",
        ]
        for label, runs, steps in measured
        if runs
    ]
    lines = [
        "## Dagster floor",
        "",
        "Three chained assets returning small values, in-process executor, "
        "`execute_in_process` on a persistent instance in a scratch DAGSTER_HOME, in a fresh "
        "process (`python -m benchmarks.dagster_floor`): the least any Dagster run costs here.",
        "",
        _table(headers, rows),
    ]
    if floor.ok_runs and mall is not None:
        ratio = _median(r.wall_seconds for r in mall.ok_runs) / _median(
            r.wall_seconds for r in floor.ok_runs
        )
        verdict = "PASS" if ratio <= FLOOR_TARGET else "FAIL"
        lines += [
            "",
            f"**pipeline (200 rows) / floor = {ratio:.2f}x** (median wall times; target "
            f"≤ {FLOOR_TARGET}x): {verdict}.",
        ]
    return "\n".join(lines)


def _notebook(notebooks: Sequence[NotebookCase], cases: Sequence[PipelineCase]) -> str:
    by_rows = {case.bench_input.rows: case for case in cases}
    rows = []
    for nb in notebooks:
        pipeline = by_rows.get(nb.bench_input.rows)
        p_ok = _ok(pipeline)
        p_wall = _median(r.wall_seconds for r in p_ok) if p_ok else None
        p_cells = [_fmt_opt(p_wall), _pipeline_quality(pipeline)]
        head = [nb.bench_input.label, f"{nb.bench_input.rows:,}"]
        ok = nb.ok_runs
        if nb.bench_input.rows > NOTEBOOK_MAX_ROWS or not ok:
            why = NOT_ATTEMPTED if nb.bench_input.rows > NOTEBOOK_MAX_ROWS else "failed"
            rows.append(head + [why] + [_DASH] * 3 + p_cells + [_DASH])
            continue
        nb_wall = _median(r.wall_seconds for r in ok)
        out = nb.outputs[-1]
        rows.append(
            head
            + [
                _fmt(nb_wall),
                _fmt(_median(o.compute_seconds for o in nb.outputs)),
                f"{_median(r.peak_rss_bytes for r in ok) / _MIB:,.0f}",
                _k_ari(out.k, out.silhouette, out.ari),
            ]
            + p_cells
            + [f"{p_wall / nb_wall:.2f}x" if p_wall is not None else _DASH]
        )
    if not rows:
        return ""
    headers = [
        "input",
        "rows",
        "notebook wall (s)",
        "notebook compute (s)",
        "notebook peak RSS (MiB)",
        "notebook k / silhouette / ARI",
        "pipeline wall (s)",
        "pipeline k / silhouette / ARI",
        "pipeline / notebook (wall)",
    ]
    return "\n".join(
        [
            "## Notebook baseline",
            "",
            "pandas.read_csv, StandardScaler, KMeans(k, n_init=10, random_state=0) for "
            "k = 2..10, k chosen by the best full `silhouette_score`, in a fresh process "
            "(`python -m benchmarks.notebook CSV`), so imports count as for the pipeline. "
            "*Compute* is read_csv to the chosen k, without start-up. The notebook's "
            "silhouette is over all customers, the pipeline's over its model sample; ARI is "
            "against the generated truth.",
            "",
            _table(headers, rows),
        ]
    )


def _launched(launched: Sequence[PipelineCase], cli: Sequence[PipelineCase]) -> str:
    """Runs executed as the UI's and the schedule's run worker does, next to the CLI's."""
    if not launched:
        return ""
    cli_by_rows = {case.bench_input.rows: case for case in cli}
    rows = []
    for case in launched:
        ok = case.ok_runs
        cli_case = cli_by_rows.get(case.bench_input.rows)
        wall, cli_wall = _median_wall(case), _median_wall(cli_case)
        rows.append(
            [
                case.bench_input.label,
                str(len(ok)),
                _fmt_opt(wall),
                _range(run.wall_seconds for run in ok) if ok else _DASH,
                _fmt_opt(_median_of(case.steps, lambda t: t.in_run)),
                _fmt_opt(cli_wall),
                _fmt_opt(_median_of(cli_case.steps, lambda t: t.in_run) if cli_case else None),
                f"{wall / cli_wall:.2f}x" if wall and cli_wall else _DASH,
                f"{_median(r.peak_rss_bytes for r in ok) / _MIB:,.0f}" if ok else _DASH,
            ]
        )
    headers = [
        "input",
        "runs",
        "launched wall (s)",
        "wall range (s)",
        "in Dagster run (s)",
        "`segmentation run` wall (s)",
        "in Dagster run (s)",
        "launched / CLI",
        "peak RSS (MiB)",
    ]
    return "\n".join(
        [
            "## Runs launched from the UI or by the schedule",
            "",
            _table(headers, rows),
            "",
            "Dagster's run worker for a launched run is a fresh interpreter that loads the "
            "definitions and executes the job in process; `python -c` with "
            "`benchmarks/launched_run.py` does the same on a scratch instance, without the "
            "webserver, daemon and code server around it. Its wall includes the process's "
            "exit, which the real run worker pays after the run is reported finished. The "
            "run starts the worker server when its resources are set up, after Dagster has "
            "loaded, where `segmentation run` starts it before importing Dagster. The "
            "`segmentation run` columns repeat the first table.",
        ]
    )


def _spark(spark: Sequence[PipelineCase], local: Sequence[PipelineCase]) -> str:
    """The Spark engine next to the local engine at the same sizes."""
    if not spark:
        return ""
    local_by_rows = {case.bench_input.rows: case for case in local}
    rows = []
    for case in spark:
        ok = case.ok_runs
        other = local_by_rows.get(case.bench_input.rows)
        wall, local_wall = _median_wall(case), _median_wall(other)
        q = case.quality
        verdict = {True: "PASS", False: "FAIL", None: "no truth"}[q.passed] if q else _DASH
        rows.append(
            [
                case.bench_input.label,
                f"{case.bench_input.rows:,}",
                str(len(ok)),
                _fmt_opt(wall),
                _fmt_opt(local_wall),
                f"{wall / local_wall:.1f}x" if wall and local_wall else _DASH,
                f"{_median(r.peak_rss_bytes for r in ok) / _MIB:,.0f}" if ok else _DASH,
                _pipeline_quality(case),
                _pipeline_quality(other),
                verdict,
            ]
        )
    headers = [
        "input",
        "rows",
        "runs",
        "Spark wall (s)",
        "local wall (s)",
        "Spark / local",
        "Spark peak RSS (MiB)",
        "Spark k / silhouette / ARI",
        "local k / silhouette / ARI",
        "Spark verdict",
    ]
    return "\n".join(
        [
            "## Spark engine (local mode) next to the local engine",
            "",
            _table(headers, rows),
            "",
            "`segmentation run --engine spark` with the default master `local[*]` on this "
            "machine, the same inputs and the same warehouse steps; the local columns repeat "
            "the tables above. Peak RSS is measured as above: the largest single process among "
            "the Python driver, the Spark JVM and the worker server, not added together. "
            "Spark pays for a JVM and its task scheduling, which on one 2-core "
            "machine costs more than it buys; the engine is for data that outgrows one "
            "machine, on a cluster (`--spark-master`).",
        ]
    )


def _failures(
    cases: Sequence[PipelineCase], floor: FloorCase, notebooks: Sequence[NotebookCase]
) -> str:
    failed: list[tuple[str, ProcessResult]] = [
        (case.bench_input.label, run) for case in cases for run in case.failed_runs
    ]
    failed += [("Dagster floor", run) for run in floor.runs if not run.ok]
    failed += [(f"notebook {nb.bench_input.label}", r) for nb in notebooks for r in nb.runs]
    failed = [(label, run) for label, run in failed if not run.ok]
    if not failed:
        return ""
    lines = ["## Failed runs", ""]
    for label, run in failed:
        why = "timed out" if run.timed_out else f"exit code {run.exit_code}"
        lines += [
            f"**{label}**: {why} after {run.wall_seconds:.1f} s",
            "",
            "```",
            run.stderr_tail(),
            "```",
            "",
        ]
    return "\n".join(lines).rstrip()


def _pipeline_quality(case: PipelineCase | None) -> str:
    if case is None or case.quality is None:
        return _DASH
    return _k_ari(case.quality.k, case.quality.silhouette, case.quality.ari)


def _k_ari(k: int, silhouette: float, ari: float | None) -> str:
    """'k / silhouette / ARI', with 'no truth' for an input without latent segments."""
    ari_text = f"{ari:.4f}" if ari is not None else "no truth"
    return f"{k} / {silhouette:.3f} / {ari_text}"


def _median_of(steps: Sequence[StepTimes], part: Callable[[StepTimes], float]) -> float | None:
    return _median(part(t) for t in steps) if steps else None


def _median_step(steps: Sequence[StepTimes], name: str) -> float | None:
    values = [times.seconds[name] for times in steps if name in times.seconds]
    return statistics.median(values) if values else None


def _ok(case: PipelineCase | None) -> list[ProcessResult]:
    return case.ok_runs if case is not None else []


def _median_wall(case: PipelineCase | None) -> float | None:
    """The median wall time of the case's successful runs; None without any."""
    ok = _ok(case)
    return _median(run.wall_seconds for run in ok) if ok else None


def _median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def _range(values: Iterable[float]) -> str:
    items = list(values)
    return f"{min(items):.2f}–{max(items):.2f}" if len(items) > 1 else _DASH


def _fmt(value: float) -> str:
    return f"{value:,.2f}"


def _fmt_opt(value: float | None) -> str:
    return _DASH if value is None else _fmt(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines)
