"""Ingest on a real DuckDB database: header spellings, row rules, file-level failures."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import duckdb
import pytest

from segmentation_pipeline.core.errors import InputError
from segmentation_pipeline.core.ingest import stage_customers
from tests.conftest import KAGGLE_HEADER

GOOD_ROWS = "0001,Male,19,15,39\n0002,Female,21,15.5,81\n0003,Female,35,70,50\n"


@pytest.fixture
def con(tmp_path: Path):
    connection = duckdb.connect(str(tmp_path / "work.duckdb"))
    yield connection
    connection.close()


def rejected(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute(
        "SELECT line_number, column_name, value, reason FROM rejected_rows ORDER BY line_number"
    ).fetchall()


def customer_ids(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("SELECT customer_id FROM customers ORDER BY 1").fetchall()]


# --- the reference file and its header spellings -------------------------------------------


def test_kaggle_file_loads_all_rows_with_canonical_types(con, mall_csv):
    summary = stage_customers(con, mall_csv, "run-1")

    assert (summary.n_rows_read, summary.n_customers, summary.n_rejected) == (200, 200, 0)
    assert summary.columns["gender"] == "Genre"
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'customers'"
        ).fetchall()
    )
    assert types == {
        "customer_id": "VARCHAR",
        "gender": "VARCHAR",
        "age": "INTEGER",
        "annual_income": "DOUBLE",
        "spending_score": "INTEGER",
    }
    first = con.execute("SELECT * FROM customers ORDER BY customer_id LIMIT 1").fetchone()
    assert first == ("0001", "Male", 19, 15.0, 39)
    means = con.execute(
        "SELECT round(avg(age), 2), round(avg(annual_income), 2), round(avg(spending_score), 2),"
        " count(*) FILTER (WHERE gender = 'Female') FROM customers"
    ).fetchone()
    assert means == (38.85, 60.56, 50.2, 112)
    assert summary.source_sha256 == hashlib.sha256(mall_csv.read_bytes()).hexdigest()
    assert summary.size_bytes == mall_csv.stat().st_size


def test_gender_header_variant_of_the_kaggle_file(con, mall_csv, write_csv):
    text = mall_csv.read_text().replace("Genre", "Gender", 1)
    summary = stage_customers(con, write_csv(text), "run-1")

    assert summary.n_customers == 200
    assert summary.columns["gender"] == "Gender"
    assert customer_ids(con)[:2] == ["0001", "0002"]


def test_snake_case_header_with_bom_crlf_quotes_and_extra_columns(con, write_csv):
    text = (
        "\ufeffcustomer_id,gender,age,annual_income,spending_score,notes\r\n"
        '0001,Male,19,15,39,"likes shoes, bags"\r\n'
        '"0002",Female,21,"1.5e1",81,\r\n'
    )
    summary = stage_customers(con, write_csv(text), "run-1")

    assert summary.n_customers == 2
    assert summary.ignored_columns == ("notes",)
    assert con.execute("SELECT * FROM customers ORDER BY 1").fetchall() == [
        ("0001", "Male", 19, 15.0, 39),
        ("0002", "Female", 21, 15.0, 81),
    ]


# --- row-level rules: quarantined with line, column, value and reason ------------------------


@pytest.mark.parametrize(
    ("row", "column", "value", "reason"),
    [
        ("0009,Male,,40,50", "age", None, "age: missing value"),
        ("0009,Male,?,40,50", "age", "?", "age: '?' missing value"),
        ("0009,Male,30,NA,50", "annual_income", "NA", "annual_income: 'NA' missing value"),
        ("0009,,30,40,50", "gender", None, "gender: missing value"),
        ("0009,#N/A,30,40,50", "gender", "#N/A", "gender: '#N/A' missing value"),
        ("0009,\\N,30,40,50", "gender", "\\N", "gender: '\\N' missing value"),
        ("0009,Male,30,<NA>,50", "annual_income", "<NA>", "annual_income: '<NA>' missing value"),
        ("  ,Male,30,40,50", "customer_id", "  ", "customer_id: '  ' missing value"),
        ("0009,Male,abc,40,50", "age", "abc", "age: 'abc' is not a number"),
        ("0009,Male,30,1_000,50", "annual_income", "1_000", "is not a number"),
        ("0009,Male,35.5,40,50", "age", "35.5", "age: '35.5' is not a whole number"),
        ("0009,Male,-1,40,50", "age", "-1", "age: '-1' is out of range (0 to 120)"),
        ("0009,Male,121,40,50", "age", "121", "is out of range (0 to 120)"),
        ("0009,Male,30,-5,50", "annual_income", "-5", "is out of range (0 to 10000)"),
        # dollars entered as k$; 1e200 overflowed the feature's variance
        ("0009,Male,30,150000,50", "annual_income", "150000", "is out of range (0 to 10000)"),
        ("0009,Male,30,1e200,50", "annual_income", "1e200", "is out of range (0 to 10000)"),
        ("0009,Male,30,40,0", "spending_score", "0", "is out of range (1 to 100)"),
        ("0009,Male,30,40,101", "spending_score", "101", "is out of range (1 to 100)"),
    ],
)
def test_row_rule_breaks_are_quarantined(con, write_csv, row, column, value, reason):
    path = write_csv(f"{KAGGLE_HEADER}\n{GOOD_ROWS}{row}\n")
    summary = stage_customers(con, path, "run-1")

    assert summary.n_customers == 3
    assert summary.n_rejected == 1
    [(line, got_column, got_value, got_reason)] = rejected(con)
    assert (line, got_column, got_value) == (5, column, value)
    assert reason in got_reason
    assert "0009" not in customer_ids(con)


def test_a_spreadsheets_empty_rows_are_skipped_like_blank_lines(con, write_csv):
    """Excel and Sheets export formatted empty rows as `,,,,`: three of them in the Kaggle
    file were three rejected customers, over the 1 % limit."""
    text = (
        f"{KAGGLE_HEADER}\n{GOOD_ROWS}"
        ",,,,\n"  # line 5
        '"","",,,\n'  # line 6
        "0004,Male,-1,40,50\n"  # line 7
        ",,,,\n,,,,\n"
    )

    summary = stage_customers(con, write_csv(text), "run-1")

    assert (summary.n_rows_read, summary.n_customers, summary.n_rejected) == (4, 3, 1)
    assert rejected(con) == [(7, "age", "-1", "age: '-1' is out of range (0 to 120)")]
    assert customer_ids(con) == ["0001", "0002", "0003"]


def test_a_file_of_empty_rows_has_no_customer_rows(con, write_csv):
    with pytest.raises(InputError, match="the file has a header but no customer rows"):
        stage_customers(con, write_csv(f"{KAGGLE_HEADER}\n,,,,\n,,,,\n"), "run-1")


def test_spaces_around_values_are_trimmed_before_the_rules(con, write_csv):
    """ASCII spaces and tabs around numbers, and Unicode spaces (no-break, ideographic)
    around any value, are not part of it; a padded missing-value token is still missing."""
    nbsp, wide = "\u00a0", "\u3000"
    text = (
        f"{KAGGLE_HEADER}\n"
        f"{nbsp}0010{nbsp}, Female ,{nbsp}30 ,\t40.5\t,{wide}50{wide}\n"  # line 2: accepted
        f"0011,{wide}  N/A  {wide},30,40,50\n"  # line 3: gender missing
        f"{nbsp}      null      ,Male,30,40,50\n"  # line 4: customer_id missing
        f"0012,Male,30,{nbsp} none {nbsp},50\n"  # line 5: income missing
    )
    summary = stage_customers(con, write_csv(text), "run-1")

    assert con.execute("SELECT * FROM customers").fetchall() == [("0010", "Female", 30, 40.5, 50)]
    assert summary.n_rejected == 3
    rows = rejected(con)
    assert [(line, column) for line, column, _, _ in rows] == [
        (3, "gender"),
        (4, "customer_id"),
        (5, "annual_income"),
    ]
    assert all(reason.endswith("missing value") for _, _, _, reason in rows)


def test_tabs_and_zero_width_characters_around_values_are_stripped(con, write_csv):
    """Text copied from a web page or a word processor carries invisible characters, and a
    hand-edited file tabs: "\u200b0002" and "0002\t" were customers of their own beside
    "0002", and "Female\t" was not counted as female."""
    zwsp, bom, joiner = "\u200b", "\ufeff", "\u2060"
    text = (
        f"{KAGGLE_HEADER}\n"
        "0002,Female,21,15,81\n"
        f"{zwsp}0002{zwsp},Female,21,15,81\n"  # the same customer: collapses
        f"0002\t,\tFemale {bom},{zwsp}21,15{joiner},81\n"  # the same customer: collapses
        f"0003,Male,{zwsp} \u00a0{zwsp},40,50\n"  # age: only padding, so missing
    )
    summary = stage_customers(con, write_csv(text), "run-1")

    assert con.execute("SELECT * FROM customers").fetchall() == [("0002", "Female", 21, 15.0, 81)]
    assert summary.n_duplicates_collapsed == 2
    assert [(line, column, reason) for line, column, _, reason in rejected(con)] == [
        (5, "age", f"age: '{zwsp} \u00a0{zwsp}' missing value")
    ]


def test_every_broken_rule_of_a_row_is_named(con, write_csv):
    stage_customers(con, write_csv(f"{KAGGLE_HEADER}\n0009,Male,-5,40,101\n"), "run-1")
    [(line, column, value, reason)] = rejected(con)
    assert (line, column, value) == (2, "age", "-5")
    assert (
        reason
        == "age: '-5' is out of range (0 to 120); spending_score: '101' is out of range (1 to 100)"
    )


def test_exact_duplicates_collapse_and_conflicting_ids_are_rejected(con, write_csv):
    text = (
        f"{KAGGLE_HEADER}\n"
        "0001,Male,19,15,39\n"  # line 2
        "0001,Male,19,15.0,39\n"  # line 3: same values, collapses
        "0002,Female,21,15,81\n"  # line 4: conflicts with line 5
        "0002,Male,21,15,81\n"  # line 5
        "0003,Female,35,70,50\n"
    )
    summary = stage_customers(con, write_csv(text), "run-1")

    assert summary.n_duplicates_collapsed == 1
    assert customer_ids(con) == ["0001", "0003"]
    rows = rejected(con)
    assert [(line, column) for line, column, _, _ in rows] == [
        (4, "customer_id"),
        (5, "customer_id"),
    ]
    assert all("conflicting duplicate" in r[3] and "lines 4, 5" in r[3] for r in rows)


def test_a_conflict_names_only_the_lines_in_conflict(con, write_csv):
    """A row of the same id rejected for another reason is no part of the conflict; an id
    padded with spaces is (ids are trimmed)."""
    text = (
        f"{KAGGLE_HEADER}\n"
        "0001,Male,30,50,50\n"  # line 2: conflicts with lines 3 and 5
        " 0001 ,Male,31,50,50\n"  # line 3
        "0001,Male,300,50,50\n"  # line 4: age out of range
        "0001,Male,32,50,50\n"  # line 5
        "0002,Female,40,60,60\n"
    )
    stage_customers(con, write_csv(text), "run-1")

    reasons = {line: reason for line, _, _, reason in rejected(con)}

    assert reasons[4] == "age: '300' is out of range (0 to 120)"
    for line in (2, 3, 5):
        assert reasons[line] == (
            "customer_id: '0001' conflicting duplicate, the same id has different values on "
            "lines 2, 3, 5"
        )


def test_line_numbers_count_blank_lines_and_newlines_inside_quotes(con, write_csv):
    text = (
        "CustomerID,Gender,Age,Annual Income (k$),Spending Score (1-100),note\n"
        '0001,Male,19,15,39,"two\nlines"\n'  # lines 2-3
        "\n"  # line 4, skipped by the reader
        "0002,Female,abc,15,81,x\n"  # line 5
        "\n\n"  # lines 6-7
        "0003,Male,30,20,101,y\n"  # line 8
    )
    stage_customers(con, write_csv(text), "run-1")
    assert [(r[0], r[1]) for r in rejected(con)] == [(5, "age"), (8, "spending_score")]


def test_a_blank_line_inside_a_quoted_value_is_not_counted_twice(con, write_csv):
    text = (
        "CustomerID,Gender,Age,Annual Income (k$),Spending Score (1-100),note\n"
        '0001,Male,19,15,39,"a\n\nc"\n'  # lines 2-4; line 3 is blank inside the quotes
        "\n"  # line 5, skipped by the reader
        "0002,Female,abc,15,81,x\n"  # line 6
    )
    stage_customers(con, write_csv(text), "run-1")
    assert [(r[0], r[1]) for r in rejected(con)] == [(6, "age")]


# Files whose physical lines differ from DuckDB's records, each with the line of its bad row.
# A quote inside an unquoted value is text to DuckDB: it opens no quoted value.
LINES_AFTER_QUOTES = [
    pytest.param('0001,"Fe\nmale",19,15,39\n0002,Male,200,15,81', 4, id="no-final-newline"),
    pytest.param(
        '0001,"Fe\n\nmale",19,15,39\n0002,Male,200,15,81', 5, id="blank-inside-quotes-no-newline"
    ),
    pytest.param(
        '0001,Ma"le,19,15,39\n0002,"Fe\nmale",21,15,81\n0003,Male,200,15,81\n',
        5,
        id="quote-inside-a-value",
    ),
    pytest.param(
        '0001,6\'1" Male,19,15,39\r\n0002,"Fe\r\nmale",21,15,81\r\n\r\n0003,Male,200,15,81',
        6,
        id="inch-mark-crlf-blank-line",
    ),
]


def with_header(rows: str) -> str:
    """The Kaggle header (after a BOM) and ``rows``, with the rows' line breaks."""
    newline = "\r\n" if "\r\n" in rows else "\n"
    return f"\ufeff{KAGGLE_HEADER}{newline}{rows}"


@pytest.mark.parametrize(("rows", "line"), LINES_AFTER_QUOTES)
def test_rejected_rows_name_their_line_after_quoted_line_breaks_and_stray_quotes(
    con, write_csv, rows, line
):
    stage_customers(con, write_csv(with_header(rows)), "run-1")
    assert [(r[0], r[1], r[2]) for r in rejected(con)] == [(line, "age", "200")]


@pytest.mark.parametrize(("rows", "line"), LINES_AFTER_QUOTES)
def test_a_broken_row_names_its_line_after_quoted_line_breaks_and_stray_quotes(
    con, write_csv, rows, line
):
    """The row with a bad value, given one field too few, fails the whole file instead."""
    path = write_csv(with_header(rows.replace(",200,15,81", ",200,15")))
    with pytest.raises(InputError, match="Expected Number of Columns: 5 Found: 4") as error:
        stage_customers(con, path, "run-1")
    assert error.value.line == line


def test_rejects_of_earlier_runs_are_kept_as_history(con, write_csv):
    path = write_csv(f"{KAGGLE_HEADER}\n{GOOD_ROWS}0009,Male,abc,40,50\n")
    stage_customers(con, path, "run-1")
    stage_customers(con, path, "run-2")
    stage_customers(con, path, "run-2")  # a retry of the same run replaces its own rows
    counts = con.execute(
        "SELECT run_id, count(*) FROM rejected_rows GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert counts == [("run-1", 1), ("run-2", 1)]


# --- file-level failures: one clear error naming file, line and reason -----------------------


def test_missing_file(con, tmp_path):
    with pytest.raises(InputError, match="file not found") as error:
        stage_customers(con, tmp_path / "nope.csv", "run-1")
    assert "nope.csv" in str(error.value)


def test_a_link_to_a_missing_file_is_named_as_given_and_by_its_target(con, tmp_path):
    link = tmp_path / "latest.csv"
    link.symlink_to(tmp_path / "export_2026-12-01.csv")

    with pytest.raises(InputError) as error:
        stage_customers(con, link, "run-1")

    assert str(error.value) == (
        f"{link}: file not found: it links to {tmp_path / 'export_2026-12-01.csv'}, "
        "which does not exist"
    )


def test_directory_as_source(con, tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        stage_customers(con, tmp_path, "run-1")


@pytest.mark.parametrize(
    ("text", "line", "found", "before"),
    [
        (
            f"{KAGGLE_HEADER}\n0001,Male,19,15,39\n0002,Male,21,15,81\r\n0003,Male,20,16,6\n",
            3,
            "CRLF",
            "LF",
        ),
        (
            f"{KAGGLE_HEADER}\r\n0001,Male,19,15,39\r\n0002,Male,21,15,81\n0003,Male,20,16,6\n",
            3,
            "LF",
            "CRLF",
        ),
        (  # Excel: CRLF records, a line break inside a quoted cell is LF: the cell's own
            f'{KAGGLE_HEADER},note\r\n0001,Male,19,15,39,"two\nlines"\r\n'
            "0002,Male,21,15,81,x\r\n0003,Male,20,16,6,y\n0004,Male,20,16,6,z\n",
            5,
            "LF",
            "CRLF",
        ),
    ],
)
def test_mixed_line_endings_name_the_first_line_that_differs(
    con, write_csv, text, line, found, before
):
    """One row pasted in from another system: DuckDB only said its state machine reached an
    invalid state."""
    path = write_csv(text)
    with pytest.raises(InputError) as error:
        stage_customers(con, path, "run-1")
    assert str(error.value) == (
        f"{path}, line {line}: mixed line endings: this line ends with {found}, the lines "
        f"before it with {before}; save the file with one kind of line ending"
    )


def test_empty_file(con, write_csv):
    with pytest.raises(InputError, match="file is empty"):
        stage_customers(con, write_csv(""), "run-1")


def test_header_only(con, write_csv):
    with pytest.raises(InputError, match="no customer rows") as error:
        stage_customers(con, write_csv(KAGGLE_HEADER + "\n"), "run-1")
    assert error.value.line == 2


def test_missing_required_column(con, write_csv):
    path = write_csv("CustomerID,Genre,Age,Annual Income (k$)\n0001,Male,19,15\n")
    with pytest.raises(InputError) as error:
        stage_customers(con, path, "run-1")
    assert error.value.line == 1
    assert "missing required column(s): spending_score" in str(error.value)
    assert str(path) in str(error.value)


def test_semicolons_are_named_when_a_header_cell_holds_a_comma(con, write_csv):
    path = write_csv("CustomerID;Genre;Age;Annual Income, k$;Spending Score\n1;Male;19;15;39\n")
    with pytest.raises(InputError, match="separated by semicolons; the input must be comma"):
        stage_customers(con, path, "run-1")


@pytest.mark.parametrize(
    "income", ["Annual Income ($)", "annual_income_$", "Income $", "Annual Income (USD)"]
)
def test_an_income_header_in_dollars_is_refused(con, write_csv, income):
    """Incomes in dollars were taken as k$: segment averages of 60,000 "k$"."""
    path = write_csv(f"CustomerID,Gender,Age,{income},Spending Score\n0001,Male,19,15000,39\n")
    with pytest.raises(InputError) as error:
        stage_customers(con, path, "run-1")
    assert str(error.value) == (
        f"{path}, line 1, column annual_income: column {income!r} is in dollars; annual_income "
        "is in thousands of dollars: divide its values by 1,000 and name it 'Annual Income (k$)'"
    )


@pytest.mark.parametrize(
    "income",
    [
        "Annual Income (k$)",
        "Annual Income (K $)",
        "Annual Income ($k)",
        "annual_income",
        "Income (k$)",
        "Annual Income (k USD)",
        "Income (USD k)",
    ],
)
def test_an_income_header_in_thousands_is_accepted(con, write_csv, income):
    path = write_csv(f"CustomerID,Gender,Age,{income},Spending Score\n0001,Male,19,15,39\n")
    assert stage_customers(con, path, "run-1").n_customers == 1


def test_semicolon_delimiter(con, write_csv):
    path = write_csv(KAGGLE_HEADER.replace(",", ";") + "\n0001;Male;19;15;39\n")
    with pytest.raises(InputError, match="separated by semicolons; the input must be comma"):
        stage_customers(con, path, "run-1")


def test_bare_carriage_return_line_endings_are_named(con, write_csv):
    path = write_csv(KAGGLE_HEADER + "\r0001,Male,19,15,39\r0002,Female,21,15,81\r")
    with pytest.raises(InputError, match="bare carriage return .* LF or CRLF") as error:
        stage_customers(con, path, "run-1")
    assert error.value.line == 1


def test_latin1_bytes_in_a_data_row_name_the_line(con, write_csv):
    data = (KAGGLE_HEADER + "\n0001,Male,19,15,39\n0002,F\xe9minin,21,15,81\n").encode("latin-1")
    with pytest.raises(InputError, match="not UTF-8 text \\(byte 0xe9") as error:
        stage_customers(con, write_csv(data), "run-1")
    assert (error.value.line, error.value.column, error.value.value) == (3, "gender", "Féminin")


def test_windows_1252_bytes_after_a_multi_line_value_name_the_physical_line_and_column(
    con, write_csv
):
    """Physical line 5, column customer_id; DuckDB shows the value as '??'."""
    data = f'{KAGGLE_HEADER}\n"00\n01",Male,19,15,39\n0002,Male,21,15,81\nCaf\x80,Male,1,1,1\n'
    with pytest.raises(InputError, match="byte 0x80") as error:
        stage_customers(con, write_csv(data.encode("latin-1")), "run-1")
    assert (error.value.line, error.value.column, error.value.value) == (5, "customer_id", "Caf€")


def test_latin1_bytes_in_the_header(con, write_csv):
    data = "CustomerID,G\xe9nero,Age\n".encode("latin-1")
    with pytest.raises(InputError, match="not UTF-8") as error:
        stage_customers(con, write_csv(data), "run-1")
    assert error.value.line == 1


def test_a_compressed_file_is_named_as_such(con, write_csv, mall_csv):
    """A .csv.gz passed as it is would otherwise read as text that is not UTF-8."""
    path = write_csv(gzip.compress(mall_csv.read_bytes(), mtime=0), name="customers.csv.gz")
    with pytest.raises(InputError, match="is a gzip-compressed file, not CSV text") as error:
        stage_customers(con, path, "run-1")
    assert "decompress it first" in str(error.value)
    assert error.value.line == 1


def test_a_utf16_file_is_named_as_such(con, write_csv, mall_csv):
    """Without the check: 'not UTF-8 text (byte 0xff at position 1)'."""
    path = write_csv(mall_csv.read_text().encode("utf-16"), name="customers.csv")
    with pytest.raises(InputError, match="is UTF-16 text .*; save it as CSV UTF-8") as error:
        stage_customers(con, path, "run-1")
    assert error.value.line == 1


def test_an_excel_workbook_is_named(con, write_csv):
    path = write_csv(b"PK\x03\x04" + bytes(100), name="customers.xlsx")
    with pytest.raises(InputError, match="a ZIP archive \\(or an Excel workbook\\)"):
        stage_customers(con, path, "run-1")


@pytest.mark.parametrize("blank_lines", ["", "\n", "\n\n"])
def test_row_with_too_few_columns_names_the_line(con, write_csv, blank_lines):
    path = write_csv(f"{KAGGLE_HEADER}\n0001,Male,19,15,39\n{blank_lines}0002,Female,21\n")
    with pytest.raises(InputError, match="Expected Number of Columns: 5 Found: 3") as error:
        stage_customers(con, path, "run-1")
    assert error.value.line == 3 + len(blank_lines)
    assert error.value.value == "0002,Female,21"


@pytest.mark.parametrize(
    ("before", "newline", "line"),
    [
        ('0001,Male,19,15,39,"a\nb\nc"\n', "\n", 5),  # a record over lines 2-4
        ('\n0001,Male,19,15,39,"a\n\nc"\n\n', "\n", 7),  # blank lines, one inside quotes
        ('0001,Male,19,15,39,"a\r\nb"\r\n', "\r\n", 4),  # a CRLF file
    ],
)
def test_a_broken_row_after_a_multi_line_value_names_its_physical_line(
    con, write_csv, before, newline, line
):
    header = "CustomerID,Gender,Age,Annual Income (k$),Spending Score (1-100),note" + newline
    path = write_csv(header + before + "0002,Male,1,2" + newline)
    with pytest.raises(InputError, match="Expected Number of Columns: 6 Found: 4") as error:
        stage_customers(con, path, "run-1")
    assert error.value.line == line
    assert error.value.value == "0002,Male,1,2"


def test_a_failed_load_leaves_no_new_customers_table(con, write_csv, mall_csv):
    stage_customers(con, mall_csv, "run-1")
    with pytest.raises(InputError):
        stage_customers(con, write_csv(f"{KAGGLE_HEADER}\n0001,Male\n"), "run-2")
    assert con.execute("SELECT count(*) FROM customers").fetchone()[0] == 200


def test_source_path_with_a_quote_is_bound_not_spliced(con, tmp_path, mall_csv):
    path = tmp_path / "o'brien; DROP TABLE x.csv"
    path.write_bytes(mall_csv.read_bytes())
    assert stage_customers(con, path, "run-1").n_customers == 200


@pytest.fixture(scope="module")
def million_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segmentation_pipeline.core.generate import write_customers_csv

    return write_customers_csv(tmp_path_factory.mktemp("big") / "1m.csv", rows=1_000_000, seed=4)


def test_one_bad_value_at_the_end_of_a_million_rows_is_quarantined(con, million_rows, tmp_path):
    path = tmp_path / "bad_end.csv"
    path.write_bytes(million_rows.read_bytes() + b"X0000001,Female,200,40,50\n")
    summary = stage_customers(con, path, "run-1")
    assert (summary.n_rows_read, summary.n_customers, summary.n_rejected) == (
        1_000_001,
        1_000_000,
        1,
    )
    assert rejected(con) == [(1_000_002, "age", "200", "age: '200' is out of range (0 to 120)")]


def test_one_broken_row_at_the_end_of_a_million_rows_fails_naming_it(con, million_rows, tmp_path):
    path = tmp_path / "short_end.csv"
    path.write_bytes(million_rows.read_bytes() + b"X0000001,Female\n")
    with pytest.raises(InputError, match="Expected Number of Columns: 5 Found: 2") as error:
        stage_customers(con, path, "run-1")
    assert error.value.line == 1_000_002
