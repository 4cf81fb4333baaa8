"""Run one function in a forked child process while the parent does other work.

Model selection is many small scikit-learn fits, bound by Python's GIL: threads gain
about 8%, a second process nearly halves the time on 2 cores. A *forked* child starts
with the parent's memory, so it needs no re-import of scikit-learn (about 1.2 s, which a
spawned process would pay) and its inputs are not pickled; only the result comes back,
through a pipe.

The child runs nothing but the given function: it leaves through ``os._exit`` (as every
multiprocessing fork child does), so it never runs the parent's finalisers, such as open
DuckDB connections or Dagster's storage. Fork is available on Linux and other POSIX
systems; elsewhere, or on a single usable core, ``fork_available`` is False and callers
compute in-process.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fork_available() -> bool:
    """Whether a forked child can run next to this process on a core of its own."""
    return "fork" in multiprocessing.get_all_start_methods() and usable_cores() >= 2


class ForkedCall:
    """``function(*args)`` computed in a forked child; ``result()`` waits for it.

    Use as a context manager, so that the child is reaped even when the parent's own work
    fails first.
    """

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        context = multiprocessing.get_context("fork")
        self._reader, writer = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_call_and_send, args=(writer, os.getpid(), function, args), daemon=True
        )
        self._process.start()
        writer.close()  # the child holds the writing end; EOF here means it died

    def result(self) -> Any:
        """The function's return value; RuntimeError if it raised or the child died."""
        try:
            ok, payload = self._reader.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(
                f"the forked worker process exited with code {self._process.exitcode} "
                "before returning a result"
            ) from None
        finally:
            self._reader.close()
        self._process.join()
        if not ok:
            raise RuntimeError(f"the forked worker process failed:\n{payload}")
        return payload

    def __enter__(self) -> ForkedCall:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        if not self._reader.closed:
            self._reader.close()


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when its parent process ends (Linux).

    A parent killed outright (SIGKILL, or SIGTERM while it waits for this child) runs no
    clean-up, and its child would compute on, or block forever writing a result nobody
    reads. ``parent_pid`` is the parent this process was started by: if it ended before
    the request was made, this process ends now. Elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1  # from <sys/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def _call_and_send(
    writer: Connection, parent_pid: int, function: Callable[..., Any], args: tuple
) -> None:
    """Child side: the result, or the traceback as text (not every exception pickles)."""
    die_with_parent(parent_pid)
    try:
        writer.send((True, function(*args)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        writer.send((False, traceback.format_exc()))
    finally:
        writer.close()
