"""Larger-than-memory CSV / CSV.gz / Parquet: a statistics pass in chunks, then tf.data streams.

numpy + pandas (+ pyarrow for Parquet), no TensorFlow, so ``mtl validate`` runs the statistics pass.

* **When.** ``data.stream: true`` (or a mapping ``{chunk_rows: N, shuffle_buffer: M}``) streams;
  ``false`` never does; absent, a training source of CSV / CSV.gz / Parquet files larger than
  :data:`AUTO_BYTES` on disk in total streams.
* **Statistics.** :func:`prepare` reads every source once, ``chunk_rows`` rows at a time
  (:func:`mtlcli.data.sources.iter_chunks`), and feeds every chunk to the same accumulators as in
  memory (:mod:`mtlcli.data.inputs`, :mod:`mtlcli.data.targets`): moments (Chan's parallel update),
  vocabularies, label counts; plus coverage per split and the first row of every distinct label, from
  which the targets' classes and their errors come out as in memory. The same checks as in memory run
  on every chunk, naming the file and line; each kind of problem is reported once per split and column.
* **Splits.** :mod:`mtlcli.data.split`: fractions hash ``(seed, row number)``; column splits and
  separate files work as in memory. ``group_by``, image / array inputs and non-tabular sources are
  recipe errors.
* **Order.** Epoch ``e`` reads the training rows in file order, ``chunk_rows`` at a time, through a
  shuffle pool of ``shuffle_buffer`` rows drawn with ``numpy.random.default_rng([seed, e])``: when the
  pool overflows it is permuted and the overflow goes out. With a buffer at least as large as the
  training split the order is exactly the in-memory one (:func:`mtlcli.data.pipeline.epoch_order`).
  A mid-epoch resume replays the epoch's stream and drops the batches already done (exact, at the
  cost of re-reading that part of the file).
* **Pieces.** Python runs once per piece (a chunk, or a pool's overflow), not per step:
  :mod:`mtlcli.data.pipeline` turns batch-aligned pieces (:func:`aligned`) of raw features into
  tf.data batches and runs the TensorFlow transform on each piece.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.data import csvfiles, sources
from mtlcli.data import inputs as input_kinds
from mtlcli.data import preprocess as data
from mtlcli.data import targets as task_types
from mtlcli.data.columns import check_columns, needed_columns
from mtlcli.data.inputs import InputStats, missing_error
from mtlcli.data.sources import TABULAR, Table, columns_of, iter_chunks
from mtlcli.data.split import SPLITS, SplitPlan
from mtlcli.data.values import CellCount, CellProblem, capped, distinct, is_fraction, when_mask
from mtlcli.errors import DataError, Problem, RecipeError
from mtlcli.recipe import LoadedRecipe
from mtlcli.recipe.data_checks import stream_unsupported

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
    train = sources.path_of(loaded.recipe.data.train)
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
    """One split of streamed data: quacks like :class:`mtlcli.data.preprocess.Arrays` where the runner
    needs it (``n``, ``support()``); :mod:`mtlcli.data.pipeline` builds its tf.data datasets from
    :meth:`parts` / :meth:`epoch_pieces` with ``raw=True`` and transforms each piece inside tf.data."""

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
    dialect: dict | None = None  # of CSV files (mtlcli.data.csvfiles)

    def support(self) -> dict[str, int]:
        return dict(self.coverage)

    def parts(self, raw: bool = False) -> Iterator[Feed]:
        """The split's rows, one part per chunk, in file order: model inputs, or (``raw``) the checked raw
        features the TensorFlow transform takes (:mod:`mtlcli.data.inputs`)."""
        for chunk in iter_chunks(self.files, self.columns, self.chunk_rows, self.dialect):
            idx = self.plan.assign(chunk).get(self.key)
            if idx is None or not len(idx):
                continue
            table = chunk.table if len(idx) == chunk.table.n_rows else chunk.table.take(idx)
            arrays = data.transform(self.prep, table, weights=self.weights)
            yield (arrays.raw if raw else arrays.x), arrays.y, arrays.masks()

    def batches(self, batch_size: int) -> Iterator[Feed]:
        return rebatch(self.parts(), batch_size)

    def epoch_pieces(
        self, batch_size: int, seed: int, first_epoch: int, first_step: int, end_epoch: int, raw: bool = False
    ) -> Iterator[Feed]:
        """The shuffled training rows of epochs ``first_epoch..end_epoch-1`` (from batch ``first_step``
        of the first one) in batch-aligned pieces (:func:`aligned`); a piece never spans two epochs."""
        for epoch in range(first_epoch, end_epoch):
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)])
            skip = first_step * batch_size if epoch == first_epoch else 0
            yield from aligned(shuffled(self.parts(raw), rng, self.shuffle_buffer), batch_size, skip)

    def epoch_batches(
        self, batch_size: int, seed: int, first_epoch: int, first_step: int, end_epoch: int
    ) -> Iterator[Feed]:
        for piece in self.epoch_pieces(batch_size, seed, first_epoch, first_step, end_epoch):
            for s in range(0, piece_rows(piece), batch_size):
                yield _take(piece, slice(s, s + batch_size))

    def example(self) -> Feed:
        """One raw row of missing values: the dtypes and shapes of :meth:`parts` with ``raw=True``."""
        cols: dict[str, np.ndarray] = {c: np.array([None], dtype=object) for c in self.columns}
        for st in self.prep.inputs.values():  # missing: error inputs get a harmless value
            if st.kind == "numeric":
                cols[st.column] = np.array([0.0])
        for st in self.prep.targets.values():
            for c in st.columns:
                cols[c] = np.array([np.nan]) if st.type == "regression" else np.array([None], dtype=object)
        arrays = data.transform(self.prep, Table(cols, 1, "", first_row=0), weights=self.weights)
        return arrays.raw, arrays.y, arrays.masks()


# ------------------------------------------------------------------------------------------------
# The statistics pass


def _key(split: str, problem: Problem) -> tuple:
    """Problems of one kind, split and column are reported once (for the first chunk that has them)."""
    return split, problem.path, " ".join(problem.message.split()[:3])


class _Keeper:
    """Keeps, for one split, the rows that the summary table needs (see :mod:`mtlcli.data.targets`)."""

    active = True

    def __init__(self, owner: _Pass, split: str) -> None:
        self.owner, self.split = owner, split

    def keep(self, table: Table, i: int) -> None:
        """Remember row ``i`` of ``table`` (all its columns) for the summary table."""
        store = self.owner.first[self.split]
        row = (table.file, int(table.row_ids[i]))
        if row not in store:
            store[row] = (table.file, int(table.row_ids[i]), {c: v[i] for c, v in table.columns.items()})

    def seen(self, what: str) -> set:
        return self.owner.seen.setdefault((self.split, what), set())

    def new_keys(self, what: str, table: Table, raw: np.ndarray, rows: np.ndarray, key) -> None:
        """Keep the first row of every ``key(value)`` not seen before (distinct values first: fast)."""
        seen = self.seen(what)
        idx = np.flatnonzero(rows)
        want = {key(v) for v in distinct(raw[idx])} - seen if len(idx) else set()
        for i in idx if want else ():
            k = key(raw[i])
            if k in want:
                want.discard(k)
                seen.add(k)
                self.keep(table, int(i))
                if not want:
                    break


class _Pass:
    """The statistics pass: the accumulators of :mod:`mtlcli.data.inputs` / :mod:`mtlcli.data.targets`
    fed chunk by chunk, row counts and label coverage per split, and the summary rows."""

    def __init__(self, loaded: LoadedRecipe) -> None:
        self.loaded, self.recipe = loaded, loaded.recipe
        self.problems: list[Problem] = []
        self.reported: set = set()
        self.rows = {k: 0 for k in SPLITS}
        self.coverage: dict[str, dict[str, int]] = {}
        self.first: dict[str, dict[tuple, tuple[str, int, dict]]] = {k: {} for k in SPLITS}
        self.seen: dict[tuple, set] = {}
        self.inputs: dict[str, Any] = {}
        self.targets = {t: task_types.target(t, spec, loaded) for t, spec in self.recipe.model.tasks.items()}
        self.tally: dict[str, dict[str, list]] = {k: {} for k in SPLITS}  # missing: error counts

    def report(self, split: str, problems: list[Problem]) -> None:
        """Bad cells add up over the chunks (capped per column: bounded memory); any other kind of
        problem is kept once per split and column."""
        cells = False
        for p in problems:
            if isinstance(p, (CellProblem, CellCount)):
                self.problems.append(p)
                cells = True
            elif _key(split, p) not in self.reported:
                self.reported.add(_key(split, p))
                self.problems.append(p)
        problems.clear()
        if cells:
            self.problems = capped(self.problems)

    def chunk(self, split: str, table: Table) -> None:
        if not table.n_rows:
            return
        keeper, train, problems = _Keeper(self, split), split == "train", []
        if self.rows[split] == 0:
            keeper.keep(table, 0)
        self.rows[split] += table.n_rows
        for name, spec in self.recipe.data.inputs.items():
            values = table.columns[spec.column or name]
            acc = self.inputs.setdefault(name, input_kinds.fitter(name, spec, values))
            if spec.kind == "numeric":  # every split is checked; training rows add to the moments
                st = InputStats("numeric", spec.column or name, missing=spec.missing or "mean")
                x = input_kinds.Numeric.encode(st, values, table, problems, self.tally[split])
                if train:
                    acc.add(x)
            elif train:
                acc.fit(values, table, problems)
        self.report(split, problems)
        cover = self.coverage.setdefault(split, {})
        for task, acc in self.targets.items():
            active = when_mask(acc.when, table, task, problems)
            if problems:
                self.report(split, problems)
                continue
            rows = acc.add(table, active, problems, train, keeper)
            self.report(split, problems)
            cover[task] = cover.get(task, 0) + int(rows.sum())

    def missing_values(self) -> None:
        """Report each ``missing: error`` input's missing values, once per split, with their count."""
        for split in SPLITS:
            for column, entry in self.tally[split].items():
                self.problems.append(missing_error(column, *entry))

    def summary(self, split: str) -> Table:
        """The kept rows of a split as one table, in file order, each row keeping its file and line."""
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

    def preprocessing(self) -> data.Preprocessing:
        """The fitted preprocessing: inputs from their accumulators, targets from theirs and the
        training summary (classes and their errors as in memory)."""
        problems: list[Problem] = []
        inputs = {}
        for name, acc in self.inputs.items():
            st = acc.stats()
            if st is not None:
                inputs[name] = st
        summary = self.summary("train")
        targets = {}
        for task, acc in self.targets.items():
            st = acc.fit(summary, when_mask(acc.when, summary, task, problems), problems)
            if st is not None:
                targets[task] = st
        if problems:
            raise DataError(problems=_unique(problems))
        return data.Preprocessing(inputs, targets)


# ------------------------------------------------------------------------------------------------
# The streamed data step


def _plans(loaded: LoadedRecipe, seed: int) -> tuple[list[SplitPlan], dict[str, float]]:
    """One plan per source: the training source (split by a column, hashed fractions, or all train),
    then the validation / test files of their own."""
    data_spec = loaded.recipe.data
    fractions = {
        k: float(getattr(data_spec, k))
        for k in ("test", "validation")
        if is_fraction(getattr(data_spec, k)) and not data_spec.split
    }
    if data_spec.split:
        plans = [SplitPlan(data_spec.train, column=dict(data_spec.split))]
    elif fractions:
        plans = [SplitPlan(data_spec.train, fractions=fractions, seed=seed)]
    else:
        plans = [SplitPlan(data_spec.train, only="train")]
    for key in ("validation", "test"):
        value = getattr(data_spec, key)
        if value is not None and not is_fraction(value) and not data_spec.split:
            plans.append(SplitPlan(value, only=key))
    return plans, fractions


def _heads(loaded: LoadedRecipe, plans: list[SplitPlan]) -> dict[str, tuple[list[Path], list[str]]]:
    """Each source's files and the columns to read, checked from the headers only."""
    problems: list[Problem] = []
    heads: dict[str, tuple[list[Path], list[str]]] = {}
    for i, plan in enumerate(plans):
        key = "train" if i == 0 else plan.only
        try:
            files, header = columns_of(plan.source, loaded.base_dir, _dialect(loaded, plan))
        except DataError as exc:
            problems.extend(_named(exc.problems, key, plan.source))
            continue
        shown = str(files[0]) if len(files) == 1 else plan.source
        empty = Table({c: np.array([], dtype=object) for c in header}, 0, shown)
        problems.extend(check_columns(loaded, empty, split_too=i == 0))
        needed = [c for c, _, _ in needed_columns(loaded, True, i == 0)]
        heads[key] = (files, [c for c in header if c in needed])
    if problems:
        raise DataError(problems=problems)
    return heads


def _empty_splits(loaded, acc: _Pass, present, fractions, heads) -> list[Problem]:
    """A problem for every split that got no row, worded as in memory."""
    data_spec, problems = loaded.recipe.data, []
    train_source = str(heads["train"][0][0]) if len(heads["train"][0]) == 1 else data_spec.train
    for key in present:
        if acc.rows[key]:
            continue
        if data_spec.split:
            message = (
                f"the {key} split is empty: no row has a value in data.split.{key} {data_spec.split[key]!r}"
            )
            problems.append(Problem(message, f"column {data_spec.split['column']!r}", train_source))
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
    return problems


def prepare(loaded: LoadedRecipe, seed: int, opts: dict[str, int]) -> data.Prepared:
    """The statistics pass over streamed data (see the module docstring); no TensorFlow."""
    recipe = loaded.recipe
    unsupported = stream_unsupported(recipe.model_dump(mode="python")["data"])
    if unsupported:
        raise RecipeError(problems=[loaded.problem(m, p) for m, p in unsupported])
    chunk_rows = int(opts["chunk_rows"])
    plans, fractions = _plans(loaded, seed)
    heads = _heads(loaded, plans)
    acc = _Pass(loaded)
    for i, plan in enumerate(plans):
        key = "train" if i == 0 else plan.only
        files, columns = heads[key]
        try:
            for chunk in iter_chunks(files, columns, chunk_rows, _dialect(loaded, plan), check=True):
                for split, idx in plan.assign(chunk).items():
                    if len(idx):
                        acc.chunk(
                            split, chunk.table if len(idx) == chunk.table.n_rows else chunk.table.take(idx)
                        )
        except DataError as exc:  # a file that is not a table: named as the recipe gives it, as in memory
            raise DataError(problems=_named(exc.problems, key, plan.source)) from None
    acc.missing_values()

    def own_plan(key: str) -> SplitPlan | None:
        return next((p for p in plans[1:] if p.only == key), None)

    split_spec = recipe.data.split or {}
    present = ["train"] + [
        k for k in ("test", "validation") if k in fractions or split_spec.get(k) is not None or own_plan(k)
    ]
    problems = acc.problems + _empty_splits(loaded, acc, present, fractions, heads)
    if problems:
        raise DataError(problems=_unique(problems))
    prep = acc.preprocessing()
    splits: dict[str, StreamSplit] = {}
    for key in present:
        plan = own_plan(key) or plans[0]
        files, columns = heads[key if plan is not plans[0] else "train"]
        splits[key] = StreamSplit(
            key, acc.rows[key], acc.coverage.get(key, {}), plan, files, columns, prep, chunk_rows,
            int(opts["shuffle_buffer"]), weights=key == "train", dialect=_dialect(loaded, plan) or None,
        )  # fmt: skip
    for key in present:  # labels of validation / test rows unseen in training
        if key != "train":
            try:
                data.transform(prep, acc.summary(key))
            except DataError:
                problems.extend(_every_bad_row(splits[key]))
    if problems:
        raise DataError(problems=_unique(problems))
    return data.Prepared(prep, splits, _info(loaded, seed, plans, heads, splits, opts, fractions))


def _every_bad_row(split: StreamSplit) -> list[Problem]:
    """The problems of every row of a split, read again chunk by chunk (only once its summary rows, the
    first of every label, showed that some are wrong), so every bad cell is named, as in memory."""
    problems: list[Problem] = []
    for chunk in iter_chunks(split.files, split.columns, split.chunk_rows, split.dialect, check=True):
        idx = split.plan.assign(chunk).get(split.key)  # (check: the scan numbers rows by physical line)
        if idx is not None and len(idx):
            try:
                data.transform(split.prep, chunk.table.take(idx))
            except DataError as exc:
                problems = capped(problems + exc.problems)
    return problems


def _named(problems: list[Problem], key: str, source) -> list[Problem]:
    """Problems of reading a source, each ending with the source as the recipe gives it."""
    return [Problem(p.message + f" (data.{key}: {source!r})", p.path, p.file, p.line) for p in problems]


def _dialect(loaded: LoadedRecipe, plan: SplitPlan) -> dict[str, str]:
    """The CSV dialect of a plan's source: ``data.csv`` and the source's own keys."""
    return csvfiles.dialect_of(plan.source, loaded.recipe.data.csv)


def _unique(problems: list[Problem]) -> list[Problem]:
    out, seen = [], set()
    for p in capped(problems):
        k = (p.message, p.path, p.file, p.line)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out


def _info(loaded, seed, plans, heads, splits, opts, fractions) -> dict[str, Any]:
    """What data.json records of a streamed run: files and digests, split sizes, coverage, the stream
    settings and how the training source was split (column, hash or files)."""
    files = {}
    for i, plan in enumerate(plans):
        key = "train" if i == 0 else plan.only
        resolved = sources.path_of(sources.resolve(plan.source, loaded.base_dir))
        paths = heads[key][0]
        files[key] = {
            "path": resolved if isinstance(resolved, str) else str(paths[0]),
            "source": resolved,
            "sha256": sources.digest(plan.source, loaded.base_dir),
            "rows": sum(s.n for s in splits.values() if s.plan is plan),
        }
        if _dialect(loaded, plan):
            files[key]["csv"] = _dialect(loaded, plan)
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
    entry = files_info.get(split) or files_info["train"]
    if split in files_info:
        plan = SplitPlan(files_info[split]["source"], only=split)
    elif info.get("split_by"):
        plan = SplitPlan(files_info["train"]["source"], column=dict(info["split_by"]))
    else:
        plan = SplitPlan(
            files_info["train"]["source"], fractions=dict(stream["fractions"]), seed=int(info["seed"])
        )
    files, header = columns_of(plan.source, None, entry.get("csv"))
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
        dialect=entry.get("csv"),
    )
