"""How cell values are read and compared, shared by every data module: numbers, labels, presence,
``when:`` conditions and the streaming moments. numpy + pandas, no TensorFlow.

One definition each, so in-memory and streamed preparation agree value for value: ``1``, ``1.0``,
``"1"`` and ``true`` compare equal (:func:`norm`), a label is keyed by :func:`label_key` (``2.0`` is the
class ``2``), and a blank string is missing (:func:`mtlcli.data.sources.missing`).

A problem with one cell is a :class:`CellProblem`: every bad cell of a column is reported, up to
:data:`CELL_LIMIT` per column (the first by file and line), then counted (:func:`capped`) -- in memory
over the whole table, streamed over all chunks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtlcli.data.sources import Table, missing
from mtlcli.errors import Problem, did_you_mean

#: bad cells listed per column; the rest are counted
CELL_LIMIT = 20


@dataclass(frozen=True)
class CellProblem(Problem):
    """A problem with one cell (``path`` names its column): listed up to :data:`CELL_LIMIT` per column."""


@dataclass(frozen=True)
class CellCount(Problem):
    """The bad cells of a column beyond the limit: ``... and N more bad cells in column 'x'``."""

    count: int = 0
    group: str = ""  # the column (the ``path`` of its cells)
    #: which cells it counts (a hash of their places): the same count reached twice is dropped as a
    #: duplicate (in memory the training rows are checked by the fit and again by the transform)
    cells: int = 0


def bad_cells(problems: list[Problem], table: Table, rows, message, path: str) -> None:
    """A :class:`CellProblem` for each of ``rows`` (``message(row)`` says what is wrong), up to the limit
    (the rest are counted), so a chunk of any size adds at most ``CELL_LIMIT + 1`` problems."""
    rows = [int(r) for r in rows]
    for r in rows[:CELL_LIMIT]:
        problems.append(CellProblem(message(r), path, *table.where(r)))
    if len(rows) > CELL_LIMIT:
        rest = tuple(table.where(r) for r in rows[CELL_LIMIT:])
        problems.append(_count(path, len(rest), table.file, hash(rest)))


def _count(path: str, n: int, file: str, cells: int) -> CellCount:
    return CellCount(f"... and {n} more bad cells in {path}", "", file, count=n, group=path, cells=cells)


def capped(problems: list[Problem]) -> list[Problem]:
    """``problems`` with the bad cells of each column cut to the first :data:`CELL_LIMIT` by file and line
    (duplicates dropped) and one count of the rest; the column's problems stay where its first one was."""
    groups: dict[str, list] = {}
    order: list[Any] = []
    for p in problems:
        if isinstance(p, (CellProblem, CellCount)):
            key = p.path if isinstance(p, CellProblem) else p.group
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(p)
        else:
            order.append(p)
    out: list[Problem] = []
    for item in order:
        if isinstance(item, Problem):
            out.append(item)
            continue
        cells = sorted(
            {p for p in groups[item] if isinstance(p, CellProblem)}, key=lambda p: (p.file, p.line or 0)
        )
        counts = sorted({p for p in groups[item] if isinstance(p, CellCount)}, key=lambda p: p.cells)
        dropped = cells[CELL_LIMIT:]
        more = sum(p.count for p in counts) + len(dropped)
        out.extend(cells[:CELL_LIMIT])
        if more:
            files = {p.file for p in cells} | {p.file for p in counts}
            key = (
                counts[0].cells  # a count merged with nothing is the same count (found again: a duplicate)
                if len(counts) == 1 and not dropped
                else hash((tuple(p.cells for p in counts), tuple((p.file, p.line) for p in dropped)))
            )
            out.append(_count(item, more, files.pop() if len(files) == 1 else "", key))
    return out


def structural(problems: list[Problem]) -> bool:
    """Whether any of ``problems`` is more than a bad cell (then the checks that follow cannot run)."""
    return any(not isinstance(p, (CellProblem, CellCount)) for p in problems)


def as_float(values: np.ndarray, table: Table, column: str, problems: list[Problem]) -> np.ndarray:
    """Numeric view of a column; NaN where missing. Reports every non-numeric cell (up to the limit). A
    number the reader left as text (a column with a bad cell) is read with the table's decimal mark."""
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    out = np.full(len(values), np.nan)
    bad = []
    comma = table.decimal != "."
    for i, v in enumerate(values):
        if missing(v):
            continue
        try:
            out[i] = float(v.replace(table.decimal, ".") if comma and isinstance(v, str) else v)
        except (TypeError, ValueError):
            bad.append(i)
    if bad:
        bad_cells(
            problems, table, bad, lambda i: f"expected a number, received {values[i]!r}", f"column {column!r}"
        )
    return out


def labels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(present mask, values as a list of python scalars/strings)."""
    if values.dtype.kind == "f":
        present = ~np.isnan(values)
    elif values.dtype.kind in "biu":
        present = np.ones(len(values), bool)
    else:
        present = present_objects(values)
    return present, values


def present_objects(values: np.ndarray) -> np.ndarray:
    """``not missing(v)`` of an object array; vectorised when it holds only strings and None / NaN."""
    import pandas as pd

    if len(values) and pd.api.types.infer_dtype(values, skipna=True) == "string":
        present = ~pd.isna(values)
        strings = values[present].astype(str)
        present[present] = np.strings.str_len(np.strings.strip(strings)) > 0
        return present
    return np.array([not missing(v) for v in values], bool)


def class_ids(raw: np.ndarray, present: np.ndarray, classes: list) -> tuple[np.ndarray, int | None]:
    """The class index of every present row (0 elsewhere) and the first row whose label is not one of
    ``classes`` (None when all are)."""
    ids, bad = class_ids_and_unknown(raw, present, classes)
    return ids, int(bad[0]) if len(bad) else None


def class_ids_and_unknown(
    raw: np.ndarray, present: np.ndarray, classes: list
) -> tuple[np.ndarray, np.ndarray]:
    """The class index of every present row (0 elsewhere) and every row whose label is not one of
    ``classes``: one look-up per distinct value, not per row."""
    import pandas as pd

    ids = np.zeros(len(raw), np.int32)
    rows = np.flatnonzero(present)
    if not len(rows):
        return ids, rows
    codes, uniques = pd.factorize(raw[rows])
    index = {c: i for i, c in enumerate(classes)}
    got = np.array([index.get(label_key(u), -1) for u in uniques], np.int32)[codes]
    ids[rows] = np.maximum(got, 0)
    return ids, rows[got < 0]


def label_key(value: Any) -> Any:
    """A label as a Python value: ``2.0`` and numpy integers are the int ``2``, numpy bools are bools."""
    if isinstance(value, (np.floating, float)) and float(value).is_integer():
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value.item() if isinstance(value, np.generic) else value


def norm(value: Any) -> Any:
    """A value as compared by ``when:`` and ``split:`` (1, 1.0, '1' and true are equal)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        if s.lower() in ("true", "false"):
            return 1.0 if s.lower() == "true" else 0.0
        try:
            return float(s)
        except ValueError:
            return s
    return value


def normed(values: np.ndarray) -> list[Any]:
    """:func:`norm` of every value of a column (None where missing)."""
    if values.dtype.kind in "biuf":
        return [None if np.isnan(v) else float(v) for v in values.astype(np.float64)]
    return [None if missing(v) else norm(v) for v in values]


def when_mask(conditions: list[dict] | None, table: Table, task: str, problems: list[Problem]) -> np.ndarray:
    """Rows where every ``when:`` condition of a task holds (a missing value fails a condition)."""
    keep = np.ones(table.n_rows, bool)
    for cond in conditions or []:
        column = cond["column"]
        if column not in table.columns:
            problems.append(
                Problem(
                    f"column {column!r} of model.tasks.{task}.when not found"
                    f"{did_you_mean(column, table.columns)}",
                    "",
                    table.file,
                )
            )
            continue
        values = normed(table.columns[column])
        op = next(k for k in cond if k != "column")
        arg = cond[op]
        if op == "present":
            hit = [(v is not None) == bool(arg) for v in values]
        elif op in ("greater_than", "less_than"):
            bad = [i for i, v in enumerate(values) if v is not None and not isinstance(v, float)]
            if bad:
                cells = table.columns[column]
                bad_cells(
                    problems,
                    table,
                    bad,
                    lambda i, op=op, cells=cells: (
                        f"model.tasks.{task}.when compares with {op}, but the column holds "
                        f"{cells[i]!r}; expected numbers"
                    ),
                    f"column {column!r}",
                )
                continue
            hit = [v is not None and (v > arg if op == "greater_than" else v < arg) for v in values]
        elif op in ("in", "not_in"):
            wanted = {norm(a) for a in arg}
            hit = [v is not None and ((v in wanted) == (op == "in")) for v in values]
        else:
            target = norm(arg)
            hit = [v is not None and ((v == target) == (op == "equals")) for v in values]
        keep &= np.asarray(hit, bool)
    return keep


def preview(values: list, n: int = 6) -> str:
    """The first ``n`` values for a message, and how many there are in all."""
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


def is_fraction(value: Any) -> bool:
    """Whether ``data.validation`` / ``data.test`` is a fraction of the training source (not a file)."""
    return isinstance(value, float | int) and not isinstance(value, bool)


def vocab_key(value: Any) -> str:
    """The vocabulary key of a category: its label as a string (``2.0`` -> ``"2"``)."""
    return str(label_key(value))


def distinct(values: np.ndarray, counts: bool = False):
    """The distinct values of an array (with their counts): numpy for numbers, a Counter for objects."""
    if values.dtype.kind in "biuf":
        uniq, n = np.unique(values, return_counts=True)
        return list(zip(uniq, n.tolist(), strict=True)) if counts else list(uniq)
    c = Counter(values.tolist())
    return list(c.items()) if counts else list(c)


class Moments:
    """Count, mean and M2 of finite values, merged chunk by chunk (Chan et al.)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        x = x[np.isfinite(x)]
        if not len(x):
            return
        n_b, mean_b = len(x), float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    def std(self) -> float:
        std = float(np.sqrt(self.m2 / self.n)) if self.n > 1 else 1.0
        return std if std > 1e-12 else 1.0
