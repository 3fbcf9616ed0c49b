"""Recipe data -> numeric arrays: reading, splitting, preprocessing. numpy + pandas, no TensorFlow.

Preprocessing is fitted on the training split only (means, standard deviations, vocabularies) and
kept as plain JSON-able data (:class:`Preprocessing`) that is saved inside the model, so a saved run
can evaluate new raw data without the recipe. Reading lives in :mod:`mtlcli.data.sources`; image files are
only checked here (existence and header bytes) and decoded by the tf.data pipeline at training time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.data import sources
from mtlcli.data.sources import Table
from mtlcli.data.values import as_float, class_ids, label_key, labels, missing, normed, preview, when_mask
from mtlcli.errors import DataError, Problem, did_you_mean
from mtlcli.recipe import LoadedRecipe, Recipe
from mtlcli.recipe.data_checks import target_columns, when_conditions

OOV = "[OOV]"


def weight_key(task: str) -> str:
    """The key of a task's per-row loss weights in the mask dict fed to the model."""
    return f"{task}.weight"


def embedding_dim(rows: int) -> int:
    """Default vector size of a categorical embedding with ``rows`` rows (the training vocabulary plus
    the unknown bucket): ``min(50, ceil(1.6 * rows ** 0.56))`` (the fast.ai rule of thumb)."""
    return int(min(50, math.ceil(1.6 * rows**0.56)))


# ------------------------------------------------------------------------------------------------
# Preprocessing


@dataclass
class InputStats:
    kind: str
    column: str
    mean: float = 0.0
    std: float = 1.0
    vocabulary: list[str] = field(default_factory=list)
    shape: list[int] | None = None
    scale: float = 1.0
    missing: str = "mean"  # numeric: mean | zero | error
    flag: bool = False  # numeric: an extra 0/1 "was missing" feature
    files: bool = False  # image: the column holds file paths (decoded by tf.data)
    encoding: str = "one_hot"  # categorical: one_hot (0/1 columns) | embedding (one int32 id per row)
    dim: int | None = None  # categorical embedding: the vector size (resolved by fit)

    @property
    def width(self) -> int:
        if self.kind == "categorical":
            return 1 if self.encoding == "embedding" else len(self.vocabulary) + 1
        if self.kind == "numeric":
            return 2 if self.flag else 1
        return int(np.prod(self.shape or [1]))


@dataclass
class TargetStats:
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
        if self.type in ("classification", "multilabel"):
            return len(self.classes)
        if self.type == "regression":
            return len(self.columns)
        return 1


@dataclass
class Preprocessing:
    """Everything needed to turn raw columns into model arrays (saved inside the model)."""

    inputs: dict[str, InputStats]
    targets: dict[str, TargetStats]

    def to_dict(self) -> dict:
        return {
            "inputs": {k: asdict(v) for k, v in self.inputs.items()},
            "targets": {k: asdict(v) for k, v in self.targets.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            {k: InputStats(**v) for k, v in data["inputs"].items()},
            {k: TargetStats(**v) for k, v in data["targets"].items()},
        )

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            k: tuple(s.shape) if s.kind in ("image", "array") else (s.width,) for k, s in self.inputs.items()
        }


def fit(recipe: Recipe, train: Table, loaded: LoadedRecipe | None = None) -> Preprocessing:
    """Fit input statistics and target encodings on the training split."""
    problems: list[Problem] = []
    inputs: dict[str, InputStats] = {}
    for name, spec in recipe.data.inputs.items():
        column = spec.column or name
        values = train.columns[column]
        if spec.kind == "numeric":
            if values.ndim != 1:
                problems.append(
                    Problem(
                        f"a numeric input must be one value per row, received shape {values.shape[1:]}",
                        f"column {column!r}",
                        train.file,
                    )
                )
                continue
            x = as_float(values, train, column, problems)
            finite = x[np.isfinite(x)]
            mean = float(finite.mean()) if len(finite) else 0.0
            std = float(finite.std()) if len(finite) > 1 else 1.0
            inputs[name] = InputStats(
                "numeric",
                column,
                mean=mean,
                std=std if std > 1e-12 else 1.0,
                missing=spec.missing or "mean",
                flag=bool(spec.flag),
            )
        elif spec.kind == "categorical":
            present, raw = labels(values)
            vocab = sorted({str(label_key(v)) for v, p in zip(raw, present, strict=True) if p})
            encoding = spec.encoding or "one_hot"
            dim = (spec.dim or embedding_dim(len(vocab) + 1)) if encoding == "embedding" else None
            inputs[name] = InputStats("categorical", column, vocabulary=vocab, encoding=encoding, dim=dim)
        elif spec.kind == "image" and values.dtype == object:  # a column of image file paths
            shape = list(spec.shape or [])
            if len(shape) != 3:
                problems.append(
                    Problem(
                        f"image files need shape [height, width, channels], received {shape}",
                        f"column {column!r}",
                        train.file,
                    )
                )
                continue
            inputs[name] = InputStats("image", column, shape=shape, scale=1.0 / 255.0, files=True)
        else:
            if values.dtype == object or values.dtype.kind not in "biuf":
                problems.append(
                    Problem(
                        f"an {spec.kind} input needs numeric arrays, received {values.dtype} values",
                        f"column {column!r}",
                        train.file,
                    )
                )
                continue
            shape = list(spec.shape) if spec.shape else list(values.shape[1:]) or [1]
            if list(values.shape[1:]) != shape and values[0].size != int(np.prod(shape)):
                problems.append(
                    Problem(
                        f"expected {'images' if spec.kind == 'image' else 'arrays'} of shape {shape}, "
                        f"received {list(values.shape[1:])}",
                        f"array {column!r}",
                        train.file,
                    )
                )
                continue
            scale = 1.0
            if spec.kind == "image":
                vmax = float(np.max(values, where=np.isfinite(values), initial=0.0)) if values.size else 1.0
                scale = 1.0 / 255.0 if values.dtype == np.uint8 or vmax > 1.0 else 1.0
            inputs[name] = InputStats(spec.kind, column, shape=shape, scale=scale)
    targets: dict[str, TargetStats] = {}
    for task, spec in recipe.model.tasks.items():
        st = _fit_target(recipe, task, spec, train, problems, loaded)
        if st is not None:
            targets[task] = st
    if problems:
        raise DataError(problems=problems)
    return Preprocessing(inputs, targets)


def _fit_target(recipe, task, spec, train: Table, problems, loaded) -> TargetStats | None:
    cols = target_columns(spec, task)
    column: str | list[str] = cols if isinstance(spec.target, list) else cols[0]
    where = f"column {cols[0]!r}" if len(cols) == 1 else f"columns {', '.join(map(repr, cols))}"
    when = when_conditions(spec.when) or None
    n_before = len(problems)
    active = when_mask(when, train, task, problems)
    if len(problems) > n_before:
        return None
    if spec.type == "regression":
        y = np.stack([as_float(train.columns[c], train, c, problems) for c in cols], axis=1)
        if len(problems) > n_before:
            return None
        for j, c in enumerate(cols):
            if np.isinf(y[:, j]).any():
                row = int(np.flatnonzero(np.isinf(y[:, j]))[0])
                file, line = train.where(row)
                problems.append(Problem("infinite value in a regression target", f"column {c!r}", file, line))
        rows = active & np.isfinite(y).all(axis=1)
        if not rows.any():
            problems.append(Problem(f"task {task!r} has no labels in the training split", where, train.file))
            return None
        means = [float(y[rows, j].mean()) for j in range(len(cols))]
        stds = [float(y[rows, j].std()) if rows.sum() > 1 else 1.0 for j in range(len(cols))]
        stds = [s if s > 1e-12 else 1.0 for s in stds]
        _check_units(spec, task, len(cols), f"{len(cols)} target column(s)", where, train, problems)
        if isinstance(column, list):
            return TargetStats("regression", column, mean=means, std=stds, when=when)
        return TargetStats("regression", column, mean=means[0], std=stds[0], when=when)
    if spec.type == "multilabel":
        if spec.separator is not None:
            present, raw = labels(train.columns[cols[0]])
            rows = present & active
            tokens = sorted(
                {t.strip() for v, r in zip(raw, rows, strict=True) if r for t in str(v).split(spec.separator)}
                - {""}
            )
            if not tokens:
                problems.append(
                    Problem(f"task {task!r} has no labels in the training split", where, train.file)
                )
                return None
            classes: list[Any] = tokens
        else:
            classes = list(cols)
            for c in cols:
                if not binary_column(train, c, problems):
                    return None
            present = np.ones(train.n_rows, bool)
            for c in cols:
                present &= labels(train.columns[c])[0]
            if not (present & active).any():
                problems.append(
                    Problem(f"task {task!r} has no labels in the training split", where, train.file)
                )
                return None
        _check_units(spec, task, len(classes), f"{len(classes)} labels", where, train, problems)
        return TargetStats("multilabel", column, classes=classes, separator=spec.separator, when=when)

    values = train.columns[cols[0]]
    present, raw = labels(values)
    present = present & active
    if not present.any():
        problems.append(Problem(f"task {task!r} has no labels in the training split", where, train.file))
        return None
    classes = sorted(
        {label_key(v) for v, p in zip(raw, present, strict=True) if p}, key=lambda c: (str(type(c)), c)
    )
    if spec.classes is not None and all(isinstance(c, int) for c in classes):
        bad = [c for c in classes if not 0 <= c < spec.classes]
        if bad:
            row = int(
                np.flatnonzero([p and label_key(v) == bad[0] for v, p in zip(raw, present, strict=True)])[0]
            )
            file, line = train.where(row)
            problems.append(
                Problem(
                    f"label {bad[0]!r} is outside the {spec.classes} classes declared by "
                    f"model.tasks.{task}.classes (expected 0..{spec.classes - 1})",
                    where,
                    file,
                    line,
                )
            )
            return None
        classes = list(range(spec.classes))
    elif spec.classes is not None and len(classes) != spec.classes:
        problems.append(
            Problem(
                f"found {len(classes)} distinct labels but model.tasks.{task}.classes is "
                f"{spec.classes} (labels: {preview(classes)}); with labels that are not the integers "
                f"0..{spec.classes - 1}, leave classes out",
                where,
                train.file,
            )
        )
        return None
    if spec.type == "binary":
        if len(classes) > 2:
            problems.append(
                Problem(
                    f"a binary task needs 2 distinct labels, found {len(classes)}: "
                    f"{preview(classes)}; use type: classification",
                    where,
                    train.file,
                )
            )
            return None
        if set(classes) <= {0, 1}:  # 0/1 (or False/True) labels keep their meaning
            classes = [0, 1]
        elif len(classes) == 1:
            problems.append(
                Problem(
                    f"a binary task needs 2 distinct labels, found only {classes[0]!r}", where, train.file
                )
            )
            return None
    elif len(classes) < 2:
        problems.append(
            Problem(
                f"a classification task needs at least 2 classes, found {preview(classes)}",
                where,
                train.file,
            )
        )
        return None
    expected = len(classes) if spec.type == "classification" else 1
    _check_units(spec, task, expected, f"{len(classes)} classes ({preview(classes)})", where, train, problems)
    weights = _class_weights(spec, task, classes, raw, present, loaded, problems)
    return TargetStats(spec.type, column, classes=classes, when=when, class_weights=weights)


def binary_column(table: Table, column: str, problems: list[Problem]) -> bool:
    """A multilabel column must hold 0/1 (or true/false) values."""
    for i, v in enumerate(normed(table.columns[column])):
        if v is not None and v not in (0.0, 1.0):
            file, line = table.where(i)
            problems.append(
                Problem(
                    f"a multilabel target column holds 0/1 values, received {label_key(table.columns[column][i])!r}",
                    f"column {column!r}",
                    file,
                    line,
                )
            )
            return False
    return True


def _check_units(spec, task, expected, what, where, train, problems) -> None:
    out_units = _output_units(spec)
    if out_units is not None and out_units != expected:
        problems.append(
            Problem(
                f"the output layer of task {task!r} has {out_units} units but the data has "
                f"{what}; set units: {expected} or drop model.tasks.{task}.output",
                where,
                train.file,
            )
        )


def _class_weights(spec, task, classes, raw, present, loaded, problems) -> list[float] | None:
    cw = spec.class_weight
    if cw is None:
        return None
    if cw == "balanced":
        index = {c: i for i, c in enumerate(classes)}
        counts = np.zeros(len(classes))
        for v, p in zip(raw, present, strict=True):
            if p and label_key(v) in index:
                counts[index[label_key(v)]] += 1
        total = counts.sum()
        return [float(total / (len(classes) * n)) if n else 1.0 for n in counts]
    by_name = {str(c): i for i, c in enumerate(classes)}
    out = [1.0] * len(classes)
    for label, weight in cw.items():
        key = str(label_key(label))
        if isinstance(label, bool) and set(classes) == {0, 1}:
            key = str(int(label))
        if key not in by_name:
            path = ("model", "tasks", task, "class_weight", label)
            message = (
                f"class_weight names label {label!r}, which is not one of the task's classes "
                f"({preview(classes)}){did_you_mean(key, by_name)}"
            )
            problems.append(
                loaded.problem(message, path)
                if loaded is not None
                else Problem(message, ".".join(map(str, path)))
            )
            continue
        out[by_name[key]] = float(weight)
    return out


def _output_units(spec) -> int | None:
    if spec.output and len(spec.output) == 1:
        ((_, kwargs),) = spec.output.items()
        if isinstance(kwargs, dict) and isinstance(kwargs.get("units"), int):
            return kwargs["units"]
    return None


@dataclass
class Arrays:
    """Model-ready arrays for one split."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]  # 1.0 where the task's label is present (and its when: holds)
    n: int
    weight: dict[str, np.ndarray] = field(default_factory=dict)  # per-row loss weights (class_weight)
    images: dict[str, dict] = field(default_factory=dict)  # inputs holding image file paths: shape, scale

    def support(self) -> dict[str, int]:
        return {t: int(m.sum()) for t, m in self.mask.items()}

    def feed(self) -> tuple[dict, dict, dict]:
        """The ``(x, y, mask)`` dicts the model consumes; class weights ride in the mask dict."""
        mask = dict(self.mask)
        mask.update({weight_key(t): w for t, w in self.weight.items()})
        return self.x, self.y, mask


def transform(
    prep: Preprocessing, table: Table, tasks: list[str] | None = None, weights: bool = False
) -> Arrays:
    """Apply fitted preprocessing to a table. Labels unseen in training are errors. ``weights`` adds
    the class weights of tasks that have them (the training split)."""
    problems: list[Problem] = []
    x: dict[str, np.ndarray] = {}
    images: dict[str, dict] = {}
    for name, st in prep.inputs.items():
        if st.column not in table.columns:
            problems.append(
                Problem(
                    f"input column {st.column!r} not found{did_you_mean(st.column, table.columns)}",
                    "",
                    table.file,
                )
            )
            continue
        values = table.columns[st.column]
        if st.kind == "numeric":
            x[name] = _numeric(st, values, table, problems)
        elif st.kind == "categorical":
            index = {w: i + 1 for i, w in enumerate(st.vocabulary)}
            present, raw = labels(values)
            ids = np.array(
                [index.get(str(label_key(v)), 0) if p else 0 for v, p in zip(raw, present, strict=True)],
                dtype=np.int64,
            )
            if st.encoding == "embedding":  # ids for the model's embedding table: 0 = unknown
                x[name] = ids.astype(np.int32)[:, None]
            else:
                x[name] = np.eye(len(st.vocabulary) + 1, dtype=np.float32)[ids]
        elif st.files:
            x[name] = _image_files(values, table, st.column, problems)
            images[name] = {"shape": list(st.shape), "scale": st.scale}
        else:
            if values.dtype == object or values.dtype.kind not in "biuf":
                problems.append(
                    Problem(
                        f"expected numeric arrays, received {values.dtype} values",
                        f"array {st.column!r}",
                        table.file,
                    )
                )
                continue
            arr = np.asarray(values, dtype=np.float32).reshape((len(values), *st.shape))
            bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                problems.append(
                    Problem(
                        f"NaN or infinite value in sample {row} (of {int(bad.sum())} such samples); "
                        f"{st.kind} inputs allow none",
                        f"array {st.column!r}",
                        *table.where(row),
                    )
                )
                continue
            x[name] = arr * np.float32(st.scale)
    y: dict[str, np.ndarray] = {}
    mask: dict[str, np.ndarray] = {}
    sample_weight: dict[str, np.ndarray] = {}
    for task, st in prep.targets.items():
        if tasks is not None and task not in tasks:
            continue
        lacking = [c for c in st.columns if c not in table.columns]
        if lacking:
            problems.append(
                Problem(
                    f"target column {lacking[0]!r} of task {task!r} not found"
                    f"{did_you_mean(lacking[0], table.columns)}",
                    "",
                    table.file,
                )
            )
            continue
        n_before = len(problems)
        active = when_mask(st.when, table, task, problems)
        if len(problems) > n_before:
            continue
        if st.type == "regression":
            v = np.stack([as_float(table.columns[c], table, c, problems) for c in st.columns], axis=1)
            means, stds = np.atleast_1d(st.mean), np.atleast_1d(st.std)
            for j, c in enumerate(st.columns):
                if np.isinf(v[:, j]).any():
                    row = int(np.flatnonzero(np.isinf(v[:, j]))[0])
                    problems.append(
                        Problem("infinite value in a regression target", f"column {c!r}", *table.where(row))
                    )
            ok = np.isfinite(v).all(axis=1)
            y[task] = np.where(np.isfinite(v), (v - means) / stds, 0.0).astype(np.float32)
            mask[task] = (ok & active).astype(np.float32)
            continue
        if st.type == "multilabel":
            y[task], present = _multilabel(st, table, task, problems)
            mask[task] = (present & active).astype(np.float32)
            continue
        values = table.columns[st.columns[0]]
        present, raw = labels(values)
        present = present & active
        ids, bad = class_ids(raw, present, st.classes)
        if bad is not None:
            file, line = table.where(bad)
            problems.append(
                Problem(
                    f"label {label_key(raw[bad])!r} is not one of the task's classes ({preview(st.classes)})",
                    f"column {st.columns[0]!r}",
                    file,
                    line,
                )
            )
        y[task] = ids if st.type == "classification" else ids.astype(np.float32)[:, None]
        mask[task] = present.astype(np.float32)
        if weights and st.class_weights is not None:
            sample_weight[task] = (np.asarray(st.class_weights, np.float32)[ids] * mask[task]).astype(
                np.float32
            )
    if problems:
        raise DataError(problems=problems)
    return Arrays(x, y, mask, table.n_rows, sample_weight, images)


def _numeric(st: InputStats, values: np.ndarray, table: Table, problems: list[Problem]) -> np.ndarray:
    v = as_float(values, table, st.column, problems)
    if np.isinf(v).any():
        row = int(np.flatnonzero(np.isinf(v))[0])
        problems.append(Problem("infinite value", f"column {st.column!r}", *table.where(row)))
    absent = np.isnan(v)
    if st.missing == "error" and absent.any():
        row = int(np.flatnonzero(absent)[0])
        problems.append(
            Problem(
                f"missing value ({int(absent.sum())} in all); the input has missing: error "
                f"(use missing: mean or zero to impute)",
                f"column {st.column!r}",
                *table.where(row),
            )
        )
    fill = 0.0 if st.missing != "zero" else (0.0 - st.mean) / st.std
    out = np.where(np.isfinite(v), (v - st.mean) / st.std, fill).astype(np.float32)[:, None]
    if st.flag:
        out = np.concatenate([out, absent.astype(np.float32)[:, None]], axis=1)
    return out


def _image_files(values: np.ndarray, table: Table, column: str, problems: list[Problem]) -> np.ndarray:
    """Absolute paths of a column of image files (relative paths are relative to the data file);
    each must exist and start like a PNG, JPEG, GIF or BMP file."""
    out = []
    base_cache: dict[str, Path] = {}
    for i, v in enumerate(values):
        if missing(v):
            problems.append(Problem("missing image path", f"column {column!r}", *table.where(i)))
            return np.array([], dtype=str)
        p = Path(str(v)).expanduser()
        if not p.is_absolute():
            src = table.file_of(i)
            base = base_cache.setdefault(src, Path(src).parent if not Path(src).is_dir() else Path(src))
            p = base / p
        if sources.image_format(p) is None:
            reason = "image file not found" if not p.exists() else "not a PNG, JPEG, GIF or BMP image"
            problems.append(Problem(f"{reason}: {p}", f"column {column!r}", *table.where(i)))
            return np.array([], dtype=str)
        out.append(str(p))
    return np.array(out, dtype=str)


def _multilabel(st: TargetStats, table: Table, task: str, problems: list[Problem]):
    n = table.n_rows
    if st.separator is None:
        y = np.zeros((n, len(st.classes)), np.float32)
        present = np.ones(n, bool)
        for j, c in enumerate(st.columns):
            if not binary_column(table, c, problems):
                return y, np.zeros(n, bool)
            vals = normed(table.columns[c])
            present &= np.array([v is not None for v in vals], bool)
            y[:, j] = [v or 0.0 for v in vals]
        return y, present
    index = {c: j for j, c in enumerate(st.classes)}
    y = np.zeros((n, len(st.classes)), np.float32)
    present, raw = labels(table.columns[st.columns[0]])
    for i, (v, p) in enumerate(zip(raw, present, strict=True)):
        if not p:
            continue
        for token in str(v).split(st.separator):
            token = token.strip()
            if not token:
                continue
            if token not in index:
                problems.append(
                    Problem(
                        f"label {token!r} is not one of the task's labels ({preview(st.classes)})",
                        f"column {st.columns[0]!r}",
                        *table.where(i),
                    )
                )
                return y, present
            y[i, index[token]] = 1.0
    return y, present


# ------------------------------------------------------------------------------------------------
# The whole data step for a recipe


@dataclass
class Prepared:
    prep: Preprocessing
    splits: dict[str, Arrays]
    info: dict[str, Any]  # what data.json records: files, digests, sizes, split indices, coverage
