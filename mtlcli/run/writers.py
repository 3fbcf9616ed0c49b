"""Prediction output files: CSV, Parquet and JSON lines, written chunk by chunk and atomically.

The format comes from the file's suffix (:func:`format_of`). A file is written under a temporary name in
its own directory and renamed over the target only once every row is in (:func:`mtlcli.fsio.replacing`),
so an error or Ctrl-C half way leaves no file (and an older file of that name untouched).

A chunk is a dict of columns, in output order: 1-d numpy arrays (numbers, or objects: strings, Python
ints, ``None`` for missing), plus two column kinds of their own:

* :class:`Flags`: true / false per row, or unknown (``<task>:applies`` of a ``when:`` task): ``true`` /
  ``false`` / empty in CSV, ``true`` / ``false`` / ``null`` in JSON lines, a nullable boolean in Parquet;
* :class:`LabelSets`: a multilabel task's chosen labels: joined by the task's separator in CSV, a list
  in JSON lines and Parquet.

Every chunk has the same columns; a Parquet file keeps the first chunk's column types (later chunks are
cast to them: a column whose cells are all missing in one chunk, integers read as floats beside a
missing value).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.errors import DataError, Problem, UsageError
from mtlcli.fsio import disk_error, replacing

FORMATS = (".csv", ".parquet", ".jsonl")


@dataclass
class Flags:
    """A yes/no per row, with the rows where it is unknown."""

    values: np.ndarray  # bool
    known: np.ndarray  # bool

    def cells(self) -> np.ndarray:
        """True / False / None per row (objects)."""
        out = np.full(len(self.values), None, dtype=object)
        out[self.known] = self.values[self.known]
        return out

    def text(self) -> np.ndarray:
        out = np.full(len(self.values), "", dtype=object)
        out[self.known & self.values] = "true"
        out[self.known & ~self.values] = "false"
        return out


@dataclass
class LabelSets:
    """The labels chosen per row of a multilabel task: a 0/1 matrix over ``classes``; ``joined`` is each
    row's labels joined by the task's separator."""

    chosen: np.ndarray  # bool (rows, labels)
    classes: list[str]
    joined: np.ndarray  # objects (str)

    def lists(self) -> list[list[str]]:
        names = np.array(self.classes, dtype=object)
        return [names[row].tolist() for row in self.chosen]

    def arrow(self):
        import pyarrow as pa

        counts = self.chosen.sum(axis=1)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        flat = np.broadcast_to(np.array(self.classes, dtype=object), self.chosen.shape)[self.chosen]
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.tolist(), pa.string()))


def format_of(path: str | Path) -> str:
    """The output format of a file name (its suffix); an unknown one is a UsageError naming the others."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        shown = f"{suffix!r}" if suffix else "no suffix"
        raise UsageError(
            f"{path}: unknown output format ({shown}); expected a file name ending in {', '.join(FORMATS)} "
            f"(or - for CSV on standard output)"
        )
    return suffix


def head(chunk: dict[str, Any], n: int) -> dict[str, list]:
    """The first ``n`` rows of a chunk as Python values (CSV's text for flags and label sets)."""
    out = {}
    for name, col in chunk.items():
        if isinstance(col, Flags):
            out[name] = col.text()[:n].tolist()
        elif isinstance(col, LabelSets):
            out[name] = col.joined[:n].tolist()
        else:
            out[name] = col[:n].tolist()
    return out


def _frame(chunk: dict[str, Any], lists: bool):
    import pandas as pd

    data = {}
    for name, col in chunk.items():
        if isinstance(col, Flags):
            data[name] = col.cells() if lists else col.text()
        elif isinstance(col, LabelSets):
            data[name] = col.lists() if lists else col.joined
        else:
            data[name] = col
    return pd.DataFrame(data, columns=list(chunk), copy=False)


def _as_text(col: Any) -> Any:
    """Flags and label sets as CSV writes them (``true`` / ``false`` / empty; labels joined)."""
    if isinstance(col, Flags):
        return col.text()
    return col.joined if isinstance(col, LabelSets) else col


class CsvWriter:
    """CSV (comma-separated, a header line, empty cells for missing values, a value quoted only when it
    holds a comma, a quote or a line break) to an open text stream. The rows are formatted by pyarrow
    when it is installed (C++, about ten times pandas' ``to_csv``), else -- and for a chunk with a value
    to quote, which pyarrow would quote with every other string -- by pandas."""

    def __init__(self, stream) -> None:
        self.stream, self.first = stream, True
        try:
            import pyarrow as pa
            import pyarrow.csv as pcsv
        except ImportError:
            self.arrow = None
        else:
            self.arrow = (pa, pcsv)

    def write(self, chunk: dict[str, Any]) -> None:
        if self.first:
            csv.writer(self.stream, lineterminator="\n").writerow(list(chunk))
            self.first = False
        if self.arrow is None:
            _frame(chunk, lists=False).to_csv(self.stream, header=False, index=False, lineterminator="\n")
            return
        pa, pcsv = self.arrow
        columns = [_arrow(pa, _as_text(col)) for col in chunk.values()]
        table = pa.Table.from_arrays(columns, names=[f"c{i}" for i in range(len(columns))])
        buf = io.BytesIO()
        try:
            pcsv.write_csv(table, buf, pcsv.WriteOptions(include_header=False, quoting_style="none"))
        except pa.ArrowInvalid:  # a value with a separator, a quote or a line break: pandas quotes it
            _frame(chunk, lists=False).to_csv(self.stream, header=False, index=False, lineterminator="\n")
            return
        self.stream.write(buf.getvalue().decode("utf-8"))

    def close(self) -> None:
        self.stream.flush()


class JsonlWriter:
    """One JSON object per row (missing values are null, multilabel labels a list). With pyarrow the
    cells are formatted column by column (numbers by Arrow's shortest round-trip text, strings by
    ``json.dumps`` once per distinct value) and joined row-wise by Arrow; else by pandas' ``to_json``."""

    def __init__(self, stream) -> None:
        self.stream = stream
        try:
            import pyarrow as pa
            import pyarrow.compute as pc
        except ImportError:
            self.arrow = None
        else:
            self.arrow = (pa, pc)

    def write(self, chunk: dict[str, Any]) -> None:
        if not rows(chunk):
            return
        if self.arrow is None:
            text = _frame(chunk, lists=True).to_json(
                orient="records", lines=True, double_precision=15, force_ascii=False
            )
            self.stream.write(text if text.endswith("\n") else text + "\n")
            return
        pa, pc = self.arrow
        parts = []
        for i, (name, col) in enumerate(chunk.items()):
            key = ("{" if i == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":"
            parts.append(pc.binary_join_element_wise(pa.scalar(key), _json_cells(pa, pc, col), ""))
        lines = pc.binary_join_element_wise(*parts, pa.scalar("}\n"), "")
        self.stream.write("".join(lines.to_pylist()))

    def close(self) -> None:
        self.stream.flush()


def rows(chunk: dict[str, Any]) -> int:
    """The rows of a chunk."""
    if not chunk:
        return 0
    col = next(iter(chunk.values()))
    if isinstance(col, Flags):
        return len(col.values)
    return len(col.chosen) if isinstance(col, LabelSets) else len(col)


def _json_cells(pa, pc, col: Any):
    """The JSON text of every cell of a column (an Arrow string array without nulls)."""
    if isinstance(col, Flags):
        return pa.array(np.where(col.known, np.where(col.values, "true", "false"), "null"), pa.string())
    if isinstance(col, LabelSets):
        if len(col.classes) > 62:
            return _dumped(np.array([_compact(v) for v in col.lists()], dtype=object))
        bits = col.chosen.astype(np.int64) @ (np.int64(1) << np.arange(len(col.classes), dtype=np.int64))
        names = np.array(col.classes, dtype=object)
        return _by_value(bits, lambda b: _compact(names[(b >> np.arange(len(names))) & 1 == 1].tolist()))
    if col.dtype.kind in "iu":
        return pc.cast(pa.array(col), pa.string())
    if col.dtype.kind == "f":
        finite = pa.array(np.where(np.isfinite(col), col, np.nan), from_pandas=True)
        return pc.fill_null(pc.cast(finite, pa.string()), "null")
    return _by_value(col, _plain_json)


def _plain_json(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return "null"
    return json.dumps(value, ensure_ascii=False)


def _by_value(values: np.ndarray, dump) -> Any:
    """``dump`` of every distinct value, spread back over the rows (missing values: ``null``)."""
    import pandas as pd

    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    texts = np.array([dump(u) for u in uniques] + ["null"], dtype=object)
    return _dumped(texts[codes])


def _dumped(texts: np.ndarray):
    import pyarrow as pa

    return pa.array(texts.tolist(), pa.string())


class ParquetWriter:
    """A Parquet file, one row group per chunk (pyarrow's ``ParquetWriter``)."""

    def __init__(self, path: Path, shown: str) -> None:
        self.pa, self.pq = pyarrow_modules(shown)
        self.path, self.shown, self.writer = path, shown, None

    def write(self, chunk: dict[str, Any]) -> None:
        pa = self.pa
        arrays = [_arrow(pa, col) for col in chunk.values()]
        table = pa.Table.from_arrays(arrays, names=list(chunk))
        if self.writer is None:
            self.writer = self.pq.ParquetWriter(str(self.path), table.schema)
        else:
            try:
                table = table.cast(self.writer.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    problems=[
                        Problem(
                            f"a column changes type between chunks ({str(exc).splitlines()[0]}); write CSV "
                            f"or JSON lines instead",
                            "",
                            self.shown,
                        )
                    ]
                ) from None
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _arrow(pa, col: Any):
    if isinstance(col, Flags):
        return pa.array(col.values, pa.bool_(), mask=~col.known)
    if isinstance(col, LabelSets):
        return col.arrow()
    if col.dtype.kind != "O":
        return pa.array(col, from_pandas=True)
    try:
        return pa.array(col.tolist(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed kinds (numbers and text): as text
        return pa.array([None if v is None else str(v) for v in col.tolist()], pa.string())


def pyarrow_modules(shown: str):
    """``(pyarrow, pyarrow.parquet)``, or a DataError naming the optional extra that installs them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            problems=[
                Problem(
                    "writing Parquet needs pyarrow, from the optional extra 'parquet': "
                    "pip install 'mtlcli[parquet]'",
                    "",
                    shown,
                )
            ]
        ) from None
    return pa, pq


@contextlib.contextmanager
def output(target: str | Path | io.TextIOBase) -> Iterator[Any]:
    """A writer for ``target``: a file path (format from its suffix, written atomically) or an open
    text stream (CSV). The file appears only when the block ends without an error."""
    if not isinstance(target, (str, Path)):
        writer = CsvWriter(target)
        yield writer
        writer.close()
        return
    path = Path(target)
    kind = format_of(path)
    if kind == ".parquet":
        pyarrow_modules(str(path))  # before any work: a missing extra is said at once
    if not path.parent.is_dir():
        raise UsageError(f"{path}: the directory {path.parent} does not exist")
    try:
        with replacing(path, suffix=kind) as tmp:
            if kind == ".parquet":
                writer: Any = ParquetWriter(tmp, str(path))
                try:
                    yield writer
                finally:
                    writer.close()
                return
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                writer = CsvWriter(fh) if kind == ".csv" else JsonlWriter(fh)
                yield writer
                writer.close()
    except OSError as exc:
        raise disk_error(exc, str(path)) from None


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
