"""Where things live by default, and the environment variables that move them.

The defaults point inside the project folder (never a temporary one), so run history,
the warehouse and reports survive restarts; each can be moved with an environment
variable or a command-line flag.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

SOURCE_ENV = "SEGMENTATION_SOURCE_CSV"
WAREHOUSE_ENV = "SEGMENTATION_WAREHOUSE"
DAGSTER_HOME_ENV = "DAGSTER_HOME"

DEFAULT_SOURCE_CSV = PROJECT_ROOT / "data" / "customers.csv"
DEFAULT_WAREHOUSE = PROJECT_ROOT / "data" / "warehouse.duckdb"
DEFAULT_DAGSTER_HOME = PROJECT_ROOT / "dagster_home"
# The project's instance settings (the run queue), copied into a new Dagster home.
INSTANCE_CONFIG = DEFAULT_DAGSTER_HOME / "dagster.yaml"


def source_csv() -> Path:
    """The input CSV: $SEGMENTATION_SOURCE_CSV, else the demo data shipped in data/."""
    value = os.environ.get(SOURCE_ENV, "").strip()
    return source_path(value) if value else DEFAULT_SOURCE_CSV


def source_path(path: str | Path) -> Path:
    """An input path made absolute, with its symbolic links kept, not resolved.

    A run records its source by this path, and the customer-count guard compares runs of
    the same source: a `latest.csv` link that each night's export is linked to stays one
    source, where its resolved target would be a new file every night.
    """
    return Path(os.path.abspath(Path(path).expanduser()))


def warehouse_path() -> Path:
    """The published DuckDB file: $SEGMENTATION_WAREHOUSE, else data/warehouse.duckdb."""
    return _path_from_env(WAREHOUSE_ENV, DEFAULT_WAREHOUSE)


def dagster_home() -> Path:
    """Dagster's home (run history, schedules): $DAGSTER_HOME, else dagster_home/ here."""
    return _path_from_env(DAGSTER_HOME_ENV, DEFAULT_DAGSTER_HOME)


def _path_from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser().resolve() if value else default
