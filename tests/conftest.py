"""Shared fixtures: the real Mall Customers file, CSV builders, isolated warehouses."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dirs() -> list[Path]:
    """Where ../shared/data can be: beside this checkout (CI lays a copy there), beside the
    repository a local clone came from, or where $SEGMENTATION_SHARED_DATA points."""
    dirs = [REPO_ROOT.parent / "shared" / "data"]
    origin = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "remote", "get-url", "origin"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        dirs.append(Path(origin).resolve().parent / "shared" / "data")
    if os.environ.get("SEGMENTATION_SHARED_DATA"):
        dirs.insert(0, Path(os.environ["SEGMENTATION_SHARED_DATA"]))
    return dirs


MALL_CSV = next(
    (d / "Mall_Customers.csv" for d in _shared_data_dirs() if (d / "Mall_Customers.csv").is_file()),
    REPO_ROOT.parent / "shared" / "data" / "Mall_Customers.csv",
)
KAGGLE_HEADER = "CustomerID,Genre,Age,Annual Income (k$),Spending Score (1-100)"
# The assets of the segmentation group, in the order the job materializes them.
PIPELINE_ASSETS = (
    "raw_customers",
    "customer_features",
    "segmentation_model",
    "customer_segments",
    "segment_profiles",
    "published_warehouse",
    "segment_report",
)


@pytest.fixture(scope="session")
def mall_csv() -> Path:
    """The public Kaggle file, read from ../shared/data (never copied into the repo)."""
    if not MALL_CSV.is_file():
        pytest.fail(f"reference data missing: {MALL_CSV} (it ships in ../shared/data)")
    return MALL_CSV


@pytest.fixture
def write_csv(tmp_path: Path):
    """Write a CSV from text (or bytes) into the test's folder and return its path."""

    def write(text: str | bytes, name: str = "customers.csv") -> Path:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", newline="")
        return path

    return write


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """Warehouse and Dagster home in the test's own folder, never the project's."""
    paths = {
        "warehouse": tmp_path / "warehouse" / "warehouse.duckdb",
        "dagster_home": tmp_path / "dagster_home",
    }
    paths["dagster_home"].mkdir()
    monkeypatch.setenv("SEGMENTATION_WAREHOUSE", str(paths["warehouse"]))
    monkeypatch.setenv("DAGSTER_HOME", str(paths["dagster_home"]))
    monkeypatch.delenv("SEGMENTATION_SOURCE_CSV", raising=False)
    yield paths


def file_sha256(path: Path) -> str:
    """Content hash: 'the published warehouse is unchanged' means byte for byte."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def published_segments(warehouse: Path) -> list[tuple]:
    """Every customer's published segment id and name, in customer order."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(
            "SELECT customer_id, segment_id, segment_name FROM customer_segments ORDER BY 1"
        ).fetchall()
    finally:
        con.close()


def subprocess_env(**overrides: str | Path) -> dict[str, str]:
    """The environment for a CLI subprocess, with the given variables set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTATION_")}
    env.update({k: str(v) for k, v in overrides.items()})
    return env
