"""Synthetic Mall-Customers-style data with known latent segments.

The pipeline needs inputs of any size (a 1,000-row demo file, benchmarks at 1 to 100
million rows) whose true segment structure is known, so that model selection and segment
quality can be checked against ground truth. Rows follow the Kaggle "Mall Customers"
header and value conventions; the segments mimic the five income x spending groups of
the real data, each with its own age profile and gender mix.

Pure logic: numpy and pyarrow only, no orchestration imports.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

ID_COLUMN = "CustomerID"
GENDER_COLUMN = "Gender"
AGE_COLUMN = "Age"
INCOME_COLUMN = "Annual Income (k$)"
SPENDING_COLUMN = "Spending Score (1-100)"
TRUTH_COLUMN = "latent_segment"

# Header order of the Kaggle file; the CSV header is written exactly like this (unquoted).
HEADER: tuple[str, ...] = (ID_COLUMN, GENDER_COLUMN, AGE_COLUMN, INCOME_COLUMN, SPENDING_COLUMN)

# Generated value ranges: adults only, although the schema accepts ages 0..120.
AGE_RANGE: tuple[int, int] = (18, 75)
INCOME_MINIMUM = 0
SPENDING_RANGE: tuple[int, int] = (1, 100)

MIN_ID_WIDTH = 4
DEFAULT_CHUNK_ROWS = 1_000_000
GENDER_LABELS: tuple[str, str] = ("Female", "Male")

# Arrow "string" arrays use 32-bit offsets; larger id columns need "large_string".
_MAX_STRING_BYTES = 2**31 - 1
_ASCII_ZERO = 48


@dataclass(frozen=True)
class Segment:
    """One latent customer segment: its share of customers and its value distributions.

    Ages, incomes and spending scores are drawn from independent normal distributions
    per segment, then rounded and clipped to the valid ranges.
    """

    name: str
    weight: float
    age_mean: float
    age_std: float
    income_mean: float
    income_std: float
    spending_mean: float
    spending_std: float
    female_probability: float


# Modelled on the five groups of the real Mall Customers data. Centres are far apart in
# income x spending and every segment also has its own age centre, so that k-means on the
# standardised (age, income, spending) features recovers exactly five groups (silhouette
# peaks at k=5, ARI ~0.98 against these labels), while spreads stay wide enough to look
# like real customers rather than points.
SEGMENTS: tuple[Segment, ...] = (
    Segment("mainstream", 0.40, 47, 7.0, 55, 7.0, 50, 6.0, 0.56),
    Segment("affluent_enthusiasts", 0.20, 32, 4.0, 89, 9.0, 82, 6.0, 0.54),
    Segment("affluent_savers", 0.18, 41, 5.0, 89, 9.0, 17, 6.0, 0.46),
    Segment("young_impulsive", 0.11, 24, 3.5, 25, 6.0, 79, 7.0, 0.59),
    Segment("budget_cautious", 0.11, 62, 6.0, 25, 6.0, 20, 7.0, 0.60),
)


def id_width_for(last_id: int) -> int:
    """Digits needed for zero-padded ids up to last_id, at least MIN_ID_WIDTH ("0001")."""
    return max(MIN_ID_WIDTH, len(str(last_id)))


def generate_customers(
    rows: int,
    seed: int = 0,
    start_id: int = 1,
    id_width: int | None = None,
    with_truth: bool = False,
) -> pa.Table:
    """Generate `rows` customers as an Arrow table with the Kaggle column names.

    Deterministic for a given seed. Ids run from start_id, zero-padded to id_width
    (default: wide enough for the last id, at least 4), so callers generating a file in
    pieces can keep one width for the whole file. with_truth appends the 0-based index
    into SEGMENTS as `latent_segment`, the ground truth for benchmarks.
    """
    _require_positive_rows(rows)
    last_id = start_id + rows - 1
    width = id_width_for(last_id) if id_width is None else id_width
    _require_ids_fit(start_id, last_id, width)
    return _build_table(np.random.default_rng(seed), rows, start_id, width, with_truth)


def write_customers_csv(
    path: str | os.PathLike[str],
    rows: int,
    seed: int = 0,
    with_truth: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Path:
    """Write `rows` generated customers to a CSV file and return its path.

    Streams chunks of chunk_rows so memory stays flat for any size. Chunk i is seeded
    from (seed, i), so the file is deterministic for a given (seed, chunk_rows); ids
    continue across chunks with one width for the whole file. The file appears
    atomically (temp file in the same folder, then os.replace), so readers never see
    a half-written input.
    """
    _require_positive_rows(rows)
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be > 0, got {chunk_rows}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    width = id_width_for(rows)
    temp_path = _temp_path_beside(target)
    try:
        _write_chunks(temp_path, rows, seed, with_truth, chunk_rows, width)
        os.replace(temp_path, target)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    return target


def _require_positive_rows(rows: int) -> None:
    """Reject empty or negative sizes: an empty customer file is never a useful input."""
    if rows <= 0:
        raise ValueError(f"rows must be > 0, got {rows}")


def _require_ids_fit(start_id: int, last_id: int, width: int) -> None:
    """Refuse ids that would not fit the width, instead of silently truncating digits."""
    if start_id < 0:
        raise ValueError(f"start_id must be >= 0, got {start_id}")
    if len(str(last_id)) > width:
        raise ValueError(f"id {last_id} does not fit in width {width}")


def _temp_path_beside(target: Path) -> Path:
    """An unused temp name in the target's folder, so os.replace stays on one filesystem.

    Not tempfile.mkstemp: that creates the file with mode 0600, and os.replace would carry
    those private permissions over to the finished CSV. Opening the name normally instead
    gives the usual umask-based permissions.
    """
    return target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"


def _write_chunks(
    path: Path, rows: int, seed: int, with_truth: bool, chunk_rows: int, width: int
) -> None:
    """Write the unquoted header once, then every generated chunk without a header."""
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    with pa.OSFile(str(path), "wb") as sink:
        sink.write(_header_line(with_truth))
        writer = pa_csv.CSVWriter(sink, _schema(with_truth), write_options=options)
        chunk_rows = _chunk_rows_with_plain_string_ids(chunk_rows, width)
        for table in _prefetched_chunks(rows, seed, with_truth, chunk_rows, width):
            writer.write_table(table)
        writer.close()


def _chunk_rows_with_plain_string_ids(chunk_rows: int, width: int) -> int:
    """Cap absurdly large chunks so every chunk's ids fit a plain Arrow string column.

    The writer's schema is fixed up front; a chunk over 2 GiB of id text would switch to
    large_string and no longer match it.
    """
    return min(chunk_rows, _MAX_STRING_BYTES // width)


def _prefetched_chunks(
    rows: int, seed: int, with_truth: bool, chunk_rows: int, width: int
) -> Iterator[pa.Table]:
    """Chunk tables in file order, generating the next one while the caller writes this one.

    numpy and Arrow's CSV writer both release the GIL, so one helper thread overlaps
    generation with formatting and I/O. At most two chunks are alive at once, and each
    chunk has its own seed, so the output does not depend on thread timing.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future[pa.Table] | None = None
        for chunk_index, start_id, chunk_size in _chunk_spans(rows, chunk_rows):
            upcoming = pool.submit(
                _chunk_table, seed, chunk_index, chunk_size, start_id, width, with_truth
            )
            if pending is not None:
                yield pending.result()
            pending = upcoming
        if pending is not None:
            yield pending.result()


def _chunk_table(
    seed: int, chunk_index: int, rows: int, start_id: int, width: int, with_truth: bool
) -> pa.Table:
    """One chunk of the file, seeded from (seed, chunk_index) so chunks are independent."""
    rng = np.random.default_rng([seed, chunk_index])
    return _build_table(rng, rows, start_id, width, with_truth)


def _header_line(with_truth: bool) -> bytes:
    """The header row, unquoted (Arrow would quote every header cell)."""
    return (",".join(_column_names(with_truth)) + "\n").encode("ascii")


def _column_names(with_truth: bool) -> tuple[str, ...]:
    return HEADER + (TRUTH_COLUMN,) if with_truth else HEADER


def _schema(with_truth: bool) -> pa.Schema:
    """The Arrow schema of every chunk the CSV writer receives."""
    types = [pa.string(), pa.string(), pa.int16(), pa.int32(), pa.int16()]
    if with_truth:
        types.append(pa.int8())
    return pa.schema(list(zip(_column_names(with_truth), types, strict=True)))


def _chunk_spans(rows: int, chunk_rows: int) -> Iterator[tuple[int, int, int]]:
    """(chunk index, first id, row count) for each chunk; ids start at 1."""
    for chunk_index, offset in enumerate(range(0, rows, chunk_rows)):
        yield chunk_index, offset + 1, min(chunk_rows, rows - offset)


def _build_table(
    rng: np.random.Generator, rows: int, start_id: int, width: int, with_truth: bool
) -> pa.Table:
    """Draw segments first, then each value from its segment's distribution."""
    segment = _draw_segments(rng, rows)
    columns: dict[str, pa.Array] = {
        ID_COLUMN: _padded_ids(start_id, rows, width),
        GENDER_COLUMN: _draw_genders(rng, segment),
        AGE_COLUMN: pa.array(_draw_ages(rng, segment)),
        INCOME_COLUMN: pa.array(_draw_incomes(rng, segment)),
        SPENDING_COLUMN: pa.array(_draw_spending(rng, segment)),
    }
    if with_truth:
        columns[TRUTH_COLUMN] = pa.array(segment)
    return pa.table(columns)


def _segment_parameter(field: str) -> np.ndarray:
    """One Segment field for all segments, indexable by segment number."""
    return np.array([getattr(segment, field) for segment in SEGMENTS], dtype=np.float64)


def _draw_segments(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Latent segment index per row, with probabilities proportional to the weights."""
    weights = _segment_parameter("weight")
    cumulative = np.cumsum(weights / weights.sum())
    segment = np.searchsorted(cumulative, rng.random(rows), side="right")
    return np.minimum(segment, len(SEGMENTS) - 1).astype(np.int8)


def _draw_rounded(
    rng: np.random.Generator, segment: np.ndarray, field: str, low: int, high: float
) -> np.ndarray:
    """Normal draws around each row's segment mean, rounded to whole numbers and clipped."""
    means = _segment_parameter(f"{field}_mean")[segment]
    stds = _segment_parameter(f"{field}_std")[segment]
    values = means + stds * rng.standard_normal(segment.size)
    return np.clip(np.rint(values), low, high)


def _draw_ages(rng: np.random.Generator, segment: np.ndarray) -> np.ndarray:
    return _draw_rounded(rng, segment, "age", *AGE_RANGE).astype(np.int16)


def _draw_incomes(rng: np.random.Generator, segment: np.ndarray) -> np.ndarray:
    """Whole thousands of dollars, like the Kaggle file; never negative."""
    return _draw_rounded(rng, segment, "income", INCOME_MINIMUM, np.inf).astype(np.int32)


def _draw_spending(rng: np.random.Generator, segment: np.ndarray) -> np.ndarray:
    return _draw_rounded(rng, segment, "spending", *SPENDING_RANGE).astype(np.int16)


def _draw_genders(rng: np.random.Generator, segment: np.ndarray) -> pa.Array:
    """'Female' with the segment's probability, otherwise 'Male'."""
    is_male = rng.random(segment.size) >= _segment_parameter("female_probability")[segment]
    return pa.array(GENDER_LABELS).take(pa.array(is_male.astype(np.int8)))


def _padded_ids(start_id: int, rows: int, width: int) -> pa.Array:
    """Zero-padded decimal ids built straight into an Arrow string buffer.

    Every id has the same width, so the digits form a (rows, width) byte matrix and the
    offsets are a plain arithmetic sequence; this avoids formatting millions of Python
    strings (and is ~50x faster than Arrow's cast + utf8_lpad).
    """
    digits = _id_digit_matrix(start_id, rows, width)
    data = pa.py_buffer(digits)
    total_bytes = rows * width
    if total_bytes <= _MAX_STRING_BYTES:
        offsets = pa.py_buffer(np.arange(0, total_bytes + 1, width, dtype=np.int32))
        return pa.StringArray.from_buffers(rows, offsets, data)
    offsets = pa.py_buffer(np.arange(0, total_bytes + 1, width, dtype=np.int64))
    return pa.LargeStringArray.from_buffers(rows, offsets, data)


def _id_digit_matrix(start_id: int, rows: int, width: int) -> np.ndarray:
    """ASCII digits of start_id.., one row per id, filled from the last digit leftwards."""
    remaining = np.arange(start_id, start_id + rows, dtype=np.int64)
    digits = np.empty((rows, width), dtype=np.uint8)
    for position in range(width - 1, -1, -1):
        remaining, digits[:, position] = np.divmod(remaining, 10)
    digits += _ASCII_ZERO
    return digits
