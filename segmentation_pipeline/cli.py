"""The `segmentation` command: run the Dagster job, query the warehouse, make test data.

`run` executes `segmentation_job` through Dagster (in this process, recorded in
DAGSTER_HOME so it shows in the UI's run history) and exits 0 only when new results
were published. `sql` reads the published warehouse read-only, which never blocks a
refresh because refreshes replace the file instead of writing into it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segmentation_pipeline.core import locations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # as a command stopped by SIGPIPE, when its reader went away


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # with the command's own usage, not the top level's
        getattr(args, "command_parser", parser).error(
            f"unrecognized arguments: {' '.join(unknown)}"
        )
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted; the published warehouse is unchanged", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        # Everything still alive lives until the process exits. Without this, the garbage
        # collector walks the ~370,000 objects of Dagster and the data libraries again while
        # the interpreter shuts down: about 1 s of every `segmentation run` (measured), for
        # memory the operating system reclaims anyway. Files and connections are closed by
        # then; atexit handlers still run.
        gc.freeze()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segmentation", description="Customer segmentation on Dagster and DuckDB."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="ingest, check, segment and publish (segmentation_job)")
    run.add_argument("--source", type=Path, help=f"input CSV (default ${locations.SOURCE_ENV})")
    run.add_argument(
        "--warehouse", type=Path, help=f"published DuckDB file (default ${locations.WAREHOUSE_ENV})"
    )
    run.add_argument(
        "--max-reject-fraction",
        type=float,
        help="fail and publish nothing when a larger share of rows is rejected (default 0.01)",
    )
    run.add_argument(
        "--max-customer-drop",
        type=float,
        help="fail and publish nothing when the file has this share fewer customers than the "
        "last run of the same file (default 0.5; 1 lets any count through)",
    )
    run.add_argument(
        "--features",
        help="comma-separated clustering features, in any order (used in the order "
        "age,annual_income,spending_score,gender; default age,annual_income,spending_score)",
    )
    run.add_argument("--k-min", type=int, help="smallest number of segments tried (default 2)")
    run.add_argument("--k-max", type=int, help="largest number of segments tried (default 10)")
    run.add_argument("--seed", type=int, help="seed for sampling and fitting (default 0)")
    run.add_argument(
        "--history-runs-kept",
        type=int,
        help="runs whose per-customer assignments stay in customer_segments_history (default 30)",
    )
    run.add_argument("--engine", choices=("local", "spark"), help="engine for the heavy steps")
    run.add_argument(
        "--spark-master",
        metavar="URL",
        help="Spark master for --engine spark: local[*] (default $SEGMENTATION_SPARK_MASTER, "
        "else local[*]), spark://host:7077, yarn, k8s://..., or Spark Connect sc://host:15002",
    )
    run.set_defaults(handler=_run, command_parser=run)

    sql = commands.add_parser("sql", help="query the published warehouse (read-only)")
    sql.add_argument("query", help='SQL, e.g. "SELECT * FROM customers LIMIT 5"')
    sql.add_argument("--warehouse", type=Path, help="published DuckDB file")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.set_defaults(handler=_sql, command_parser=sql)

    generate = commands.add_parser("generate", help="write a synthetic customer CSV")
    generate.add_argument("--rows", type=int, required=True)
    generate.add_argument("--out", type=Path, required=True)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument(
        "--with-truth",
        action="store_true",
        help="add a latent_segment column (ignored by ingest) for benchmarks",
    )
    generate.set_defaults(handler=_generate, command_parser=generate)
    return parser


def _run(args: argparse.Namespace) -> int:
    # Start-up allocates about 200,000 objects that live as long as the process (Dagster,
    # DuckDB, the definitions), and the garbage collector would walk them four times over
    # while they are created: about 0.4 s of every run (measured). So it is off until the
    # job is loaded; then they are frozen out of its sight and it collects what the run
    # allocates (_collect_run_objects_only).
    gc.disable()
    from segmentation_pipeline.core import workers

    # First, before Dagster is imported: the worker server imports scikit-learn and
    # matplotlib on the other core while this process starts the run (core/workers.py).
    try:
        server_started = workers.start_server()
    except OSError as error:  # e.g. no usable temporary folder for its socket
        server_started = False
        print(
            f"segmentation run: no worker server ({error}); the model and the report are "
            "computed in this process",
            file=sys.stderr,
        )
    from segmentation_pipeline.core.engine import spark_master_from_env
    from segmentation_pipeline.core.errors import WarehousePathError
    from segmentation_pipeline.core.features import parse_features
    from segmentation_pipeline.core.warehouse import Warehouse
    from segmentation_pipeline.runner import RunSetupError, run_segmentation_job

    if args.warehouse is not None:
        os.environ[locations.WAREHOUSE_ENV] = str(args.warehouse.expanduser().resolve())
    if args.source is not None:
        os.environ[locations.SOURCE_ENV] = str(locations.source_path(args.source))
    # Where this command could not start the server, the run must not try again (the
    # settings resource would, and would give a reason that is not the real one).
    settings: dict[str, object] = {} if server_started else {"worker_server": False}
    if args.max_reject_fraction is not None:
        settings["max_reject_fraction"] = args.max_reject_fraction
    if args.max_customer_drop is not None:
        settings["max_customer_drop"] = args.max_customer_drop
    if args.engine is not None:
        settings["engine"] = args.engine
    # Written into the run's config, so that the UI's run page shows the master it used.
    settings["spark_master"] = args.spark_master or spark_master_from_env()
    if args.features is not None:
        try:
            settings["features"] = list(parse_features(args.features))
        except ValueError as error:
            print(f"segmentation run: --features: {error}", file=sys.stderr)
            return EXIT_USAGE
    for name in ("k_min", "k_max", "seed", "history_runs_kept"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    problems = _invalid_settings(settings)
    try:
        Warehouse(locations.warehouse_path()).check_path()
    except WarehousePathError as error:
        problems.append(str(error))
    if problems:
        for problem in problems:
            print(f"segmentation run: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        outcome = run_segmentation_job(settings, before_execute=_collect_run_objects_only)
    except RunSetupError as error:
        print(f"segmentation run: {error}", file=sys.stderr)
        return EXIT_USAGE
    if outcome.published:
        print(outcome.summary)
    if outcome.succeeded:
        return EXIT_OK
    stopped = "interrupted" if outcome.interrupted else "failed"
    print(f"segmentation run {stopped} (run {outcome.run_id}):", file=sys.stderr)
    for problem in outcome.problems:
        print(f"  {problem}", file=sys.stderr)
    if outcome.published:
        print(
            f"The new results were published to {outcome.warehouse} before that.",
            file=sys.stderr,
        )
    elif outcome.warehouse.exists():
        print(f"The published warehouse {outcome.warehouse} is unchanged.", file=sys.stderr)
    else:
        print(
            f"Nothing was published; there is no warehouse at {outcome.warehouse} yet.",
            file=sys.stderr,
        )
    return EXIT_INTERRUPTED if outcome.interrupted else EXIT_FAILED


def _invalid_settings(settings: dict[str, object]) -> list[str]:
    """The settings' own rules (defs/resources.py), applied before the run starts and worded
    with this command's flags: otherwise a bad value fails the run's set-up with pydantic's
    text, or, for an empty k range, only after the input was loaded and checked."""
    import pydantic

    from segmentation_pipeline.defs.resources import SegmentationSettings

    try:
        SegmentationSettings(source_csv=str(locations.source_csv()), **settings)
    except pydantic.ValidationError as error:
        return [
            (f"--{error['loc'][0].replace('_', '-')}: " if error["loc"] else "")
            + error["msg"].removeprefix("Value error, ")
            for error in error.errors()
        ]
    return []


def _collect_run_objects_only() -> None:
    """Freeze what start-up allocated and turn the garbage collector back on (see _run)."""
    gc.freeze()
    gc.enable()


def _sql(args: argparse.Namespace) -> int:
    import duckdb

    from segmentation_pipeline.core.warehouse import Warehouse

    path = (args.warehouse or locations.warehouse_path()).expanduser().resolve()
    try:
        con = Warehouse(path).connect_read_only()
    except (FileNotFoundError, duckdb.Error) as error:
        print(f"segmentation sql: {error}", file=sys.stderr)
        return EXIT_FAILED
    try:
        result = con.execute(args.query)
        if result is None:  # nothing but blanks or comments
            print("segmentation sql: the query has no statement to run", file=sys.stderr)
            return EXIT_USAGE
        frame = result.df()
        statements = len(duckdb.extract_statements(args.query))
        if statements > 1:
            print(
                f"segmentation sql: ran {statements} statements; the result shown is the last "
                "one's",
                file=sys.stderr,
            )
    except duckdb.Error as error:
        print(f"segmentation sql: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        con.close()
    try:
        if args.format == "csv":
            frame.to_csv(sys.stdout, index=False)
        elif args.format == "json":
            print(_as_json(frame))
        else:
            print(_as_table(frame) if not frame.empty else "(no rows)")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return EXIT_BROKEN_PIPE
    return EXIT_OK


def _as_json(frame: Any) -> str:
    """Rows as a JSON array of objects, every value as stored: numbers to their last digit
    (pandas' JSON rounds to 10 decimals, so 1e-12 became 0; a FLOAT as its own digits, as in
    the CSV), timestamps to the microsecond
    (a finished_at read back must find its run again), missing values as null."""
    for name in frame.columns[frame.dtypes == "float32"]:
        # a FLOAT's own shortest digits (0.1), not those of the double it widens to
        values = frame[name].to_numpy()  # float32 scalars: iterating the column widens them
        frame[name] = [None if value != value else float(str(value)) for value in values]
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return json.dumps([_json_value(row) for row in rows], indent=2, allow_nan=False)


def _json_value(value: Any) -> Any:
    """A value of a query's result as JSON can hold it; infinities as DuckDB prints them."""
    import math

    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else (None if math.isnan(value) else str(value))
    if hasattr(value, "isoformat"):  # timestamps, dates, times
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays (a LIST column)
        return _json_value(value.tolist())
    return str(value)  # Decimal, UUID, timedelta, bytes: as they print


def _as_table(frame: Any) -> str:
    """The result as a text table, every missing value shown as NULL (pandas would show
    NaN, None or <NA>, by the column's type)."""
    import pandas as pd

    shown = frame.copy()
    for column in frame.columns:
        if not pd.api.types.is_float_dtype(frame[column].dtype):  # na_rep covers floats only
            shown[column] = frame[column].astype(object).where(frame[column].notna(), "NULL")
    return shown.to_string(index=False, na_rep="NULL")


def _generate(args: argparse.Namespace) -> int:
    from segmentation_pipeline.core.generate import write_customers_csv

    if args.rows <= 0:
        print("segmentation generate: --rows must be positive", file=sys.stderr)
        return EXIT_USAGE
    if args.seed < 0:  # numpy's generator takes non-negative seeds only
        print("segmentation generate: --seed must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    if args.out.is_dir():
        print(f"segmentation generate: --out {args.out} is a folder; name a file", file=sys.stderr)
        return EXIT_USAGE
    try:
        path = write_customers_csv(
            args.out, rows=args.rows, seed=args.seed, with_truth=args.with_truth
        )
    except OSError as error:
        print(f"segmentation generate: cannot write {args.out}: {error.strerror}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps({"path": str(path), "rows": args.rows, "seed": args.seed}))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
