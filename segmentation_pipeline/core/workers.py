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
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from segmentation_pipeline.core.forked import die_with_parent, fork_available

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
    with ProcessPoolExecutor(
        max_workers=1, mp_context=context, initializer=_serve_this_run_only
    ) as pool:
        try:
            return pool.submit(function, *args).result()
        except BrokenProcessPool as error:
            raise RuntimeError(
                f"the worker process computing {function.__qualname__} died: {error}"
            ) from None
        except BaseException:  # an interrupt: the run is stopping, so is the worker
            _stop_workers(pool)
            raise


def _serve_this_run_only() -> None:
    """Worker side, first: end with the run's process, however that ends.

    Every process the server forks holds the server's "alive" pipe open, as a client of
    its own, and the server runs until all of its clients are gone; a worker waits on its
    task queue until told to stop. So when the run's process is killed outright (SIGKILL,
    out of memory) neither would ever end: the server and an idle worker stayed for good,
    about 435 MB. A worker does not start processes through the server, so it lets go of
    that pipe: the server then exits with the run, and the kernel ends the worker with the
    server (``die_with_parent``), and the worker's own forked children with the worker.
    """
    from multiprocessing import forkserver

    state = forkserver._forkserver  # noqa: SLF001 - the pipe has no public handle
    if state._forkserver_alive_fd is not None:  # noqa: SLF001
        os.close(state._forkserver_alive_fd)  # noqa: SLF001
        state._forkserver_alive_fd = None  # noqa: SLF001
    parent = multiprocessing.parent_process()
    die_with_parent(os.getppid())
    if parent is not None and not parent.is_alive():  # the run ended before this worker began
        os._exit(1)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate the pool's worker at once; leaving the pool would wait for its result.

    A run stopped from the UI or with Ctrl-C during the model search would otherwise wait
    for the search to finish (seconds at 10 million customers) before it could end.
    """
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14 and later
    if terminate is not None:
        terminate()
        return
    processes = pool._processes or {}  # noqa: SLF001 - no public way before Python 3.14
    for process in list(processes.values()):
        process.terminate()
