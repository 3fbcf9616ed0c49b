"""``mtl predict``: a trained run's predictions for new rows (library: never prints, reports events).

:func:`predict` reads DATA (any source ``data.train`` accepts) with the run's CSV dialect, checks every
row as training does (:func:`mtlcli.data.preprocess.encode_inputs`: a missing input column, a
non-number, an image that is not there, each named by file and line), and runs the rows through
:class:`mtlcli.model.serving.Predictor` -- the same graph ``mtl export`` saves -- in large batches.
Label columns are not needed.

* Tabular sources (CSV, CSV.gz, Parquet, globs of them) are read in chunks of ``chunk_rows`` rows, only
  the columns needed (inputs, ``keep``, the label columns with ``with_labels``, ``when:`` columns), so
  memory stays bounded whatever the file's size; other sources (NPZ, image folders, IDX) are one chunk.
* Output (:mod:`mtlcli.run.writers`): one row per input row, in input order; the ``keep`` columns, then
  per task (in the order asked):

  ==============  ==============================================================================
  classification  ``<task>`` the class as in the training labels (ints stay ints); ``proba``:
                  ``<task>:<class>`` probabilities
  binary          ``<task>`` (one of the two labels) and ``<task>:p``, the probability of the second
                  class (the label of ``<task>:p >= threshold``, 0.5 unless set)
  regression      ``<task>`` in the target's units; ``<task>:<column>`` per column for several
  multilabel      ``<task>`` the labels at or above the threshold (joined by the task's separator in
                  CSV, a list in JSON lines and Parquet); ``proba``: ``<task>:<label>``
  ==============  ==============================================================================

  A task with ``when:`` is predicted for every row and gets ``<task>:applies`` (true / false, empty
  where a condition's column is missing in the row or absent from the file); ``with_labels`` adds the
  labels as read (``<task>:true``, or ``<task>:<column>:true`` for a task of several columns).
* Problems of every chunk are collected (capped per column, as in training) and raised as one
  :class:`~mtlcli.errors.DataError`; the output file is written atomically, so then no file is left.
  Categories training never saw are not errors: they are counted per column (:attr:`PredictResult.unseen`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli import data
from mtlcli.data import sources
from mtlcli.data.inputs import missing_error
from mtlcli.data.preprocess import Preprocessing, encode_inputs
from mtlcli.data.sources import Table
from mtlcli.data.values import CellProblem, as_float, capped, label_key, labels, when_mask
from mtlcli.errors import CheckpointError, DataError, Problem, UsageError, did_you_mean
from mtlcli.events import PredictProgress, PredictStarted
from mtlcli.run import writers
from mtlcli.run.evaluate import find_model, load_model
from mtlcli.run.writers import Flags, LabelSets
from mtlcli.tfutil import import_tf

DEFAULT_BATCH_SIZE = 4096
DEFAULT_CHUNK_ROWS = 65536
#: rows of the output kept for the terminal table
PREVIEW_ROWS = 50


@dataclass
class PredictResult:
    rows: int  # rows predicted (and written)
    columns: list[str]  # the output columns, in order
    output: str  # the file written, "-" for a stream, "" when the rows were only kept for the preview
    preview: dict[str, list]  # the first PREVIEW_ROWS rows, column by column
    unseen: dict[str, int]  # categorical input column -> rows whose category training never saw
    model_path: Path
    source: str
    tasks: list[str]
    seconds: float


def names(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]`` (``--tasks``, ``--keep``); None for none."""
    out = [t.strip() for t in (text or "").split(",") if t.strip()]
    return out or None


def parse_thresholds(items: list[str] | None) -> dict[str, float]:
    """``["sex=0.3"]`` -> ``{"sex": 0.3}`` (``--threshold`` of predict and export); a malformed item or
    a value outside [0, 1] is a UsageError (the tasks are checked by :func:`check_thresholds`)."""
    out: dict[str, float] = {}
    for item in items or []:
        task, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not task.strip() or number is None:
            raise UsageError(f"--threshold: expected TASK=PROBABILITY such as sex=0.3, received {item!r}")
        if not 0.0 <= number <= 1.0:
            raise UsageError(f"--threshold {task.strip()}={number:g}: expected a probability between 0 and 1")
        out[task.strip()] = number
    return out


def predict(
    target: str | Path,
    source: str | Path,
    *,
    output: str | Path | Any | None = None,
    tasks: list[str] | None = None,
    keep: list[str] | tuple[str, ...] = (),
    with_labels: bool = False,
    proba: bool = False,
    thresholds: dict[str, float] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_event: Callable[[Any], None] | None = None,
    verbose: bool = False,
) -> PredictResult:
    """Predict every row of ``source`` with the model of ``target`` (a run directory, its model.keras or
    a checkpoint's). ``output``: a ``.csv`` / ``.parquet`` / ``.jsonl`` path, an open text stream (CSV),
    or None (the first rows are kept in :attr:`PredictResult.preview`). See the module docstring."""
    start = time.perf_counter()
    emit = on_event or (lambda event: None)
    model_path, _ = find_model(Path(target))
    if isinstance(output, (str, Path)):
        writers.format_of(output)
    if batch_size < 1 or chunk_rows < 1:
        raise UsageError(f"--batch-size: expected a positive number, received {batch_size}")
    src = Source(str(source), _dialect(model_path))
    import_tf(verbose)
    model = load_model(model_path, verbose)
    try:
        prep = Preprocessing.from_dict(model.spec["preprocessing"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{model_path}: no preprocessing in the model spec ({exc})") from None
    chosen = _tasks(list(model.task_names), tasks)
    plan = Plan(prep, chosen, list(dict.fromkeys(keep)), with_labels, proba)
    plan.check(src)
    from mtlcli.model.serving import Predictor  # imports TensorFlow

    predictor = Predictor(model, chosen, check_thresholds(thresholds or {}, prep.targets))
    shown = "" if output is None else str(output) if isinstance(output, (str, Path)) else "-"
    emit(PredictStarted(model_path, src.shown, shown, chosen, src.total))
    run = Run(plan, predictor, batch_size, time.perf_counter())
    if output is None:
        run.all(src, chunk_rows, None, emit)
    else:
        with writers.output(output) as sink:
            run.all(src, chunk_rows, sink, emit)
    return PredictResult(
        run.rows,
        plan.names(),
        shown,
        run.preview,
        run.unseen,
        model_path,
        src.shown,
        chosen,
        time.perf_counter() - start,
    )


def _dialect(model_path: Path) -> dict | None:
    """The CSV dialect of the run a model file belongs to: its own directory's, or for a checkpoint's
    (``RUN/checkpoints/<name>/model.keras``) the run's."""
    runs = [model_path.parent]
    if model_path.parent.parent.name == "checkpoints":
        runs.append(model_path.parent.parent.parent)
    for run_dir in runs:
        if (run_dir / "data.json").is_file():
            return data.run_dialect(run_dir)
    return None


def _tasks(names: list[str], wanted: list[str] | None) -> list[str]:
    if not wanted:
        return names
    for t in wanted:
        if t not in names:
            raise UsageError(
                f"--tasks: unknown task {t!r}{did_you_mean(t, names)} (the model's tasks: {', '.join(names)})"
            )
    return list(dict.fromkeys(wanted))


def check_thresholds(thresholds: dict[str, float], targets: dict) -> dict[str, float]:
    """``thresholds`` after checking that each names a binary or multilabel task of ``targets`` (the
    model's :class:`~mtlcli.data.targets.TargetStats`) and is a probability."""
    for task, value in thresholds.items():
        if task not in targets:
            raise UsageError(
                f"--threshold: unknown task {task!r}{did_you_mean(task, targets)} "
                f"(the model's tasks: {', '.join(targets)})"
            )
        kind = targets[task].type
        if kind not in ("binary", "multilabel"):
            raise UsageError(
                f"--threshold {task}={value:g}: {task!r} is a {kind} task; a threshold applies to binary "
                f"and multilabel tasks"
            )
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"--threshold {task}={value:g}: expected a probability between 0 and 1")
    return dict(thresholds)


def _tabular(value: str) -> bool:
    return value.lower().endswith(sources.TABULAR)


class Source:
    """The DATA argument: its columns (headers only, for a tabular source) and its rows as tables."""

    def __init__(self, value: str, dialect: dict | None) -> None:
        self.value, self.dialect, self.table = value, dialect, None
        self.shown = value  # as given
        if _tabular(value):
            self.files, self.columns = sources.columns_of(value, None, dialect)
            self.where = str(self.files[0]) if len(self.files) == 1 else value  # the file its problems name
            self.total = _parquet_rows(self.files)
        else:
            self.table = sources.read_source(value, dialect=dialect)
            self.files, self.columns = [], list(self.table.columns)
            self.total = self.table.n_rows
            self.where = self.table.file

    def tables(self, columns: list[str], chunk_rows: int) -> Iterator[Table]:
        if self.table is not None:
            yield self.table
            return
        for chunk in sources.iter_chunks(self.files, columns, chunk_rows, self.dialect, check=True):
            yield chunk.table


def _parquet_rows(files: list[Path]) -> int | None:
    """The rows of Parquet files from their metadata (None when any file is CSV)."""
    if not files or any(sources.suffix(f) != ".parquet" for f in files):
        return None
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _class_array(classes: list) -> np.ndarray:
    """A task's classes as an array to index with class ids: int64 for integer labels, else objects."""
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return np.array(classes, np.int64)
    out = np.empty(len(classes), dtype=object)
    out[:] = classes
    return out


def label_cells(values: np.ndarray) -> np.ndarray:
    """A label column's cells as the labels training keyed (``2.0`` read beside a blank cell is the int
    ``2``), None where missing: one conversion per distinct value."""
    import pandas as pd

    present, raw = labels(values)
    out = np.full(len(values), None, dtype=object)
    rows = np.flatnonzero(present)
    if len(rows):
        codes, uniques = pd.factorize(raw[rows])
        keys = np.empty(len(uniques), dtype=object)
        keys[:] = [label_key(u) for u in uniques]
        out[rows] = keys[codes]
    return out


def kept(values: np.ndarray) -> np.ndarray:
    """A ``--keep`` column as read, except that whole numbers read as floats (beside a blank cell) are
    ints again (an id ``7`` stays ``7``, not ``7.0``)."""
    if values.dtype.kind != "f":
        return values
    finite = np.isfinite(values)
    if not finite.any() or not np.all(values[finite] == np.round(values[finite])):
        return values
    out = np.full(len(values), None, dtype=object)
    out[finite] = values[finite].astype(np.int64).tolist()
    return out


def _text(values: np.ndarray) -> np.ndarray:
    """UTF-8 bytes from a string tensor -> str objects (vectorised)."""
    if not len(values):
        return np.array([], dtype=object)
    return np.char.decode(values.astype(np.bytes_), "utf-8").astype(object)


class Plan:
    """What a prediction reads and writes: the tasks, their output columns and the extra columns."""

    def __init__(
        self, prep: Preprocessing, tasks: list[str], keep: list[str], with_labels: bool, proba: bool
    ):
        self.prep, self.tasks, self.keep = prep, tasks, keep
        self.with_labels, self.proba = with_labels, proba
        self.stats = {t: prep.targets[t] for t in tasks}
        self.classes = {t: _class_array(st.classes) for t, st in self.stats.items() if st.classes}
        clash = [c for c in keep if c in set(self.names()[len(keep) :])]
        if clash:
            raise UsageError(
                f"--keep {clash[0]}: an output column has this name; the predictions of task "
                f"{clash[0]!r} are written in it"
            )

    def task_names(self, task: str) -> list[str]:
        """The output columns of one task."""
        st = self.stats[task]
        classes = [str(c) for c in st.classes]
        if st.type == "regression":
            names = [f"{task}:{c}" for c in st.columns] if isinstance(st.column, list) else [task]
        elif st.type == "binary":
            names = [task, f"{task}:p"]
        else:
            names = [task] + ([f"{task}:{c}" for c in classes] if self.proba else [])
        if st.when:
            names.append(f"{task}:applies")
        if self.with_labels:
            many = len(st.columns) > 1
            names += [f"{task}:{c}:true" for c in st.columns] if many else [f"{task}:true"]
        return names

    def names(self) -> list[str]:
        return self.keep + [n for t in self.tasks for n in self.task_names(t)]

    def label_columns(self) -> list[str]:
        return [c for t in self.tasks for c in self.stats[t].columns] if self.with_labels else []

    def when_columns(self) -> list[str]:
        return [cond["column"] for t in self.tasks for cond in self.stats[t].when or []]

    def reads(self, columns: list[str]) -> list[str]:
        """The columns to read of a source that has ``columns``."""
        wanted = [st.column for st in self.prep.inputs.values()] + self.keep + self.label_columns()
        wanted += [c for c in self.when_columns() if c in columns]
        return list(dict.fromkeys(wanted))

    def check(self, src: Source) -> None:
        """Every column the prediction needs is in the source (one DataError naming all that are not)."""
        problems, have, where = [], src.columns, src.where
        for st in self.prep.inputs.values():
            if st.column not in have:
                problems.append(
                    Problem(f"input column {st.column!r} not found{did_you_mean(st.column, have)}", "", where)
                )
        for c in self.keep:
            if c not in have:
                problems.append(Problem(f"--keep column {c!r} not found{did_you_mean(c, have)}", "", where))
        for t in self.tasks if self.with_labels else []:
            for c in self.stats[t].columns:
                if c not in have:
                    problems.append(
                        Problem(
                            f"target column {c!r} of task {t!r} not found{did_you_mean(c, have)} "
                            f"(--with-labels needs the label columns of the tasks predicted; --tasks chooses them)",
                            "",
                            where,
                        )
                    )
        if problems:
            raise DataError(problems=problems)

    def fields(self, task: str) -> list[str]:
        """The decoded outputs a task's columns are made of."""
        kind = self.stats[task].type
        if kind == "regression":
            return ["value"]
        if kind == "binary":
            return ["class_index", "probability"]
        if kind == "multilabel":
            return ["labels", "label"] + (["probabilities"] if self.proba else [])
        return ["class_index"] + (["probabilities"] if self.proba else [])

    def extra(self, table: Table, problems: list[Problem]) -> dict[str, dict[str, Any]]:
        """The columns that come from the rows themselves: keep, applies and labels, per task."""
        out: dict[str, dict[str, Any]] = {"": {c: kept(table.columns[c]) for c in self.keep}}
        for t in self.tasks:
            st, cols = self.stats[t], {}
            if st.when:
                cols[f"{t}:applies"] = _applies(st.when, table, t, problems)
            if self.with_labels:
                many = len(st.columns) > 1
                for c in st.columns:
                    values = table.columns[c]
                    cell = (
                        as_float(values, table, c, problems)
                        if st.type == "regression"
                        else label_cells(values)
                    )
                    cols[f"{t}:{c}:true" if many else f"{t}:true"] = cell
            out[t] = cols
        return out

    def columns(self, out: dict[str, np.ndarray], extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """One chunk's output columns, in order."""
        from mtlcli.model.serving import label_strings, output_key

        cols = dict(extra[""])
        for task in self.tasks:
            st = self.stats[task]

            def get(field: str, task=task):
                return out[output_key(task, field)]

            if st.type == "regression":
                v = get("value")
                if isinstance(st.column, list):
                    cols.update({f"{task}:{c}": v[:, j] for j, c in enumerate(st.column)})
                else:
                    cols[task] = v
            elif st.type == "multilabel":
                names = label_strings(st.classes)
                cols[task] = LabelSets(get("labels").astype(bool), names, _text(get("label")))
            else:
                cols[task] = self.classes[task][get("class_index")]
            if st.type == "binary":
                cols[f"{task}:p"] = get("probability")
            elif self.proba and st.type in ("classification", "multilabel"):
                p = get("probabilities")
                cols.update({f"{task}:{c}": p[:, j] for j, c in enumerate(label_strings(st.classes))})
            cols.update(extra[task])
        return cols


def _applies(conditions: list[dict], table: Table, task: str, problems: list[Problem]) -> Flags:
    """Whether a task's ``when:`` holds per row; unknown where a compared column's cell is missing, and
    in every row when a condition's column is not in the data."""
    n = table.n_rows
    if any(cond["column"] not in table.columns for cond in conditions):
        return Flags(np.zeros(n, bool), np.zeros(n, bool))
    hit = when_mask(conditions, table, task, problems)
    known = np.ones(n, bool)
    for cond in conditions:
        if "present" not in cond:
            known &= labels(table.columns[cond["column"]])[0]
    return Flags(hit, known)


class Run:
    """The chunks of one prediction: checks, batches through the predictor, output, counts."""

    def __init__(self, plan: Plan, predictor, batch_size: int, start: float) -> None:
        self.plan, self.predictor, self.batch_size, self.start = plan, predictor, batch_size, start
        self.rows = 0
        self.problems: list[Problem] = []
        self.tally: dict = {}  # missing values of ``missing: error`` inputs, over every chunk
        self.unseen = {st.column: 0 for st in plan.prep.inputs.values() if st.kind == "categorical"}
        self.preview: dict[str, list] = {c: [] for c in plan.names()}
        self.kept = 0

    def all(self, src: Source, chunk_rows: int, sink, emit) -> None:
        for table in src.tables(self.plan.reads(src.columns), chunk_rows):
            self.chunk(table, sink)
            emit(PredictProgress(self.rows, src.total, time.perf_counter() - self.start))
        self.problems.extend(missing_error(column, *entry) for column, entry in self.tally.items())
        if self.problems:
            raise DataError(problems=capped(self.problems))
        if not self.rows:
            raise DataError(problems=[Problem("no rows to predict", "", src.where)])

    def chunk(self, table: Table, sink) -> None:
        """Check one chunk; unless this or an earlier chunk had a problem, predict and write it."""
        problems: list[Problem] = []
        raw = encode_inputs(self.plan.prep, table, problems, self.tally)
        extra = self.plan.extra(table, problems)
        if problems or self.problems or self.tally:  # from now on only checking: nothing is written
            self.problems = capped(self.problems + problems)
            self.rows += table.n_rows
            return
        out = self.outputs(raw, table)
        if out is None:
            return
        self.count_unseen(raw)
        columns = self.plan.columns(out, extra)
        if sink is not None:
            sink.write(columns)
        if self.kept < PREVIEW_ROWS:
            for name, values in writers.head(columns, PREVIEW_ROWS - self.kept).items():
                self.preview[name].extend(values)
            self.kept = len(next(iter(self.preview.values()), []))
        self.rows += table.n_rows

    def outputs(self, raw: dict[str, np.ndarray], table: Table) -> dict[str, np.ndarray] | None:
        """The decoded outputs the columns need, batch by batch (None: an image could not be decoded)."""
        import tensorflow as tf

        from mtlcli.model.serving import output_key

        keys = [output_key(t, f) for t in self.plan.tasks for f in self.plan.fields(t)]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        for lo in range(0, table.n_rows, self.batch_size):
            batch = {k: v[lo : lo + self.batch_size] for k, v in raw.items()}
            try:
                got = self.predictor.function(batch)
            except tf.errors.OpError as exc:
                self.bad_images(batch, table, lo, exc)
                self.rows += table.n_rows
                return None
            for k in keys:
                parts[k].append(got[k].numpy())
        return {k: np.concatenate(v) for k, v in parts.items()}

    def bad_images(self, batch: dict[str, np.ndarray], table: Table, lo: int, exc: Exception) -> None:
        """The image files of a failed batch that do not decode, each named by file and line."""
        import tensorflow as tf

        found = []
        for name, st in self.plan.prep.inputs.items():
            if not st.files:
                continue
            for i, path in enumerate(batch[name]):
                try:
                    tf.io.decode_image(tf.io.read_file(path), channels=st.shape[2], expand_animations=False)
                except tf.errors.OpError as err:
                    reason = (err.message or type(err).__name__).strip().splitlines()[0]
                    found.append(
                        CellProblem(
                            f"cannot decode the image {path}: {reason}",
                            f"column {st.column!r}",
                            *table.where(lo + i),
                        )
                    )
        if not found:
            raise exc
        self.problems = capped(self.problems + found)

    def count_unseen(self, raw: dict[str, np.ndarray]) -> None:
        import pandas as pd

        for name, st in self.plan.prep.inputs.items():
            if st.kind == "categorical":
                keys = raw[name]
                unknown = (pd.Index(st.vocabulary, dtype=object).get_indexer(keys) < 0) & (keys != "")
                self.unseen[st.column] += int(unknown.sum())
