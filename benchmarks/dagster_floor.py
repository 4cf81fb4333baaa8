"""The Dagster floor: the cheapest real Dagster run, to compare the pipeline's fixed cost with.

Three assets that each return a small value, chained, executed in process on the
persistent instance in $DAGSTER_HOME, exactly like `segmentation run` executes its job.
Run as `python -m benchmarks.dagster_floor` in a fresh process, so the measured time
includes the interpreter, `import dagster` and the run's storage writes. Whatever the
pipeline needs beyond this on a 200-row input is its own overhead. It exits like
`segmentation run` handles the garbage collector: off while Dagster is imported and the
definitions load, then everything allocated so far frozen and collection back on for the
run (cli._run), and frozen again before the interpreter shuts down (cli.main).
"""

from __future__ import annotations

import gc

gc.disable()  # as segmentation_pipeline.cli._run does, before importing Dagster

import sys  # noqa: E402

import dagster as dg  # noqa: E402


@dg.asset
def floor_a() -> int:
    return 1


@dg.asset
def floor_b(floor_a: int) -> int:
    return floor_a + 1


@dg.asset
def floor_c(floor_b: int) -> int:
    return floor_b + 1


floor_job = dg.define_asset_job(
    "floor_job", selection=dg.AssetSelection.all(), executor_def=dg.in_process_executor
)
defs = dg.Definitions(assets=[floor_a, floor_b, floor_c], jobs=[floor_job])


def main() -> int:
    with dg.DagsterInstance.get() as instance:
        gc.freeze()  # as segmentation_pipeline.cli._collect_run_objects_only
        gc.enable()
        result = defs.resolve_job_def("floor_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
    print(f"floor run {result.run_id}: {'success' if result.success else 'FAILED'}")
    gc.freeze()  # as segmentation_pipeline.cli.main does
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
