"""CSV files: the dialect a recipe gives them, and mtl's own messages for a CSV file that is not a
table -- empty, a header and no rows, rows with more or fewer fields than the header, bytes that are not
text in the file's encoding. The standard library's ``csv`` and ``codecs``; no TensorFlow.

A *dialect* is ``{sep, encoding, decimal}``: ``data.csv`` for every CSV source of a recipe, or the same
keys in a source mapping ``{path: FILE, sep: ';'}`` (which win). :func:`pandas_options` turns it into
``pandas.read_csv`` arguments; ``data.json`` records it, so a run reads its files again the same way.

:func:`check` scans a file before pandas reads it, because pandas reads a row with fewer fields than the
header as missing values without a word, and takes a first row with one field too many as an index
column. The scan is the ``csv`` module's reader over the decoded file, one row in memory at a time, so a
file of any size (a streamed one too) is checked in bounded memory; it names the physical line of each
bad row, up to :data:`ROW_LIMIT` of them, then counts the rest. It costs about three times pandas' own
parse of the file (0.7 s against 0.2 s for a million rows of eight numbers), once per read of a source.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from pathlib import Path
from typing import Any

from mtlcli.data.tables import fail
from mtlcli.errors import DataError, Problem
from mtlcli.recipe.data_checks import CSV_DEFAULTS

#: the dialect keys and their defaults (what pandas assumes)
DEFAULTS = CSV_DEFAULTS
KEYS = tuple(DEFAULTS)
#: bad rows named one by one per file; the rest are counted
ROW_LIMIT = 20
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


def describe(dialect: dict | None) -> str:
    """``sep ';', encoding latin-1`` for messages, or ``""`` for the default dialect."""
    return ", ".join(f"{k} {v!r}" for k, v in (dialect or {}).items() if k in KEYS)


def _binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _ascii_compatible(encoding: str) -> bool:
    """Whether the encoding writes ASCII as ASCII bytes (so a file splits into lines at b"\\n")."""
    try:
        return "\n,;|\t\"'.".encode(encoding) == b"\n,;|\t\"'."
    except (LookupError, UnicodeError):
        return False


def check(path: Path, dialect: dict | None = None, allow_empty: bool = False) -> int:
    """The number of data rows of CSV file ``path``; a :class:`DataError` naming the file and line when it
    is empty, has a header only (unless ``allow_empty``), holds rows with more or fewer fields than the
    header, or bytes that are not text in its encoding."""
    opts, shown = options(dialect), str(path)
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long text cells are cells too
    reader = None
    try:
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


def _scan(reader, shown: str, allow_empty: bool, sep: str) -> int:
    header, line = None, 0
    for row in reader:
        line = reader.line_num
        if not _blank(row):
            header = row
            break
    if header is None:
        raise fail(EMPTY, shown)
    width, rows, bad, more = len(header), 0, [], 0
    for row in reader:
        start, line = line + 1, reader.line_num
        n = len(row)
        if n == width:
            rows += 1
        elif not _blank(row):
            hint = separator_hint(header, sep)
            if hint:
                raise fail(f"the header line is one column, {header[0]!r}{hint}", shown, 1)
            if len(bad) < ROW_LIMIT:
                bad.append(
                    Problem(
                        f"expected {_fields(width)} (as in the header line), received {n}"
                        + (": the row is cut short" if n < width else ""),
                        "",
                        shown,
                        start,
                    )
                )
            else:
                more += 1
    if bad:
        if more:
            bad.append(Problem(f"... and {more} more rows with the wrong number of fields", "", shown))
        raise DataError(problems=bad)
    if not rows and not allow_empty:
        raise fail(
            f"the file has a header line ({width} columns) but no rows; expected one row per sample after it",
            shown,
            line + 1,
        )
    return rows


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
