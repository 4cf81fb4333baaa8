"""What the numbers were measured on, so readers can compare runs across machines."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = ("dagster", "duckdb", "scikit-learn", "pandas", "numpy")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float | None:
    """Total memory in GiB from /proc/meminfo."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def usable_cores() -> int:
    """Cores this process may run on (a container can have fewer than the host)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> str:
    """1/5/15-minute load averages: a busy machine explains noisy timings."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_rows() -> list[tuple[str, str]]:
    """(what, value) pairs for the report's machine table."""
    ram = ram_gib()
    versions = package_versions()
    return [
        ("CPU", cpu_model()),
        ("cores", f"{usable_cores()} usable ({os.cpu_count()} online)"),
        ("RAM", f"{ram:.1f} GiB" if ram is not None else "unknown"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        *((name, version) for name, version in versions.items()),
    ]
