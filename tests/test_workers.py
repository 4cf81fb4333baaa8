"""The pre-started worker server: model search in a worker forked from it, with the same
result, this process never imports scikit-learn, and the garbage collector in a worker
leaves the server's preloaded objects alone; a run launched without `segmentation run`
starts the server itself, unless its workers would re-run the main script. Each case runs
in a fresh interpreter, as `segmentation run` does, so the test process's own imports
cannot hide an import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import MALL_CSV, REPO_ROOT, published_segments, subprocess_env

SCRIPT = textwrap.dedent(
    """
    import gc, json, os, sys
    import numpy as np
    import pandas as pd
    from segmentation_pipeline.core import workers

    started = workers.start_server()
    from segmentation_pipeline.core.selection import select_model

    raw = pd.read_csv(sys.argv[1])[["Annual Income (k$)", "Spending Score (1-100)"]]
    x = ((raw - raw.mean()) / raw.std(ddof=0)).to_numpy(np.float32)
    in_worker = select_model(x)
    heavy_in_parent = sorted(m for m in ("sklearn", "scipy", "matplotlib") if m in sys.modules)
    try:
        select_model(x, k_min=1)
        invalid = "no error"
    except ValueError as error:
        invalid = str(error)
    try:
        workers.call(os._exit, 3)
        died = "no error"
    except RuntimeError as error:
        died = str(error)
    worker_pid = workers.call(os.getpid)
    worker_gc = (workers.call(gc.isenabled), workers.call(gc.get_freeze_count))

    from segmentation_pipeline.core.model_search import search_models  # here, to compare
    from segmentation_pipeline.core.selection import ALGORITHMS

    here = search_models(x, ALGORITHMS, 2, 10, 0, 0.8, 0.005, None)
    print(json.dumps({
        "started": started,
        "heavy_in_parent": heavy_in_parent,
        "same_result": (
            in_worker.candidates == here.candidates
            and np.array_equal(in_worker.centroids, here.centroids)
            and in_worker.rule == here.rule
        ),
        "chosen_k": in_worker.chosen.k,
        "invalid": invalid,
        "died": died,
        "worker_is_another_process": worker_pid != os.getpid(),
        "worker_gc_enabled": worker_gc[0],
        "worker_frozen_objects": worker_gc[1],
    }))
    """
)


def _last_json_line(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a script in a fresh interpreter from the project folder; its last printed line."""
    done = subprocess.run(
        command,
        env=env if env is not None else subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_model_search_runs_in_the_worker_with_the_same_result() -> None:
    outcome = _last_json_line([sys.executable, "-c", SCRIPT, str(MALL_CSV)])
    assert outcome["started"]  # CI's machine: Linux, 2 cores
    assert outcome["worker_is_another_process"]
    assert outcome["heavy_in_parent"] == []
    assert outcome["same_result"]
    assert outcome["chosen_k"] == 5
    assert "k_min must be >= 2" in outcome["invalid"]  # raised in the worker, as it was
    assert "died" in outcome["died"]
    # scikit-learn, SciPy, matplotlib and pandas leave well over 100,000 objects; frozen,
    # no collection in a worker walks them (nor copies their memory pages).
    assert outcome["worker_gc_enabled"]
    assert outcome["worker_frozen_objects"] > 100_000


# The job executed in process on the instance in $DAGSTER_HOME, as Dagster's run worker
# executes a run launched from the UI or by the schedule; argv: source CSV, warehouse,
# worker_server setting. Prints what the run logged about the server and what it imported.
LAUNCHED_RUN = textwrap.dedent(
    """
    import gc, json, sys
    import dagster as dg
    from segmentation_pipeline.definitions import defs

    def main():
        job = defs().resolve_job_def("segmentation_job")
        settings = {"source_csv": sys.argv[1], "worker_server": sys.argv[3] == "on"}
        config = {"resources": {"settings": {"config": settings},
                                "warehouse": {"config": {"path": sys.argv[2]}}}}
        with dg.DagsterInstance.get() as instance:
            result = job.execute_in_process(
                run_config=config, instance=instance, raise_on_error=False
            )
            logged = [e.user_message for e in instance.all_logs(result.run_id)]
        print(json.dumps({
            "success": result.success,
            "server_messages": [m for m in logged if "worker server" in m.lower()],
            "heavy_here": sorted(
                m for m in ("sklearn", "scipy", "matplotlib", "pandas") if m in sys.modules
            ),
            "frozen_objects": gc.get_freeze_count(),
        }))

    if __name__ == "__main__":
        main()
    """
)


def _launched_run(tmp_path: Path, name: str, command: list[str], setting: str) -> dict:
    warehouse = tmp_path / f"{name}.duckdb"
    outcome = _last_json_line(
        [*command, str(MALL_CSV), str(warehouse), setting],
        env=subprocess_env(DAGSTER_HOME=tmp_path / "home"),
    )
    assert outcome["success"]
    return {**outcome, "segments": published_segments(warehouse)}


def test_a_launched_run_starts_the_server_unless_its_workers_would_rerun_the_script(tmp_path):
    script = tmp_path / "launch.py"  # guarded, but a script run by path cannot be told apart
    script.write_text(LAUNCHED_RUN)
    (tmp_path / "home").mkdir()

    launched = _launched_run(tmp_path, "launched", [sys.executable, "-c", LAUNCHED_RUN], "on")
    by_path = _launched_run(tmp_path, "by_path", [sys.executable, str(script)], "on")
    turned_off = _launched_run(tmp_path, "off", [sys.executable, "-c", LAUNCHED_RUN], "off")

    # No main script (as in Dagster's run worker): the server computes, nothing heavy here,
    # and Dagster and the definitions are frozen out of the collector's sight.
    assert [m.split(":")[0] for m in launched["server_messages"]] == ["Worker server started"]
    assert launched["heavy_here"] == []
    assert launched["frozen_objects"] > 100_000
    # A script run by path: its workers would run it again, so the run computes here.
    assert by_path["server_messages"] == [
        f"No worker server: every worker would run {script} again (Python's multiprocessing "
        "imports the main script in each process it starts); the model search, segment "
        "names and report are computed in this process."
    ]
    assert by_path["heavy_here"] == ["matplotlib", "pandas", "scipy", "sklearn"]
    # The setting turned off: no server, nothing said.
    assert turned_off["server_messages"] == []
    assert turned_off["heavy_here"] == ["matplotlib", "pandas", "scipy", "sklearn"]
    assert launched["segments"] == by_path["segments"] == turned_off["segments"]


SENSOR_TICK = textwrap.dedent(
    """
    import sys
    import dagster as dg
    from segmentation_pipeline.core import workers
    from segmentation_pipeline.defs.resources import SegmentationSettings
    from segmentation_pipeline.defs.sensors import source_file_changed

    settings = SegmentationSettings(source_csv=sys.argv[1])
    with dg.build_sensor_context(resources={"settings": settings}) as context:
        result = source_file_changed(context)
    print(type(result).__name__, workers.server_running())
    """
)


def test_a_sensor_reading_the_settings_starts_no_server(tmp_path: Path) -> None:
    """Dagster sets resources up for a sensor's tick too, in the code server's process."""
    done = subprocess.run(
        [sys.executable, "-c", SENSOR_TICK, str(MALL_CSV)],
        # no published warehouse built from this file, which the sensor would not refresh
        env=subprocess_env(SEGMENTATION_WAREHOUSE=tmp_path / "none.duckdb"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        check=True,
    )
    assert done.stdout.split() == ["SensorResult", "False"]


# argv: a file for the pids. The worker starts a forked child of its own, as the model
# search and the plots do, writes "worker child server" pids, and both wait for an hour.
ABANDONED_WORKER = textwrap.dedent(
    """
    import sys
    from segmentation_pipeline.core import workers
    from tests.test_workers import wait_with_a_forked_child

    workers.start_server()
    workers.call(wait_with_a_forked_child, sys.argv[1])
    """
)


def wait_with_a_forked_child(pid_file: str) -> None:
    """In a worker: a forked child, both pids and the server's written, then a long wait."""
    from segmentation_pipeline.core.forked import ForkedCall

    with ForkedCall(time.sleep, 3600) as child:
        pids = f"{os.getpid()} {child._process.pid} {os.getppid()}"
        Path(pid_file).write_text(pids)
        time.sleep(3600)


def _ended(pid: int) -> bool:
    """Gone, or a zombie (ended; this container's init may not reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_the_workers_end_with_a_run_that_is_killed(tmp_path):
    """A run worker killed outright (SIGKILL, out of memory) runs no clean-up; its worker,
    the worker's forked child and the server must not stay behind for good."""
    pid_file = tmp_path / "pids"
    run = subprocess.Popen(
        [sys.executable, "-c", ABANDONED_WORKER, str(pid_file)],
        env=subprocess_env(),
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or len(pid_file.read_text().split()) < 3:
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        pids = [int(pid) for pid in pid_file.read_text().split()]
        assert not any(_ended(pid) for pid in pids)
    finally:
        run.kill()
        run.wait()
    deadline = time.monotonic() + 30
    while not all(_ended(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in pids if not _ended(pid)] == []


# The worker sleeps for a minute; an interrupt one second in must not wait for it.
INTERRUPTED_CALL = textwrap.dedent(
    """
    import json, signal, time
    from segmentation_pipeline.core import workers

    def interrupt(*_):
        raise KeyboardInterrupt

    workers.start_server()
    workers.call(time.sleep, 0)  # the server has started
    signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(1)
    started = time.monotonic()
    try:
        workers.call(time.sleep, 60)
        outcome = "returned"
    except KeyboardInterrupt:
        outcome = "interrupted"
    print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started}))
    """
)


def test_an_interrupted_call_stops_its_worker_instead_of_waiting_for_it() -> None:
    outcome = _last_json_line([sys.executable, "-c", INTERRUPTED_CALL])
    assert outcome["outcome"] == "interrupted"
    assert outcome["seconds"] < 30  # the worker's call would have taken 60 s
