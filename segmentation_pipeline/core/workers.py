"""A worker server, started early, for the steps that need scikit-learn, matplotlib or pandas.

Importing scikit-learn and SciPy takes about 1 s, matplotlib about 0.5 s and pandas 0.3 s,
and a run would pay it in the model, profile and report steps. `segmentation run` starts
this server (Python's multiprocessing forkserver) before it imports Dagster: the server
imports those modules on the machine's other core while this process starts Dagster and
ingests, and the model search, the segment names and the report are then computed in
processes forked from it, already loaded. This process never imports them.

Runs launched from the UI or by the schedule start it when the run starts (the settings
resource, defs/resources.py), unless ``main_script_rerun_by_workers`` names a script the
workers would run again; then, and wherever it is not started, ``call`` computes in this
process. Functions given to ``call`` must be importable without the heavy modules (they are
pickled by reference) and import them inside; their arguments and results are pickled
across the process boundary.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from segmentation_pipeline.core.forked import fork_available

# Imports the model search, the plots (with the report, its inputs and pandas) and the
# profiling, then freezes what they allocated out of the garbage collector's sight.
PRELOAD_MODULE = "segmentation_pipeline.core.worker_preload"

_Result = TypeVar("_Result")
_server_started = False


def start_server() -> bool:
    """Start the worker server with the heavy modules preloaded; returns whether it runs.

    Needs fork (POSIX) and a second core, like the forked model search; otherwise nothing
    is started and ``call`` computes in-process. Returns at once: the server imports in
    the background, and the first ``call`` waits for it.
    """
    global _server_started
    if not fork_available():
        return False
    multiprocessing.get_context("forkserver").set_forkserver_preload([PRELOAD_MODULE])
    multiprocessing.forkserver.ensure_running()
    _server_started = True
    return True


def server_running() -> bool:
    """Whether ``start_server`` has started the server in this process."""
    return _server_started


def main_script_rerun_by_workers() -> str | None:
    """The main script or module that every worker would import afresh, if any.

    multiprocessing prepares each process it starts, forkserver workers included, by
    importing the parent's main module again (its "safe importing of main module" rule),
    except when there is none to import: ``python -c``, a notebook, ``python -m package``
    (its ``__main__`` is skipped), and the run worker Dagster starts for a launched run. A
    script run by path without an ``if __name__ == "__main__":`` guard would run its work
    again in every worker, so a run started from such a script computes in-process instead.
    ``segmentation run`` is guarded and starts the server itself.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return None if spec.name.endswith("__main__") else spec.name
    return getattr(main, "__file__", None)


def call(function: Callable[..., _Result], *args: Any) -> _Result:
    """``function(*args)`` in a worker forked from the server when it runs, else here.

    Exceptions raised by ``function`` are raised here as they are; a worker that dies
    (killed, out of memory) raises RuntimeError.
    """
    if not _server_started:
        return function(*args)
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(function, *args).result()
        except BrokenProcessPool as error:
            raise RuntimeError(
                f"the worker process computing {function.__qualname__} died: {error}"
            ) from None
