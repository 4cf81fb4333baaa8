"""The pre-started worker server: model search in a worker forked from it, with the same
result, this process never imports scikit-learn, and the garbage collector in a worker
leaves the server's preloaded objects alone. Each case runs in a fresh interpreter,
as `segmentation run` does, so the test process's own imports cannot hide an import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import MALL_CSV

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


def test_model_search_runs_in_the_worker_with_the_same_result() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(MALL_CSV)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
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
