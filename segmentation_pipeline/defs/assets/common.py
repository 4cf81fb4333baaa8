"""What every asset of the pipeline shares: its group, its retry policy, and how it stops."""

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import dagster as dg

GROUP = "segmentation"

# Transient I/O (a busy disk, a file briefly locked by an outside tool) is retried; bad data
# is not: assets raise dg.Failure(allow_retries=False) for it.
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)

# The description of the Failure an interrupted step ends with; the CLI looks for it.
INTERRUPTED = "interrupted: the run was asked to stop (Ctrl-C, SIGTERM or Terminate in the UI)"

_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")


def stops_when_interrupted(compute: Callable[_Params, _Result]) -> Callable[_Params, _Result]:
    """Make an interrupt end the step instead of retrying it.

    Dagster (1.13, ``execution/plan/utils.py``) turns an interrupt raised inside a step
    that has a retry policy into a retry: a Ctrl-C, a SIGTERM or a termination from the UI
    during a step started the step again five seconds later, and the run went on to
    publish. Raised as a Failure that is not retried, the interrupt fails the step, so
    nothing downstream runs (a run terminated from the UI ends canceled). Put it under
    ``@dg.asset`` on every asset with a retry policy.
    """

    @functools.wraps(compute)
    def stopping(*args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
        try:
            return compute(*args, **kwargs)
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as interrupt:
            raise dg.Failure(description=INTERRUPTED, allow_retries=False) from interrupt

    return stopping
