"""Benchmark inputs: the real 200-row Mall Customers file, and generated files of any size.

Generated files carry the true segment of every customer (`latent_segment`), so model
quality can be checked against ground truth. They are deterministic (seed 0) and cached
in benchmarks/data/, because writing 10 million rows takes longer than some runs do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from segmentation_pipeline.core.generate import write_customers_csv

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "benchmarks" / "data"
DEFAULT_MALL_CSV = REPO_ROOT.parent / "shared" / "data" / "Mall_Customers.csv"
MALL_ROWS = 200
SEED = 0

_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000}
_SIZE = re.compile(r"^\s*(\d+)\s*([km]?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class BenchInput:
    """One input file: its label in the tables, its row count, and whether it has truth."""

    label: str
    rows: int
    path: Path
    has_truth: bool
    note: str = ""


def parse_size(text: str) -> int:
    """'200' -> 200, '100k' -> 100_000, '1m' -> 1_000_000."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 200, 20k, 1m, 10m)")
    rows = int(match.group(1)) * _SUFFIXES[match.group(2).lower()]
    if rows <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return rows


def parse_sizes(text: str) -> list[int]:
    """A comma-separated list of sizes, deduplicated, in ascending order."""
    return sorted({parse_size(part) for part in text.split(",") if part.strip()})


def size_label(rows: int) -> str:
    """The short form used in tables: 200, 20k, 1m, 10m."""
    for suffix, factor in (("m", 1_000_000), ("k", 1_000)):
        if rows >= factor and rows % factor == 0:
            return f"{rows // factor}{suffix}"
    return str(rows)


def bench_input(rows: int, mall_csv: Path, create: bool = True) -> BenchInput:
    """The input for a size: 200 rows is the real Mall file (when present), else generated.

    create=False only names the generated file, for sizes that are listed but not run.
    """
    if rows == MALL_ROWS and mall_csv.is_file():
        return BenchInput("Mall_Customers.csv", rows, mall_csv, has_truth=False)
    note = f"{mall_csv} not found, generated instead" if rows == MALL_ROWS else ""
    path = generated_csv(rows, create)
    return BenchInput(f"generated {size_label(rows)}", rows, path, True, note)


def generated_csv(rows: int, create: bool = True) -> Path:
    """The cached generated file for `rows`, written on first use."""
    path = DATA_DIR / f"customers_{rows}_seed{SEED}_truth.csv"
    if create and not path.is_file():
        print(f"generating {rows:,} rows into {path} ...", flush=True)
        write_customers_csv(path, rows, seed=SEED, with_truth=True)
    return path
