"""The Spark engine: the heavy steps on Spark SQL and Spark MLlib, the results in DuckDB.

Spark parses and validates the input, computes the scaling statistics, draws the model
sample, fits the MLlib candidates and assigns every customer; DuckDB keeps the run's work
database (and so the published warehouse, history, profiles and report) exactly as with
the local engine. Large results travel as Parquet through the run's Spark folder, which
sits next to the work database (``<work folder>/<run_id>.spark/``) so that the run's
clean-up removes it with the work file.

This module is only imported when the Spark engine is chosen (pyspark is an optional extra).
It uses the DataFrame API only (no RDDs), so the same code runs on a local session, on a
cluster, and through Spark Connect.

Ingest follows the local engine's rules (``core/ingest.py``): the same file-level checks
(``core/source_file.py``), the same dialect (comma, double quote, strict field count, UTF-8),
the same value rules, reasons, duplicate handling and physical line numbers. The local
engine's reader is DuckDB's, so its quirks are reproduced: an empty or ``""`` field is
missing, one space may precede an opening quote, spaces may follow a closing quote, a quote
inside an unquoted value is kept as text, numbers follow DuckDB's syntax (``+-1`` included).
When a row is structurally broken (wrong number of fields, bad quoting, not UTF-8), Spark
finds the first such row and its line; the message is worded by DuckDB's reader on that
row alone, so it is word for word the local engine's. Where the local engine miscounts
lines (after a quoted value with a line break; see the README), Spark gives the physical
line.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from pyspark.ml.clustering import BisectingKMeans, KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score, davies_bouldin_score

from segmentation_pipeline.core import ingest
from segmentation_pipeline.core.errors import InputError
from segmentation_pipeline.core.features import FeatureScaling
from segmentation_pipeline.core.ingest import IngestSummary
from segmentation_pipeline.core.schema import CANONICAL_COLUMNS, MISSING_TOKENS, Column
from segmentation_pipeline.core.selection import (
    ALGORITHMS,
    Candidate,
    ModelSelection,
    SampleSizes,
    _is_eligible,
    assign_nearest,
    canonical_order,
    choose_candidate,
)
from segmentation_pipeline.core.source_file import (
    SourceHeader,
    SourceScan,
    check_source_file,
    read_header,
    scan_source,
)

# pyspark warns on every pandas/Arrow conversion that pandas 3 is "not yet fully supported";
# the engine exchanges data as Arrow tables only, so the warning says nothing about it.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")

APP_NAME = "segmentation_pipeline"
SPARK_ALGORITHMS: tuple[str, ...] = ("kmeans", "bisecting_kmeans")
# choose_candidate breaks silhouette ties by the local engine's simplicity order, which knows
# kmeans, gmm and ward: bisecting k-means takes the second rank (gmm's), after k-means.
_RANKS_LIKE = {"kmeans": "kmeans", "bisecting_kmeans": "gmm"}
_MAX_ITER = 50  # k-means stops earlier when the centres move less than its tolerance
_KMEANS_RUNS = 2
_RESTART_SEED_STEP = 1_000_003
# Bisecting k-means runs exactly this many 2-means iterations per split (no tolerance);
# splits converge in a few, and every iteration is a Spark job.
_BISECTING_MAX_ITER = 10
# MLlib's bisecting split perturbs the parent centre by 1e-4 x its norm: on standardised data
# the root centre is the origin, so it would never split. Fitting on data shifted by this
# constant (distances are unchanged) and shifting the centres back avoids that.
_BISECTING_SHIFT = 10.0
# Concurrent MLlib fits: each is a chain of small jobs, so overlapping them hides latency.
_FIT_THREADS = 4
_MALFORMED_ROW_BYTES = 1 << 20  # at most this much of a broken record goes to DuckDB

# --------------------------------------------------------------------------- CSV grammar
# Java regular expressions for DuckDB's CSV dialect (possessive quantifiers: linear time).
_QUOTED = r' ?"(?:[^"]++|"")*+" *+'
_UNQUOTED = r'(?! ?")[^,\r]*+'
_FIELD = f"(?:{_QUOTED}|{_UNQUOTED})"
_OPEN_TAIL = r' ?"(?:[^"]++|"")*+\z'
# A line that, started outside quotes, ends inside a quoted value (a record goes on).
_OPENS = rf"^(?:{_FIELD},)*+{_OPEN_TAIL}"
# A line that, started inside a quoted value, ends inside one (the same or a new one).
_STAYS_OPEN = rf'^(?:[^"]++|"")*+(?:" *+,(?:{_FIELD},)*+{_OPEN_TAIL})?\z'
_FIELD_TOKENS = rf"\G({_FIELD}),"
_QUOTED_CONTENT = r'^ ?"((?:[^"]++|"")*+)" *+\z'
# DuckDB's DOUBLE syntax after trim(): surrounding white space, '+-' allowed, no suffixes.
_SPACE = r"[\t\n\x0B\f\r\p{Zs}]"
_NUMBER = rf"^{_SPACE}*\+?(-?(?:[0-9]++\.?[0-9]*+|\.[0-9]++)(?:[eE][+-]?[0-9]++)?){_SPACE}*+\z"
_GLOB_CHARACTERS = re.compile(r"([\\{}\[\]*?])")

# Feature expressions, as in core/features.py: gender is a 0/1 indicator of 'female'.
_FEATURES: dict[str, Callable[[], SparkColumn]] = {
    "age": lambda: F.col("age").cast("double"),
    "annual_income": lambda: F.col("annual_income").cast("double"),
    "spending_score": lambda: F.col("spending_score").cast("double"),
    "gender": lambda: F.when(F.lower(F.trim("gender")) == "female", 1.0).otherwise(0.0),
}


# --------------------------------------------------------------------------- session


def is_spark_connect(master: str) -> bool:
    """Spark Connect URLs (sc://host:port) name a remote session, not a master."""
    return master.startswith("sc://")


def session_config(master: str) -> dict[str, str]:
    """The Spark settings of a run's session for ``master``.

    A local master binds to 127.0.0.1 with the UI off, so a run opens no port to the
    network, and uses as few shuffle partitions as it has cores (the default 200 tiny tasks
    cost more than the work on one machine). A cluster keeps its own defaults.
    """
    if is_spark_connect(master):
        return {"spark.remote": master}
    config = {
        "spark.master": master,
        "spark.app.name": APP_NAME,
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
    }
    if master.startswith("local"):
        config |= {
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": str(_local_cores(master)),
        }
    return config


def _local_cores(master: str) -> int:
    """Cores of a local master: local -> 1, local[4] -> 4, local[*] -> all of them."""
    found = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master)
    if found is None:  # "local", or local-cluster[...]
        return 1
    if found.group(1) == "*":
        return os.cpu_count() or 1
    return int(found.group(1))


def prepare_environment(master: str) -> None:
    """Before a local session starts its JVM: SPARK_LOCAL_IP=127.0.0.1 (unless set), so
    everything the JVM opens, not only the driver, binds to the loopback address."""
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def quiet_session(session: SparkSession, master: str) -> None:
    """Log level WARN: Spark's INFO lines would bury the run's own progress."""
    if not is_spark_connect(master):
        session.sparkContext.setLogLevel("WARN")


def build_session(master: str) -> SparkSession:
    """A session for ``master`` with the run settings (for use outside Dagster)."""
    prepare_environment(master)
    builder = SparkSession.builder
    for key, value in session_config(master).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    quiet_session(session, master)
    return session


# --------------------------------------------------------------------------- the engine


class SparkEngine:
    """Spark SQL and MLlib for the heavy steps; DuckDB holds the run's tables."""

    name = "spark"

    def __init__(self, session: SparkSession) -> None:
        self.session = session

    def stage_customers(
        self, con: duckdb.DuckDBPyConnection, source: Path, run_id: str
    ) -> IngestSummary:
        """Validate the CSV in Spark; load ``customers`` and the quarantine into DuckDB.

        Raises InputError for file-level problems, as the local engine does; the work
        database then has no new ``customers`` table.
        """
        source = Path(source)
        check_source_file(source)
        header = read_header(source)
        staging = _Staging(self.session, source, header, spark_folder(con))
        with ThreadPoolExecutor(max_workers=1) as pool:
            scan = pool.submit(scan_source, source)  # checksum and size, while Spark reads
            staging.write()
            n_rows = _raise_for_malformed_rows(con, source, header, staging)
            if n_rows == 0:
                raise InputError(source, "the file has a header but no customer rows", line=2)
            staging.write_results()
            _load_customers(con, staging.folder)
            return _record_load(con, source, header, scan.result(), staging.folder, n_rows, run_id)

    def feature_scaling(
        self, con: duckdb.DuckDBPyConnection, feature_names: Sequence[str]
    ) -> FeatureScaling:
        """Means and population standard deviations (as DuckDB's stddev_pop) in Spark."""
        customers = self._customers(con)
        aggregates = []
        for name in feature_names:
            aggregates += [F.avg(_FEATURES[name]()), F.stddev_pop(_FEATURES[name]())]
        row = customers.agg(*aggregates).first()
        means = tuple(float(v) for v in row[0::2])
        stds = tuple(float(v) if v is not None else 0.0 for v in row[1::2])
        constant = [name for name, std in zip(feature_names, stds, strict=True) if not std > 0]
        if constant:
            raise ValueError(
                f"feature(s) {', '.join(constant)} have the same value for every customer, so "
                "they cannot separate segments; leave them out of --features"
            )
        return FeatureScaling(tuple(feature_names), means, stds)

    def sample_features(
        self, con: duckdb.DuckDBPyConnection, scaling: FeatureScaling, size: int, seed: int
    ) -> np.ndarray:
        """Up to ``size`` customers' standardised features as float32 rows.

        All customers when there are at most ``size``; otherwise those with the smallest
        64-bit hash of (customer_id, seed), taken by Spark as a top-k: deterministic and
        independent of the input row order (the same rule as the local engine, with Spark's
        xxhash64 instead of DuckDB's hash, so a large base yields another, equally random,
        sample).
        """
        customers = self._customers(con)
        if customers.count() > size:
            key = F.xxhash64(F.col("customer_id"), F.lit(seed))
            customers = customers.orderBy(key, "customer_id").limit(size)
        else:
            customers = customers.orderBy("customer_id")
        table = customers.select(*_scaled_columns(scaling)).toArrow()
        return np.column_stack(
            [table.column(name).to_numpy().astype(np.float32) for name in scaling.features]
        )

    def select_model(self, sample: np.ndarray, **options: object) -> ModelSelection:
        """MLlib KMeans (k-means||) and BisectingKMeans over the k range, chosen by the
        local engine's rule (see ``_ModelSearch``)."""
        return _ModelSearch(self.session, sample, **options).run()  # type: ignore[arg-type]

    def assign(
        self,
        con: duckdb.DuckDBPyConnection,
        scaling: FeatureScaling,
        centroids: np.ndarray,
        segment_ids: Sequence[int],
        thresholds: np.ndarray,
        run_id: str,
    ) -> int:
        """Nearest and runner-up centroid of every customer in Spark, loaded into DuckDB.

        The same arithmetic as core/assignment.py: FLOAT standardised features, DOUBLE
        squared distances, ties to the lower centroid index, outlier when the distance is
        above the segment's threshold.
        """
        folder = spark_folder(con)
        scaled = self._customers(con).select("customer_id", *_scaled_columns(scaling))
        nearest = _with_nearest(scaled, scaling.features, centroids)
        ids = [int(i) for i in segment_ids]
        limits = [float(t) for t in thresholds]
        assigned = nearest.select(
            "customer_id",
            _pick(F.col("_i1"), ids).alias("segment_id"),
            F.sqrt("_m1").cast("float").alias("distance"),
            _pick(F.col("_i2"), ids).alias("second_segment_id"),
            F.sqrt("_m2").cast("float").alias("second_distance"),
            (F.sqrt("_m1") > _pick(F.col("_i1"), limits)).alias("is_outlier"),
        )
        assigned.write.mode("overwrite").parquet(_hadoop_uri(folder / "assignments"))
        con.execute(
            """
            CREATE OR REPLACE TABLE segment_assignments AS
            SELECT CAST($run_id AS VARCHAR) AS run_id, customer_id,
                   CAST(segment_id AS INTEGER) AS segment_id, CAST(distance AS FLOAT) AS distance,
                   CAST(second_segment_id AS INTEGER) AS second_segment_id,
                   CAST(second_distance AS FLOAT) AS second_distance, is_outlier
            FROM read_parquet($path)
            """,
            {"run_id": run_id, "path": _parquet_glob(folder / "assignments")},
        )
        return con.execute("SELECT count(*) FROM segment_assignments").fetchone()[0]

    def _customers(self, con: duckdb.DuckDBPyConnection) -> DataFrame:
        """The run's staged customers as a Spark DataFrame.

        Read from the Parquet that stage_customers left in the run's Spark folder; when it
        is not there (the customers were staged by another engine or in another run), DuckDB
        exports the work database's `customers` first.
        """
        path = spark_folder(con) / "customers"
        if not path.is_dir():
            path.mkdir(parents=True)
            con.execute(
                "COPY (SELECT * FROM customers) TO $path (FORMAT parquet)",
                {"path": str(path / "part-00000.parquet")},
            )
        return self.session.read.parquet(_hadoop_uri(path, glob=True))


# --------------------------------------------------------------------------- files


def spark_folder(con: duckdb.DuckDBPyConnection) -> Path:
    """``<run_id>.spark/`` beside the work database ``<run_id>.duckdb``.

    The run's clean-up removes everything named ``<run_id>.*`` in the work folder, so the
    Parquet goes with the work file.
    """
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    if not row or not row[0]:
        raise ValueError("the Spark engine needs a work database file, not an in-memory one")
    database = Path(row[0]).resolve()
    return database.with_name(f"{database.stem}.spark")


def _hadoop_uri(path: Path, glob: bool = False) -> str:
    """A file URI for Spark; glob characters are escaped for reads, which expand globs."""
    text = str(path.resolve())
    if glob:
        text = _GLOB_CHARACTERS.sub(r"\\\1", text)
    return f"file://{text}"


def _parquet_glob(folder: Path) -> str:
    """The Parquet part files Spark wrote into ``folder``, for DuckDB's read_parquet."""
    return str(folder / "*.parquet")


def _parquet_scalar(con: duckdb.DuckDBPyConnection, sql: str, folder: Path) -> int:
    row = con.execute(sql, {"path": _parquet_glob(folder)}).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


# --------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class _Spans:
    """Records whose quoted values run over line breaks: first and last physical line."""

    spans: tuple[tuple[int, int], ...] = ()
    unterminated: int | None = None  # line of a quoted value still open at the end of file


class _Staging:
    """One CSV read by Spark: physical lines, records, checked values, and the outputs.

    ``write`` produces ``staged/`` (one row per record: line number, typed values, whether
    it is structurally broken or breaks a rule, and for rejected rows the reason);
    ``write_results`` produces ``customers/`` and ``rejects/`` from it.
    """

    def __init__(
        self, session: SparkSession, source: Path, header: SourceHeader, folder: Path
    ) -> None:
        self.session = session
        self.source = source
        self.header = header
        self.folder = folder
        self.spans = _Spans()
        self.n_lines = 0
        self.n_openers = 0

    # ---------------------------------------------------------------- physical lines

    def lines(self) -> DataFrame:
        """Every physical line with its 1-based line number, without the line break.

        Spark reads the file in blocks, in parallel; within a block,
        monotonically_increasing_id counts lines in order, so a line's number is the lines
        of all earlier blocks plus its position in its block (what RDD.zipWithIndex does,
        kept in the DataFrame API so that Spark Connect runs it too). The same pass counts
        the lines that open a quoted value running over a line break (usually none).
        """
        raw = (
            self.session.read.option("lineSep", "\n")
            .text(_hadoop_uri(self.source, glob=True))
            .select(
                F.col("value").alias("raw"),
                F.regexp_replace("value", r"\r\z", "").alias("text"),
                # on the bytes as read: text functions turn bad bytes into U+FFFD
                F.is_valid_utf8("value").alias("utf8"),
                F.col("_metadata.file_block_start").alias("block"),
                F.monotonically_increasing_id().alias("row_id"),
            )
        )
        opens = F.when(F.col("raw").contains('"'), F.col("text").rlike(_OPENS))
        blocks = raw.groupBy("block").agg(
            F.count("*").alias("n"),
            F.min("row_id").alias("first"),
            F.count_if(opens).alias("openers"),
        )
        shift: dict[int, int] = {}
        for block in blocks.orderBy("block").collect():
            shift[block.block] = self.n_lines + 1 - block.first
            self.n_lines += block.n
            self.n_openers += block.openers
        mapping = F.create_map(*[F.lit(v).cast("long") for pair in shift.items() for v in pair])
        return raw.select(
            (F.col("row_id") + mapping[F.col("block")]).alias("line_number"),
            "raw",
            "text",
            "utf8",
            opens.alias("opens"),
        )

    # ---------------------------------------------------------------- records

    def records(self, lines: DataFrame) -> DataFrame:
        """Data records: line_number (the first physical line) and text, blank lines skipped.

        A record is one line, except where a quoted value holds line breaks; those (rare)
        records are found from the lines that open a quoted value and joined here.
        """
        data = lines.filter(F.col("line_number") > 1)
        if self.n_openers:
            self.spans = _find_spans(self.session, data, self.n_lines)
        if not self.spans.spans:
            return data.filter(F.col("text") != "").select("line_number", "text", "utf8")
        members = (
            self.session.createDataFrame(
                pa.table(
                    {
                        "first": [first for first, _ in self.spans.spans],
                        "last": [last for _, last in self.spans.spans],
                    }
                )
            )
            .select(
                F.explode(F.sequence("first", "last")).alias("line_number"),
                F.col("first").alias("record_line"),
            )
            .hint("broadcast")
        )
        lines_with_records = data.join(members, "line_number", "left")
        single = lines_with_records.filter(F.col("record_line").isNull() & (F.col("text") != ""))
        joined = (
            lines_with_records.filter(F.col("record_line").isNotNull())
            .groupBy("record_line")
            .agg(
                F.sort_array(F.collect_list(F.struct("line_number", "raw"))).alias("parts"),
                F.bool_and("utf8").alias("utf8"),
            )
            .select(
                F.col("record_line").alias("line_number"),
                F.regexp_replace(
                    F.array_join(F.transform("parts", lambda part: part["raw"]), "\n"),
                    r"\r\z",
                    "",
                ).alias("text"),
                "utf8",
            )
        )
        return single.select("line_number", "text", "utf8").unionByName(joined)

    # ---------------------------------------------------------------- outputs

    def write(self) -> None:
        """``staged/``: every record parsed, checked and typed (one pass, no shuffle)."""
        self._write("staged", _checked_records(self.records(self.lines()), self.header))

    def write_results(self) -> None:
        """``duplicates/``, ``customers/`` and ``rejects/`` from the staged records."""
        staged = self.staged()
        valid = staged.filter(~F.col("rejected"))
        self._write("duplicates", _duplicates(valid))
        duplicates = self._read("duplicates")
        self._write("customers", _unique_customers(valid, duplicates))
        self._write("rejects", _rejects(staged, valid, duplicates))

    def staged(self) -> DataFrame:
        return self._read("staged")

    def _write(self, name: str, frame: DataFrame) -> None:
        frame.write.mode("overwrite").parquet(_hadoop_uri(self.folder / name))

    def _read(self, name: str) -> DataFrame:
        return self.session.read.parquet(_hadoop_uri(self.folder / name, glob=True))


def _duplicates(valid: DataFrame) -> DataFrame:
    """Ids on more than one valid row: their count, first line, values, and whether the
    values conflict (identical rows collapse into one customer; conflicting ones are all
    rejected, as nothing says which is right)."""
    values = [c.name for c in CANONICAL_COLUMNS if c.name != "customer_id"]
    differs = F.lit(False)
    for name in values:
        differs = differs | (F.min(name) != F.max(name))
    return (
        valid.groupBy("customer_id")
        .agg(
            F.count("*").alias("n_rows"),
            F.min("line_number").alias("line_number"),
            *[F.min(name).alias(name) for name in values],
            differs.alias("conflicting"),
        )
        .filter(F.col("n_rows") > 1)
    )


def _unique_customers(valid: DataFrame, duplicates: DataFrame) -> DataFrame:
    """One row per id: unique valid rows, and each collapsed duplicate at its first line."""
    names = ["line_number", *(c.name for c in CANONICAL_COLUMNS)]
    return (
        valid.join(duplicates.select("customer_id"), "customer_id", "left_anti")
        .select(*names)
        .unionByName(duplicates.filter(~F.col("conflicting")).select(*names))
    )


def _rejects(staged: DataFrame, valid: DataFrame, duplicates: DataFrame) -> DataFrame:
    """What core/ingest.py calls ``_rejects``: rows breaking a rule, with their reason, and
    every row of a conflicting id (its reason is worded when written to rejected_rows)."""
    conflicting = duplicates.filter(F.col("conflicting")).select("customer_id")
    broken_rules = staged.filter(F.col("rejected")).select(
        "line_number",
        F.col("raw_customer_id").alias("customer_id"),
        "column_name",
        "value",
        "reason",
        F.lit(False).alias("conflicting"),
    )
    conflicts = valid.join(conflicting, "customer_id", "left_semi").select(
        "line_number",
        "customer_id",
        F.lit("customer_id").alias("column_name"),
        F.col("customer_id").alias("value"),
        F.lit(None).cast("string").alias("reason"),
        F.lit(True).alias("conflicting"),
    )
    return broken_rules.unionByName(conflicts)


def _find_spans(session: SparkSession, data: DataFrame, last_line: int) -> _Spans:
    """Where quoted values run over line breaks.

    A line opens such a record when, read from outside quotes, it ends inside a quoted
    value. The lines after each opener are fetched (a few at first, more while a value goes
    on) and followed on the driver until the value closes.
    """
    openers = [
        row.line_number
        for row in data.filter("opens").select("line_number").orderBy("line_number").collect()
    ]
    window = 8
    stays_open = _fetch_stays_open(session, data, [o + 1 for o in openers], window, last_line)
    while True:
        spans, unterminated, missing = _follow_openers(openers, stays_open, last_line)
        if missing is None:
            return _Spans(tuple(spans), unterminated)
        window *= 8
        stays_open |= _fetch_stays_open(session, data, [missing], window, last_line)


def _follow_openers(
    openers: list[int], stays_open: dict[int, bool], last_line: int
) -> tuple[list[tuple[int, int]], int | None, int | None]:
    """Walk the openers in file order over the lines fetched so far.

    Returns the spans found, the line of an unterminated quoted value (it runs to the end
    of the file), and the first line that must be fetched to go on (None when done).
    """
    spans: list[tuple[int, int]] = []
    end = 0
    for opener in openers:
        if opener <= end:  # inside the previous record: not an opener after all
            continue
        line = opener + 1
        while line <= last_line and stays_open.get(line, False):
            line += 1
        if line > last_line:
            return spans, opener, None
        if line not in stays_open:
            return spans, None, line
        spans.append((opener, line))
        end = line
    return spans, None, None


def _fetch_stays_open(
    session: SparkSession, data: DataFrame, starts: list[int], window: int, last_line: int
) -> dict[int, bool]:
    """For ``window`` lines from each start: does the line keep a quoted value open?"""
    starts = [start for start in starts if start <= last_line]
    if not starts:
        return {}
    wanted = session.createDataFrame(pa.table({"start": starts})).select(
        F.explode(
            F.sequence("start", F.least(F.col("start") + window - 1, F.lit(last_line)))
        ).alias("line_number")
    )
    rows = (
        data.join(wanted.hint("broadcast"), "line_number", "left_semi")
        .select("line_number", F.col("text").rlike(_STAYS_OPEN).alias("open"))
        .collect()
    )
    return {row.line_number: bool(row.open) for row in rows}


def _checked_records(records: DataFrame, header: SourceHeader) -> DataFrame:
    """Records split into fields, checked by the schema's rules, typed (core/ingest.py)."""
    plain = _is_plain(F.col("text"))
    fields = _fields(F.col("text"), plain)
    n_columns = len(header.cells)
    covered = F.aggregate("fields", F.lit(0), lambda total, f: total + F.length(f) + 1)
    broken = (
        ~F.col("utf8")
        | (F.size("fields") != n_columns)
        | (~plain & (covered != F.length("text") + 1))
    )
    with_fields = records.select("line_number", "text", "utf8", fields.alias("fields"))
    raw = {
        c.name: _unquoted(F.get(F.col("fields"), header.positions[c.name]), plain)
        for c in CANONICAL_COLUMNS
    }
    parsed = with_fields.select(
        "line_number",
        broken.alias("broken"),
        *[value.alias(f"raw_{name}") for name, value in raw.items()],
    ).select(
        "*",
        *[_number(c).alias(f"number_{c.name}") for c in CANONICAL_COLUMNS if c.kind != "text"],
    )
    checked = parsed.select(
        "*", *[_problem(c).alias(f"problem_{c.name}") for c in CANONICAL_COLUMNS]
    )
    rejected = F.lit(False)
    for c in CANONICAL_COLUMNS:
        rejected = rejected | F.col(f"problem_{c.name}").isNotNull()
    return checked.select(
        "line_number",
        "broken",
        rejected.alias("rejected"),
        *[_typed(c).alias(c.name) for c in CANONICAL_COLUMNS],
        *_reject_details(rejected),
    )


def _is_plain(text: SparkColumn) -> SparkColumn:
    """No quote and no carriage return: the record splits at every comma (the usual case,
    kept off the regular expressions)."""
    return ~text.contains('"') & ~text.contains("\r")


def _fields(text: SparkColumn, plain: SparkColumn) -> SparkColumn:
    """The raw field tokens of a record: a plain split, or DuckDB's grammar when quoted."""
    tokens = F.regexp_extract_all(F.concat(text, F.lit(",")), F.lit(_FIELD_TOKENS), 1)
    return F.when(plain, F.split(text, ",", -1)).otherwise(tokens)


def _unquoted(token: SparkColumn, plain: SparkColumn) -> SparkColumn:
    """A field's value as DuckDB reads it: quotes removed, '""' unescaped, empty is NULL."""
    quoted = ~plain & token.rlike(r'^ ?"')
    content = F.replace(F.regexp_extract(token, _QUOTED_CONTENT, 1), F.lit('""'), F.lit('"'))
    value = F.when(quoted, content).otherwise(token)
    return F.when(value != "", value)


def _number(column: Column) -> SparkColumn:
    """The value as a DOUBLE where DuckDB's TRY_CAST(trim(value) AS DOUBLE) gives one."""
    core = F.regexp_extract(F.trim(F.col(f"raw_{column.name}")), _NUMBER, 1)
    return F.when(core != "", core.try_cast("double"))


def _problem(column: Column) -> SparkColumn:
    """Why a raw value breaks the column's rule (the local engine's reasons), or NULL."""
    raw = F.col(f"raw_{column.name}")
    missing = raw.isNull() | F.lower(F.trim(raw)).isin(list(MISSING_TOKENS))
    if column.kind == "text":
        return F.when(missing, F.lit("missing value"))
    value = F.col(f"number_{column.name}")
    well_formed = value.isNotNull() & (F.abs(value) < F.lit(float("inf")))
    return (
        F.when(well_formed, _range_problem(column, value))
        .when(missing, F.lit("missing value"))
        .otherwise(F.lit("is not a number"))
    )


def _range_problem(column: Column, value: SparkColumn) -> SparkColumn:
    """For a well-formed number: not whole, out of range or below the minimum, else NULL."""
    problem = F.lit(None).cast("string")
    if column.minimum is not None and column.maximum is not None:
        bounds = f"{column.minimum:g} to {column.maximum:g}"
        outside = (value < column.minimum) | (value > column.maximum)
        problem = F.when(outside, F.lit(f"is out of range ({bounds})"))
    elif column.minimum is not None:
        problem = F.when(
            value < column.minimum, F.lit(f"is below the minimum ({column.minimum:g})")
        )
    if column.kind == "integer":
        # value % 1 rather than floor(value): floor gives a BIGINT, which overflows (an error
        # under ANSI mode) for a huge number such as 1e300.
        problem = F.when(value % 1 != 0, F.lit("is not a whole number")).otherwise(problem)
    return problem


def _typed(column: Column) -> SparkColumn:
    """The value in its canonical type, NULL where the column's rule is broken."""
    raw = F.col(f"raw_{column.name}")
    if column.kind == "text":
        return F.trim(raw)
    spark_type = "int" if column.sql_type == "INTEGER" else "double"
    number = F.col(f"number_{column.name}")
    return F.when(F.col(f"problem_{column.name}").isNull(), number.cast(spark_type))


def _reject_details(rejected: SparkColumn) -> list[SparkColumn]:
    """reason, column_name, value and the raw id of a rejected row, as core/ingest.py words
    them ('age: '-5' is out of range (0 to 120); ...'), NULL for accepted rows."""
    parts = []
    first_column = F.lit(None).cast("string")
    first_value = F.lit(None).cast("string")
    for c in reversed(CANONICAL_COLUMNS):
        problem, raw = F.col(f"problem_{c.name}"), F.col(f"raw_{c.name}")
        first_column = F.when(problem.isNotNull(), F.lit(c.name)).otherwise(first_column)
        first_value = F.when(problem.isNotNull(), raw).otherwise(first_value)
    for c in CANONICAL_COLUMNS:
        problem, raw = F.col(f"problem_{c.name}"), F.col(f"raw_{c.name}")
        quoted = F.coalesce(F.concat(F.lit("'"), raw, F.lit("' ")), F.lit(""))
        parts.append(F.when(problem.isNotNull(), F.concat(F.lit(f"{c.name}: "), quoted, problem)))
    return [
        F.when(rejected, F.concat_ws("; ", *parts)).alias("reason"),
        F.when(rejected, first_column).alias("column_name"),
        F.when(rejected, first_value).alias("value"),
        F.when(rejected, F.col("raw_customer_id")).alias("raw_customer_id"),
    ]


def _raise_for_malformed_rows(
    con: duckdb.DuckDBPyConnection, source: Path, header: SourceHeader, staging: _Staging
) -> int:
    """Stop at the first structurally broken record, worded as the local engine words it;
    otherwise return the number of records."""
    n_rows, first_broken = con.execute(
        "SELECT count(*), min(line_number) FILTER (WHERE broken) FROM read_parquet($path)",
        {"path": _parquet_glob(staging.folder / "staged")},
    ).fetchone()
    candidates = [line for line in (first_broken, staging.spans.unterminated) if line]
    if not candidates:
        return int(n_rows)
    line = min(candidates)
    last = next((last for start, last in staging.spans.spans if start == line), line)
    if line == staging.spans.unterminated:
        last = None  # the quoted value runs to the end of the file
    raise _malformed_row_error(con, source, header, staging.folder, line, last)


def _malformed_row_error(
    con: duckdb.DuckDBPyConnection,
    source: Path,
    header: SourceHeader,
    folder: Path,
    line: int,
    last: int | None,
) -> InputError:
    """DuckDB's reader on the header and the broken record alone gives the local engine's
    wording (reason and the row as it shows it); the line is the record's physical line."""
    sample = folder / "malformed_row.csv"
    sample.write_bytes(
        _raw_lines(source, 1, 1) + _raw_lines(source, line, last, _MALFORMED_ROW_BYTES)
    )
    try:
        con.execute(
            f"SELECT * FROM read_csv($path, {ingest._read_options(header)})",  # noqa: S608
            {"path": str(sample)},
        ).fetchall()
    except duckdb.Error as error:
        worded = ingest._csv_error(source, error)
        at = line + worded.line - 2 if worded.line is not None else None
        return InputError(source, worded.reason, line=at, value=worded.value)
    finally:
        sample.unlink(missing_ok=True)
    text = _raw_lines(source, line, last, _MALFORMED_ROW_BYTES)
    return InputError(
        source,
        f"malformed CSV row: the row does not split into the header's {len(header.cells)} fields",
        line=line,
        value=text.decode("utf-8", "replace").strip(),
    )


def _raw_lines(source: Path, first: int, last: int | None, limit: int = 1 << 20) -> bytes:
    """The bytes of physical lines ``first`` to ``last`` (to the end of file if None), at most
    ``limit`` bytes. A pass over the file on the driver, made only to word one broken record."""
    chunks: list[bytes] = []
    size = 0
    with source.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if number < first:
                continue
            if (last is not None and number > last) or size >= limit:
                break
            chunks.append(line)
            size += len(line)
    return b"".join(chunks)[:limit]


def _load_customers(con: duckdb.DuckDBPyConnection, folder: Path) -> None:
    """``customers`` in the local engine's column order and types, in file order."""
    columns = ", ".join(f"CAST({c.name} AS {c.sql_type}) AS {c.name}" for c in CANONICAL_COLUMNS)
    con.execute(
        f"CREATE OR REPLACE TABLE customers AS SELECT {columns} "  # noqa: S608 - fixed names
        "FROM read_parquet($path) ORDER BY line_number",
        {"path": _parquet_glob(folder / "customers")},
    )


def _record_load(
    con: duckdb.DuckDBPyConnection,
    source: Path,
    header: SourceHeader,
    scan: SourceScan,
    folder: Path,
    n_rows: int,
    run_id: str,
) -> IngestSummary:
    """The quarantine into ``rejected_rows`` and the load into ``ingest_runs``, in one
    transaction, with the local engine's own helpers (same wording, same columns)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _rejects AS SELECT line_number, customer_id, column_name,"
        " value, reason, conflicting FROM read_parquet($path)",
        {"path": _parquet_glob(folder / "rejects")},
    )
    n_collapsed = _parquet_scalar(
        con,
        "SELECT sum(n_rows - 1) FROM read_parquet($path) WHERE NOT conflicting",
        folder / "duplicates",
    )
    con.execute("BEGIN TRANSACTION")
    try:
        ingest._write_rejected_rows(con, source, run_id)
        summary = IngestSummary(
            source=str(source),
            source_sha256=scan.sha256,
            size_bytes=scan.size_bytes,
            n_rows_read=n_rows,
            n_customers=con.execute("SELECT count(*) FROM customers").fetchone()[0],
            n_rejected=con.execute("SELECT count(*) FROM _rejects").fetchone()[0],
            n_duplicates_collapsed=n_collapsed,
            columns={name: header.header_for(name) for name in header.positions},
            ignored_columns=header.ignored,
        )
        ingest._record_ingest_run(con, summary, run_id)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS _rejects")
    return summary


# --------------------------------------------------------------------------- features


def _scaled_columns(scaling: FeatureScaling) -> list[SparkColumn]:
    """The standardised features as FLOAT, named after the features (as in DuckDB)."""
    return [
        ((_FEATURES[name]() - F.lit(mean)) / F.lit(std)).cast("float").alias(name)
        for name, mean, std in zip(scaling.features, scaling.means, scaling.stds, strict=True)
    ]


def _with_nearest(
    frame: DataFrame, features: Sequence[str], centroids: np.ndarray, runner_up: bool = True
) -> DataFrame:
    """Adds the nearest centroid's index and squared distance (_i1, _m1) and the runner-up's
    (_i2, _m2), ties to the lower index, as assign_nearest does.

    Features are read as DOUBLE from columns named after them. Each step is its own column
    (_d0.. first), so Spark computes every distance once instead of inlining it into every
    comparison (which grows the expression with the fourth power of k).
    """
    centres = np.asarray(centroids, dtype=np.float64)
    distances = [f"_d{j}" for j in range(len(centres))]
    frame = frame.select(
        "*",
        *[
            _squared_distance(features, centre).alias(d)
            for d, centre in zip(distances, centres, strict=True)
        ],
    )
    frame = frame.withColumn("_m1", _smallest([F.col(d) for d in distances]))
    frame = frame.withColumn("_i1", _first_index(distances, F.col("_m1"), set()))
    if not runner_up:
        return frame
    others = [
        F.when(F.col("_i1") == j, F.lit(float("inf"))).otherwise(F.col(d))
        for j, d in enumerate(distances)
    ]
    frame = frame.withColumn("_m2", _smallest(others) if len(others) > 1 else F.lit(float("inf")))
    return frame.withColumn("_i2", _first_index(distances, F.col("_m2"), {"_i1"}))


def _squared_distance(features: Sequence[str], centre: np.ndarray) -> SparkColumn:
    total = F.lit(0.0)
    for name, c in zip(features, centre, strict=True):
        total = total + (F.col(name).cast("double") - F.lit(float(c))) ** 2
    return total


def _smallest(columns: list[SparkColumn]) -> SparkColumn:
    return F.least(*columns) if len(columns) > 1 else columns[0]


def _first_index(distances: list[str], target: SparkColumn, excluded: set[str]) -> SparkColumn:
    """The lowest index j whose distance equals ``target`` (and is not in an excluded
    index column); NULL if none."""
    index = F.lit(None).cast("int")
    for j in reversed(range(len(distances))):
        match = F.col(distances[j]) == target
        for column in excluded:
            match = match & (F.col(column) != j)
        index = F.when(match, F.lit(j)).otherwise(index)
    return index


def _pick(index: SparkColumn, values: Sequence[float | int]) -> SparkColumn:
    """values[index] as a column (NULL for a NULL index)."""
    picked = F.lit(None)
    for j in reversed(range(len(values))):
        picked = F.when(index == j, F.lit(values[j])).otherwise(picked)
    return picked


# --------------------------------------------------------------------------- model


def spark_algorithms(requested: Sequence[str]) -> tuple[str, ...]:
    """The MLlib algorithms to try for a run's ``algorithms`` setting.

    The setting's default (the local engine's kmeans, gmm, ward) means "this engine's
    default", i.e. k-means (k-means||) and bisecting k-means; otherwise every name must be
    one of those two.
    """
    names = tuple(requested)
    if set(names) == set(ALGORITHMS):
        return SPARK_ALGORITHMS
    unknown = [name for name in names if name not in SPARK_ALGORITHMS]
    if unknown or not names:
        raise ValueError(
            f"the Spark engine fits {' and '.join(SPARK_ALGORITHMS)}; "
            f"got {', '.join(names) or 'none'}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"algorithms must not repeat, got {list(names)}")
    return names


class _ModelSearch:
    """Candidates over algorithms and k, fitted with Spark MLlib, chosen by the local rule.

    * The sample is sorted lexicographically first (row order never matters) and held in
      Spark as one cached partition, so every fit sees the same rows in the same order and
      is reproducible, whatever the cluster's size.
    * Each (algorithm, k) is fitted on the whole sample (MLlib KMeans with k-means|| and
      BisectingKMeans, seeded); the silhouette comes from MLlib's ClusteringEvaluator on the
      whole sample (its squared-Euclidean silhouette, computed in O(n k)); Davies-Bouldin,
      Calinski-Harabasz, inertia and the smallest segment from the nearest-centroid labels,
      as in the local engine.
    * Stability is the local engine's: the mean adjusted Rand index between the candidate's
      labels and those of MLlib refits on bootstrap resamples of a seeded 1,500-row
      subsample. Refits are Spark jobs, so they are made in order of silhouette until the
      choice is settled (an eligible candidate found, and every candidate within the tie
      tolerance of it measured); candidates below that are never chosen whatever their
      stability, and keep a NULL stability. The choice is then exactly the one of
      ``choose_candidate`` over fully measured candidates.
    """

    def __init__(
        self,
        session: SparkSession,
        sample: np.ndarray,
        algorithms: Sequence[str] = ALGORITHMS,
        k_min: int = 2,
        k_max: int = 10,
        seed: int = 0,
        stability_threshold: float = 0.8,
        tie_tolerance: float = 0.005,
        sizes: SampleSizes | None = None,
    ) -> None:
        self.session = session
        self.algorithms = spark_algorithms(algorithms)
        self.sizes = sizes or SampleSizes()
        self.seed = seed
        self.stability_threshold = stability_threshold
        self.tie_tolerance = tie_tolerance
        self.data = _sorted_rows(_finite_matrix(sample))
        self.n_distinct = len(np.unique(self.data, axis=0))
        _check_k_range(k_min, k_max, self.n_distinct, stability_threshold)
        self.ks = list(range(k_min, k_max + 1))
        rng = np.random.default_rng(seed)
        self.stability_rows = self.data[rng.permutation(len(self.data))[: self.sizes.stability]]
        self.boot_indices = [
            rng.integers(0, len(self.stability_rows), size=len(self.stability_rows))
            for _ in range(self.sizes.bootstrap_resamples)
        ]
        self.fitted: dict[tuple[str, int], np.ndarray] = {}

    def run(self) -> ModelSelection:
        pairs = [(a, k) for a in self.algorithms for k in self.ks]
        with ThreadPoolExecutor(_FIT_THREADS) as pool:
            frame = _vector_frame(self.session, self.data).cache()
            try:
                fits = list(pool.map(lambda pair: _fit_centres(frame, *pair, self.seed), pairs))
            finally:
                frame.unpersist()
            self.fitted = dict(zip(pairs, fits, strict=True))
            candidates = self._candidates(pool)
            candidates, measured = self._settle_stability(candidates, pool)
        return self._selection(candidates, measured)

    # ---------------------------------------------------------------- candidates

    def _candidates(self, pool: ThreadPoolExecutor) -> list[Candidate]:
        """Every fit scored on its nearest-centroid labels of the whole sample.

        The labels (numpy, as assign_nearest gives them) go to Spark as columns of one
        cached frame, so every ClusteringEvaluator run has the same plan but for the column
        it reads.
        """
        labels = {pair: assign_nearest(self.data, c) for pair, c in self.fitted.items()}
        columns = {f"label{i}": labels[pair][0] for i, pair in enumerate(self.fitted)}
        scored = [
            f"label{i}"
            for i, (pair, centres) in enumerate(self.fitted.items())
            if len(centres) == pair[1] and len(np.unique(labels[pair][0])) >= 2
        ]
        frame = _vector_frame(self.session, self.data, columns).cache()
        try:
            values = pool.map(lambda column: _silhouette(frame, column), scored)
            silhouettes = dict(zip(scored, values, strict=True))
        finally:
            frame.unpersist()
        return [
            self._candidate(pair, labels[pair], silhouettes.get(f"label{i}", float("nan")))
            for i, pair in enumerate(self.fitted)
        ]

    def _candidate(
        self, pair: tuple[str, int], nearest: tuple[np.ndarray, ...], silhouette: float
    ) -> Candidate:
        """One (algorithm, k) with the local engine's metrics on its nearest-centroid labels."""
        algorithm, k = pair
        labels, distance = nearest[0], nearest[1]
        complete = len(self.fitted[pair]) == k  # bisecting may not reach k leaves
        counts = np.bincount(labels, minlength=k)
        scored = np.isfinite(silhouette)
        return Candidate(
            algorithm=algorithm,
            k=k,
            silhouette=silhouette,
            davies_bouldin=float(davies_bouldin_score(self.data, labels)) if scored else np.nan,
            calinski_harabasz=(
                float(calinski_harabasz_score(self.data, labels)) if scored else np.nan
            ),
            inertia=float(np.sum(distance**2)) if algorithm == "kmeans" else None,
            stability=float("nan"),
            smallest_share=float(counts.min()) / len(labels) if complete else 0.0,
        )

    # ---------------------------------------------------------------- stability

    def _settle_stability(
        self, candidates: list[Candidate], pool: ThreadPoolExecutor
    ) -> tuple[list[Candidate], int]:
        """Measure stability in order of silhouette until no other measure could change
        the choice; return the candidates and how many were measured."""
        order = sorted(
            (c for c in candidates if np.isfinite(c.silhouette) and c.smallest_share > 0),
            key=lambda c: (-c.silhouette, c.k, SPARK_ALGORITHMS.index(c.algorithm)),
        )
        stability: dict[tuple[str, int], float] = {}
        settled_at: float | None = None
        for candidate in order:
            if settled_at is not None and candidate.silhouette < settled_at - self.tie_tolerance:
                break
            score = self._stability(candidate, pool)
            stability[(candidate.algorithm, candidate.k)] = score
            if settled_at is None and _is_eligible(
                replace(candidate, stability=score), self.stability_threshold
            ):
                settled_at = candidate.silhouette
        measured = [
            replace(c, stability=stability.get((c.algorithm, c.k), float("nan")))
            for c in candidates
        ]
        return measured, len(stability)

    def _stability(self, candidate: Candidate, pool: ThreadPoolExecutor) -> float:
        """Mean ARI between the candidate's labels and MLlib refits on bootstrap resamples."""
        centres = self.fitted[(candidate.algorithm, candidate.k)]
        own = assign_nearest(self.stability_rows, centres)[0]

        def refit(b: int) -> float:
            resample = self.stability_rows[self.boot_indices[b]]
            frame = _vector_frame(self.session, resample)
            boot = _fit_centres(frame, candidate.algorithm, candidate.k, self.seed + 1 + b)
            return adjusted_rand_score(own, assign_nearest(self.stability_rows, boot)[0])

        return float(np.mean(list(pool.map(refit, range(len(self.boot_indices))))))

    # ---------------------------------------------------------------- choice

    def _selection(self, candidates: list[Candidate], n_measured: int) -> ModelSelection:
        chosen, stable, rule = _choose(candidates, self.stability_threshold, self.tie_tolerance)
        candidates = [replace(c, selected=c is chosen) for c in candidates]
        chosen = next(c for c in candidates if c.selected)
        centres = self.fitted[(chosen.algorithm, chosen.k)]
        rule += (
            f"; Spark MLlib, stability measured for {n_measured} of {len(candidates)} "
            "candidates, in order of silhouette until the choice was settled"
        )
        return ModelSelection(
            candidates=tuple(candidates),
            chosen=chosen,
            rule=rule,
            centroids=np.ascontiguousarray(centres[canonical_order(centres)]),
            stable=stable,
            final_silhouette=chosen.silhouette,
            n_rows=len(self.data),
            n_distinct_rows=self.n_distinct,
            n_selection=len(self.data),
            n_gmm=0,
            n_ward=0,
            n_silhouette=len(self.data),
            n_stability=len(self.stability_rows),
            bootstrap_resamples=len(self.boot_indices),
            seed=self.seed,
            stability_threshold=self.stability_threshold,
            tie_tolerance=self.tie_tolerance,
        )


def _choose(
    candidates: list[Candidate], stability_threshold: float, tie_tolerance: float
) -> tuple[Candidate, bool, str]:
    """``choose_candidate`` itself; its tie-break knows the local algorithms' names, so
    each Spark algorithm stands in under the name it ranks like, and gets its own back."""
    stand_ins = [replace(c, algorithm=_RANKS_LIKE[c.algorithm]) for c in candidates]
    chosen, stable, rule = choose_candidate(stand_ins, stability_threshold, tie_tolerance)
    index = next(i for i, c in enumerate(stand_ins) if c is chosen)
    real = candidates[index]
    stand_in_name = f"{chosen.algorithm} k={chosen.k}"
    return real, stable, f"{real.algorithm} k={real.k}" + rule.removeprefix(stand_in_name)


def _fit_centres(frame: DataFrame, algorithm: str, k: int, seed: int) -> np.ndarray:
    """Centres (k x d, or fewer if bisecting could not split) of a seeded MLlib fit.

    k-means|| lands in a poor local optimum now and then (on the Mall file, 4 runs in 10 at
    k = 5) and MLlib has no restarts option, so k-means keeps the lowest-cost of a few seeded
    runs, as scikit-learn's n_init does for the local engine.
    """
    if algorithm == "kmeans":
        models = [
            KMeans(k=k, seed=seed + run * _RESTART_SEED_STEP, maxIter=_MAX_ITER).fit(frame)
            for run in range(_KMEANS_RUNS)
        ]
        best = min(models, key=lambda model: model.summary.trainingCost)
        return np.array(best.clusterCenters(), dtype=np.float64)
    shifted = frame.select(F.col("shifted").alias("features"))
    model = BisectingKMeans(k=k, seed=seed, maxIter=_BISECTING_MAX_ITER).fit(shifted)
    return np.array(model.clusterCenters(), dtype=np.float64) - _BISECTING_SHIFT


def _silhouette(frame: DataFrame, label_column: str) -> float:
    """MLlib's ClusteringEvaluator silhouette (squared Euclidean) of one label column."""
    evaluator = ClusteringEvaluator(
        featuresCol="features", predictionCol=label_column, metricName="silhouette"
    )
    return float(evaluator.evaluate(frame))


def _vector_frame(
    session: SparkSession, rows: np.ndarray, extra: dict[str, np.ndarray] | None = None
) -> DataFrame:
    """Rows as a one-partition DataFrame: columns f0.., ``features`` and ``shifted`` vectors,
    and any ``extra`` columns.

    One partition keeps the order of the rows, so seeded fits are reproducible on any
    cluster (the sample is bounded by the sample size, so one partition holds it).
    """
    names = [f"f{j}" for j in range(rows.shape[1])]
    table = pa.table({**{name: rows[:, j] for j, name in enumerate(names)}, **(extra or {})})
    frame = session.createDataFrame(table).coalesce(1)
    frame = frame.select("*", *[(F.col(n) + _BISECTING_SHIFT).alias(f"s{n}") for n in names])
    frame = VectorAssembler(inputCols=names, outputCol="features").transform(frame)
    return VectorAssembler(inputCols=[f"s{n}" for n in names], outputCol="shifted").transform(frame)


def _finite_matrix(sample: np.ndarray) -> np.ndarray:
    """The sample as a finite 2-D float64 array, or a clear error."""
    data = np.asarray(sample)
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"X must be a non-empty 2-D array (rows x features), got {data.shape}")
    data = data.astype(np.float64)
    if not np.isfinite(data).all():
        raise ValueError("X contains NaN or infinite values; impute or drop them first")
    return data


def _sorted_rows(data: np.ndarray) -> np.ndarray:
    """Rows in lexicographic order: fits then do not depend on the order of the sample."""
    return data[np.lexsort(data.T[::-1])]


def _check_k_range(k_min: int, k_max: int, n_distinct: int, stability_threshold: float) -> None:
    """The local engine's checks of the k range, with its messages."""
    if k_min < 2:
        raise ValueError(f"k_min must be >= 2 (one segment is not a segmentation), got {k_min}")
    if k_max < k_min:
        raise ValueError(f"k_max ({k_max}) must be >= k_min ({k_min})")
    if k_max >= n_distinct:
        raise ValueError(
            f"k_max ({k_max}) must be smaller than the number of distinct rows ({n_distinct})"
        )
    if not 0.0 <= stability_threshold <= 1.0:
        raise ValueError(f"stability_threshold must be in [0, 1], got {stability_threshold}")
