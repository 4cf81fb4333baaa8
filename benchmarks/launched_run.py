"""One run the way Dagster's run worker executes a run launched from the UI or by the schedule.

The run worker is a fresh interpreter, started by the code server with multiprocessing's
spawn (so it has no main script), that loads the definitions and executes the job in
process on the instance. This does the same on the instance in $DAGSTER_HOME, without the
webserver, daemon and code server around it. Run it through ``python -c`` (``COMMAND``), so
that it too has no main script: a script run by path keeps the worker server off (see
``main_script_rerun_by_workers`` in core/workers.py). It prints `segmentation run`'s
"Published run <id>" line, or "run failed (run <id>)" on stderr, so the harness reads its
run id alike. The process's exit is measured with it; the real run worker's exit comes
after the run has been reported finished.
"""

from __future__ import annotations

import sys

COMMAND = "from benchmarks.launched_run import main; raise SystemExit(main())"


def main(argv: list[str] | None = None) -> int:
    """``SOURCE_CSV WAREHOUSE`` (from ``sys.argv`` under ``python -c``); 0 when published."""
    source, warehouse = argv if argv is not None else sys.argv[1:]
    import dagster as dg

    from segmentation_pipeline.definitions import defs

    job = defs().resolve_job_def("segmentation_job")
    run_config = {
        "resources": {
            "settings": {"config": {"source_csv": source}},
            "warehouse": {"config": {"path": warehouse}},
        }
    }
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False
        )
    if result.success:
        print(f"Published run {result.run_id}")
        return 0
    print(f"run failed (run {result.run_id})", file=sys.stderr)
    return 1
