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
row alone, so it is word for word the local engine's. DuckDB counts that line in records (a
line break inside a quoted value does not count); both engines name the physical line.
"""
