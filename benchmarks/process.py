"""Run one command in a fresh process and measure it: wall time, CPU time, peak memory.

The command runs under `launcher.py`, a stdlib-only process that spawns it and reads its
resource usage with `wait4()`: ru_maxrss is the largest resident set of the command and
of every descendant it waited for, which is what `/usr/bin/time -v` reports, with no
polling that could miss a short spike. The pipeline runs all its steps in one process, so
this is the peak of the whole run. (See launcher.py for why the harness does not spawn
the command itself.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LAUNCHER = Path(__file__).with_name("launcher.py")
_KIB = 1024


@dataclass(frozen=True)
class ProcessResult:
    """How one process run went; stdout and stderr are also kept in files for later reading."""

    command: tuple[str, ...]
    exit_code: int
    timed_out: bool
    started_at: float  # Unix time at launch, comparable with Dagster event timestamps
    wall_seconds: float
    cpu_seconds: float  # user + system, the process and its waited-for children
    peak_rss_bytes: int  # the largest single process of the run, descendants included
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def stderr_tail(self, lines: int = 8) -> str:
        """The last lines of stderr: where a failing run says what went wrong."""
        return "\n".join(self.stderr.strip().splitlines()[-lines:])


def run_measured(
    command: Sequence[str],
    env: Mapping[str, str],
    log_stem: Path,
    cwd: Path | None = None,
    timeout_seconds: float | None = None,
) -> ProcessResult:
    """Run `command` to completion; output goes to `<log_stem>.stdout` / `.stderr`.

    Output is written to files rather than pipes, so a chatty child can never block on a
    full pipe and distort its own timing. The launcher gets its own process group, so a
    run still going after timeout_seconds is killed with everything it started and is
    reported as timed out instead of hanging the whole benchmark.
    """
    log_stem.parent.mkdir(parents=True, exist_ok=True)
    stdout_path = log_stem.with_name(log_stem.name + ".stdout")
    stderr_path = log_stem.with_name(log_stem.name + ".stderr")
    result_path = log_stem.with_name(log_stem.name + ".usage.json")
    result_path.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", str(LAUNCHER), str(result_path), "--", *command]
    timed_out = False
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        started_at = time.time()
        start = time.perf_counter()
        process = subprocess.Popen(
            launcher, stdout=out, stderr=err, env=dict(env), cwd=cwd, start_new_session=True
        )
        try:
            process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the launcher's own group: this run only
            process.wait()
            timed_out = True
        wall = time.perf_counter() - start
    usage = json.loads(result_path.read_text()) if result_path.is_file() else {}
    return ProcessResult(
        command=tuple(command),
        exit_code=int(usage.get("exit_code", process.returncode)),
        timed_out=timed_out,
        started_at=float(usage.get("started_at", started_at)),
        wall_seconds=float(usage.get("wall_seconds", wall)),
        cpu_seconds=float(usage.get("cpu_seconds", 0.0)),
        # Linux reports KiB; the largest of the command (with its waited-for children) and
        # every other process descended from it, e.g. the worker server and its workers.
        peak_rss_bytes=max(
            int(usage.get("peak_rss_kib", 0)), int(usage.get("descendant_peak_rss_kib", 0))
        )
        * _KIB,
        stdout=stdout_path.read_text(errors="replace"),
        stderr=stderr_path.read_text(errors="replace"),
    )
