"""Recipe data -> numeric arrays: reading, splitting, preprocessing. numpy + pandas, no TensorFlow.

Preprocessing is fitted on the training split only (means, standard deviations, vocabularies) and
kept as plain JSON-able data (:class:`Preprocessing`) that is saved inside the model, so a saved run
can evaluate new raw data without the recipe.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.errors import DataError, Problem
from mtlcli.recipe import LoadedRecipe, Recipe

SUPPORTED = (".csv", ".csv.gz", ".npz")
OOV = "[OOV]"


# ------------------------------------------------------------------------------------------------
# Reading


@dataclass
class Table:
    """Columns of one data file. ``first_row`` is the file line of row 0 (2 for a CSV with a header)."""

    columns: dict[str, np.ndarray]
    n_rows: int
    file: str
    first_row: int = 2
    is_npz: bool = False
    row_ids: np.ndarray | None = None  # original row numbers after a split (None: 0..n-1)

    def where(self, row: int | None = None) -> tuple[str, int | None]:
        if row is None or self.is_npz:
            return self.file, None
        original = int(self.row_ids[row]) if self.row_ids is not None else int(row)
        return self.file, original + self.first_row

    def take(self, index: np.ndarray) -> Table:
        ids = self.row_ids[index] if self.row_ids is not None else np.asarray(index)
        return Table(
            {k: v[index] for k, v in self.columns.items()},
            len(index),
            self.file,
            self.first_row,
            self.is_npz,
            ids,
        )


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".csv.gz" if name.endswith(".csv.gz") else path.suffix.lower()


def read_table(path: Path, label: str = "") -> Table:
    """Read a CSV (optionally gzip-compressed) or NPZ file."""
    shown = str(path)
    if not path.exists():
        raise DataError(problems=[Problem(f"file not found{label}", "", shown)])
    if path.is_dir():
        raise DataError(
            problems=[Problem(f"is a directory, expected a {' or '.join(SUPPORTED)} file", "", shown)]
        )
    suffix = _suffix(path)
    if suffix not in SUPPORTED:
        raise DataError(
            problems=[
                Problem(f"unsupported file type {suffix!r}; expected {', '.join(SUPPORTED)}", "", shown)
            ]
        )
    if suffix == ".npz":
        return _read_npz(path)
    import pandas as pd

    try:
        frame = pd.read_csv(
            path,
            keep_default_na=True,
            na_values=["", "NA", "NaN", "nan", "null", "None"],
            skipinitialspace=True,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataError(
            problems=[Problem(f"cannot read as CSV: {str(exc).strip().splitlines()[0]}", "", shown)]
        ) from None
    columns = {}
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype.kind in "OUST" or str(frame[name].dtype) in ("string", "str"):
            values = np.array([None if _missing(v) else str(v) for v in values], dtype=object)
        columns[str(name)] = values
    return Table(columns, len(frame), shown)


def _read_npz(path: Path) -> Table:
    shown = str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            columns = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(problems=[Problem(f"cannot read as NPZ: {exc}", "", shown)]) from None
    if not columns:
        raise DataError(problems=[Problem("the NPZ file holds no arrays", "", shown)])
    lengths = {k: len(v) if v.ndim else 0 for k, v in columns.items()}
    if len(set(lengths.values())) != 1:
        detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise DataError(
            problems=[
                Problem(
                    f"arrays have different lengths ({detail}); expected one row per sample in every array",
                    "",
                    shown,
                )
            ]
        )
    return Table(columns, next(iter(lengths.values())), shown, is_npz=True)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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

    @property
    def width(self) -> int:
        if self.kind == "categorical":
            return len(self.vocabulary) + 1
        return 1


@dataclass
class TargetStats:
    type: str
    column: str
    classes: list[Any] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0

    @property
    def units(self) -> int:
        if self.type == "classification":
            return len(self.classes)
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
        return {k: tuple(s.shape) if s.kind == "image" else (s.width,) for k, s in self.inputs.items()}


def _as_float(values: np.ndarray, table: Table, column: str, problems: list[Problem]) -> np.ndarray:
    """Numeric view of a column; NaN where missing. Reports the first non-numeric value."""
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if _missing(v):
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            file, line = table.where(i)
            problems.append(Problem(f"expected a number, received {v!r}", f"column {column!r}", file, line))
            return out
    return out


def _labels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(present mask, values as a list of python scalars/strings)."""
    if values.dtype.kind == "f":
        present = ~np.isnan(values)
    elif values.dtype.kind in "biu":
        present = np.ones(len(values), bool)
    else:
        present = np.array([not _missing(v) for v in values], bool)
    return present, values


def _label_key(value: Any) -> Any:
    if isinstance(value, (np.floating, float)) and float(value).is_integer():
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value.item() if isinstance(value, np.generic) else value


def fit(recipe: Recipe, train: Table) -> Preprocessing:
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
            x = _as_float(values, train, column, problems)
            finite = x[np.isfinite(x)]
            if np.isinf(x).any():
                row = int(np.flatnonzero(np.isinf(x))[0])
                file, line = train.where(row)
                problems.append(Problem("infinite value", f"column {column!r}", file, line))
            mean = float(finite.mean()) if len(finite) else 0.0
            std = float(finite.std()) if len(finite) > 1 else 1.0
            inputs[name] = InputStats("numeric", column, mean=mean, std=std if std > 1e-12 else 1.0)
        elif spec.kind == "categorical":
            present, raw = _labels(values)
            vocab = sorted({str(_label_key(v)) for v, p in zip(raw, present, strict=True) if p})
            inputs[name] = InputStats("categorical", column, vocabulary=vocab)
        else:
            shape = list(spec.shape or [])
            if list(values.shape[1:]) != shape and values[0].size != int(np.prod(shape)):
                problems.append(
                    Problem(
                        f"expected images of shape {shape}, received {list(values.shape[1:])}",
                        f"array {column!r}",
                        train.file,
                    )
                )
                continue
            vmax = float(np.max(values)) if values.size else 1.0
            scale = 1.0 / 255.0 if values.dtype == np.uint8 or vmax > 1.0 else 1.0
            inputs[name] = InputStats("image", column, shape=shape, scale=scale)
    targets: dict[str, TargetStats] = {}
    for task, spec in recipe.model.tasks.items():
        column = recipe.target(task)
        values = train.columns[column]
        present, raw = _labels(values)
        if not present.any():
            problems.append(
                Problem(
                    f"task {task!r} has no labels in the training split", f"column {column!r}", train.file
                )
            )
            continue
        if spec.type == "regression":
            y = _as_float(values, train, column, problems)
            finite = y[np.isfinite(y)]
            if np.isinf(y).any():
                row = int(np.flatnonzero(np.isinf(y))[0])
                file, line = train.where(row)
                problems.append(
                    Problem("infinite value in a regression target", f"column {column!r}", file, line)
                )
            std = float(finite.std()) if len(finite) > 1 else 1.0
            targets[task] = TargetStats(
                "regression",
                column,
                mean=float(finite.mean()) if len(finite) else 0.0,
                std=std if std > 1e-12 else 1.0,
            )
            out_units = _output_units(spec)
            if out_units is not None and out_units != 1:
                problems.append(
                    Problem(
                        f"the output layer of task {task!r} has {out_units} units but the target is "
                        f"one column; set units: 1 or drop model.tasks.{task}.output",
                        f"column {column!r}",
                        train.file,
                    )
                )
            continue
        classes = sorted(
            {_label_key(v) for v, p in zip(raw, present, strict=True) if p}, key=lambda c: (str(type(c)), c)
        )
        if spec.classes is not None and all(isinstance(c, int) for c in classes):
            bad = [c for c in classes if not 0 <= c < spec.classes]
            if bad:
                row = int(np.flatnonzero([_label_key(v) == bad[0] for v in raw])[0])
                file, line = train.where(row)
                problems.append(
                    Problem(
                        f"label {bad[0]!r} is outside the {spec.classes} classes declared by "
                        f"model.tasks.{task}.classes (expected 0..{spec.classes - 1})",
                        f"column {column!r}",
                        file,
                        line,
                    )
                )
                continue
            classes = list(range(spec.classes))
        elif spec.classes is not None and len(classes) > spec.classes:
            problems.append(
                Problem(
                    f"found {len(classes)} distinct labels but model.tasks.{task}.classes is "
                    f"{spec.classes} (labels: {_preview(classes)})",
                    f"column {column!r}",
                    train.file,
                )
            )
            continue
        if spec.type == "binary":
            if len(classes) > 2:
                problems.append(
                    Problem(
                        f"a binary task needs 2 distinct labels, found {len(classes)}: "
                        f"{_preview(classes)}; use type: classification",
                        f"column {column!r}",
                        train.file,
                    )
                )
                continue
            if set(classes) <= {0, 1}:  # 0/1 (or False/True) labels keep their meaning
                classes = [0, 1]
            elif len(classes) == 1:
                problems.append(
                    Problem(
                        f"a binary task needs 2 distinct labels, found only {classes[0]!r}",
                        f"column {column!r}",
                        train.file,
                    )
                )
                continue
        elif len(classes) < 2:
            problems.append(
                Problem(
                    f"a classification task needs at least 2 classes, found {_preview(classes)}",
                    f"column {column!r}",
                    train.file,
                )
            )
            continue
        targets[task] = TargetStats(spec.type, column, classes=classes)
        out_units = _output_units(spec)
        expected = len(classes) if spec.type == "classification" else 1
        if out_units is not None and out_units != expected:
            problems.append(
                Problem(
                    f"the output layer of task {task!r} has {out_units} units but the data has "
                    f"{len(classes)} classes ({_preview(classes)}); set units: {expected} or drop "
                    f"model.tasks.{task}.output",
                    f"column {column!r}",
                    train.file,
                )
            )
    if problems:
        raise DataError(problems=problems)
    return Preprocessing(inputs, targets)


def _output_units(spec) -> int | None:
    if spec.output and len(spec.output) == 1:
        ((_, kwargs),) = spec.output.items()
        if isinstance(kwargs, dict) and isinstance(kwargs.get("units"), int):
            return kwargs["units"]
    return None


def _preview(values: list, n: int = 6) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


@dataclass
class Arrays:
    """Model-ready arrays for one split."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]  # 1.0 where the task's label is present
    n: int

    def support(self) -> dict[str, int]:
        return {t: int(m.sum()) for t, m in self.mask.items()}


def transform(prep: Preprocessing, table: Table, tasks: list[str] | None = None) -> Arrays:
    """Apply fitted preprocessing to a table. Labels unseen in training are errors."""
    problems: list[Problem] = []
    x: dict[str, np.ndarray] = {}
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
            v = _as_float(values, table, st.column, problems)
            v = np.where(np.isfinite(v), (v - st.mean) / st.std, 0.0)  # missing -> the training mean
            x[name] = v.astype(np.float32)[:, None]
        elif st.kind == "categorical":
            index = {w: i + 1 for i, w in enumerate(st.vocabulary)}
            present, raw = _labels(values)
            ids = np.array(
                [index.get(str(_label_key(v)), 0) if p else 0 for v, p in zip(raw, present, strict=True)]
            )
            x[name] = np.eye(len(st.vocabulary) + 1, dtype=np.float32)[ids]
        else:
            arr = np.asarray(values, dtype=np.float32).reshape((len(values), *st.shape))
            x[name] = arr * np.float32(st.scale)
    y: dict[str, np.ndarray] = {}
    mask: dict[str, np.ndarray] = {}
    for task, st in prep.targets.items():
        if tasks is not None and task not in tasks:
            continue
        if st.column not in table.columns:
            problems.append(
                Problem(
                    f"target column {st.column!r} of task {task!r} not found"
                    f"{did_you_mean(st.column, table.columns)}",
                    "",
                    table.file,
                )
            )
            continue
        values = table.columns[st.column]
        present, raw = _labels(values)
        if st.type == "regression":
            v = _as_float(values, table, st.column, problems)
            ok = np.isfinite(v)
            y[task] = np.where(ok, (v - st.mean) / st.std, 0.0).astype(np.float32)[:, None]
            mask[task] = ok.astype(np.float32)
            continue
        index = {c: i for i, c in enumerate(st.classes)}
        ids = np.zeros(len(raw), np.int32)
        for i, (v, p) in enumerate(zip(raw, present, strict=True)):
            if not p:
                continue
            key = _label_key(v)
            if key not in index:
                file, line = table.where(i)
                problems.append(
                    Problem(
                        f"label {key!r} is not one of the task's classes ({_preview(st.classes)})",
                        f"column {st.column!r}",
                        file,
                        line,
                    )
                )
                break
            ids[i] = index[key]
        y[task] = ids if st.type == "classification" else ids.astype(np.float32)[:, None]
        mask[task] = present.astype(np.float32)
    if problems:
        raise DataError(problems=problems)
    return Arrays(x, y, mask, table.n_rows)


def did_you_mean(word: str, choices) -> str:
    from mtlcli.recipe import did_you_mean as dym

    return dym(word, list(choices))


# ------------------------------------------------------------------------------------------------
# The whole data step for a recipe


@dataclass
class Prepared:
    prep: Preprocessing
    splits: dict[str, Arrays]
    info: dict[str, Any]  # what data.json records: files, digests, sizes, split indices, coverage


def _check_columns(loaded: LoadedRecipe, table: Table, need_targets: bool = True) -> list[Problem]:
    recipe = loaded.recipe
    problems = []
    for name, spec in recipe.data.inputs.items():
        column = spec.column or name
        if column not in table.columns:
            kind = "array" if table.is_npz else "column"
            problems.append(
                Problem(
                    f"{kind} {column!r} not found in {table.file}"
                    f"{did_you_mean(column, table.columns)} ({kind}s: "
                    f"{_preview(list(table.columns), 12)})",
                    f"data.inputs.{name}",
                    loaded.source.file,
                    loaded.source.line(("data", "inputs", name)),
                )
            )
    if need_targets:
        for task in recipe.model.tasks:
            column = recipe.target(task)
            if column not in table.columns:
                kind = "array" if table.is_npz else "column"
                problems.append(
                    Problem(
                        f"target {kind} {column!r} not found in {table.file}"
                        f"{did_you_mean(column, table.columns)} ({kind}s: "
                        f"{_preview(list(table.columns), 12)})",
                        f"model.tasks.{task}.target",
                        loaded.source.file,
                        loaded.source.line(("model", "tasks", task, "target"))
                        or loaded.source.line(("model", "tasks", task)),
                    )
                )
    return problems


def _read(loaded: LoadedRecipe, key: str) -> Table:
    value = getattr(loaded.recipe.data, key)
    path = loaded.resolve_path(value)
    try:
        return read_table(path)
    except DataError as exc:
        raise DataError(
            problems=[
                Problem(p.message + f" (data.{key}: {value!r})", p.path, p.file, p.line) for p in exc.problems
            ]
        ) from None


def prepare(loaded: LoadedRecipe, seed: int | None = None) -> Prepared:
    """Read, split, fit and transform the recipe's data. Raises DataError with every problem found."""
    recipe = loaded.recipe
    seed = recipe.seed if seed is None else seed
    train_table = _read(loaded, "train")
    problems = _check_columns(loaded, train_table)
    tables = {"train": train_table}
    for key in ("validation", "test"):
        value = getattr(recipe.data, key)
        if isinstance(value, str):
            tables[key] = _read(loaded, key)
            problems.extend(_check_columns(loaded, tables[key]))
    if problems:
        raise DataError(problems=problems)

    # Seeded fractions of the training file (test first, then validation from the rest).
    rng = np.random.default_rng(seed)
    order = rng.permutation(train_table.n_rows)
    indices: dict[str, np.ndarray] = {}
    start = 0
    for key in ("test", "validation"):
        value = getattr(recipe.data, key)
        if isinstance(value, float | int) and not isinstance(value, bool):
            count = int(round(value * train_table.n_rows))
            if count < 1:
                raise DataError(
                    problems=[
                        Problem(
                            f"data.{key}: {value} of {train_table.n_rows} rows is an empty split",
                            "",
                            train_table.file,
                        )
                    ]
                )
            indices[key] = np.sort(order[start : start + count])
            start += count
    indices["train"] = np.sort(order[start:])
    if len(indices["train"]) == 0:
        raise DataError(
            problems=[
                Problem("no rows are left for training after the validation/test split", "", train_table.file)
            ]
        )
    for key, idx in indices.items():
        if key != "train":
            tables[key] = train_table.take(idx)
    tables["train"] = train_table.take(indices["train"])

    prep = fit(recipe, tables["train"])
    splits = {}
    problems = []
    for key, table in tables.items():
        if table.n_rows == 0:
            problems.append(Problem(f"the {key} split is empty", "", table.file))
            continue
        try:
            splits[key] = transform(prep, table)
        except DataError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DataError(problems=problems)

    files = {}
    for key in ("train", "validation", "test"):
        value = getattr(recipe.data, key)
        if isinstance(value, str):
            path = loaded.resolve_path(value)
            files[key] = {
                "path": str(path.resolve()),
                "sha256": file_digest(path),
                "rows": tables[key].n_rows if key != "train" else train_table.n_rows,
            }
    info = {
        "files": files,
        "seed": seed,
        "split_rows": {k: int(v.n) for k, v in splits.items()},
        "fraction_indices": {k: v.tolist() for k, v in indices.items() if k != "train"},
        "coverage": {k: v.support() for k, v in splits.items()},
    }
    return Prepared(prep, splits, info)
