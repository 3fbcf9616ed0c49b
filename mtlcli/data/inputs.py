"""One class per input kind: numeric, categorical, image files, arrays (images as arrays included).

Each kind does three things, the same in memory (one chunk) and streamed (chunk by chunk):

* ``fit(values, table, problems)`` -- accumulate the training statistics of one chunk of rows (moments,
  vocabulary, value range) and report what makes them impossible (a non-number, a wrong shape);
* ``stats()`` -- the :class:`InputStats` the chunks add up to (what a saved model keeps);
* ``encode(st, values, table, problems, tally)`` -- check one chunk of any split against the statistics
  and return its *raw features*: the column as the TensorFlow transform
  (:mod:`mtlcli.data.transform`) takes it -- numbers as float64 with NaN where missing, categories as
  their vocabulary key (``""`` where missing), image paths, arrays as float32.

The checks stay here, in numpy, so ``mtl validate`` reports every bad cell with its file and line
without importing TensorFlow; the arithmetic (standardising, vocabulary look-up, one-hot, scaling,
decoding) lives once in the TensorFlow transform, which also runs inside a saved model for serving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.data.sources import Table, image_format
from mtlcli.data.values import Moments, as_float, bad_cells, distinct, labels, missing, vocab_key
from mtlcli.errors import Problem


def embedding_dim(rows: int) -> int:
    """Default vector size of a categorical embedding with ``rows`` rows (the training vocabulary plus
    the unknown bucket): ``min(50, ceil(1.6 * rows ** 0.56))`` (the fast.ai rule of thumb)."""
    return int(min(50, math.ceil(1.6 * rows**0.56)))


@dataclass
class InputStats:
    """What the model keeps of one input (saved as a dict inside model.keras: the field names are a
    file format, read back by runs written by older versions)."""

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
        """Features per row of a flat input (numeric, categorical)."""
        if self.kind == "categorical":
            return 1 if self.encoding == "embedding" else len(self.vocabulary) + 1
        if self.kind == "numeric":
            return 2 if self.flag else 1
        return int(np.prod(self.shape or [1]))

    @property
    def model_shape(self) -> tuple[int, ...]:
        """The shape of one row of the model input this input becomes."""
        return tuple(self.shape) if self.kind in ("image", "array") else (self.width,)

    @property
    def embedding(self) -> tuple[int, int] | None:
        """(rows, dim) of the embedding table of a categorical input with ``encoding: embedding``."""
        if self.kind == "categorical" and self.encoding == "embedding":
            return len(self.vocabulary) + 1, int(self.dim)
        return None


class Numeric:
    """A number per row, standardised with the training mean and deviation; ``missing:`` says what a
    missing value becomes (``mean``: 0 after standardising, ``zero``: the raw 0, ``error``)."""

    def __init__(self, name: str, spec) -> None:
        self.column, self.spec = spec.column or name, spec
        self.moments = Moments()

    def fit(self, values: np.ndarray, table: Table, problems: list[Problem]) -> None:
        if values.ndim != 1:
            problems.append(
                Problem(
                    f"a numeric input must be one value per row, received shape {values.shape[1:]}",
                    f"column {self.column!r}",
                    table.file,
                )
            )
            self.moments = None
            return
        self.add(as_float(values, table, self.column, problems))

    def add(self, x: np.ndarray) -> None:
        """Accumulate numbers already read (float64, NaN where missing)."""
        if self.moments is not None:
            self.moments.add(x)

    def stats(self) -> InputStats | None:
        if self.moments is None:
            return None
        m = self.moments
        return InputStats(
            "numeric",
            self.column,
            mean=m.mean if m.n else 0.0,
            std=m.std(),
            missing=self.spec.missing or "mean",
            flag=bool(self.spec.flag),
        )

    @staticmethod
    def encode(st: InputStats, values, table: Table, problems: list[Problem], tally: dict) -> np.ndarray:
        """float64 with NaN where missing. ``tally`` adds up missing values of a ``missing: error`` input
        over the chunks of a split (the caller reports it once, naming the first)."""
        v = as_float(values, table, st.column, problems)
        if np.isinf(v).any():
            bad_cells(
                problems,
                table,
                np.flatnonzero(np.isinf(v)),
                lambda i: "infinite value",
                f"column {st.column!r}",
            )
        absent = np.isnan(v)
        if st.missing == "error" and absent.any():
            entry = tally.setdefault(st.column, [0, *table.where(int(np.flatnonzero(absent)[0]))])
            entry[0] += int(absent.sum())
        return v


def missing_error(column: str, count: int, file: str, line: int | None) -> Problem:
    """The problem of a ``missing: error`` input that has ``count`` missing values, the first at file:line."""
    return Problem(
        f"missing value ({count} in all); the input has missing: error (use missing: mean or zero to impute)",
        f"column {column!r}",
        file,
        line,
    )


class Categorical:
    """A category per row, looked up in the training vocabulary (sorted keys; id 0 is unknown or
    missing); one-hot columns, or one id per row for a learned embedding (``encoding: embedding``)."""

    def __init__(self, name: str, spec) -> None:
        self.column, self.spec = spec.column or name, spec
        self.vocabulary: set[str] = set()

    def fit(self, values: np.ndarray, table: Table, problems: list[Problem]) -> None:
        present, raw = labels(values)
        self.vocabulary.update(vocab_key(v) for v in distinct(raw[present]))

    def stats(self) -> InputStats:
        vocab = sorted(self.vocabulary)
        encoding = self.spec.encoding or "one_hot"
        dim = (self.spec.dim or embedding_dim(len(vocab) + 1)) if encoding == "embedding" else None
        return InputStats("categorical", self.column, vocabulary=vocab, encoding=encoding, dim=dim)

    @staticmethod
    def encode(st: InputStats, values, table: Table, problems: list[Problem], tally: dict) -> np.ndarray:
        """The vocabulary key of every row (``""`` where missing): one conversion per distinct value."""
        import pandas as pd

        present, raw = labels(values)
        out = np.full(len(raw), "", dtype=object)
        rows = np.flatnonzero(present)
        if len(rows):
            codes, uniques = pd.factorize(raw[rows])
            out[rows] = np.array([vocab_key(u) for u in uniques], dtype=object)[codes]
        return out


class ImageFiles:
    """A column of image file paths (relative to the data file), decoded, resized to ``shape`` and
    scaled to [0, 1] inside the tf.data pipeline, so the pixels never sit in memory."""

    def __init__(self, name: str, spec) -> None:
        self.column, self.spec = spec.column or name, spec
        self.shape: list[int] | None = list(spec.shape or [])

    def fit(self, values: np.ndarray, table: Table, problems: list[Problem]) -> None:
        if self.shape is not None and len(self.shape) != 3:
            problems.append(
                Problem(
                    f"image files need shape [height, width, channels], received {self.shape}",
                    f"column {self.column!r}",
                    table.file,
                )
            )
            self.shape = None

    def stats(self) -> InputStats | None:
        if self.shape is None:
            return None
        return InputStats("image", self.column, shape=self.shape, scale=1.0 / 255.0, files=True)

    @staticmethod
    def encode(st: InputStats, values, table: Table, problems: list[Problem], tally: dict) -> np.ndarray:
        """Absolute paths; each must exist and start like a PNG, JPEG, GIF or BMP file (every bad cell
        is reported)."""
        out, bad = [], {}
        base_cache: dict[str, Path] = {}
        for i, v in enumerate(values):
            if missing(v):
                bad[i] = "missing image path"
                continue
            p = Path(str(v)).expanduser()
            if not p.is_absolute():
                src = table.file_of(i)
                base = base_cache.setdefault(src, Path(src).parent if not Path(src).is_dir() else Path(src))
                p = base / p
            if image_format(p) is None:
                reason = "image file not found" if not p.exists() else "not a PNG, JPEG, GIF or BMP image"
                bad[i] = f"{reason}: {p}"
            out.append(str(p))
        if bad:
            bad_cells(problems, table, list(bad), bad.get, f"column {st.column!r}")
            return np.array([], dtype=str)
        return np.array(out, dtype=str)


class ArrayInput:
    """An array per row (``kind: array``, or ``kind: image`` given as pixel arrays): reshaped to
    ``shape``; images with values above 1 (or uint8) are scaled by 1/255."""

    def __init__(self, name: str, spec) -> None:
        self.column, self.spec = spec.column or name, spec
        self.ok, self.shape, self.vmax, self.uint8 = True, None, 0.0, False

    def fit(self, values: np.ndarray, table: Table, problems: list[Problem]) -> None:
        spec, column = self.spec, self.column
        if values.dtype == object or values.dtype.kind not in "biuf":
            problems.append(
                Problem(
                    f"an {spec.kind} input needs numeric arrays, received {values.dtype} values",
                    f"column {column!r}",
                    table.file,
                )
            )
            self.ok = False
            return
        shape = list(spec.shape) if spec.shape else list(values.shape[1:]) or [1]
        if list(values.shape[1:]) != shape and values[0].size != int(np.prod(shape)):
            problems.append(
                Problem(
                    f"expected {'images' if spec.kind == 'image' else 'arrays'} of shape {shape}, "
                    f"received {list(values.shape[1:])}",
                    f"array {column!r}",
                    table.file,
                )
            )
            self.ok = False
            return
        self.shape = shape
        self.uint8 |= values.dtype == np.uint8
        self.vmax = max(self.vmax, float(np.max(values, where=np.isfinite(values), initial=0.0)))

    def stats(self) -> InputStats | None:
        if not self.ok or self.shape is None:
            return None
        scale = 1.0
        if self.spec.kind == "image":
            scale = 1.0 / 255.0 if self.uint8 or self.vmax > 1.0 else 1.0
        return InputStats(self.spec.kind, self.column, shape=self.shape, scale=scale)

    @staticmethod
    def encode(st: InputStats, values, table: Table, problems: list[Problem], tally: dict) -> np.ndarray:
        """float32 arrays of ``st.shape`` (unscaled); NaN and infinity are errors."""
        if values.dtype == object or values.dtype.kind not in "biuf":
            problems.append(
                Problem(
                    f"expected numeric arrays, received {values.dtype} values",
                    f"array {st.column!r}",
                    table.file,
                )
            )
            return np.zeros((0, *st.shape), np.float32)
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
        return arr


def fitter(name: str, spec, values: np.ndarray) -> Any:
    """The accumulator of a recipe input (image files are told from pixel arrays by the column)."""
    if spec.kind == "numeric":
        return Numeric(name, spec)
    if spec.kind == "categorical":
        return Categorical(name, spec)
    if spec.kind == "image" and values.dtype == object:
        return ImageFiles(name, spec)
    return ArrayInput(name, spec)


def encoder(st: InputStats):
    """The ``encode`` of a fitted input."""
    if st.kind == "numeric":
        return Numeric.encode
    if st.kind == "categorical":
        return Categorical.encode
    return ImageFiles.encode if st.files else ArrayInput.encode
