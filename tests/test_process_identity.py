"""The identity a `segmentation run` leaves on its run, and telling whether it still runs."""

from __future__ import annotations

import socket
import subprocess

from segmentation_pipeline.core.process_identity import current_process_identity, process_is_gone


def test_this_process_runs_and_a_finished_one_is_gone() -> None:
    identity = current_process_identity()
    host, pid, start = identity.split(":")
    assert host == socket.gethostname() and start  # Linux: the start time from /proc
    assert not process_is_gone(identity)

    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    assert process_is_gone(f"{host}:{child.pid}:")


def test_a_reused_pid_does_not_pass_for_the_process_that_had_it() -> None:
    host, pid, start = current_process_identity().split(":")
    assert process_is_gone(f"{host}:{pid}:{int(start) - 1}")


def test_another_hosts_process_or_a_garbled_identity_is_never_taken_for_gone() -> None:
    _, pid, start = current_process_identity().split(":")
    assert not process_is_gone(f"not-{socket.gethostname()}:{pid}:{start}")
    assert not process_is_gone("garbled")
    assert not process_is_gone(f"{socket.gethostname()}:x:1")
