"""Markdown text and pipe tables, for the report's Markdown twin and the UI's metadata.

Kept free of pandas and tabulate (``DataFrame.to_markdown`` imports tabulate, 0.1 s), so
that every step can show a table without loading either.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Sequence
from typing import Any

MARKDOWN_SPECIALS = ("\\", "`", "*", "_", "[", "]", "|")


def md(text: Any) -> str:
    """Markdown-safe text: HTML-escaped (raw HTML passes through Markdown), specials escaped."""
    escaped = html.escape(str(text), quote=False)
    for special in MARKDOWN_SPECIALS:
        escaped = escaped.replace(special, "\\" + special)
    return " ".join(escaped.splitlines())


def counted(n: int, noun: str) -> str:
    """``n`` and the noun, singular for exactly one ("1 row", "2 rows", "1,000 rows")."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: frozenset[int]) -> str:
    """A pipe table; every cell escaped (pipes included)."""
    align = ["---:" if i in numeric else "---" for i in range(len(headers))]
    lines = [
        "| " + " | ".join(md(h) for h in headers) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def value_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A pipe table of query-result values: numbers right-aligned (a column is numeric when
    every value in it is a number or missing), missing values and NaN left blank, lists
    and other values as their text."""
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = frozenset(
        index
        for index in range(len(headers))
        if rows and all(_is_number(row[index]) or row[index] is None for row in rows)
    )
    return md_table(headers, cells, numeric)


def _is_number(value: Any) -> bool:
    """Python and NumPy numbers alike (booleans are not numbers here)."""
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    """A value's text; missing values and NaN are blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)
