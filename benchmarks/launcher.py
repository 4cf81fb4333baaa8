"""Tiny launcher that runs one command and records its wall time and resource usage.

Why a separate process: Linux folds the memory of the process that *spawns* a child into
the child's ru_maxrss (exec records the old address space's high-water mark), so spawning
straight from the benchmark harness, which has Dagster and DuckDB loaded, would inflate
every peak by a few hundred MiB. This launcher imports only the standard library (run as
`python -I -S launcher.py RESULT_JSON -- COMMAND...`, about 10 MiB), so the peak it
reports is the command's own.

The result JSON holds the start time (Unix), wall seconds, CPU seconds, peak RSS in KiB
and the exit code; the launcher exits with the command's exit code.
"""

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    result_path, separator, *command = argv
    if separator != "--" or not command:
        print("usage: launcher.py RESULT_JSON -- COMMAND...", file=sys.stderr)
        return 2
    started_at = time.time()
    start = time.perf_counter()
    pid = os.posix_spawn(command[0], command, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    exit_code = os.waitstatus_to_exitcode(status)
    result = {
        "started_at": started_at,
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_kib": usage.ru_maxrss,
        "exit_code": exit_code,
    }
    with open(result_path, "w") as handle:
        json.dump(result, handle)
    return exit_code if exit_code >= 0 else 128 - exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
