"""Tiny launcher that runs one command and records its wall time and resource usage.

Why a separate process: Linux folds the memory of the process that *spawns* a child into
the child's ru_maxrss (exec records the old address space's high-water mark), so spawning
straight from the benchmark harness, which has Dagster and DuckDB loaded, would inflate
every peak by a few hundred MiB. This launcher imports only the standard library (run as
`python -I -S launcher.py RESULT_JSON -- COMMAND...`, about 10 MiB), so the peak it
reports is the command's own.

The command's own processes are not all its waited-for children: `segmentation run`
starts a worker server whose workers are children of the server, which ru_maxrss never
sees. So while the command runs, the launcher also samples the peak resident set
(VmHWM) of every process descended from it every 50 ms, from /proc.

The result JSON holds the start time (Unix), wall seconds, CPU seconds (of the command and
the children it waited for), peak RSS in KiB (of the command and its waited-for children),
the largest sampled peak of any other descendant in KiB, and the exit code; the launcher
exits with the command's exit code.
"""

import json
import os
import sys
import time

SAMPLE_SECONDS = 0.05


def main(argv: list[str]) -> int:
    result_path, separator, *command = argv
    if separator != "--" or not command:
        print("usage: launcher.py RESULT_JSON -- COMMAND...", file=sys.stderr)
        return 2
    started_at = time.time()
    start = time.perf_counter()
    pid = os.posix_spawn(command[0], command, os.environ)
    descendant_peak_kib = 0
    while True:
        waited, status, usage = os.wait4(pid, os.WNOHANG)
        if waited:
            break
        descendant_peak_kib = max(descendant_peak_kib, _descendants_peak_kib(pid))
        time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - start
    exit_code = os.waitstatus_to_exitcode(status)
    result = {
        "started_at": started_at,
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_kib": usage.ru_maxrss,
        "descendant_peak_rss_kib": descendant_peak_kib,
        "exit_code": exit_code,
    }
    with open(result_path, "w") as handle:
        json.dump(result, handle)
    return exit_code if exit_code >= 0 else 128 - exit_code


def _descendants_peak_kib(root: int) -> int:
    """The largest VmHWM among the processes descended from ``root`` (not ``root`` itself)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent_pid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    peak, pending = 0, list(children.get(root, []))
    while pending:
        pid = pending.pop()
        peak = max(peak, _high_water_kib(pid))
        pending.extend(children.get(pid, []))
    return peak


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None  # the process ended while being read


def _high_water_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
