"""The customer schema: canonical columns, accepted header spellings, value rules.

One place defines what a customer row is, so that ingest, checks, features and the
report all agree on names, types and ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """A canonical input column and the rule its values must satisfy."""

    name: str
    sql_type: str
    kind: str  # "text", "integer" or "number"
    minimum: float | None = None
    maximum: float | None = None
    rule: str = ""


CUSTOMER_ID = Column("customer_id", "VARCHAR", "text", rule="non-empty, unique, kept as text")
GENDER = Column("gender", "VARCHAR", "text", rule="non-empty text, kept as given")
AGE = Column("age", "INTEGER", "integer", 0, 120, rule="integer 0 to 120")
# At most 10,000 k$ ($10 million a year): a larger value is almost always an income entered
# in dollars, and a single one took over the standardised features (one customer became a
# segment of its own, every other customer the other), or overflowed their variance.
ANNUAL_INCOME = Column(
    "annual_income",
    "DOUBLE",
    "number",
    0,
    10_000,
    rule="number 0 to 10,000 (thousands of dollars)",
)
SPENDING_SCORE = Column("spending_score", "INTEGER", "integer", 1, 100, rule="integer 1 to 100")

CANONICAL_COLUMNS: tuple[Column, ...] = (CUSTOMER_ID, GENDER, AGE, ANNUAL_INCOME, SPENDING_SCORE)
CANONICAL_NAMES: tuple[str, ...] = tuple(c.name for c in CANONICAL_COLUMNS)
COLUMNS_BY_NAME: dict[str, Column] = {c.name: c for c in CANONICAL_COLUMNS}

# Gender values that read as female, compared trimmed and in lower case: the 0/1 indicator
# behind female_share and the "gender" feature. CRM exports often code gender as F / M.
FEMALE_VALUES: tuple[str, ...] = ("female", "f", "woman")
FEMALE_INDICATOR_SQL = (
    "CASE WHEN lower(trim(gender)) IN ("
    + ", ".join(f"'{value}'" for value in FEMALE_VALUES)
    + ") THEN 1.0 ELSE 0.0 END"
)

# Columns usable as clustering features. "gender" enters as a 0/1 female indicator.
FEATURE_COLUMNS: tuple[str, ...] = ("age", "annual_income", "spending_score", "gender")
DEFAULT_FEATURES: tuple[str, ...] = ("age", "annual_income", "spending_score")

# Header spellings, compared after normalising (lower case, letters and digits only).
HEADER_ALIASES: dict[str, str] = {
    "customerid": "customer_id",
    "customer": "customer_id",
    "id": "customer_id",
    "gender": "gender",
    "genre": "gender",
    "sex": "gender",
    "age": "age",
    "annualincome": "annual_income",
    "annualincomek": "annual_income",
    "annualincomekusd": "annual_income",
    "annualincomeusdk": "annual_income",
    "annualincomeusd": "annual_income",  # refused by its unit, with the fix (source_file.py)
    "income": "annual_income",
    "incomek": "annual_income",
    "incomekusd": "annual_income",
    "incomeusdk": "annual_income",
    "incomeusd": "annual_income",  # refused by its unit, as above
    "spendingscore": "spending_score",
    "spendingscore1100": "spending_score",
}

# What is stripped from around every value, in both engines: ASCII white space (a tab too),
# every Unicode space separator (a no-break space too: DuckDB's trim() strips those alone) and
# the invisible characters that copying from web pages and word processors leaves (zero-width
# space and joiners, word joiner, a byte order mark). "\u200b0002" is customer "0002".
UNICODE_SPACES = " \u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u202f\u205f\u3000"
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
VALUE_PADDING: str = "\t\n\x0b\x0c\r" + UNICODE_SPACES + ZERO_WIDTH

# Text values that mean "no value" in exported spreadsheets (#N/A: a failed lookup in Excel
# or Sheets), database dumps (\N: MySQL, PostgreSQL COPY) and pandas (<NA>).
MISSING_TOKENS: tuple[str, ...] = (
    "",
    "?",
    "na",
    "n/a",
    "#n/a",
    "nan",
    "null",
    "none",
    "-",
    "\\n",
    "<na>",
)


def normalise_header(name: str) -> str:
    """Letters and digits only, lower case: 'Annual Income (k$)' becomes 'annualincomek'."""
    return re.sub(r"[^0-9a-z]", "", name.strip().lower())


def canonical_name(header_cell: str) -> str | None:
    """The canonical column a header cell stands for, or None for an unknown column."""
    return HEADER_ALIASES.get(normalise_header(header_cell))
