"""One class per task type: regression, multilabel, classification (binary included).

Each type, the same in memory (one chunk) and streamed (chunk by chunk):

* ``add(table, active, problems, train, keeper)`` -- check one chunk of a split (numbers, 0/1 columns)
  and accumulate the training statistics (moments of a regression target, label counts for
  ``class_weight: balanced``); it hands the rows an error message may have to name (the first row of
  every distinct label) to ``keeper``, and returns the rows that carry a label (coverage);
* ``fit(table, active, problems)`` -- the :class:`TargetStats`, from the accumulated statistics and a
  table that holds at least one row of every distinct label: the whole training split in memory, the
  kept rows when streamed (so classes, vocabularies and their errors are the same in both modes);
* ``encode(st, table, active, problems)`` -- labels to model targets (class ids, standardised values,
  0/1 label vectors), the mask of rows that count, and per-row class weights.

Targets stay numpy: they are not needed to serve a model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mtlcli.data.sources import Table
from mtlcli.data.values import (
    Moments,
    as_float,
    bad_cells,
    class_ids_and_unknown,
    distinct,
    label_key,
    labels,
    normed,
    preview,
)
from mtlcli.errors import Problem, did_you_mean
from mtlcli.recipe.data_checks import target_columns, when_conditions


@dataclass
class TargetStats:
    """What the model keeps of one task's target (saved inside model.keras; the field names are a file
    format)."""

    type: str
    column: str | list[str]
    classes: list[Any] = field(default_factory=list)
    mean: float | list[float] = 0.0
    std: float | list[float] = 1.0
    separator: str | None = None  # multilabel: labels joined in one column
    when: list[dict] | None = None  # rows where the task counts
    class_weights: list[float] | None = None  # per class, training loss only

    @property
    def columns(self) -> list[str]:
        return list(self.column) if isinstance(self.column, list) else [self.column]

    @property
    def units(self) -> int:
        """Outputs of the task's head."""
        if self.type in ("classification", "multilabel"):
            return len(self.classes)
        if self.type == "regression":
            return len(self.columns)
        return 1


class NoKeeper:
    """In memory every row is at hand: nothing needs keeping."""

    active = False

    def keep(self, table: Table, i: int) -> None:
        pass

    def seen(self, what: str) -> set:
        return set()

    def new_keys(self, what: str, table: Table, raw: np.ndarray, rows: np.ndarray, key) -> None:
        pass


def binary_column(table: Table, column: str, problems: list[Problem]) -> bool:
    """A multilabel column must hold 0/1 (or true/false) values (every other cell is reported)."""
    cells = table.columns[column]
    bad = [i for i, v in enumerate(normed(cells)) if v is not None and v not in (0.0, 1.0)]
    if bad:
        bad_cells(
            problems,
            table,
            bad,
            lambda i: f"a multilabel target column holds 0/1 values, received {label_key(cells[i])!r}",
            f"column {column!r}",
        )
    return not bad


def infinite(y: np.ndarray, table: Table, columns: list[str], problems: list[Problem]) -> None:
    """Every infinite value of a regression target."""
    for j, c in enumerate(columns):
        rows = np.flatnonzero(np.isinf(y[:, j]))
        if len(rows):
            bad_cells(
                problems, table, rows, lambda i: "infinite value in a regression target", f"column {c!r}"
            )


def _output_units(spec) -> int | None:
    if spec.output and len(spec.output) == 1:
        ((_, kwargs),) = spec.output.items()
        if isinstance(kwargs, dict) and isinstance(kwargs.get("units"), int):
            return kwargs["units"]
    return None


class Target:
    """What every task type shares: its columns, its ``when:`` rows, and the messages about them."""

    def __init__(self, task: str, spec, loaded=None) -> None:
        self.task, self.spec, self.loaded = task, spec, loaded
        self.cols = target_columns(spec, task)
        self.column: str | list[str] = self.cols if isinstance(spec.target, list) else self.cols[0]
        cols = self.cols
        self.where = f"column {cols[0]!r}" if len(cols) == 1 else f"columns {', '.join(map(repr, cols))}"
        self.when = when_conditions(spec.when) or None
        self.labelled = False  # a training row with a label was kept (streaming)

    def no_labels(self, table: Table) -> Problem:
        return Problem(f"task {self.task!r} has no labels in the training split", self.where, table.file)

    def check_units(self, expected: int, what: str, table: Table, problems: list[Problem]) -> None:
        out_units = _output_units(self.spec)
        if out_units is not None and out_units != expected:
            problems.append(
                Problem(
                    f"the output layer of task {self.task!r} has {out_units} units but the data has "
                    f"{what}; set units: {expected} or drop model.tasks.{self.task}.output",
                    self.where,
                    table.file,
                )
            )

    def keep_labelled(self, train: bool, rows: np.ndarray, table: Table, keeper) -> None:
        """Keep the first labelled training row (the summary must show the task has labels)."""
        if train and rows.any() and not self.labelled:
            self.labelled = True
            keeper.keep(table, int(np.flatnonzero(rows)[0]))


class Regression(Target):
    """Standardised values (training mean and deviation per column); missing values are masked."""

    def __init__(self, task: str, spec, loaded=None) -> None:
        super().__init__(task, spec, loaded)
        self.moments = [Moments() for _ in self.cols]

    def add(self, table: Table, active, problems: list[Problem], train: bool, keeper) -> np.ndarray:
        y = np.stack([as_float(table.columns[c], table, c, problems) for c in self.cols], axis=1)
        infinite(y, table, self.cols, problems)
        rows = active & np.isfinite(y).all(axis=1)
        if train:
            for j, m in enumerate(self.moments):
                m.add(y[rows, j])
            self.keep_labelled(train, rows, table, keeper)
        return rows

    def fit(self, table: Table, active, problems: list[Problem]) -> TargetStats | None:
        if not self.moments[0].n:
            problems.append(self.no_labels(table))
            return None
        means = [m.mean for m in self.moments]
        stds = [m.std() for m in self.moments]
        n = len(self.cols)
        self.check_units(n, f"{n} target column(s)", table, problems)
        if isinstance(self.column, list):
            return TargetStats("regression", self.column, mean=means, std=stds, when=self.when)
        return TargetStats("regression", self.column, mean=means[0], std=stds[0], when=self.when)

    @staticmethod
    def encode(st: TargetStats, table: Table, active, problems: list[Problem]):
        v = np.stack([as_float(table.columns[c], table, c, problems) for c in st.columns], axis=1)
        means, stds = np.atleast_1d(st.mean), np.atleast_1d(st.std)
        infinite(v, table, st.columns, problems)
        ok = np.isfinite(v).all(axis=1)
        y = np.where(np.isfinite(v), (v - means) / stds, 0.0).astype(np.float32)
        return y, (ok & active).astype(np.float32), None


class Multilabel(Target):
    """A 0/1 vector per row: one 0/1 column per label, or labels joined by ``separator`` in one column."""

    def add(self, table: Table, active, problems: list[Problem], train: bool, keeper) -> np.ndarray:
        if self.spec.separator is None:
            present = np.ones(table.n_rows, bool)
            for c in self.cols:
                if not binary_column(table, c, problems):
                    break
            for c in self.cols:
                present &= labels(table.columns[c])[0]
            rows = present & active
            self.keep_labelled(train, rows, table, keeper)
            return rows
        present, raw = labels(table.columns[self.cols[0]])
        rows = present & active
        if keeper.active:  # streamed: keep a row for every label not seen before in this split
            seen = keeper.seen(f"tokens {self.task}")
            for i in np.flatnonzero(rows):
                tokens = {t.strip() for t in str(raw[i]).split(self.spec.separator)}
                if not tokens <= seen:
                    seen.update(tokens)
                    keeper.keep(table, int(i))
        return rows

    def fit(self, table: Table, active, problems: list[Problem]) -> TargetStats | None:
        spec, cols = self.spec, self.cols
        if spec.separator is not None:
            present, raw = labels(table.columns[cols[0]])
            rows = present & active
            tokens = sorted(
                {t.strip() for v, r in zip(raw, rows, strict=True) if r for t in str(v).split(spec.separator)}
                - {""}
            )
            if not tokens:
                problems.append(self.no_labels(table))
                return None
            classes: list[Any] = tokens
        else:
            classes = list(cols)
            present = np.ones(table.n_rows, bool)
            for c in cols:
                present &= labels(table.columns[c])[0]
            if not (present & active).any():
                problems.append(self.no_labels(table))
                return None
        self.check_units(len(classes), f"{len(classes)} labels", table, problems)
        return TargetStats(
            "multilabel", self.column, classes=classes, separator=spec.separator, when=self.when
        )

    @staticmethod
    def encode(st: TargetStats, table: Table, active, problems: list[Problem]):
        n = table.n_rows
        y = np.zeros((n, len(st.classes)), np.float32)
        if st.separator is None:
            present = np.ones(n, bool)
            for j, c in enumerate(st.columns):
                if not binary_column(table, c, problems):
                    return y, np.zeros(n, np.float32), None
                vals = normed(table.columns[c])
                present &= np.array([v is not None for v in vals], bool)
                y[:, j] = [v or 0.0 for v in vals]
            return y, (present & active).astype(np.float32), None
        index = {c: j for j, c in enumerate(st.classes)}
        present, raw = labels(table.columns[st.columns[0]])
        unknown: dict[int, str] = {}
        for i in np.flatnonzero(present):
            for token in str(raw[i]).split(st.separator):
                token = token.strip()
                if token and token not in index:
                    unknown.setdefault(int(i), token)
                elif token:
                    y[i, index[token]] = 1.0
        if unknown:
            bad_cells(
                problems,
                table,
                list(unknown),
                lambda i: f"label {unknown[i]!r} is not one of the task's labels ({preview(st.classes)})",
                f"column {st.columns[0]!r}",
            )
        return y, (present & active).astype(np.float32), None


class Classification(Target):
    """A class id per row (``binary``: a 0/1 value); the classes are the sorted training labels, or
    ``0..classes-1`` when the recipe declares them and the labels are integers."""

    def __init__(self, task: str, spec, loaded=None) -> None:
        super().__init__(task, spec, loaded)
        self.counts: Counter = Counter()

    def add(self, table: Table, active, problems: list[Problem], train: bool, keeper) -> np.ndarray:
        present, raw = labels(table.columns[self.cols[0]])
        rows = present & active
        keeper.new_keys(f"task {self.task}", table, raw, rows, label_key)
        if train and self.spec.class_weight == "balanced":
            for v, c in distinct(raw[rows], counts=True):
                self.counts[label_key(v)] += c
        return rows

    def fit(self, table: Table, active, problems: list[Problem]) -> TargetStats | None:
        present, raw = labels(table.columns[self.cols[0]])
        present = present & active
        if not present.any():
            problems.append(self.no_labels(table))
            return None
        classes = sorted(
            {label_key(v) for v, p in zip(raw, present, strict=True) if p}, key=lambda c: (str(type(c)), c)
        )
        classes = self._declared(classes, raw, present, table, problems)
        if classes is None or not self._enough(classes, table, problems):
            return None
        if self.spec.type == "binary" and set(classes) <= {0, 1}:  # 0/1 (or False/True) keep their meaning
            classes = [0, 1]
        expected = len(classes) if self.spec.type == "classification" else 1
        self.check_units(expected, f"{len(classes)} classes ({preview(classes)})", table, problems)
        weights = self._class_weights(classes, problems)
        return TargetStats(
            self.spec.type, self.column, classes=classes, when=self.when, class_weights=weights
        )

    def _declared(self, classes, raw, present, table: Table, problems: list[Problem]) -> list | None:
        """The classes once ``model.tasks.<task>.classes`` is taken into account (None: an error)."""
        n, task = self.spec.classes, self.task
        if n is not None and all(isinstance(c, int) for c in classes):
            bad = {c for c in classes if not 0 <= c < n}
            if bad:
                rows = [
                    i for i, (v, p) in enumerate(zip(raw, present, strict=True)) if p and label_key(v) in bad
                ]
                bad_cells(
                    problems,
                    table,
                    rows,
                    lambda i: (
                        f"label {label_key(raw[i])!r} is outside the {n} classes declared by "
                        f"model.tasks.{task}.classes (expected 0..{n - 1})"
                    ),
                    self.where,
                )
                return None
            return list(range(n))
        if n is not None and len(classes) != n:
            problems.append(
                Problem(
                    f"found {len(classes)} distinct labels but model.tasks.{task}.classes is "
                    f"{n} (labels: {preview(classes)}); with labels that are not the integers "
                    f"0..{n - 1}, leave classes out",
                    self.where,
                    table.file,
                )
            )
            return None
        return classes

    def _enough(self, classes: list, table: Table, problems: list[Problem]) -> bool:
        """A binary task has 2 labels (0/1 alone also count), a classification at least 2."""
        if self.spec.type == "binary":
            if len(classes) > 2:
                message = (
                    f"a binary task needs 2 distinct labels, found {len(classes)}: "
                    f"{preview(classes)}; use type: classification"
                )
            elif len(classes) == 1 and not set(classes) <= {0, 1}:
                message = f"a binary task needs 2 distinct labels, found only {classes[0]!r}"
            else:
                return True
        elif len(classes) < 2:
            message = f"a classification task needs at least 2 classes, found {preview(classes)}"
        else:
            return True
        problems.append(Problem(message, self.where, table.file))
        return False

    def _class_weights(self, classes: list, problems: list[Problem]) -> list[float] | None:
        cw = self.spec.class_weight
        if cw is None:
            return None
        if cw == "balanced":
            per = np.array([self.counts.get(c, 0) for c in classes], dtype=np.float64)
            total = per.sum()
            return [float(total / (len(classes) * c)) if c else 1.0 for c in per]
        by_name = {str(c): i for i, c in enumerate(classes)}
        out = [1.0] * len(classes)
        for label, weight in cw.items():
            key = str(label_key(label))
            if isinstance(label, bool) and set(classes) == {0, 1}:
                key = str(int(label))
            if key not in by_name:
                path = ("model", "tasks", self.task, "class_weight", label)
                message = (
                    f"class_weight names label {label!r}, which is not one of the task's classes "
                    f"({preview(classes)}){did_you_mean(key, by_name)}"
                )
                problems.append(
                    self.loaded.problem(message, path)
                    if self.loaded is not None
                    else Problem(message, ".".join(map(str, path)))
                )
                continue
            out[by_name[key]] = float(weight)
        return out

    @staticmethod
    def encode(st: TargetStats, table: Table, active, problems: list[Problem]):
        present, raw = labels(table.columns[st.columns[0]])
        present = present & active
        ids, bad = class_ids_and_unknown(raw, present, st.classes)
        if len(bad):
            bad_cells(
                problems,
                table,
                bad,
                lambda i: (
                    f"label {label_key(raw[i])!r} is not one of the task's classes ({preview(st.classes)})"
                ),
                f"column {st.columns[0]!r}",
            )
        mask = present.astype(np.float32)
        y = ids if st.type == "classification" else ids.astype(np.float32)[:, None]
        weight = None
        if st.class_weights is not None:
            weight = (np.asarray(st.class_weights, np.float32)[ids] * mask).astype(np.float32)
        return y, mask, weight


def target(task: str, spec, loaded=None) -> Target:
    """The accumulator of a recipe task."""
    if spec.type == "regression":
        return Regression(task, spec, loaded)
    if spec.type == "multilabel":
        return Multilabel(task, spec, loaded)
    return Classification(task, spec, loaded)


def encoder(st: TargetStats):
    """The ``encode`` of a fitted task."""
    if st.type == "regression":
        return Regression.encode
    if st.type == "multilabel":
        return Multilabel.encode
    return Classification.encode
