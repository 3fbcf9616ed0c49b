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
from mtlcli.data.columns import check_columns, needed_columns
from mtlcli.data.sources import TABULAR, Chunk, Table, columns_of, iter_chunks
from mtlcli.data.split import SPLITS, SplitPlan
from mtlcli.data.values import (
    Moments,
    as_float,
    distinct,
    is_fraction,
    label_key,
    labels,
    vocab_key,
    when_mask,
)
from mtlcli.errors import DataError, Problem, RecipeError
from mtlcli.recipe import LoadedRecipe
from mtlcli.recipe.data_checks import stream_unsupported, target_columns, when_conditions

AUTO_BYTES = 1 << 30  # 1 GiB on disk
DEFAULT_CHUNK_ROWS = 65_536
DEFAULT_SHUFFLE_BUFFER = 100_000

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
    if not files or any(not f.is_file() or sources.suffix(f) not in TABULAR for f in files):
        return None
    return base if sum(f.stat().st_size for f in files) > AUTO_BYTES else None


# ------------------------------------------------------------------------------------------------
# Reading in chunks


# ------------------------------------------------------------------------------------------------
# Splits


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
        table = Table({c: np.array([None], dtype=object) for c in self.columns}, 1, "", first_row=0)
        return _transform_lenient(self.prep, table, self.weights).feed()


def _transform_lenient(prep: data.Preprocessing, table: Table, weights: bool) -> data.Arrays:
    """transform() of a one-row table of missing values (for dtypes and shapes): missing: error inputs
    and labels are given a harmless value first."""
    cols = dict(table.columns)
    for st in prep.inputs.values():
        if st.kind == "numeric":
            cols[st.column] = np.array([0.0])
    for st in prep.targets.values():
        for c in st.columns:
            cols[c] = np.array([np.nan]) if st.type in ("regression",) else np.array([None], dtype=object)
    return data.transform(prep, Table(cols, 1, "", first_row=0), weights=weights)


# ------------------------------------------------------------------------------------------------
# The statistics pass


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
        self.moments: dict[str, Moments] = {}
        self.counts: dict[str, Counter] = {}
        self.absent: dict[tuple[str, str], list] = {}  # (split, column) -> [count, file, line]

    def problem(self, key: tuple, problem: Problem) -> None:
        if key not in self.reported:
            self.reported.add(key)
            self.problems.append(problem)

    def keep(self, split: str, chunk: Chunk, table: Table, i: int) -> None:
        """Remember row ``i`` of ``table`` (all its columns) for the summary tables."""
        global_row = (table.file, int(table.row_ids[i]))
        store = self.first[split]
        if global_row not in store:
            store[global_row] = (
                table.file,
                int(table.row_ids[i]),
                {c: v[i] for c, v in table.columns.items()},
            )

    def new_keys(self, split: str, what: str, table: Table, raw: np.ndarray, rows: np.ndarray, key) -> None:
        """Keep the first row of every ``key(value)`` not seen before (distinct values first: fast)."""
        seen = self.seen.setdefault((split, what), set())
        idx = np.flatnonzero(rows)
        if not len(idx):
            return
        want = {key(v) for v in distinct(raw[idx])} - seen
        for i in idx if want else ():
            k = key(raw[i])
            if k in want:
                want.discard(k)
                seen.add(k)
                self.keep(split, None, table, int(i))
                if not want:
                    break

    def chunk(self, split: str, chunk: Chunk, table: Table) -> None:
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
                x = as_float(values, table, column, problems)
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
                    self.moments.setdefault(name, Moments()).add(x)
            elif spec.kind == "categorical" and train:
                present, raw = labels(values)
                self.new_keys(split, f"input {name}", table, raw, present, vocab_key)
        cover = self.coverage.setdefault(split, {})
        for task, spec in recipe.model.tasks.items():
            cols = target_columns(spec, task)
            before = len(problems)
            active = when_mask(when_conditions(spec.when), table, task, problems)
            if len(problems) > before:
                for p in problems[before:]:
                    self.problem(("when", split, task), p)
                del problems[before:]
                continue
            if spec.type == "regression":
                y = np.stack([as_float(table.columns[c], table, c, problems) for c in cols], axis=1)
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
                        self.moments.setdefault(f"{task}\0{j}", Moments()).add(y[rows, j])
                    if rows.any() and ("task", task) not in self.seen.setdefault(
                        ("train", "labelled"), set()
                    ):
                        self.seen[("train", "labelled")].add(("task", task))
                        self.keep(split, chunk, table, int(np.flatnonzero(rows)[0]))
            elif spec.type == "multilabel" and spec.separator is None:
                present = np.ones(n, bool)
                for c in cols:
                    if not data.binary_column(table, c, problems):
                        for p in problems:
                            self.problem(("binary", split, c), p)
                        problems.clear()
                    present &= labels(table.columns[c])[0]
                rows = present & active
                if (
                    train
                    and rows.any()
                    and ("task", task) not in self.seen.setdefault(("train", "labelled"), set())
                ):
                    self.seen[("train", "labelled")].add(("task", task))
                    self.keep(split, chunk, table, int(np.flatnonzero(rows)[0]))
            else:
                present, raw = labels(table.columns[cols[0]])
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
                    self.new_keys(split, f"task {task}", table, raw, rows, label_key)
                    if train and spec.class_weight == "balanced":
                        counts = self.counts.setdefault(task, Counter())
                        for v, c in distinct(raw[rows], counts=True):
                            counts[label_key(v)] += c
            cover[task] = cover.get(task, 0) + int(rows.sum())

    def summary(self, split: str) -> Table:
        files = list(dict.fromkeys(f for f, _, _ in self.first[split].values()))
        rows = sorted(self.first[split].values(), key=lambda r: (files.index(r[0]), r[1]))
        columns = {c: np.array([r[2][c] for r in rows] + [None], dtype=object)[:-1] for c in rows[0][2]}
        return Table(
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
        if is_fraction(getattr(recipe.data, k)) and not recipe.data.split
    }
    if recipe.data.split:
        plans.append(SplitPlan(recipe.data.train, column=dict(recipe.data.split)))
    elif fractions:
        plans.append(SplitPlan(recipe.data.train, fractions=fractions, seed=seed))
    else:
        plans.append(SplitPlan(recipe.data.train, only="train"))
    for key in ("validation", "test"):
        value = getattr(recipe.data, key)
        if value is not None and not is_fraction(value) and not recipe.data.split:
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
        empty = Table(
            {c: np.array([], dtype=object) for c in header},
            0,
            str(files[0]) if len(files) == 1 else plan.source,
        )
        problems.extend(check_columns(loaded, empty, split_too=i == 0))
        needed = [c for c, _, _ in needed_columns(loaded, True, i == 0)]
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
            m = acc.moments.get(name) or Moments()
            st.mean, st.std = (m.mean if m.n else 0.0), m.std()
    for task, st in prep.targets.items():
        if st.type == "regression":
            ms = [acc.moments.get(f"{task}\0{j}") or Moments() for j in range(len(st.columns))]
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


# ------------------------------------------------------------------------------------------------
# A streamed run's split, again


def is_streamed(info: dict[str, Any]) -> bool:
    """Whether a run's data.json describes streamed data."""
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
