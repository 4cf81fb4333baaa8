"""The forked worker: results come back from another process, failures are named."""

from __future__ import annotations

import os

import numpy as np
import pytest

from segmentation_pipeline.core.forked import ForkedCall, fork_available, usable_cores


def _pid_and_sum(values: np.ndarray) -> tuple[int, float]:
    return os.getpid(), float(values.sum())


def _fail() -> None:
    raise ValueError("bad input in the worker")


def _die() -> None:
    os._exit(3)


def test_this_machine_runs_model_search_in_two_processes() -> None:
    # CI's machine (Linux, 2 cores) takes the forked path, so the tests exercise it.
    assert usable_cores() >= 2
    assert fork_available()


def test_result_is_computed_in_a_child_from_the_parents_memory() -> None:
    values = np.arange(1_000_000, dtype=np.float64)
    with ForkedCall(_pid_and_sum, values) as call:
        pid, total = call.result()
    assert pid != os.getpid()
    assert total == float(values.sum())


def test_an_exception_in_the_child_is_raised_with_its_traceback() -> None:
    with ForkedCall(_fail) as call, pytest.raises(RuntimeError) as error:
        call.result()
    assert "ValueError: bad input in the worker" in str(error.value)


def test_a_child_that_dies_is_reported_with_its_exit_code() -> None:
    with ForkedCall(_die) as call, pytest.raises(RuntimeError, match="exited with code 3"):
        call.result()


def test_a_child_left_unawaited_is_reaped_on_exit() -> None:
    with ForkedCall(_pid_and_sum, np.ones(3)) as call:
        process = call._process
    assert not process.is_alive()
