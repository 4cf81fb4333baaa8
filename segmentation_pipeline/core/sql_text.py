"""Quoting for names and values that come from data (run ids) and go into SQL text.

DDL (table names) and view bodies cannot take parameters, so run ids are quoted here.
"""

from __future__ import annotations


def identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (run ids contain hyphens)."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
