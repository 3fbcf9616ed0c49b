"""TensorBoard event files of a run: ``tb/train`` and ``tb/validation`` (imports TensorFlow).

One event per epoch and split, step = the epoch number (1-based, as ``history.csv``'s ``epoch``), with
the values of that epoch's ``history.csv`` row under tags TensorBoard groups by their first segment:

    loss                 the static weighted total (``loss`` / ``val_loss``)
    loss/<task>          each task's loss
    <metric>/<task>      each task's metrics (``accuracy/species``, ``mae/body_mass``)
    weight/<task>        the strategy's effective task weights (training only)
    cosine/<a>/<b>       the cosine of two tasks' gradients on the shared layers (gradient-based strategies)
    objective            the strategy's own objective (every strategy but ``static``)
    learning_rate        the optimizer's learning rate at the end of the epoch (training only)

Any other logged value keeps its ``history.csv`` name. The two splits are two TensorBoard runs, so the
train and validation curves of one tag overlay (the convention of Keras's TensorBoard callback).

Written with ``tf.summary`` alone (``tensorboard`` need not be installed; ``tf.summary.scalar`` needs
it): the epoch's values go into one ``Summary`` proto with the scalars plugin's metadata, written by
``tf.summary.experimental.write_raw_pb`` and flushed, about a millisecond per epoch.

The writers are made at the first epoch end, after that epoch's ``last`` checkpoint, so a run that fails
before its first checkpoint has no event file to undo. Checkpoints are on a time budget, so a killed run
may have events for epochs after its last checkpoint: the session that resumes it drops them from the
event files (:func:`drop_after`) before it trains those epochs again, so every epoch is in the files
once, with the values of the run's ``history.csv``. Each session (a resume in place included) adds
its own event file to the same directories; before its first epoch it writes the ``history.csv`` rows
the event files lack (a fork's inherited epochs, or epochs trained while ``train.tensorboard`` was off).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation")
#: ``history.csv`` columns that are not written: the step already is the epoch.
SKIPPED = ("epoch",)


def tag_table(task_names: list[str], metrics: dict[str, list[str]]) -> dict[str, str]:
    """``history.csv`` column (without ``val_``) -> tag, from the tasks' names (so that a task name with
    an underscore is never split in the wrong place)."""
    table = {"loss": "loss", "objective": "objective", "learning_rate": "learning_rate"}
    for t in task_names:
        table[f"{t}_loss"] = f"loss/{t}"
        table[f"{t}_weight"] = f"weight/{t}"
        for m in metrics.get(t, []):
            table[f"{t}_{m}"] = f"{m}/{t}"
    for i, a in enumerate(task_names):
        for b in task_names[i + 1 :]:
            table[f"cos_{a}_{b}"] = f"cosine/{a}/{b}"
    return table


def split_row(row: dict[str, Any], table: dict[str, str]) -> dict[str, dict[str, float]]:
    """One history row as ``{split: {tag: value}}``; validation weights (the recipe's static weights,
    not the strategy's) are left out."""
    out: dict[str, dict[str, float]] = {s: {} for s in SPLITS}
    for key, value in row.items():
        if key in SKIPPED or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
        tag = table.get(name, name)
        if split == "validation" and tag.startswith("weight/"):
            continue
        out[split][tag] = float(value)
    return out


class Board:
    """The event writers of one session; :meth:`epoch_end` after each epoch, :meth:`close` at the end."""

    def __init__(self, tf, run_dir: Path, model, history: list[dict[str, Any]]):
        self.tf, self.root, self.model = tf, Path(run_dir) / "tb", model
        spec_tasks = getattr(model, "spec", {}).get("tasks", {})
        self.table = tag_table(
            list(model.task_names),
            {t: list(spec_tasks.get(t, {}).get("metrics", [])) for t in model.task_names},
        )
        self.pending = list(history)  # rows from before this session: written if the files lack them
        self.writers: dict[str, Any] | None = None
        summary = tf.compat.v1.Summary
        self._summary, self._value = summary, summary.Value
        self._meta = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"), data_class=1
        )
        self._tensor = type(tf.compat.v1.make_tensor_proto(0.0))
        self._float = tf.float32.as_datatype_enum

    def learning_rate(self) -> float | None:
        try:
            return float(self.model.optimizer.learning_rate.numpy())
        except (AttributeError, TypeError, ValueError):
            return None

    def epoch_end(self, row: dict[str, Any]) -> None:
        """Write one epoch's history row (and the learning rate) into both splits, then flush."""
        try:
            if self.writers is None:
                for split in SPLITS:  # epochs after the checkpoint this session resumed from: replayed
                    drop_after(self.tf, self.root / split, int(row["epoch"]) - 1)
                self._open()
                done = written_epochs(self.tf, self.root / "train")
                for old in self.pending:
                    if int(old.get("epoch", 0)) > done and int(old.get("epoch", 0)) < int(row["epoch"]):
                        self._write(old)
                self.pending = []
            lr = self.learning_rate()
            self._write({**row, "learning_rate": lr} if lr is not None else row)
        except self.tf.errors.OpError as exc:
            raise OSError(errno.EIO, f"TensorBoard events in {self.root}: {exc.message}") from None

    def _open(self) -> None:
        summary = self.tf.summary
        self.writers = {s: summary.create_file_writer(str(self.root / s)) for s in SPLITS}

    def _write(self, row: dict[str, Any]) -> None:
        step = int(row["epoch"])
        for split, values in split_row(row, self.table).items():
            if not values:
                continue
            proto = self._summary(
                value=[
                    self._value(
                        tag=tag, tensor=self._tensor(dtype=self._float, float_val=[v]), metadata=self._meta
                    )
                    for tag, v in values.items()
                ]
            )
            writer = self.writers[split]
            with writer.as_default():
                self.tf.summary.experimental.write_raw_pb(proto.SerializeToString(), step=step)
            writer.flush()

    def close(self) -> None:
        """Flush and close the event files (a finished, interrupted or failed run alike)."""
        writers, self.writers = self.writers or {}, None
        for writer in writers.values():
            with contextlib.suppress(self.tf.errors.OpError):
                writer.close()


def written_epochs(tf, directory: Path) -> int:
    """The last step recorded in the event files of ``directory`` (0 when there are none)."""
    last = 0
    for path in sorted(Path(directory).glob("events.out.tfevents.*")):
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                if event.summary.value:
                    last = max(last, int(event.step))
        except tf.errors.OpError:  # a record cut short by a kill: what came before it counts
            continue
    return last


def drop_after(tf, directory: Path, last: int) -> None:
    """Remove from the event files of ``directory`` every summary written for a step after ``last``
    (each file rewritten in place, atomically; a file without such steps is left as it is)."""
    for path in sorted(Path(directory).glob("events.out.tfevents.*")):
        kept, dropped = [], False
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                raw = record.numpy()
                event = tf.compat.v1.Event.FromString(raw)
                if event.summary.value and int(event.step) > last:
                    dropped = True
                else:
                    kept.append(raw)
        except tf.errors.OpError:  # a record cut short by a kill: it goes, what came before it stays
            dropped = True
        if not dropped:
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for raw in kept:
                writer.write(raw)
        os.replace(tmp, path)
