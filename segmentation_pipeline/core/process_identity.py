"""Which process runs a `segmentation run`, recorded so that a run left behind can be found.

A run started by `segmentation run` executes inside that process. Killed with SIGKILL (the
OOM killer, `kill -9`), it cannot tell Dagster that it stopped: the run stays STARTED in the
run history and, tagged as the warehouse's writer, holds the UI's run queue for good. The run
therefore carries its process's identity (host, pid and the pid's start time, so that a pid
reused by another process does not pass for it), and whoever finds the process gone can end
the run.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def current_process_identity() -> str:
    """'host:pid:start' of this process (start is empty where /proc is unavailable)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def process_is_gone(identity: str) -> bool:
    """True when the identity names a process on this host that no longer runs; False for
    another host's process (it cannot be seen from here) or an unreadable identity."""
    host, _, rest = identity.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process with that pid
        pass
    return bool(start) and _start_time(pid) != start


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # the command name (field 2) is in parentheses and may hold spaces
    return stat.rsplit(")", 1)[1].split()[19]
