"""Markdown tables for the report and the UI's metadata, without pandas or tabulate."""

from __future__ import annotations

import numpy as np

from segmentation_pipeline.core.markdown import counted, md_table, value_table


def test_value_table_aligns_number_columns_and_blanks_missing_values() -> None:
    table = value_table(
        ["customer_id", "income", "count", "selected", "features"],
        [
            ["0001", 15.5, np.int64(3), True, ["age", "income"]],
            ["a|b", float("nan"), None, False, None],
        ],
    )
    assert table.splitlines() == [
        "| customer\\_id | income | count | selected | features |",
        "| --- | ---: | ---: | --- | --- |",
        "| 0001 | 15.5 | 3 | True | \\['age', 'income'\\] |",
        "| a\\|b |  |  | False |  |",
    ]


def test_value_table_of_no_rows_is_the_header_alone() -> None:
    assert value_table(["a", "b"], []) == md_table(["a", "b"], [], frozenset())
    assert value_table(["a", "b"], []).count("\n") == 1


def test_counted_uses_the_singular_for_exactly_one() -> None:
    assert [counted(n, "row") for n in (0, 1, 2, 1234)] == [
        "0 rows",
        "1 row",
        "2 rows",
        "1,234 rows",
    ]
