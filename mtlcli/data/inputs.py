"""One class per input kind: numeric, categorical, text, image files, arrays (images as arrays included).

Each kind does three things, the same in memory (one chunk) and streamed (chunk by chunk):

* ``fit(values, table, problems)`` -- accumulate the training statistics of one chunk of rows (moments,
  vocabulary, value range) and report what makes them impossible (a non-number, a wrong shape);
* ``stats()`` -- the :class:`InputStats` the chunks add up to (what a saved model keeps);
* ``encode(st, values, table, problems, tally)`` -- check one chunk of any split against the statistics
  and return its *raw features*: the column as the TensorFlow transform
  (:mod:`mtlcli.data.transform`) takes it -- numbers as float64 with NaN where missing, categories as
  their vocabulary key (``""`` where missing), texts as strings (``""`` where missing), image paths, arrays
  as float32.

The checks stay here, in numpy, so ``mtl validate`` reports every bad cell with its file and line
without importing TensorFlow; the arithmetic (standardising, vocabulary look-up, one-hot, scaling,
decoding) lives once in the TensorFlow transform, which also runs inside a saved model for serving.
"""

from __future__ import annotations

import math
import re
from collections import Counter
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
    text: dict | None = (
        None  # text: {standardize, split, ngrams, output, sequence_length} (TextVectorization)
    )
    idf: list[float] = field(
        default_factory=list
    )  # text with output: tf_idf: one weight per vocabulary token

    @property
    def width(self) -> int:
        """Features per row of a flat input (numeric, categorical)."""
        if self.kind == "categorical":
            return 1 if self.encoding == "embedding" else len(self.vocabulary) + 1
        if self.kind == "numeric":
            return 2 if self.flag else 1
        if self.kind == "text":
            out = self.text or {}
            return int(out["sequence_length"]) if out.get("output") == "int" else len(self.vocabulary) + 1
        return int(np.prod(self.shape or [1]))

    @property
    def model_shape(self) -> tuple[int, ...]:
        """The shape of one row of the model input this input becomes."""
        return tuple(self.shape) if self.kind in ("image", "array") else (self.width,)

    @property
    def token_ids(self) -> int | None:
        """Text with ``output: int``: how many ids there are (0 padding, 1 unknown, then the vocabulary):
        the ``input_dim`` of the embedding that reads them."""
        if self.kind == "text" and (self.text or {}).get("output") == "int":
            return len(self.vocabulary) + 2
        return None

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


#: what TextVectorization's ``lower_and_strip_punctuation`` and ``strip_punctuation`` remove (its regex)
PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
#: TextVectorization's whitespace split (tf.strings.split): ASCII whitespace only
WHITESPACE = re.compile(r"[ \t\n\v\f\r]+")
#: ASCII upper case -> lower case (tf.strings.lower leaves other letters as they are)
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
#: TextVectorization's unknown token (never a vocabulary entry)
OOV_TOKEN = "[UNK]"
TEXT_DEFAULTS = {
    "max_tokens": 20000,
    "sequence_length": 128,
    "standardize": "lower_and_strip_punctuation",
    "split": "whitespace",
    "ngrams": None,
    "output": "int",
}


def text_options(spec) -> dict:
    """A text input's TextVectorization options, defaults filled in (``sequence_length`` only for
    ``output: int``)."""
    out = {
        k: (getattr(spec, k, None) if getattr(spec, k, None) is not None else v)
        for k, v in TEXT_DEFAULTS.items()
    }
    if out["output"] != "int":
        out["sequence_length"] = None
    return out


def tokens(text: str, options: dict) -> list[str]:
    """The tokens TextVectorization makes of one text with ``options`` (the same standardising, split and
    n-grams, in plain Python, so ``mtl validate`` needs no TensorFlow; tests/test_text.py compares them)."""
    std, split = options["standardize"], options["split"]
    if std in ("lower", "lower_and_strip_punctuation"):
        text = text.translate(ASCII_LOWER)
    if std in ("strip_punctuation", "lower_and_strip_punctuation"):
        text = PUNCTUATION.sub("", text)
    if split == "whitespace":
        words = [w for w in WHITESPACE.split(text) if w]
    elif split == "character":
        words = list(text)
    else:
        words = [text] if text else []
    n = options.get("ngrams")
    if not n or n == 1:
        return words
    return [" ".join(words[i : i + k]) for k in range(1, int(n) + 1) for i in range(len(words) - k + 1)]


def text_cells(values: np.ndarray, table: Table, column: str, problems: list[Problem]) -> np.ndarray:
    """The text of every row as an object array of str: missing cells are ``""``, numbers and booleans
    their text (``2.0`` -> ``"2"``, ``True``); anything else (a list, a mapping) is a bad cell."""
    out = np.full(len(values), "", dtype=object)
    if values.dtype.kind in "biuf":
        present = ~np.isnan(values) if values.dtype.kind == "f" else np.ones(len(values), bool)
        out[present] = [vocab_key(v) for v in values[present]]
        return out
    bad = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            out[i] = v
        elif missing(v):
            continue
        elif isinstance(v, (int, float, np.integer, np.floating, np.bool_)):  # bool is an int
            out[i] = vocab_key(v)
        else:
            bad.append(i)
    if bad:
        bad_cells(
            problems, table, bad, lambda i: f"expected text, received {values[i]!r}", f"column {column!r}"
        )
    return out


class Text:
    """A text per row, for Keras ``TextVectorization``: the training split's token counts and document
    counts add up chunk by chunk (memory grows with the distinct tokens, not the rows); the vocabulary is
    the ``max_tokens`` most frequent (ties in token order), minus the reserved ids (padding and unknown
    for ``output: int``, unknown for ``multi_hot`` / ``tf_idf``); ``tf_idf`` weights are Keras's
    ``log(1 + documents / (1 + document frequency))``. A missing text is the empty text."""

    def __init__(self, name: str, spec) -> None:
        self.column, self.spec = spec.column or name, spec
        self.options = text_options(spec)
        self.counts: Counter = Counter()
        self.documents: Counter = Counter()
        self.rows, self.ok = 0, True

    def fit(self, values: np.ndarray, table: Table, problems: list[Problem]) -> None:
        if values.ndim != 1:
            problems.append(
                Problem(
                    f"a text input must be one text per row, received shape {values.shape[1:]}",
                    f"column {self.column!r}",
                    table.file,
                )
            )
            self.ok = False
            return
        for text in text_cells(values, table, self.column, problems):
            words = tokens(text, self.options)
            self.counts.update(words)
            self.documents.update(set(words))
        self.rows += len(values)

    def stats(self) -> InputStats | None:
        if not self.ok:
            return None
        reserved = 2 if self.options["output"] == "int" else 1
        ranked = sorted((t for t in self.counts if t != OOV_TOKEN), key=lambda t: (-self.counts[t], t))
        vocab = ranked[: max(int(self.options["max_tokens"]) - reserved, 0)]
        idf = []
        if self.options["output"] == "tf_idf":
            idf = [math.log(1 + self.rows / (1 + self.documents[t])) for t in vocab]
        options = {k: v for k, v in self.options.items() if k != "max_tokens"}
        return InputStats("text", self.column, vocabulary=vocab, text=options, idf=idf)

    @staticmethod
    def encode(st: InputStats, values, table: Table, problems: list[Problem], tally: dict) -> np.ndarray:
        """The text of every row (``""`` where missing)."""
        if values.ndim != 1:
            problems.append(
                Problem(
                    f"a text input must be one text per row, received shape {values.shape[1:]}",
                    f"column {st.column!r}",
                    table.file,
                )
            )
            return np.array([], dtype=object)
        return text_cells(values, table, st.column, problems)


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
    if spec.kind == "text":
        return Text(name, spec)
    if spec.kind == "image" and values.dtype == object:
        return ImageFiles(name, spec)
    return ArrayInput(name, spec)


def encoder(st: InputStats):
    """The ``encode`` of a fitted input."""
    if st.kind == "numeric":
        return Numeric.encode
    if st.kind == "categorical":
        return Categorical.encode
    if st.kind == "text":
        return Text.encode
    return ImageFiles.encode if st.files else ArrayInput.encode
