"""CSV files: the dialect a recipe gives them, and mtl's own messages for a CSV file that is not a
table -- empty, a header and no rows, rows with more or fewer fields than the header, bytes that are not
text in the file's encoding. numpy and the standard library's ``csv`` and ``codecs``; no TensorFlow.

A *dialect* is ``{sep, encoding, decimal}``: ``data.csv`` for every CSV source of a recipe, or the same
keys in a source mapping ``{path: FILE, sep: ';'}`` (which win). :func:`pandas_options` turns it into
``pandas.read_csv`` arguments; ``data.json`` records it, so a run reads its files again the same way.

:func:`check` scans a file before pandas reads it, because pandas reads a row with fewer fields than the
header as missing values without a word, and takes a first row with one field too many as an index
column. It names the physical line of each bad row, up to :data:`ROW_LIMIT` of them, then counts the
rest, and reads the file in bounded memory whatever its size (a streamed one too). Most files -- no
quote character, an ASCII-compatible encoding -- are scanned from the raw bytes with numpy, 16 MiB at a
time (:func:`scan_bytes`: fields = separators + 1 per line; on a million rows of eight numbers, 125 MB,
about 0.4 s where pandas' own parse takes 0.3 to 0.8 s on the shared machine); any other file by the
``csv`` module's reader over the decoded text, one row at a time (about three times pandas' parse).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.data.tables import fail
from mtlcli.errors import DataError, Problem
from mtlcli.recipe.data_checks import CSV_DEFAULTS

#: the dialect keys and their defaults (what pandas assumes)
DEFAULTS = CSV_DEFAULTS
KEYS = tuple(DEFAULTS)
#: bad rows named one by one per file; the rest are counted
ROW_LIMIT = 20
#: bytes the fast scan reads at a time (bounded memory, whatever the file's size)
BLOCK = 1 << 24
#: the encoding suggested when a file is not UTF-8
HINT = "latin-1"


def dialect_of(value: Any, shared: dict | None) -> dict[str, str]:
    """The dialect of a source: ``data.csv`` (``shared``) overridden by the keys of a source mapping;
    ``\\t`` (a backslash and a t, as single-quoted YAML gives it) is a tab."""
    out = {k: v for k, v in (shared or {}).items() if k in KEYS and v is not None}
    if isinstance(value, dict):
        out.update({k: value[k] for k in KEYS if value.get(k) is not None})
    if out.get("sep") == "\\t":
        out["sep"] = "\t"
    return out


def options(dialect: dict | None) -> dict[str, str]:
    """A dialect with every key filled in."""
    return {**DEFAULTS, **{k: v for k, v in (dialect or {}).items() if k in KEYS}}


def pandas_options(dialect: dict | None) -> dict[str, str]:
    """``pandas.read_csv`` keyword arguments of a dialect."""
    return options(dialect)


def _binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _ascii_compatible(encoding: str) -> bool:
    """Whether the encoding writes ASCII as ASCII bytes (so a file splits into lines at b"\\n")."""
    try:
        return "\n,;|\t\"'.".encode(encoding) == b"\n,;|\t\"'."
    except (LookupError, UnicodeError):
        return False


def check(path: Path, dialect: dict | None = None, allow_empty: bool = False) -> Rows:
    """The data rows of CSV file ``path`` (:class:`Rows`); a :class:`DataError` naming the file and line when it
    is empty, has a header only (unless ``allow_empty``), holds rows with more or fewer fields than the
    header, or bytes that are not text in its encoding."""
    opts, shown = options(dialect), str(path)
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long text cells are cells too
    reader = None
    try:
        rows = scan_bytes(path, opts, shown, allow_empty)
        if rows is not None:
            return rows
        with io.TextIOWrapper(_binary(path), encoding=opts["encoding"], newline="") as fh:
            reader = csv.reader(fh, delimiter=opts["sep"], skipinitialspace=True)
            return _scan(reader, shown, allow_empty, opts["sep"])
    except UnicodeDecodeError as exc:
        raise _not_text(path, opts["encoding"], exc) from None
    except csv.Error as exc:
        raise fail(f"cannot read as CSV: {exc}", shown, reader.line_num if reader else None) from None
    except (OSError, EOFError) as exc:
        raise fail(f"cannot read as CSV: {exc}", shown) from None


def check_header(path: Path, dialect: dict | None = None) -> None:
    """:func:`check` of the header line alone (the first lines of the file, not the whole of it)."""
    opts = options(dialect)
    try:
        with io.TextIOWrapper(_binary(path), encoding=opts["encoding"], newline="") as fh:
            reader = csv.reader(fh, delimiter=opts["sep"], skipinitialspace=True)
            if next((row for row in reader if not _blank(row)), None) is None:
                raise fail(EMPTY, str(path))
    except UnicodeDecodeError as exc:
        raise _not_text(path, opts["encoding"], exc) from None
    except (csv.Error, OSError, EOFError) as exc:
        raise fail(f"cannot read as CSV: {exc}", str(path)) from None


EMPTY = "the file is empty; expected a header line with the column names, then one row per sample"


def _blank(row: list[str]) -> bool:
    """pandas skips empty and whitespace-only lines."""
    return not row or (len(row) == 1 and not row[0].strip())


def separator_hint(header: list[str], sep: str) -> str:
    """``"; the file looks separated by ';': set data.csv: {sep: ';'}"`` when a one-column header holds
    another common separator (a ';' file read with ','), else ``""``."""
    if len(header) != 1:
        return ""
    other = next((c for c in (",", ";", "\t", "|") if c != sep and c in header[0]), None)
    if other is None:
        return ""
    written = "\\t" if other == "\t" else other
    return f"; the file looks separated by {written!r}: set data.csv: {{sep: {written!r}}}"


def _fields(n: int) -> str:
    return f"{n} field{'s' if n != 1 else ''}"


@dataclass
class Rows:
    """The data rows a scan found: how many, and the physical line of each where it is not simply
    ``row + 2`` (blank lines skipped, a quoted cell over several lines, a header after blank lines), kept
    as the few rows where the offset changes, so a file of any size takes little memory."""

    count: int
    breaks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # (row, line - row - 2)

    def lines(self, start: int, n: int) -> np.ndarray:
        """The physical lines of rows ``start .. start + n - 1``."""
        rows = np.arange(start, start + n, dtype=np.int64)
        if not len(self.breaks):
            return rows + 2
        j = np.searchsorted(self.breaks[:, 0], rows, side="right") - 1
        return rows + 2 + np.where(j >= 0, self.breaks[np.maximum(j, 0), 1], 0)


class _Shape:
    """The row shapes of one file as a scan finds them: the header, the rows that match it, the bad ones
    (the first :data:`ROW_LIMIT` named, the rest counted), and the errors they make."""

    def __init__(self, shown: str, sep: str) -> None:
        self.shown, self.sep = shown, sep
        self.header: list[str] | None = None
        self.width = self.rows = self.more = self.line = self.header_line = self.offset = 0
        self.bad: list[Problem] = []
        self.breaks: list[tuple[int, int]] = []

    def found_one(self, line: int) -> None:
        """:meth:`found` of one row (the reader's loop: no numpy per row)."""
        offset = line - self.rows - 2
        if offset != self.offset:
            self.breaks.append((self.rows, offset))
            self.offset = offset
        self.rows += 1

    def found(self, lines: np.ndarray) -> None:
        """Rows of the header's width at physical ``lines`` (in order)."""
        rows = self.rows + np.arange(len(lines), dtype=np.int64)
        offsets = np.asarray(lines, np.int64) - rows - 2
        changes = np.flatnonzero(np.diff(offsets, prepend=self.offset))
        self.breaks.extend(zip(rows[changes].tolist(), offsets[changes].tolist(), strict=True))
        if len(offsets):
            self.offset = int(offsets[-1])
        self.rows += len(lines)

    def start(self, header: list[str], line: int) -> None:
        self.header, self.width, self.header_line = header, len(header), line

    def wrong(self, line: int, n: int) -> None:
        """A row at ``line`` with ``n`` fields, not the header's."""
        hint = separator_hint(self.header or [], self.sep)
        if hint:
            raise fail(
                f"the header line is one column, {self.header[0]!r}{hint}", self.shown, self.header_line
            )
        if len(self.bad) >= ROW_LIMIT:
            self.more += 1
            return
        short = ": the row is cut short" if n < self.width else ""
        message = f"expected {_fields(self.width)} (as in the header line), received {n}{short}"
        self.bad.append(Problem(message, "", self.shown, line))

    def finish(self, allow_empty: bool) -> Rows:
        if self.header is None:
            raise fail(EMPTY, self.shown)
        if self.bad:
            if self.more:
                message = f"... and {self.more} more rows with the wrong number of fields"
                self.bad.append(Problem(message, "", self.shown))
            raise DataError(problems=self.bad)
        if not self.rows and not allow_empty:
            raise fail(
                f"the file has a header line ({self.width} columns) but no rows; expected one row per "
                "sample after it",
                self.shown,
                self.line + 1,
            )
        return Rows(self.rows, np.array(self.breaks, np.int64).reshape(-1, 2))


def _scan(reader, shown: str, allow_empty: bool, sep: str) -> Rows:
    """The shapes of the rows the ``csv`` reader gives (any file: quoted fields, any encoding)."""
    shape = _Shape(shown, sep)
    for row in reader:
        first, shape.line = shape.line + 1, reader.line_num
        if _blank(row):
            continue
        if shape.header is None:
            shape.start(row, first)
        elif len(row) == shape.width:
            shape.found_one(first)
        else:
            shape.wrong(first, len(row))
    return shape.finish(allow_empty)


def scan_bytes(path: Path, opts: dict[str, str], shown: str, allow_empty: bool) -> Rows | None:
    """:func:`_scan` from the raw bytes with numpy, a block of :data:`BLOCK` bytes at a time, for the
    files it reads exactly as the ``csv`` reader does: an ASCII-compatible encoding, a one-character ASCII
    separator, and no quote character, NUL or bare carriage return (most numeric exports). None as soon as
    a block is not such a block: then the reader scans the file from the start."""
    sep, encoding = opts["sep"], opts["encoding"]
    if len(sep) != 1 or not sep.isascii() or sep in '"\r\n' or not _ascii_compatible(encoding):
        return None
    shape, carry = _Shape(shown, sep), b""
    with _binary(path) as fh:
        while True:
            block = fh.read(BLOCK)
            data = carry + block
            if block:
                cut = data.rfind(b"\n") + 1
                data, carry = data[:cut], data[cut:]  # whole lines; a line longer than a block waits
                if not data:
                    continue
            elif not data:
                break
            elif not data.endswith(b"\n"):
                data += b"\n"
            if b'"' in data or b"\0" in data or (b"\r" in data and data.count(b"\r") != data.count(b"\r\n")):
                return None
            if not data.isascii():  # ASCII is text in every encoding allowed here
                data.decode(encoding)  # bytes that are not text: UnicodeDecodeError, as the reader raises
            _block_shapes(data, sep, encoding, shape)
            if not block:
                break
    return shape.finish(allow_empty)


def _block_shapes(data: bytes, sep: str, encoding: str, shape: _Shape) -> None:
    """Add the lines of ``data`` (whole lines) to ``shape``: fields per line = separators + 1."""
    arr = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    fields = np.diff(np.searchsorted(np.flatnonzero(arr == ord(sep)), ends), prepend=0) + 1
    empty = (ends == starts) | ((ends - starts == 1) & (arr[np.minimum(starts, len(arr) - 1)] == 13))
    base, shape.line = shape.line, shape.line + len(ends)
    first = 0
    if shape.header is None:
        for i in np.flatnonzero(~empty):
            text = data[starts[i] : ends[i]]
            if text.strip():
                shape.start(text.decode(encoding).rstrip("\r").split(sep), base + int(i) + 1)
                first = int(i) + 1
                break
        else:
            return
    ok = (fields[first:] == shape.width) & ~empty[first:]
    shape.found(base + np.flatnonzero(ok) + first + 1)
    for i in np.flatnonzero(~ok & ~empty[first:]) + first:
        if fields[i] == 1 and not data[starts[i] : ends[i]].strip():
            continue  # whitespace only: pandas skips it
        shape.wrong(base + int(i) + 1, int(fields[i]))


def _not_text(path: Path, encoding: str, exc: UnicodeDecodeError) -> DataError:
    """The line and byte that are not text in ``encoding`` (found again line by line, the slow way, only
    after the fast read failed)."""
    byte = exc.object[exc.start : exc.start + 1].hex() if exc.object else ""
    line = None
    if _ascii_compatible(encoding):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with _binary(path) as fh:
                for i, raw in enumerate(fh, start=1):
                    try:
                        decoder.decode(raw)
                    except UnicodeDecodeError as bad:
                        line, byte = i, raw[bad.start : bad.start + 1].hex()
                        break
        except (OSError, EOFError):
            pass
    hint = (
        f"; if the file has another encoding, name it: data.csv: {{encoding: {HINT}}}"
        if codecs.lookup(encoding).name != codecs.lookup(HINT).name
        else ""
    )
    return fail(f"cannot read as CSV: byte 0x{byte} is not {encoding} text{hint}", str(path), line)
