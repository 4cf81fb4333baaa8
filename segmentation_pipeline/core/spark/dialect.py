"""DuckDB's CSV dialect as Java regular expressions, so Spark splits fields exactly as the
local engine's reader does."""

from __future__ import annotations

from pyspark.sql import Column as SparkColumn
from pyspark.sql import functions as F

from segmentation_pipeline.core.schema import VALUE_PADDING, Column
from segmentation_pipeline.core.source_file import CSV_FIELD, CSV_OPENS_QUOTE, CSV_STAYS_IN_QUOTE

# --------------------------------------------------------------------------- CSV grammar
# DuckDB's CSV dialect, the local engine's (core/source_file.py) as Java regular expressions.
# A line that, started outside quotes, ends inside a quoted value (a record goes on).
OPENS = rf"^{CSV_OPENS_QUOTE}\z"
# A line that, started inside a quoted value, ends inside one (the same or a new one).
STAYS_OPEN = rf"^{CSV_STAYS_IN_QUOTE}\z"
_FIELD_TOKENS = rf"\G({CSV_FIELD}),"
_QUOTED_CONTENT = r'^ ?"((?:[^"]++|"")*+)" *+\z'
# The padding stripped from around values (schema.VALUE_PADDING) as a character class.
_SPACE = "[" + "".join(f"\\u{ord(c):04X}" for c in VALUE_PADDING) + "]"
# DuckDB's DOUBLE syntax after the padding is stripped: '+-' allowed, no suffixes.
_NUMBER = rf"^{_SPACE}*\+?(-?(?:[0-9]++\.?[0-9]*+|\.[0-9]++)(?:[eE][+-]?[0-9]++)?){_SPACE}*+\z"


def unpadded(text: SparkColumn) -> SparkColumn:
    """The text without the padding the local engine strips (schema.VALUE_PADDING: white
    space, Unicode spaces, zero-width characters), where Spark's trim removes only spaces."""
    return F.regexp_replace(text, rf"^{_SPACE}++|{_SPACE}++\z", "")


def is_plain(text: SparkColumn) -> SparkColumn:
    """No quote and no carriage return: the record splits at every comma (the usual case,
    kept off the regular expressions)."""
    return ~text.contains('"') & ~text.contains("\r")


def split_fields(text: SparkColumn, plain: SparkColumn) -> SparkColumn:
    """The raw field tokens of a record: a plain split, or DuckDB's grammar when quoted."""
    tokens = F.regexp_extract_all(F.concat(text, F.lit(",")), F.lit(_FIELD_TOKENS), 1)
    return F.when(plain, F.split(text, ",", -1)).otherwise(tokens)


def unquoted_value(token: SparkColumn, plain: SparkColumn) -> SparkColumn:
    """A field's value as DuckDB reads it: quotes removed, '""' unescaped, empty is NULL."""
    quoted = ~plain & token.rlike(r'^ ?"')
    content = F.replace(F.regexp_extract(token, _QUOTED_CONTENT, 1), F.lit('""'), F.lit('"'))
    value = F.when(quoted, content).otherwise(token)
    return F.when(value != "", value)


def duckdb_number(column: Column) -> SparkColumn:
    """The value as a DOUBLE where the local engine's TRY_CAST of the unpadded value gives one."""
    core = F.regexp_extract(F.trim(F.col(f"raw_{column.name}")), _NUMBER, 1)
    return F.when(core != "", core.try_cast("double"))
