"""Larger-than-memory CSV / CSV.gz / Parquet: a statistics pass in chunks, then tf.data streams.

numpy + pandas (+ pyarrow for Parquet) at import time; TensorFlow only inside the dataset methods, so
``mtl validate`` runs the statistics pass without it.

* **When.** ``data.stream: true`` (or a mapping ``{chunk_rows: N, shuffle_buffer: M}``) streams;
  ``false`` never does; absent, a training source of CSV / CSV.gz / Parquet files larger than
  :data:`AUTO_BYTES` on disk in total streams.
* **Statistics.** :func:`prepare` reads every source once, ``chunk_rows`` rows at a time (pandas
  ``read_csv(chunksize=...)``, pyarrow ``iter_batches``). It accumulates means and standard deviations
  (Chan's parallel update), class and label counts, coverage per split, and the first row of every
  distinct category / label. :func:`mtlcli.data.preprocess.fit` then runs on those first rows (so vocabularies,
  classes and their errors are the in-memory ones) and the moments replace its means and deviations.
  The same checks as in memory run on every chunk, naming the file and line.
* **Splits.** Fractions hash ``(seed, row number)`` (splitmix64) into [0, 1): a row goes to ``test``
  below the test fraction, to ``validation`` below the sum, else to ``train``. Every pass assigns the
  same rows, and split sizes are close to (not exactly) the fractions. Column splits and separate files
  work as in memory. ``group_by``, image / array inputs and non-tabular sources are recipe errors.
* **Order.** Epoch ``e`` reads the training rows in file order, ``chunk_rows`` at a time, through a
  shuffle pool of ``shuffle_buffer`` rows drawn with ``numpy.random.default_rng([seed, e])``: when the
  pool overflows it is permuted and the overflow goes out. With a buffer at least as large as the
  training split the order is exactly the in-memory one (:func:`mtlcli.run.checkpoint.epoch_order`).
  A mid-epoch resume replays the epoch's stream and drops the batches already done (exact, at the
  cost of re-reading that part of the file).
* **Pipeline.** Python runs once per piece (a chunk, or a pool's overflow), not per step: the generator
  behind ``tf.data.Dataset.from_generator`` yields batch-aligned pieces (:func:`aligned`) as stacks of
  batches that tf.data ``unbatch``-es, two pieces prefetched in tf.data's background thread. Chunks become
  tables without a Python call per string value (:func:`_table`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.data import preprocess as data
from mtlcli.data import sources
from mtlcli.errors import DataError, Problem, RecipeError
from mtlcli.recipe import LoadedRecipe
from mtlcli.recipe.data_checks import stream_unsupported, target_columns

AUTO_BYTES = 1 << 30  # 1 GiB on disk
DEFAULT_CHUNK_ROWS = 65_536
DEFAULT_SHUFFLE_BUFFER = 100_000
TABULAR = (".csv", ".csv.gz", ".parquet")
SPLITS = ("train", "validation", "test")

Feed = tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]


def settings(loaded: LoadedRecipe) -> dict[str, int] | None:
    """``{"chunk_rows", "shuffle_buffer"}`` when the recipe's data streams, else None."""
    value = loaded.recipe.data.stream
    base = {"chunk_rows": DEFAULT_CHUNK_ROWS, "shuffle_buffer": DEFAULT_SHUFFLE_BUFFER}
    if value is False:
        return None
    if isinstance(value, dict):
        return {**base, **{k: int(v) for k, v in value.items()}}
    if value is True:
        return base
    train = loaded.recipe.data.train
    if not isinstance(train, str):
        return None
    try:
        files = sources.source_files(train, loaded.base_dir)
    except DataError:
        return None
    if not files or any(not f.is_file() or sources._suffix(f) not in TABULAR for f in files):
        return None
    return base if sum(f.stat().st_size for f in files) > AUTO_BYTES else None


# ------------------------------------------------------------------------------------------------
# Reading in chunks


@dataclass
class Chunk:
    table: data.Table  # row_ids: line numbers of the rows (first_row 0), file: the chunk's file
    start: int  # row number (0-based, over all files of the source) of the chunk's first row


def _files(value: str, base_dir: Path | None) -> list[Path]:
    resolved = sources.resolve(value, base_dir or Path.cwd())
    if resolved.startswith("pkg://"):
        return [sources.package_file(resolved)]
    if any(c in resolved for c in "*?["):
        files = sources.source_files(resolved)
        if not files:
            raise sources.fail("no file matches this pattern", resolved)
        return files
    path = Path(resolved)
    if not path.exists():
        raise sources.fail("file not found", str(path))
    return [path]


def _header(path: Path) -> list[str]:
    if sources._suffix(path) not in TABULAR:
        raise sources.fail(
            f"streaming reads {', '.join(TABULAR)} files; received {sources._suffix(path)!r}", str(path)
        )
    if sources._suffix(path) == ".parquet":
        pq = _pyarrow(path)
        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except Exception as exc:  # noqa: BLE001 - any pyarrow failure means an unreadable file
            raise sources.fail(
                f"cannot read as Parquet: {str(exc).strip().splitlines()[0]}", str(path)
            ) from None
    import pandas as pd

    try:
        return [str(c) for c in pd.read_csv(path, nrows=0, skipinitialspace=True).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise sources.fail(f"cannot read as CSV: {str(exc).strip().splitlines()[0]}", str(path)) from None


def _pyarrow(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise sources.fail(
            "reading Parquet needs pyarrow, from the optional extra 'parquet': pip install 'mtlcli[parquet]'",
            str(path),
        ) from None
    return pq


def columns_of(value: str, base_dir: Path | None) -> tuple[list[Path], list[str]]:
    """A source's files and their (agreeing) columns, from the headers only."""
    files = _files(value, base_dir)
    first = _header(files[0])
    for f in files[1:]:
        cols = _header(f)
        if cols != first:
            raise sources.columns_differ(list(first), list(cols), files[0], f)
    return files, first


def iter_chunks(files: list[Path], columns: list[str], chunk_rows: int) -> Iterator[Chunk]:
    """The rows of ``files`` (in order), ``chunk_rows`` at a time, reading only ``columns``."""
    import pandas as pd

    start = 0
    for path in files:
        parquet = sources._suffix(path) == ".parquet"
        first_row = 1 if parquet else 2
        local = 0
        try:
            if parquet:
                pf = _pyarrow(path).ParquetFile(path)
                frames = (b.to_pandas() for b in pf.iter_batches(batch_size=chunk_rows, columns=columns))
            else:
                frames = pd.read_csv(
                    path,
                    chunksize=chunk_rows,
                    usecols=columns,
                    keep_default_na=True,
                    na_values=sources.NA_VALUES,
                    skipinitialspace=True,
                )
            for frame in frames:
                table = _table(frame, [c for c in columns if c in frame.columns], str(path))
                n = table.n_rows
                table.row_ids = np.arange(local + first_row, local + first_row + n)
                yield Chunk(table, start)
                local += n
                start += n
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - pandas / pyarrow failures mid-file
            what = "Parquet" if parquet else "CSV"
            raise sources.fail(
                f"cannot read as {what}: {str(exc).strip().splitlines()[0]}", str(path)
            ) from None


def _table(frame, columns: list[str], shown: str) -> data.Table:
    """``sources._from_frame`` of a chunk (the same values: missing and blank strings become None), with
    string columns converted by pandas' vectorised string methods instead of a Python call per value."""
    import pandas as pd

    wanted, out = set(columns), {}
    for name, col in frame.items():
        if name not in wanted:
            continue
        if isinstance(col.dtype, pd.StringDtype):
            values = col.to_numpy(dtype=object, na_value=None)
            rows = np.flatnonzero(np.not_equal(values, None))
            strings = values[rows].astype(str)
            blank = np.strings.isspace(strings) | (np.strings.str_len(strings) == 0)
            if blank.any():
                values[rows[blank]] = None
        else:
            values = col.to_numpy()
            if values.dtype.kind in "OUST":
                values = np.array([None if sources.missing(v) else str(v) for v in values], dtype=object)
            elif values.dtype.kind == "b":
                values = values.astype(np.int64)
        out[str(name)] = values
    out = {c: out[c] for c in columns if c in out}
    return data.Table(out, len(frame), shown, first_row=0)


# ------------------------------------------------------------------------------------------------
# Splits


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
    """How one source's rows are assigned to splits: ``fractions`` (hashed), ``column`` (data.split)
    or, when neither, every row belongs to ``only``."""

    source: str
    only: str | None = None
    fractions: dict[str, float] = field(default_factory=dict)  # test, validation
    seed: int = 0
    column: dict[str, Any] | None = None

    def assign(self, chunk: Chunk) -> dict[str, np.ndarray]:
        n = chunk.table.n_rows
        if self.only is not None:
            return {self.only: np.arange(n)}
        if self.column is not None:
            return self._by_column(chunk)
        u = uniform(self.seed, chunk.start + np.arange(n))
        out, low = {}, 0.0
        for key in ("test", "validation"):
            if key in self.fractions:
                high = low + self.fractions[key]
                out[key] = np.flatnonzero((u >= low) & (u < high))
                low = high
        out["train"] = np.flatnonzero(u >= low)
        return out

    def _by_column(self, chunk: Chunk) -> dict[str, np.ndarray]:
        spec, table = self.column, chunk.table
        column = spec["column"]
        owner = {data._norm(v): key for key in SPLITS for v in spec.get(key) or []}
        keys = [owner.get(v) for v in data._normed(table.columns[column])]
        if None in keys:
            raise data.unassigned_split_value(spec, table, keys.index(None))
        arr = np.array(keys, dtype=object)
        return {key: np.flatnonzero(arr == key) for key in SPLITS if spec.get(key) is not None}


# ------------------------------------------------------------------------------------------------
# The streamed split


def piece_rows(part: Feed) -> int:
    """The number of rows of a piece."""
    return len(next(iter(part[0].values())))


def _cat(a: Feed | None, b: Feed) -> Feed:
    if a is None:
        return b
    return tuple({k: np.concatenate([x[k], y[k]]) for k in x} for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _take(part: Feed, idx) -> Feed:
    return tuple({k: v[idx] for k, v in d.items()} for d in part)  # type: ignore[return-value]


def aligned(parts: Iterator[Feed], batch_size: int, skip_rows: int = 0) -> Iterator[Feed]:
    """The rows of ``parts`` (less the first ``skip_rows``) in pieces of whole batches: every piece but
    the last holds a multiple of ``batch_size`` rows, so cutting each piece into ``batch_size`` rows gives
    exactly the batches of the concatenated rows."""
    pending: Feed | None = None
    for part in parts:
        if skip_rows:
            drop = min(skip_rows, piece_rows(part))
            skip_rows -= drop
            part = _take(part, slice(drop, None))
        pending = _cat(pending, part)
        n = piece_rows(pending)
        full = n // batch_size * batch_size
        if full == n:
            yield pending
            pending = None
        elif full:
            yield _take(pending, slice(0, full))
            pending = _take(pending, slice(full, n))
    if pending is not None and piece_rows(pending):
        yield pending


def rebatch(parts: Iterator[Feed], batch_size: int) -> Iterator[Feed]:
    """Exact batches of ``batch_size`` rows from parts of any size; the last one may be smaller."""
    for piece in aligned(parts, batch_size):
        for s in range(0, piece_rows(piece), batch_size):
            yield _take(piece, slice(s, s + batch_size))


def shuffled(parts: Iterator[Feed], rng: np.random.Generator, buffer: int) -> Iterator[Feed]:
    """A bounded shuffle: parts join a pool; when it holds more than ``buffer`` rows it is permuted and
    the overflow goes out; at the end the rest is permuted and goes out."""
    pool: Feed | None = None
    for part in parts:
        pool = _cat(pool, part)
        n = piece_rows(pool)
        if n > buffer:
            perm = rng.permutation(n)
            yield _take(pool, perm[: n - buffer])
            pool = _take(pool, perm[n - buffer :])
    if pool is not None and piece_rows(pool):
        yield _take(pool, rng.permutation(piece_rows(pool)))


@dataclass
class StreamSplit:
    """One split of streamed data: quacks like :class:`mtlcli.data.preprocess.Arrays` where the runner needs it
    (``n``, ``support()``); :mod:`mtlcli.data.pipeline` builds its tf.data datasets from :meth:`parts`
    and :meth:`epoch_pieces`."""

    key: str
    n: int
    coverage: dict[str, int]
    plan: SplitPlan
    files: list[Path]
    columns: list[str]
    prep: data.Preprocessing
    chunk_rows: int
    shuffle_buffer: int
    weights: bool = False
    streamed: bool = True
    images: dict = field(default_factory=dict)

    def support(self) -> dict[str, int]:
        return dict(self.coverage)

    def parts(self) -> Iterator[Feed]:
        """The split's rows, transformed, one part per chunk, in file order."""
        for chunk in iter_chunks(self.files, self.columns, self.chunk_rows):
            idx = self.plan.assign(chunk).get(self.key)
            if idx is None or not len(idx):
                continue
            table = chunk.table if len(idx) == chunk.table.n_rows else chunk.table.take(idx)
            yield data.transform(self.prep, table, weights=self.weights).feed()

    def batches(self, batch_size: int) -> Iterator[Feed]:
        return rebatch(self.parts(), batch_size)

    def epoch_pieces(
        self, batch_size: int, seed: int, first_epoch: int, first_step: int, end_epoch: int
    ) -> Iterator[Feed]:
        """The shuffled training rows of epochs ``first_epoch..end_epoch-1`` (from batch ``first_step``
        of the first one) in batch-aligned pieces (:func:`aligned`); a piece never spans two epochs."""
        for epoch in range(first_epoch, end_epoch):
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)])
            skip = first_step * batch_size if epoch == first_epoch else 0
            yield from aligned(shuffled(self.parts(), rng, self.shuffle_buffer), batch_size, skip)

    def epoch_batches(
        self, batch_size: int, seed: int, first_epoch: int, first_step: int, end_epoch: int
    ) -> Iterator[Feed]:
        for piece in self.epoch_pieces(batch_size, seed, first_epoch, first_step, end_epoch):
            for s in range(0, piece_rows(piece), batch_size):
                yield _take(piece, slice(s, s + batch_size))

    def example(self) -> Feed:
        """One transformed row of missing values: the dtypes and shapes of the split's batches."""
        table = data.Table({c: np.array([None], dtype=object) for c in self.columns}, 1, "", first_row=0)
        return _transform_lenient(self.prep, table, self.weights).feed()


def _transform_lenient(prep: data.Preprocessing, table: data.Table, weights: bool) -> data.Arrays:
    """transform() of a one-row table of missing values (for dtypes and shapes): missing: error inputs
    and labels are given a harmless value first."""
    cols = dict(table.columns)
    for st in prep.inputs.values():
        if st.kind == "numeric":
            cols[st.column] = np.array([0.0])
    for st in prep.targets.values():
        for c in st.columns:
            cols[c] = np.array([np.nan]) if st.type in ("regression",) else np.array([None], dtype=object)
    return data.transform(prep, data.Table(cols, 1, "", first_row=0), weights=weights)


# ------------------------------------------------------------------------------------------------
# The statistics pass


def _vocab_key(value: Any) -> str:
    return str(data._label_key(value))


def _distinct(values: np.ndarray, counts: bool = False):
    """The distinct values of an array (with their counts): numpy for numbers, a Counter for objects."""
    if values.dtype.kind in "biuf":
        uniq, n = np.unique(values, return_counts=True)
        return list(zip(uniq, n.tolist(), strict=True)) if counts else list(uniq)
    c = Counter(values.tolist())
    return list(c.items()) if counts else list(c)


class _Moments:
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


class _Pass:
    """What the statistics pass accumulates."""

    def __init__(self, loaded: LoadedRecipe) -> None:
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.problems: list[Problem] = []
        self.reported: set = set()
        self.rows = {k: 0 for k in SPLITS}
        self.coverage: dict[str, dict[str, int]] = {}
        self.first: dict[str, dict[int, tuple[str, int, dict]]] = {k: {} for k in SPLITS}
        self.seen: dict[tuple, set] = {}
        self.moments: dict[str, _Moments] = {}
        self.counts: dict[str, Counter] = {}
        self.absent: dict[tuple[str, str], list] = {}  # (split, column) -> [count, file, line]

    def problem(self, key: tuple, problem: Problem) -> None:
        if key not in self.reported:
            self.reported.add(key)
            self.problems.append(problem)

    def keep(self, split: str, chunk: Chunk, table: data.Table, i: int) -> None:
        """Remember row ``i`` of ``table`` (all its columns) for the summary tables."""
        global_row = (table.file, int(table.row_ids[i]))
        store = self.first[split]
        if global_row not in store:
            store[global_row] = (
                table.file,
                int(table.row_ids[i]),
                {c: v[i] for c, v in table.columns.items()},
            )

    def new_keys(
        self, split: str, what: str, table: data.Table, raw: np.ndarray, rows: np.ndarray, key
    ) -> None:
        """Keep the first row of every ``key(value)`` not seen before (distinct values first: fast)."""
        seen = self.seen.setdefault((split, what), set())
        idx = np.flatnonzero(rows)
        if not len(idx):
            return
        want = {key(v) for v in _distinct(raw[idx])} - seen
        for i in idx if want else ():
            k = key(raw[i])
            if k in want:
                want.discard(k)
                seen.add(k)
                self.keep(split, None, table, int(i))
                if not want:
                    break

    def chunk(self, split: str, chunk: Chunk, table: data.Table) -> None:
        recipe, problems = self.recipe, []
        n = table.n_rows
        if not n:
            return
        first_of_split = self.rows[split] == 0
        self.rows[split] += n
        train = split == "train"
        if first_of_split:
            self.keep(split, chunk, table, 0)
        for name, spec in recipe.data.inputs.items():
            column = spec.column or name
            values = table.columns[column]
            if spec.kind == "numeric":
                x = data._as_float(values, table, column, problems)
                for p in problems:
                    self.problem(("number", split, column), p)
                problems.clear()
                if np.isinf(x).any():
                    row = int(np.flatnonzero(np.isinf(x))[0])
                    self.problem(
                        ("inf", split, column),
                        Problem("infinite value", f"column {column!r}", *table.where(row)),
                    )
                absent = np.isnan(x)
                if spec.missing == "error" and absent.any():
                    entry = self.absent.setdefault(
                        (split, column), [0, *table.where(int(np.flatnonzero(absent)[0]))]
                    )
                    entry[0] += int(absent.sum())
                if train:
                    self.moments.setdefault(name, _Moments()).add(x)
            elif spec.kind == "categorical" and train:
                present, raw = data._labels(values)
                self.new_keys(split, f"input {name}", table, raw, present, _vocab_key)
        cover = self.coverage.setdefault(split, {})
        for task, spec in recipe.model.tasks.items():
            cols = target_columns(spec, task)
            before = len(problems)
            active = data.when_mask(data.when_conditions(spec.when), table, task, problems)
            if len(problems) > before:
                for p in problems[before:]:
                    self.problem(("when", split, task), p)
                del problems[before:]
                continue
            if spec.type == "regression":
                y = np.stack([data._as_float(table.columns[c], table, c, problems) for c in cols], axis=1)
                for p in problems:
                    self.problem(("number", split, p.path), p)
                problems.clear()
                for j, c in enumerate(cols):
                    if np.isinf(y[:, j]).any():
                        row = int(np.flatnonzero(np.isinf(y[:, j]))[0])
                        self.problem(
                            ("inf", split, c),
                            Problem(
                                "infinite value in a regression target", f"column {c!r}", *table.where(row)
                            ),
                        )
                rows = active & np.isfinite(y).all(axis=1)
                if train:
                    for j in range(len(cols)):
                        self.moments.setdefault(f"{task}\0{j}", _Moments()).add(y[rows, j])
                    if rows.any() and ("task", task) not in self.seen.setdefault(
                        ("train", "labelled"), set()
                    ):
                        self.seen[("train", "labelled")].add(("task", task))
                        self.keep(split, chunk, table, int(np.flatnonzero(rows)[0]))
            elif spec.type == "multilabel" and spec.separator is None:
                present = np.ones(n, bool)
                for c in cols:
                    if not data._binary_column(table, c, problems):
                        for p in problems:
                            self.problem(("binary", split, c), p)
                        problems.clear()
                    present &= data._labels(table.columns[c])[0]
                rows = present & active
                if (
                    train
                    and rows.any()
                    and ("task", task) not in self.seen.setdefault(("train", "labelled"), set())
                ):
                    self.seen[("train", "labelled")].add(("task", task))
                    self.keep(split, chunk, table, int(np.flatnonzero(rows)[0]))
            else:
                present, raw = data._labels(table.columns[cols[0]])
                rows = present & active
                if spec.type == "multilabel":
                    keys = [
                        frozenset(t.strip() for t in str(v).split(spec.separator)) if r else None
                        for v, r in zip(raw, rows, strict=True)
                    ]
                    seen = self.seen.setdefault((split, f"tokens {task}"), set())
                    for i in np.flatnonzero(rows):
                        if not keys[i] <= seen:
                            seen.update(keys[i])
                            self.keep(split, chunk, table, int(i))
                else:
                    self.new_keys(split, f"task {task}", table, raw, rows, data._label_key)
                    if train and spec.class_weight == "balanced":
                        counts = self.counts.setdefault(task, Counter())
                        for v, c in _distinct(raw[rows], counts=True):
                            counts[data._label_key(v)] += c
            cover[task] = cover.get(task, 0) + int(rows.sum())

    def summary(self, split: str) -> data.Table:
        files = list(dict.fromkeys(f for f, _, _ in self.first[split].values()))
        rows = sorted(self.first[split].values(), key=lambda r: (files.index(r[0]), r[1]))
        columns = {c: np.array([r[2][c] for r in rows] + [None], dtype=object)[:-1] for c in rows[0][2]}
        return data.Table(
            columns,
            len(rows),
            files[0] if len(files) == 1 else ", ".join(files),
            first_row=0,
            row_ids=np.array([line for _, line, _ in rows], dtype=np.int64),
            files=files,
            origin=np.array([files.index(f) for f, _, _ in rows], dtype=np.int64),
        )


def prepare(loaded: LoadedRecipe, seed: int, opts: dict[str, int]) -> data.Prepared:
    """The statistics pass over streamed data (see the module docstring); no TensorFlow."""
    recipe = loaded.recipe
    unsupported = stream_unsupported(recipe.model_dump(mode="python")["data"])
    if unsupported:
        raise RecipeError(problems=[loaded.problem(m, p) for m, p in unsupported])
    chunk_rows = int(opts["chunk_rows"])

    plans: list[SplitPlan] = []
    fractions = {
        k: float(getattr(recipe.data, k))
        for k in ("test", "validation")
        if data._is_fraction(getattr(recipe.data, k)) and not recipe.data.split
    }
    if recipe.data.split:
        plans.append(SplitPlan(recipe.data.train, column=dict(recipe.data.split)))
    elif fractions:
        plans.append(SplitPlan(recipe.data.train, fractions=fractions, seed=seed))
    else:
        plans.append(SplitPlan(recipe.data.train, only="train"))
    for key in ("validation", "test"):
        value = getattr(recipe.data, key)
        if value is not None and not data._is_fraction(value) and not recipe.data.split:
            plans.append(SplitPlan(value, only=key))

    problems: list[Problem] = []
    heads: dict[str, tuple[list[Path], list[str]]] = {}
    for i, plan in enumerate(plans):
        key = "train" if i == 0 else plan.only
        try:
            files, header = columns_of(plan.source, loaded.base_dir)
        except DataError as exc:
            problems.extend(
                Problem(p.message + f" (data.{key}: {plan.source!r})", p.path, p.file, p.line)
                for p in exc.problems
            )
            continue
        empty = data.Table(
            {c: np.array([], dtype=object) for c in header},
            0,
            str(files[0]) if len(files) == 1 else plan.source,
        )
        problems.extend(data._check_columns(loaded, empty, split_too=i == 0))
        needed = [c for c, _, _ in data._needed_columns(loaded, True, i == 0)]
        heads[key] = (files, [c for c in header if c in needed])
    if problems:
        raise DataError(problems=problems)

    acc = _Pass(loaded)
    for i, plan in enumerate(plans):
        key = "train" if i == 0 else plan.only
        files, columns = heads[key]
        for chunk in iter_chunks(files, columns, chunk_rows):
            for split, idx in plan.assign(chunk).items():
                if len(idx):
                    table = chunk.table if len(idx) == chunk.table.n_rows else chunk.table.take(idx)
                    acc.chunk(split, chunk, table)
    for (_split, column), (count, file, line) in acc.absent.items():
        acc.problems.append(
            Problem(
                f"missing value ({count} in all); the input has missing: error (use missing: mean or zero to impute)",
                f"column {column!r}",
                file,
                line,
            )
        )
    problems = list(acc.problems)

    def own_plan(key: str) -> SplitPlan | None:
        return next((p for p in plans[1:] if p.only == key), None)

    split_spec = recipe.data.split or {}
    present = ["train"] + [
        k
        for k in ("test", "validation")
        if k in fractions or split_spec.get(k) is not None or own_plan(k) is not None
    ]
    train_source = str(heads["train"][0][0]) if len(heads["train"][0]) == 1 else recipe.data.train
    for key in present:
        if acc.rows[key]:
            continue
        if recipe.data.split:
            problems.append(
                Problem(
                    f"the {key} split is empty: no row has a value in data.split.{key} {recipe.data.split[key]!r}",
                    f"column {recipe.data.split['column']!r}",
                    train_source,
                )
            )
        elif key in fractions:
            n = sum(acc.rows.values())
            problems.append(
                Problem(f"data.{key}: {fractions[key]} of {n} rows is an empty split", "", train_source)
            )
        elif key == "train" and fractions:
            problems.append(
                Problem("no rows are left for training after the validation/test split", "", train_source)
            )
        else:
            problems.append(Problem(f"the {key} split is empty", "", str(heads[key][0][0])))
    if problems:
        raise DataError(problems=_unique(problems))

    try:
        prep = data.fit(recipe, acc.summary("train"), loaded)
    except DataError as exc:
        raise DataError(problems=_unique(exc.problems)) from None
    for name, st in prep.inputs.items():
        if st.kind == "numeric":
            m = acc.moments.get(name) or _Moments()
            st.mean, st.std = (m.mean if m.n else 0.0), m.std()
    for task, st in prep.targets.items():
        if st.type == "regression":
            ms = [acc.moments.get(f"{task}\0{j}") or _Moments() for j in range(len(st.columns))]
            if isinstance(st.column, list):
                st.mean, st.std = [m.mean for m in ms], [m.std() for m in ms]
            else:
                st.mean, st.std = ms[0].mean, ms[0].std()
        elif st.class_weights is not None and recipe.model.tasks[task].class_weight == "balanced":
            counts = acc.counts.get(task, Counter())
            per = np.array([counts.get(c, 0) for c in st.classes], dtype=np.float64)
            total = per.sum()
            st.class_weights = [float(total / (len(st.classes) * c)) if c else 1.0 for c in per]
    for key in present:  # labels of validation / test rows unseen in training
        if key != "train":
            try:
                data.transform(prep, acc.summary(key))
            except DataError as exc:
                problems.extend(exc.problems)
    if problems:
        raise DataError(problems=_unique(problems))

    splits: dict[str, StreamSplit] = {}
    for key in present:
        plan = own_plan(key) or plans[0]
        files, columns = heads[key if plan is not plans[0] else "train"]
        splits[key] = StreamSplit(
            key,
            acc.rows[key],
            acc.coverage.get(key, {}),
            plan,
            files,
            columns,
            prep,
            chunk_rows,
            int(opts["shuffle_buffer"]),
            weights=key == "train",
        )
    info = _info(loaded, seed, plans, heads, splits, opts, fractions)
    return data.Prepared(prep, splits, info)


def _unique(problems: list[Problem]) -> list[Problem]:
    out, seen = [], set()
    for p in problems:
        k = (p.message, p.path, p.file, p.line)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out


def _info(loaded, seed, plans, heads, splits, opts, fractions) -> dict[str, Any]:
    files = {}
    for i, plan in enumerate(plans):
        key = "train" if i == 0 else plan.only
        resolved = sources.resolve(plan.source, loaded.base_dir)
        paths = heads[key][0]
        files[key] = {
            "path": resolved if isinstance(resolved, str) else str(paths[0]),
            "source": resolved,
            "sha256": sources.digest(plan.source, loaded.base_dir),
            "rows": sum(s.n for s in splits.values() if s.plan is plan),
        }
    info: dict[str, Any] = {
        "files": files,
        "seed": seed,
        "split_rows": {k: int(v.n) for k, v in splits.items()},
        "coverage": {k: v.support() for k, v in splits.items()},
        "stream": {
            "chunk_rows": int(opts["chunk_rows"]),
            "shuffle_buffer": int(opts["shuffle_buffer"]),
            "fractions": fractions,
            "split": "column" if plans[0].column else ("hash" if plans[0].only is None else "files"),
        },
    }
    if loaded.recipe.data.split:
        info["split_by"] = dict(loaded.recipe.data.split)
    return info


# ------------------------------------------------------------------------------------------------
# Evaluating a streamed run


def is_streamed(info: dict[str, Any]) -> bool:
    return isinstance(info.get("stream"), dict)


def run_split(info: dict[str, Any], split: str, prep: data.Preprocessing) -> StreamSplit:
    """A split of a streamed run, rebuilt from data.json (the caller checked the file's sha256)."""
    files_info = info["files"]
    stream = info["stream"]
    if split in files_info:
        plan = SplitPlan(files_info[split]["source"], only=split)
    elif info.get("split_by"):
        plan = SplitPlan(files_info["train"]["source"], column=dict(info["split_by"]))
    else:
        plan = SplitPlan(
            files_info["train"]["source"], fractions=dict(stream["fractions"]), seed=int(info["seed"])
        )
    files, header = columns_of(plan.source, None)
    needed = {c for st in prep.inputs.values() for c in [st.column]}
    for st in prep.targets.values():
        needed.update(st.columns)
        for cond in st.when or []:
            needed.add(cond["column"])
    if plan.column:
        needed.add(plan.column["column"])
    columns = [c for c in header if c in needed]
    return StreamSplit(
        split,
        int(info["split_rows"][split]),
        dict(info["coverage"][split]),
        plan,
        files,
        columns,
        prep,
        int(stream["chunk_rows"]),
        int(stream["shuffle_buffer"]),
    )


def evaluate_run(run_dir: Path, split: str | None, model_path: Path, verbose: bool = False):
    """``mtl evaluate RUN_DIR`` of a streamed run: (split, results, model path), or None when the run
    did not stream. The file's sha256 must match data.json, as in memory."""
    import json

    from mtlcli.errors import CheckpointError
    from mtlcli.run import runner

    info_path = run_dir / "data.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # the in-memory path reports it
    if not is_streamed(info):
        return None
    split = data.choose_split(run_dir, info, split)
    entry = info["files"].get(split) or info["files"]["train"]
    source = entry.get("source", entry["path"])
    try:
        files_now = sources.source_files(source)
        digest = sources.digest(source) if files_now and all(f.exists() for f in files_now) else None
    except DataError:
        digest = None
    if digest is None:
        raise DataError(
            problems=[
                Problem(f"the {split} data of this run is gone; pass --data FILE", "", str(entry["path"]))
            ]
        )
    if digest != entry["sha256"]:
        raise DataError(
            problems=[
                Problem(
                    f"the file changed since training (sha256 differs), so the {split} split cannot be rebuilt; "
                    f"pass --data FILE to evaluate it anyway",
                    "",
                    str(entry["path"]),
                )
            ]
        )
    tf = __import__("mtlcli.tfutil", fromlist=["import_tf"]).import_tf(verbose)
    model = runner.load_model(model_path, verbose)
    try:
        prep = data.Preprocessing.from_dict(model.spec["preprocessing"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{model_path}: no preprocessing in the model spec ({exc})") from None
    results = runner.evaluate_arrays(tf, model, run_split(info, split, prep))
    return split, results, model_path
