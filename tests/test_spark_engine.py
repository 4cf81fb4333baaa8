"""The Spark engine against the local one: the same rejects and errors, the same model on the
Mall file, the same published tables, through Dagster and through the CLI.

Every test here runs on ONE local Spark session (local[2], bound to 127.0.0.1, UI off); the
Dagster runs pick it up, since a process has one session. pyspark is imported at the top on
purpose: without the `spark` extra these tests fail rather than skip (CI installs it).
"""

from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import duckdb
import numpy as np
import pytest
from pyspark.sql import SparkSession
from sklearn.metrics import adjusted_rand_score

from segmentation_pipeline.core.engine import LocalEngine, check_spark_available, get_engine
from segmentation_pipeline.core.errors import InputError
from segmentation_pipeline.core.selection import algorithms_for
from segmentation_pipeline.core.spark.engine import SparkEngine, combine_moments
from segmentation_pipeline.core.spark.session import build_session, session_config
from tests.conftest import KAGGLE_HEADER, REPO_ROOT, subprocess_env
from tests.test_ingest import LINES_AFTER_QUOTES, with_header
from tests.test_model_pipeline import REFERENCE_CENTROIDS, TWO_FEATURES
from tests.test_pipeline import FAILING_INPUTS, materialize

CLI = REPO_ROOT / ".venv" / "bin" / "segmentation"
GOOD = "0001,Male,19,15,39\n0002,Female,21,15.5,81\n0003,Female,35,70,50\n"


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """The one Spark session of the test run."""
    session = build_session("local[2]")
    yield session
    session.stop()


# --- session and engine set-up -----------------------------------------------------------------


def test_the_local_session_binds_to_loopback_without_ui(spark):
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.driver.host") == "127.0.0.1"
    assert conf.get("spark.driver.bindAddress") == "127.0.0.1"
    assert conf.get("spark.ui.enabled") == "false"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    assert session_config("sc://spark.example:15002") == {
        "spark.remote": "sc://spark.example:15002"
    }
    assert "spark.driver.host" not in session_config("spark://spark.example:7077")


def test_without_java_the_spark_engine_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ValueError, match="needs Java 17.*openjdk-17-jre-headless"):
        get_engine("spark", spark_master="local[2]")
    # A Spark Connect client needs no Java, only pyspark's Connect extras (gRPC).
    if importlib.util.find_spec("grpc_status") is None:
        with pytest.raises(ValueError, match=r"needs pyspark's Connect client.*pyspark\[connect\]"):
            check_spark_available("sc://spark.example:15002")
    else:
        check_spark_available("sc://spark.example:15002")


def test_spark_algorithms_follow_the_setting():
    assert algorithms_for("spark", ["kmeans", "gmm", "ward"]) == ("kmeans", "bisecting_kmeans")
    assert algorithms_for("spark", ["bisecting_kmeans"]) == ("bisecting_kmeans",)
    with pytest.raises(ValueError, match="fits kmeans and bisecting_kmeans; got kmeans, ward"):
        algorithms_for("spark", ["kmeans", "ward"])
    with pytest.raises(ValueError, match="must not repeat"):
        algorithms_for("spark", ["kmeans", "gmm", "ward", "kmeans"])


# --- ingest: the local engine's bad inputs give the same outcome -------------------------------

EXTRA_INPUTS: dict[str, str | bytes] = {
    "a CRLF row in an LF file": (
        f"{KAGGLE_HEADER}\n0001,Male,19,15,39\n0002,Male,21,15,81\r\n0003,Male,20,16,6\n"
    ),
    "an LF last row in a CRLF file": (
        f"{KAGGLE_HEADER}\r\n0001,Male,19,15,39\r\n0002,Female,21,15,81\n"
    ),
    "a CRLF file without a final line break": (
        f"{KAGGLE_HEADER}\r\n0001,Male,19,15,39\r\n0002,Female,21,15,81"
    ),
    "no-break spaces around text": (
        f"{KAGGLE_HEADER}\n{GOOD}\u00a00009\u00a0,\u00a0Female\u2003,30,40,50\n"
        "0009,Female,30,40,50\n0010,\u00a0,30,40,50\n"
    ),
    "tabs and zero-width characters around values": (
        f"{KAGGLE_HEADER}\n{GOOD}\u200b0002\u200b,Female,21,15.5,81\n"
        "0002\t,\tFemale\ufeff,\u200b21,15.5\u2060,81\n0009,Male,\u200b \u00a0,40,50\n"
        "0010,\u200c,30,40,50\n0011,Male,\u200d3\u200d0\u200d,40,50\n"
    ),
    "empty spreadsheet rows": (
        f'{KAGGLE_HEADER}\n{GOOD},,,,\n"","",,,\n0009,Male,-1,40,50\n,,,,\n'
    ),
    "only empty rows": f"{KAGGLE_HEADER}\n,,,,\n,,,,\n",
    "every row rule": (
        f"{KAGGLE_HEADER}\n{GOOD}"
        "0009,Male,,40,50\n0010,Male,?,40,50\n0011,Male,30,NA,50\n0012,,30,40,50\n"
        "  ,Male,30,40,50\n0013,Male,abc,40,50\n0014,Male,30,1_000,50\n0015,Male,35.5,40,50\n"
        "0016,Male,-1,40,50\n0017,Male,121,40,50\n0018,Male,30,-5,50\n0019,Male,30,40,0\n"
        "0020,Male,30,40,101\n0021,Male,-5,40,101\n0022,Male,30,150000,50\n"
        "0023,Male,30,1e200,50\n0024,#N/A,30,40,50\n0025,\\N,30,40,50\n0026,Male,<NA>,40,50\n"
    ),
    "duplicates collapse, conflicts are rejected": (
        f"{KAGGLE_HEADER}\n0001,Male,19,15,39\n0001,Male,19,15.0,39\n0002,Female,21,15,81\n"
        "0002,Male,21,15,81\n0003,Female,35,70,50\n0002,Male,300,15,81\n"
    ),
    "blank lines and line breaks inside quotes": (
        "CustomerID,Gender,Age,Annual Income (k$),Spending Score (1-100),note\n"
        '0001,Male,19,15,39,"two\nlines"\n\n0002,Female,abc,15,81,x\n\n\n0003,Male,30,20,101,y\n'
    ),
    "BOM, CRLF, quotes and extra columns": (
        "\ufeffcustomer_id,gender,age,annual_income,spending_score,notes\r\n"
        '0001,Male,19,15,39,"likes shoes, bags"\r\n"0002",Female,21,"1.5e1",81,\r\n'
        "\r\n0003,Female,2x,15,81,\r\n"
    ),
    "DuckDB's number syntax": (
        f"{KAGGLE_HEADER}\n0001,Male,+-5,1e-400,39\n0002,Male,5.,.5,+39\n0003,Male,inf,1,39\n"
        "0004,Male,0x10,1,39\n0005,Male,1d,1,39\n0006,Male,1e1,1e400,39\n"
        "0007,Male,\t7\t,1\u00a0,39\n0008,Male,1e300,1,39\n0009,Male,- 1,1,39\n"
    ),
    "DuckDB's quoting": (
        f'{KAGGLE_HEADER}\n0001, "Male",19,15,39\n0002,"Male"  ,19,15,39\n'
        '0003,  "Male"  ,19,15,39\n0004,Ma"le,19,15,39\n0005,"",19,15,39\n0006," ",19,15,39\n'
        '0007,"Ma""le",19,15,39\n"",Male,19,15,39\n'
    ),
    "short row after blank lines": f"{KAGGLE_HEADER}\n0001,Male,19,15,39\n\n\n0002,Female,21\n",
    "long row": f"{KAGGLE_HEADER}\n0001,Male,19,15,39\n0002,Female,21,15,81,7\n",
    "whitespace-only row": f"{KAGGLE_HEADER}\n0001,Male,19,15,39\n   \n",
    "unterminated quote": f'{KAGGLE_HEADER}\n0001,Male,19,15,39\n"0002,Fe,2,3,4\n0003,M,1,2,3\n',
    "text after a closing quote": f'{KAGGLE_HEADER}\n0001,Male,19,15,39\n0002,"Fe"x,21,1,1\n',
    "Latin-1 header": "CustomerID,G\xe9nero,Age\n".encode("latin-1"),
    "Latin-1 row after a multi-line value": (
        f'{KAGGLE_HEADER}\n"00\n01",Male,19,15,39\n0002,F\xe9minin,21,15,81\n'.encode("latin-1")
    ),
    "header only": KAGGLE_HEADER + "\n",
    "bare carriage returns": f"{KAGGLE_HEADER}\r0001,Male,19,15,39\r",
}
INPUTS = {**{case: content for case, (content, _) in FAILING_INPUTS.items()}, **EXTRA_INPUTS}


def staged(engine: object, source: Path, database: Path) -> tuple:
    """What stage_customers did: the summary, quarantine and customers, or the error."""
    con = duckdb.connect(str(database))
    try:
        try:
            summary = engine.stage_customers(con, source, "run-1")  # type: ignore[attr-defined]
        except InputError as error:
            return ("InputError", error.describe(), error.line, error.column, error.value)
        return (
            summary,
            con.execute(
                "SELECT line_number, reason, column_name, value, customer_id, source "
                "FROM rejected_rows ORDER BY line_number"
            ).fetchall(),
            con.execute("SELECT * FROM customers ORDER BY customer_id").fetchall(),
            con.execute("SELECT column_name, column_type FROM (DESCRIBE customers)").fetchall(),
        )
    finally:
        con.close()


@pytest.mark.parametrize("case", list(INPUTS))
def test_bad_inputs_give_the_local_engines_outcome(case, spark, write_csv, tmp_path):
    path = write_csv(INPUTS[case], name=f"{case.replace(' ', '_')}.csv")

    local = staged(LocalEngine(), path, tmp_path / "local.duckdb")
    distributed = staged(SparkEngine(spark), path, tmp_path / "spark.duckdb")

    assert distributed == local


def test_missing_file_and_directory_fail_alike(spark, tmp_path):
    for source in (tmp_path / "absent.csv", tmp_path):
        local = staged(LocalEngine(), source, tmp_path / "local.duckdb")
        assert staged(SparkEngine(spark), source, tmp_path / "spark.duckdb") == local


def test_line_numbers_hold_when_spark_reads_the_file_in_many_blocks(spark, mall_csv, tmp_path):
    text = mall_csv.read_text().replace("0100,Male,20,61,49", "0100,Male,20,61,4x")
    path = tmp_path / "split.csv"
    path.write_text(text + "\n0201,Female,200,40,50\n")
    local = staged(LocalEngine(), path, tmp_path / "local.duckdb")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "1024")  # 4 blocks
    try:
        distributed = staged(SparkEngine(spark), path, tmp_path / "spark.duckdb")
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")

    assert distributed == local
    assert [row[0] for row in local[1]] == [101, 203]


def test_both_engines_report_physical_lines_after_multi_line_records(spark, write_csv, tmp_path):
    """DuckDB counts a file-level error's line in records; both engines name the physical
    line after a quoted line break, and a blank line inside quotes is not counted twice."""
    header = "CustomerID,Gender,Age,Annual Income (k$),Spending Score (1-100),note\n"
    broken = write_csv(header + '0001,Male,19,15,39,"a\nb\nc"\n0002,Male,1,2\n', "broken.csv")
    local = staged(LocalEngine(), broken, tmp_path / "local.duckdb")
    assert local[2] == 5
    assert staged(SparkEngine(spark), broken, tmp_path / "spark.duckdb") == local

    blank = write_csv(header + '0001,Male,19,15,39,"a\n\nc"\n\n0002,Male,abc,15,81,x\n', "b.csv")
    local = staged(LocalEngine(), blank, tmp_path / "local2.duckdb")
    assert [row[0] for row in local[1]] == [6]
    assert staged(SparkEngine(spark), blank, tmp_path / "spark2.duckdb") == local


@pytest.mark.parametrize(("rows", "line"), LINES_AFTER_QUOTES)
def test_both_engines_name_lines_after_quoted_line_breaks_and_stray_quotes(
    spark, write_csv, tmp_path, rows, line
):
    """No final line break, a blank line inside quotes, a quote inside an unquoted value
    (DuckDB reads it as text): the rejected row's line, and the line of the same row when
    it has a field too few."""
    bad_value = write_csv(with_header(rows), "bad_value.csv")
    local = staged(LocalEngine(), bad_value, tmp_path / "local.duckdb")
    assert [row[0] for row in local[1]] == [line]
    assert staged(SparkEngine(spark), bad_value, tmp_path / "spark.duckdb") == local

    broken = write_csv(with_header(rows.replace(",200,15,81", ",200,15")), "broken.csv")
    local = staged(LocalEngine(), broken, tmp_path / "local2.duckdb")
    assert local[2] == line
    assert staged(SparkEngine(spark), broken, tmp_path / "spark2.duckdb") == local


def test_partition_moments_combine_to_those_of_the_whole_data():
    rng = np.random.default_rng(3)
    data = rng.normal([40.0, 60.0], [12.0, 25.0], size=(1000, 2))
    cuts = [0, 7, 300, 301, 1000]
    parts = [(b - a, data[a:b].mean(axis=0), data[a:b].var(axis=0)) for a, b in pairwise(cuts)]

    means, stds = combine_moments(parts, 2)

    np.testing.assert_allclose(means, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stds, data.std(axis=0), rtol=1e-12)
    assert combine_moments([(0, [0.0, 0.0], [0.0, 0.0]), *parts], 2) == (means, stds)


def test_feature_scaling_from_partition_moments_repeats_and_matches_the_local_engine(
    spark, write_csv, tmp_path
):
    """The scaling is combined from ~40 blocks' moments, in block order: the same each run
    and the local engine's to 12 digits. (On a cluster Spark fetches remote shuffle blocks
    in random order, which made its own avg and stddev_pop vary; local mode reads them in
    order, so this cannot reproduce that, only check the combination.)"""
    rng = np.random.default_rng(11)
    rows = [
        f"{i:06d},{('Male', 'F', 'M', ' woman')[i % 4]},{rng.integers(18, 90)},"
        f"{rng.uniform(10, 140):.3f},{rng.integers(1, 101)}"
        for i in range(20_000)
    ]
    source = write_csv("\n".join([KAGGLE_HEADER, *rows]) + "\n", "many.csv")
    features = ("age", "annual_income", "spending_score", "gender")
    con = duckdb.connect(str(tmp_path / "spark.duckdb"))
    spark.conf.set("spark.sql.files.maxPartitionBytes", "16384")  # about 40 blocks
    try:
        engine = SparkEngine(spark)
        engine.stage_customers(con, source, "run-1")
        scalings = [engine.feature_scaling(con, features) for _ in range(3)]
        local = LocalEngine().feature_scaling(con, features)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        con.close()

    assert scalings[0] == scalings[1] == scalings[2]
    np.testing.assert_allclose(scalings[0].means, local.means, rtol=1e-12)
    np.testing.assert_allclose(scalings[0].stds, local.stds, rtol=1e-12)


# --- the model, through Dagster, on the Mall file -----------------------------------------------


def query(warehouse: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def segments(warehouse: Path) -> dict[str, int]:
    return dict(query(warehouse, "SELECT customer_id, segment_id FROM customer_segments"))


@pytest.fixture(scope="module")
def mall_runs(spark, tmp_path_factory, mall_csv) -> dict[str, Path]:
    """The Mall file (income and spending, k 2..10) through Dagster with each engine."""
    root = tmp_path_factory.mktemp("engines")
    runs = {}
    for engine in ("local", "spark"):
        warehouse = root / engine / "warehouse.duckdb"
        result = materialize(mall_csv, warehouse, engine=engine, features=TWO_FEATURES)
        assert result.success, engine
        runs[engine] = warehouse
    return runs


def test_spark_chooses_five_segments_matching_the_local_engine(mall_runs):
    [(engine, algorithm, k)] = query(
        mall_runs["spark"], "SELECT engine, algorithm, n_segments FROM segmentation_runs"
    )
    assert (engine, k) == ("spark", 5)
    assert algorithm in ("kmeans", "bisecting_kmeans")

    local, distributed = segments(mall_runs["local"]), segments(mall_runs["spark"])
    ids = sorted(local)
    assert sorted(distributed) == ids
    assert adjusted_rand_score([local[i] for i in ids], [distributed[i] for i in ids]) >= 0.95
    centroids = np.array(
        query(
            mall_runs["spark"],
            "PIVOT (SELECT segment_id, feature, centroid FROM segment_centroids) "
            "ON feature USING first(centroid) ORDER BY segment_id",
        )
    )[:, 1:].astype(float)
    for expected in REFERENCE_CENTROIDS:
        assert np.min(np.abs(centroids - expected).max(axis=1)) <= 1.0, expected


def test_both_engines_publish_the_same_tables_and_columns(mall_runs):
    schema = (
        "SELECT table_schema, CASE table_schema WHEN 'main' THEN table_name END, column_name, "
        "data_type, ordinal_position FROM information_schema.columns ORDER BY ALL"
    )  # each run's assignments are a table named by its run id
    assert query(mall_runs["spark"], schema) == query(mall_runs["local"], schema)
    counts = (
        "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM customer_segments), "
        "(SELECT count(*) FROM segment_profiles), (SELECT count(*) FROM model_candidates)"
    )
    assert query(mall_runs["spark"], counts) == [(200, 200, 5, 18)]
    candidates = query(mall_runs["spark"], "SELECT DISTINCT algorithm FROM model_candidates")
    assert sorted(candidates) == [("bisecting_kmeans",), ("kmeans",)]


def test_a_second_spark_run_keeps_the_segment_ids(mall_runs, mall_csv):
    """k = 5 only, to save time: each (algorithm, k) is fitted independently of the k range,
    with the same seeds, so the first run's k = 5 model is the one found again."""
    warehouse = mall_runs["spark"]
    before = segments(warehouse)

    result = materialize(
        mall_csv, warehouse, engine="spark", features=TWO_FEATURES, k_min=5, k_max=5
    )

    assert result.success
    assert segments(warehouse) == before
    [(ari,)] = query(
        warehouse, "SELECT ari_vs_previous FROM segmentation_runs ORDER BY finished_at DESC LIMIT 1"
    )
    assert ari == pytest.approx(1.0)


# --- the command line ---------------------------------------------------------------------------


def test_cli_runs_the_spark_engine_end_to_end(mall_csv, tmp_path):
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    env = subprocess_env(DAGSTER_HOME=tmp_path / "dagster_home", SEGMENTATION_SOURCE_CSV=mall_csv)
    (tmp_path / "dagster_home").mkdir()

    done = subprocess.run(
        [str(CLI), "run", "--engine", "spark", "--spark-master", "local[2]"]
        + ["--warehouse", str(warehouse), "--features", ",".join(TWO_FEATURES)]
        + ["--k-min", "5", "--k-max", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )

    assert done.returncode == 0, done.stderr
    assert "5 segments on annual_income,spending_score" in done.stdout
    assert "customers:  200 (0 rows rejected)" in done.stdout
    assert "Traceback" not in done.stderr
    assert query(warehouse, "SELECT engine FROM segmentation_runs") == [("spark",)]
