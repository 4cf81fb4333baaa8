"""Tests for the synthetic customer generator: real CSV files, read back with pyarrow."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from segmentation_pipeline.core.generate import (
    SEGMENTS,
    TRUTH_COLUMN,
    generate_customers,
    write_customers_csv,
)

EXPECTED_HEADER = "CustomerID,Gender,Age,Annual Income (k$),Spending Score (1-100)"
FEATURE_COLUMNS = ("Age", "Annual Income (k$)", "Spending Score (1-100)")


def read_as_text(path: Path) -> pa.Table:
    """Every column as text, exactly as written, so formatting can be checked."""
    header = path.read_text().splitlines()[0].split(",")
    options = pa_csv.ConvertOptions(column_types={name: pa.string() for name in header})
    return pa_csv.read_csv(path, convert_options=options)


def integer_column(table: pa.Table, name: str) -> np.ndarray:
    """A text column parsed as integers; fails on anything like '35.0'."""
    return np.array([int(value) for value in table.column(name).to_pylist()])


def standardised_features(table: pa.Table) -> np.ndarray:
    features = np.column_stack(
        [table.column(name).to_numpy().astype(np.float64) for name in FEATURE_COLUMNS]
    )
    return (features - features.mean(axis=0)) / features.std(axis=0)


def test_header_is_exact_and_unquoted(tmp_path: Path) -> None:
    path = write_customers_csv(tmp_path / "customers.csv", rows=10)
    assert path.read_text().splitlines()[0] == EXPECTED_HEADER


def test_truth_column_is_appended_last(tmp_path: Path) -> None:
    path = write_customers_csv(tmp_path / "customers.csv", rows=10, with_truth=True)
    assert path.read_text().splitlines()[0] == f"{EXPECTED_HEADER},{TRUTH_COLUMN}"


def test_row_count_across_uneven_chunks(tmp_path: Path) -> None:
    path = write_customers_csv(tmp_path / "customers.csv", rows=2_503, chunk_rows=1_000)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 2_503
    assert read_as_text(path).num_rows == 2_503


def test_creates_parent_folders_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "deeper" / "customers.csv"
    returned = write_customers_csv(target, rows=5)
    assert returned == target
    assert sorted(p.name for p in target.parent.iterdir()) == ["customers.csv"]


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = write_customers_csv(tmp_path / "a.csv", rows=3_000, seed=7, chunk_rows=1_000)
    second = write_customers_csv(tmp_path / "b.csv", rows=3_000, seed=7, chunk_rows=1_000)
    assert first.read_bytes() == second.read_bytes()


def test_different_seed_gives_different_file(tmp_path: Path) -> None:
    first = write_customers_csv(tmp_path / "a.csv", rows=3_000, seed=1)
    second = write_customers_csv(tmp_path / "b.csv", rows=3_000, seed=2)
    assert first.read_bytes() != second.read_bytes()


def test_chunks_are_not_copies_of_each_other(tmp_path: Path) -> None:
    path = write_customers_csv(tmp_path / "c.csv", rows=2_000, seed=3, chunk_rows=1_000)
    rows = [line.split(",", 1)[1] for line in path.read_text().splitlines()[1:]]
    assert rows[:1_000] != rows[1_000:]


def test_generate_customers_is_deterministic() -> None:
    assert generate_customers(500, seed=4).equals(generate_customers(500, seed=4))
    assert not generate_customers(500, seed=4).equals(generate_customers(500, seed=5))


def test_ids_are_unique_padded_and_continuous_across_chunks(tmp_path: Path) -> None:
    path = write_customers_csv(tmp_path / "customers.csv", rows=12_345, chunk_rows=1_000)
    ids = read_as_text(path).column("CustomerID").to_pylist()
    assert ids[0] == "00001"
    assert ids[-1] == "12345"
    assert {len(value) for value in ids} == {5}
    assert [int(value) for value in ids] == list(range(1, 12_346))


def test_small_files_use_the_minimum_id_width(tmp_path: Path) -> None:
    path = write_customers_csv(tmp_path / "customers.csv", rows=1_000, chunk_rows=300)
    ids = read_as_text(path).column("CustomerID").to_pylist()
    assert (ids[0], ids[-1]) == ("0001", "1000")


def test_generate_customers_respects_start_id_and_width() -> None:
    table = generate_customers(3, start_id=98, id_width=6)
    assert table.column("CustomerID").to_pylist() == ["000098", "000099", "000100"]
    assert table.column_names == EXPECTED_HEADER.split(",")


def test_id_width_too_small_is_rejected() -> None:
    with pytest.raises(ValueError):
        generate_customers(10, start_id=9_995, id_width=4)


def test_every_value_is_inside_its_valid_range(tmp_path: Path) -> None:
    path = write_customers_csv(tmp_path / "customers.csv", rows=50_000, chunk_rows=20_000)
    table = read_as_text(path)
    assert set(table.column("Gender").to_pylist()) == {"Female", "Male"}
    age = integer_column(table, "Age")
    income = integer_column(table, "Annual Income (k$)")
    spending = integer_column(table, "Spending Score (1-100)")
    assert 18 <= age.min() and age.max() <= 75
    assert income.min() >= 0
    assert 1 <= spending.min() and spending.max() <= 100


def test_truth_proportions_are_near_the_weights(tmp_path: Path) -> None:
    rows = 50_000
    path = write_customers_csv(tmp_path / "customers.csv", rows=rows, with_truth=True)
    truth = integer_column(read_as_text(path), TRUTH_COLUMN)
    assert set(np.unique(truth)) == set(range(len(SEGMENTS)))
    shares = np.bincount(truth, minlength=len(SEGMENTS)) / rows
    weights = np.array([segment.weight for segment in SEGMENTS])
    np.testing.assert_allclose(shares, weights / weights.sum(), atol=0.01)


def test_segment_weights_are_a_distribution() -> None:
    assert sum(segment.weight for segment in SEGMENTS) == pytest.approx(1.0)
    assert all(0.0 <= segment.female_probability <= 1.0 for segment in SEGMENTS)


@pytest.mark.parametrize("rows", [0, -1])
def test_non_positive_rows_are_rejected(tmp_path: Path, rows: int) -> None:
    target = tmp_path / "customers.csv"
    with pytest.raises(ValueError):
        write_customers_csv(target, rows=rows)
    with pytest.raises(ValueError):
        generate_customers(rows)
    assert not target.exists()


def test_segments_are_recoverable_by_kmeans() -> None:
    table = generate_customers(20_000, seed=11, with_truth=True)
    labels = KMeans(n_clusters=len(SEGMENTS), n_init=3, random_state=0).fit_predict(
        standardised_features(table)
    )
    truth = table.column(TRUTH_COLUMN).to_numpy()
    assert adjusted_rand_score(truth, labels) >= 0.95


def test_file_gets_ordinary_permissions(tmp_path: Path) -> None:
    current_umask = os.umask(0o022)
    os.umask(current_umask)
    path = write_customers_csv(tmp_path / "customers.csv", rows=5)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current_umask
