"""Which rows go to train, validation and test: the in-memory splits and the hashed streaming splits,
side by side, over the same value rules (:mod:`mtlcli.data.values`). numpy only.

* **A column** (``data.split: {column, train, validation, test}``): every row goes where its value is
  listed (:func:`by_column`); in memory and streamed alike.
* **Fractions in memory** (``data.validation: 0.2``): a seeded permutation of the rows, or of the
  ``data.group_by`` groups (:func:`by_fraction`), so a group never straddles two splits; exact sizes.
* **Fractions streamed**: ``(seed, row number)`` hashed into [0, 1) (splitmix64, :func:`uniform`); a
  row goes to ``test`` below the test fraction, to ``validation`` below the sum, else to ``train``.
  Every pass and every chunk size assigns the same rows; sizes are close to (not exactly) the fractions,
  because a streamed pass cannot permute rows it has not read yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mtlcli.data.sources import Chunk, Table
from mtlcli.data.values import label_key, norm, normed
from mtlcli.errors import DataError, Problem

SPLITS = ("train", "validation", "test")


# ------------------------------------------------------------------------------------------------
# A split column


def unassigned_split_value(spec: dict, table: Table, row: int) -> DataError:
    """Row ``row``'s value of the split column is listed under none of train/validation/test."""
    column = spec["column"]
    listed = ", ".join(repr(v) for v in spec["train"])
    return DataError(
        problems=[
            Problem(
                f"value {label_key(table.columns[column][row])!r} is in none of data.split.train/validation/test "
                f"(train: [{listed}], ...); list it in one of them",
                f"column {column!r}",
                *table.where(row),
            )
        ]
    )


def by_column(spec: dict[str, Any], table: Table) -> dict[str, np.ndarray]:
    """The rows of each split named in ``spec`` (``data.split``), in table order; a value listed under
    none of them is an error naming its row."""
    owner = {norm(v): key for key in SPLITS for v in spec.get(key) or []}
    keys = [owner.get(v) for v in normed(table.columns[spec["column"]])]
    if None in keys:
        raise unassigned_split_value(spec, table, keys.index(None))
    arr = np.array(keys, dtype=object)
    return {key: np.flatnonzero(arr == key) for key in SPLITS if spec.get(key) is not None}


def by_column_in_memory(spec: dict[str, Any], table: Table) -> dict[str, np.ndarray]:
    """:func:`by_column` of a whole table; a named split that gets no row is an error."""
    out = by_column(spec, table)
    for key, rows in out.items():
        if not len(rows):
            raise DataError(
                problems=[
                    Problem(
                        f"the {key} split is empty: no row has a value in data.split.{key} {spec[key]!r}",
                        f"column {spec['column']!r}",
                        table.file,
                    )
                ]
            )
    return {key: rows.astype(np.int64) for key, rows in out.items()}


# ------------------------------------------------------------------------------------------------
# Fractions in memory (seeded permutations)


def group_keys(table: Table, column: str) -> list[Any]:
    """The ``data.group_by`` key of every row; a missing key is an error naming its row."""
    keys = normed(table.columns[column])
    for i, k in enumerate(keys):
        if k is None:
            raise DataError(
                problems=[
                    Problem(
                        "missing group key; every row needs a value in the data.group_by column",
                        f"column {column!r}",
                        *table.where(i),
                    )
                ]
            )
    return keys


def _empty_fraction(key: str, value: float, n: int, table: Table) -> DataError:
    return DataError(problems=[Problem(f"data.{key}: {value} of {n} rows is an empty split", "", table.file)])


def _by_groups(table: Table, group_by: str, wanted, rng) -> dict[str, np.ndarray]:
    """Whole groups, in a seeded order, fill each split up to its share of the rows."""
    n = table.n_rows
    groups: dict[Any, list[int]] = {}
    for i, k in enumerate(group_keys(table, group_by)):
        groups.setdefault(k, []).append(i)
    names = list(groups)
    order = [names[j] for j in rng.permutation(len(names))]
    pos, indices = 0, {}
    for key, value in wanted:
        count = int(round(value * n))
        rows: list[int] = []
        while pos < len(order) and len(rows) < count:
            rows.extend(groups[order[pos]])
            pos += 1
        if count < 1 or not rows:
            raise _empty_fraction(key, value, n, table)
        indices[key] = np.sort(np.array(rows, dtype=np.int64))
    rest = [i for name in order[pos:] for i in groups[name]]
    indices["train"] = np.sort(np.array(rest, dtype=np.int64))
    return indices


def by_fraction(fractions: dict[str, float], table: Table, seed: int, group_by: str | None = None):
    """Row indices per split: ``fractions`` (test, validation) of a seeded permutation of the rows (or
    of the groups of ``group_by``); the rest is ``train``, which must not be empty."""
    rng = np.random.default_rng(seed)
    n = table.n_rows
    wanted = [(key, fractions[key]) for key in ("test", "validation") if key in fractions]
    if group_by:
        indices = _by_groups(table, group_by, wanted, rng)
    else:
        order, start, indices = rng.permutation(n), 0, {}
        for key, value in wanted:
            count = int(round(value * n))
            if count < 1:
                raise _empty_fraction(key, value, n, table)
            indices[key] = np.sort(order[start : start + count])
            start += count
        indices["train"] = np.sort(order[start:])
    if len(indices["train"]) == 0:
        raise DataError(
            problems=[
                Problem("no rows are left for training after the validation/test split", "", table.file)
            ]
        )
    return indices


def straddling(column: str, tables: dict[str, Table]) -> list[Problem]:
    """Rows sharing a group key must stay in one split (checked when splits come from files or a column)."""
    first_seen: dict[Any, tuple[str, int]] = {}
    for key, table in tables.items():
        if column not in table.columns:
            continue
        for i, k in enumerate(group_keys(table, column)):
            if k in first_seen and first_seen[k][0] != key:
                other_key, other_row = first_seen[k]
                file, line = tables[other_key].where(other_row)
                at = f"{file}:{line}" if line else file
                return [
                    Problem(
                        f"group {label_key(table.columns[column][i])!r} is in both the {other_key} split ({at}) and the "
                        f"{key} split; rows sharing data.group_by must stay in one split",
                        f"column {column!r}",
                        *table.where(i),
                    )
                ]
            first_seen.setdefault(k, (key, i))
    return []


# ------------------------------------------------------------------------------------------------
# Streamed: hashed row numbers


def _mix(seed: int) -> int:
    z = (int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def uniform(seed: int, rows: np.ndarray) -> np.ndarray:
    """A number in [0, 1) per row number: splitmix64 of (row + a hash of the seed)."""
    x = np.asarray(rows, dtype=np.uint64) + np.uint64(_mix(seed))
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass
class SplitPlan:
    """How one streamed source's rows are assigned to splits, chunk by chunk: ``fractions`` (hashed),
    ``column`` (data.split) or, when neither, every row belongs to ``only``."""

    source: str
    only: str | None = None
    fractions: dict[str, float] = field(default_factory=dict)  # test, validation
    seed: int = 0
    column: dict[str, Any] | None = None

    def assign(self, chunk: Chunk) -> dict[str, np.ndarray]:
        """The chunk's rows (indices into it) of each split."""
        n = chunk.table.n_rows
        if self.only is not None:
            return {self.only: np.arange(n)}
        if self.column is not None:
            return by_column(self.column, chunk.table)
        u = uniform(self.seed, chunk.start + np.arange(n))
        out, low = {}, 0.0
        for key in ("test", "validation"):
            if key in self.fractions:
                high = low + self.fractions[key]
                out[key] = np.flatnonzero((u >= low) & (u < high))
                low = high
        out["train"] = np.flatnonzero(u >= low)
        return out
