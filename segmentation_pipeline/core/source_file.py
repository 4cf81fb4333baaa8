"""File-level checks of the input CSV, done before DuckDB reads it.

DuckDB's reader with a fixed column list does not compare header names, and a
skipped blank line shifts every later row number. So the header is read and
mapped here, and one streaming pass over the bytes records the file's checksum and
where its blank lines are, so that rejected rows can be reported at their real line.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from segmentation_pipeline.core.errors import InputError, SourceChangedError
from segmentation_pipeline.core.schema import CANONICAL_NAMES, canonical_name

_CHUNK_BYTES = 8 << 20
_OTHER_DELIMITERS = ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes"))
_EXAMPLE_HEADER = "CustomerID,Gender,Age,Annual Income (k$),Spending Score (1-100)"

# DuckDB's CSV dialect as regular expressions over one line without its line break, shared
# with the Spark engine (core/spark/dialect.py adds the anchors, Java spells the end \z).
# A quote opens a quoted value only at the start of a field, after at most one space; a
# quote inside an unquoted value is text (DuckDB's strict reader loads `1,6'1" Male,...`);
# "" inside a quoted value is an escaped quote. Possessive quantifiers: linear time.
CSV_FIELD = r'(?: ?"(?:[^"]++|"")*+" *+|(?! ?")[^,\r]*+)'
# A whole line that, started outside quotes, ends inside a quoted value.
CSV_OPENS_QUOTE = rf'(?:{CSV_FIELD},)*+ ?"(?:[^"]++|"")*+'
# A whole line that, started inside a quoted value, ends inside one (the same or a new one).
CSV_STAYS_IN_QUOTE = rf'(?:[^"]++|"")*+(?:" *+,{CSV_OPENS_QUOTE})?'
_OPENS_QUOTE = re.compile(CSV_OPENS_QUOTE.encode())
_STAYS_IN_QUOTE = re.compile(CSV_STAYS_IN_QUOTE.encode())


@dataclass(frozen=True)
class SourceHeader:
    """The header row and which position holds each canonical column."""

    cells: tuple[str, ...]
    positions: dict[str, int]
    ignored: tuple[str, ...]

    def header_for(self, canonical: str) -> str:
        """The header cell as written in the file, for messages that point at a column."""
        return self.cells[self.positions[canonical]]


@dataclass(frozen=True)
class SourceDigest:
    """The raw file's content hash and size, recorded with every load."""

    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class LineLayout:
    """Where the file's lines are: how many, and which are blank.

    ``line_count`` counts a last line without a line break (exports often end so): compared
    with the records, it tells whether quoted values hold line breaks.
    """

    line_count: int
    blank_lines: tuple[int, ...]


def check_source_file(source: Path) -> None:
    """Fail early with a plain reason when the path cannot be a CSV input."""
    if not source.exists():
        if source.is_symlink():
            target = source.readlink()
            raise InputError(source, f"file not found: it links to {target}, which does not exist")
        raise InputError(source, "file not found")
    if source.is_dir():
        raise InputError(source, "is a directory, not a CSV file")
    if not source.is_file():
        raise InputError(source, "is not a regular file")
    if source.stat().st_size == 0:
        raise InputError(source, "file is empty; expected a header line and customer rows")
    try:
        source.open("rb").close()
    except PermissionError as error:  # not transient: say so now rather than retry
        raise InputError(
            source, f"cannot be read: {error.strerror} (the file's owner or mode must allow it)"
        ) from None


def file_state(source: Path) -> tuple[int, int] | None:
    """Size and modification time (ns), to tell whether a file changed while it was read;
    None when it cannot be read (the read itself then says why)."""
    try:
        stat = source.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def changed_since(source: Path, before: tuple[int, int] | None) -> SourceChangedError | None:
    """A SourceChangedError when the file's size or modification time moved on since
    ``before``: whatever was read may be a fragment of an export still being written."""
    after = file_state(source)
    if before is None or after is None or after == before:
        return None
    return SourceChangedError(
        source,
        f"the file changed while it was read ({before[0]:,} bytes, then {after[0]:,}): it is "
        "still being written. Exports should be written under another name and moved into "
        "place when complete",
    )


# Leading bytes of files often passed by mistake, and what to do instead.
_NOT_TEXT = (
    (b"\x1f\x8b", "a gzip-compressed file, not CSV text; decompress it first (gunzip)"),
    (
        b"PK\x03\x04",
        "a ZIP archive (or an Excel workbook), not CSV text; extract or export the CSV",
    ),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file, not CSV text; decompress it first (unzstd)"),
    (b"BZh", "a bzip2-compressed file, not CSV text; decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file, not CSV text; decompress it first (unxz)"),
    (b"PAR1", "a Parquet file, not CSV text; export it as CSV"),
    (b"\xff\xfe", "UTF-16 text (a spreadsheet's Unicode text export); save it as CSV UTF-8"),
    (b"\xfe\xff", "UTF-16 text (big-endian); save it as CSV UTF-8"),
)


def read_header(source: Path) -> SourceHeader:
    """Read and map the header line, or explain exactly why it is not usable."""
    with source.open("rb") as handle:
        first_line = handle.readline(1 << 20)
    for magic, what in _NOT_TEXT:
        if first_line.startswith(magic):
            raise InputError(source, f"is {what}", line=1)
    try:
        text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            source,
            f"not UTF-8 text (byte 0x{first_line[error.start]:02x} at position "
            f"{error.start + 1}); save the file as UTF-8",
            line=1,
        ) from None
    text = text.rstrip("\r\n")
    if "\r" in text:
        raise InputError(
            source,
            "lines end with a bare carriage return (old Mac line endings); save the file "
            "with LF or CRLF line endings",
            line=1,
        )
    if not text.strip():
        raise InputError(source, "the first line is empty; expected the header", line=1)
    cells = tuple(cell.strip() for cell in next(csv.reader([text])))
    return map_header(source, cells)


def map_header(source: Path, cells: tuple[str, ...]) -> SourceHeader:
    """Match header cells to canonical columns; unknown columns are kept aside and ignored."""
    if len(cells) == 1:
        for delimiter, name in _OTHER_DELIMITERS:
            if delimiter in cells[0]:
                raise InputError(
                    source,
                    f"the header is separated by {name}; the input must be comma-separated",
                    line=1,
                    value=cells[0],
                )
    positions: dict[str, int] = {}
    ignored: list[str] = []
    for index, cell in enumerate(cells):
        name = canonical_name(cell)
        if name is None:
            ignored.append(cell)
        elif name in positions:
            raise InputError(
                source,
                f"columns {cells[positions[name]]!r} and {cell!r} both mean {name}",
                line=1,
            )
        else:
            positions[name] = index
    if "annual_income" in positions:
        _check_income_unit(source, cells[positions["annual_income"]])
    missing = [name for name in CANONICAL_NAMES if name not in positions]
    if missing:
        joined = ",".join(cells)
        for delimiter, name in _OTHER_DELIMITERS:  # a comma inside one of their header cells
            if joined.count(delimiter) >= len(CANONICAL_NAMES) - 1:
                raise InputError(
                    source,
                    f"the header is separated by {name}; the input must be comma-separated",
                    line=1,
                    value=joined,
                )
        raise InputError(
            source,
            f"missing required column(s): {', '.join(missing)} (header has: {', '.join(cells)};"
            f" expected for example {_EXAMPLE_HEADER})",
            line=1,
        )
    return SourceHeader(cells=cells, positions=positions, ignored=tuple(ignored))


def _check_income_unit(source: Path, cell: str) -> None:
    """Refuse an income header in dollars: "Annual Income ($)" matches annual_income, which is
    in thousands of dollars, and incomes in dollars would be read as k$ (or be out of range)."""
    unit = re.sub(r"\s", "", cell.lower())
    in_thousands = any(mark in unit for mark in ("k$", "$k", "kusd", "usdk"))
    if ("$" in unit or "usd" in unit) and not in_thousands:
        raise InputError(
            source,
            f"column {cell!r} is in dollars; annual_income is in thousands of dollars: "
            "divide its values by 1,000 and name it 'Annual Income (k$)'",
            line=1,
            column="annual_income",
        )


def digest_source(source: Path, chunk_bytes: int = _CHUNK_BYTES) -> SourceDigest:
    """SHA-256 and size of the file in one streaming pass (flat memory)."""
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
            size += len(chunk)
    return SourceDigest(sha256=digest.hexdigest(), size_bytes=size)


def scan_line_layout(source: Path, chunk_bytes: int = _CHUNK_BYTES) -> LineLayout:
    """Count the lines and find the blank lines in one streaming pass (flat memory).

    Only rejected rows need it (their line numbers), so ingest walks the file for it only
    when a load has some: over 10 million rows it costs 0.6 s of CPU, which would otherwise
    compete with the parse. Blank lines are found as a newline directly followed by another
    (optionally after a carriage return). A blank line inside a quoted multi-line field is
    counted too; for a file with multi-line fields, ingest takes ``record_start_lines``
    instead.
    """
    size = 0
    newlines = 0
    blank_offsets: list[int] = []
    tail = b""
    last_byte = b"\n"  # an empty file has no line
    with source.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            window = tail + chunk
            base = size - len(tail)
            for pattern in (b"\n\n", b"\n\r\n"):
                start = 0
                while (found := window.find(pattern, start)) != -1:
                    if found + len(pattern) > len(tail):  # not already seen in the last chunk
                        blank_offsets.append(base + found)
                    start = found + 1
            newlines += chunk.count(b"\n")
            size += len(chunk)
            tail = window[-2:]
            last_byte = chunk[-1:]
    blank_lines = (
        _line_numbers_after(source, sorted(set(blank_offsets)), chunk_bytes)
        if blank_offsets
        else ()
    )
    line_count = newlines + (last_byte != b"\n")
    return LineLayout(line_count=line_count, blank_lines=blank_lines)


def physical_line(source: Path, reader_line: int) -> int:
    """The physical line where DuckDB's reader line ``reader_line`` (1 = the header) starts.

    DuckDB numbers the lines of its CSV errors by records and blank lines: a line break
    inside a quoted value does not count, so after a multi-line value its number is too
    small. Walks the file up to that line (only when a read has failed).
    """
    start = next(islice(_lines_outside_quotes(source), reader_line - 1, None), None)
    return start[0] if start is not None else reader_line


def explain_undecodable_line(source: Path, line: int, header: SourceHeader) -> InputError | None:
    """Which column of physical line ``line`` holds the first byte that is not UTF-8, and how
    that value reads in Windows-1252, the encoding of a spreadsheet's plain "CSV" export.

    DuckDB's reader only says the line is not UTF-8 and shows it with the bytes replaced
    ("M??e"); the column and the readable value tell the user which export setting to fix.
    None when that line decodes (the bad byte is on a later line of a quoted value).
    """
    with source.open("rb") as handle:
        raw = next(islice(handle, line - 1, None), b"").rstrip(b"\r\n")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = error.start
    else:
        return None
    # Latin-1 maps each byte to one character, so the prefix's fields end at byte `bad`.
    field = max(len(next(csv.reader([raw[:bad].decode("latin-1")]), [])) - 1, 0)
    cells = next(csv.reader([raw.decode("cp1252", errors="replace")]), [])
    by_position = {position: name for name, position in header.positions.items()}
    if field in by_position:
        column = by_position[field]
    else:
        column = header.cells[field] if field < len(header.cells) else f"field {field + 1}"
    return InputError(
        source,
        f"not UTF-8 text (byte 0x{raw[bad]:02x}; the value is shown as read in "
        "Windows-1252); save the file as UTF-8 (in Excel: CSV UTF-8)",
        line=line,
        column=column,
        value=cells[field] if field < len(cells) else None,
    )


def explain_whitespace_line(source: Path, line: int) -> InputError | None:
    """Physical line ``line`` holds only spaces or tabs: say so, instead of DuckDB's
    "Expected Number of Columns: 5 Found: 1".

    The reader skips empty lines but reads a line of spaces as a row of one field; such a
    line is usually left over from hand editing, and the fix is to delete it. None when
    the line holds anything else.
    """
    with source.open("rb") as handle:
        raw = next(islice(handle, line - 1, None), b"").rstrip(b"\r\n")
    if not raw or raw.strip(b" \t"):
        return None
    return InputError(
        source,
        "the line holds only spaces or tabs, not a customer row; delete it (empty lines "
        "are skipped)",
        line=line,
    )


def explain_mixed_line_endings(source: Path) -> InputError | None:
    """The first line ending a record with another line ending (CRLF or LF) than the header's.

    DuckDB's reader detects the line ending on the first line; a row pasted in from another
    system later in the file stops it with "The CSV Parser state machine reached an invalid
    state", which names no line. Line breaks inside quoted values are the value's, not
    record ends, so they are skipped. Only read on that error.
    """
    lines = _lines_outside_quotes(source)
    _, header = next(lines, (1, b""))
    crlf = header.endswith(b"\r\n")
    for number, line in lines:
        if not line.endswith(b"\n"):
            return None  # the last line, without a line break
        text = line.removesuffix(b"\n").removesuffix(b"\r")
        if b'"' in line and _OPENS_QUOTE.fullmatch(text):
            continue  # the record goes on inside a quoted value
        if line.endswith(b"\r\n") != crlf:
            found, before = ("CRLF", "LF") if not crlf else ("LF", "CRLF")
            return InputError(
                source,
                f"mixed line endings: this line ends with {found}, the lines before it "
                f"with {before}; save the file with one kind of line ending",
                line=number,
            )
    return None


def record_start_lines(source: Path, row_indices: Iterable[int]) -> dict[int, int]:
    """Physical line where each given data row (0-based, after the header) starts.

    For files whose quoted values span lines: rows start at the lines outside quoted values
    that are not blank (the reader skips blank lines), the first of them being the header.
    """
    pending = iter(sorted(set(row_indices)))
    target = next(pending, None)
    starts = (number for number, line in _lines_outside_quotes(source) if line.rstrip(b"\r\n"))
    next(starts, None)  # the header
    lines: dict[int, int] = {}
    for row, number in enumerate(starts):
        if target is None:
            break
        if row == target:
            lines[row] = number
            target = next(pending, None)
    return lines


def _lines_outside_quotes(source: Path) -> Iterator[tuple[int, bytes]]:
    """(number, bytes) of each physical line that starts outside a quoted value.

    Quotes are read by DuckDB's rules (``CSV_OPENS_QUOTE``, ``CSV_STAYS_IN_QUOTE``), not by
    counting them: a quote inside an unquoted value (an inch mark, ``6'1"``) opens nothing,
    and DuckDB reads it as text. Only lines holding a quote are matched; others leave the
    state as it is. A file quoted throughout walks 1 million lines in about 3 s (0.8 s when
    quotes were only counted); it is walked only for a reader error, or for rejected rows
    when quoted values hold line breaks.
    """
    inside = False
    with source.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not inside:
                yield number, line
            if b'"' in line:
                text = line.removesuffix(b"\n").removesuffix(b"\r")
                pattern = _STAYS_IN_QUOTE if inside else _OPENS_QUOTE
                inside = pattern.fullmatch(text) is not None


def _line_numbers_after(
    source: Path, newline_offsets: list[int], chunk_bytes: int
) -> tuple[int, ...]:
    """Physical line number of the line that starts after each given newline byte offset.

    A second streaming pass, taken only when blank lines exist, counts newlines up to each
    offset without holding the file in memory.
    """
    lines: list[int] = []
    pending = iter(newline_offsets)
    target = next(pending, None)
    newlines_before = 0
    position = 0
    with source.open("rb") as handle:
        while target is not None and (chunk := handle.read(chunk_bytes)):
            end = position + len(chunk)
            while target is not None and target < end:
                newlines_before += chunk.count(b"\n", 0, target + 1 - position)
                chunk = chunk[target + 1 - position :]
                position = target + 1
                lines.append(newlines_before + 1)
                target = next(pending, None)
            newlines_before += chunk.count(b"\n")
            position = end
    return tuple(lines)
