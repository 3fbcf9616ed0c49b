"""Keras callbacks used by the runner (imports Keras).

:class:`RunCallback` does the bookkeeping of one training run: events for the CLI, ``history.csv`` (one
row appended per epoch), the per-step non-finite check on the raw per-task losses, the selection metric
(``best`` checkpoint and early stopping), the ``last`` checkpoints, the stop on a signal, and the
epoch's TensorBoard events (:class:`mtlcli.run.tensorboard.Board`, when the run writes them). The runner
may call ``fit`` more than once for one run (a resumed partial epoch, then the remaining epochs); nothing
here is reset by ``on_train_begin``.

When checkpoints are written (:data:`CHECKPOINT_SECONDS`): ``last`` at the end of the session's first
epoch, then at an epoch end only once ``checkpoint_seconds`` have passed since the previous one, and
always at the end of training (the last epoch, or early stopping) and when a SIGINT/SIGTERM arrives
(mid-epoch too); with ``train.checkpoint_every`` (or tf.distribute) at every epoch end as well. Short
epochs then no longer pay a checkpoint each (about 40 ms for the demo's 7 steps). A ``best`` epoch whose
checkpoint is not due keeps a copy of the model's variables in memory and is written just before the
next ``last`` one, so that on disk ``best`` is always the epoch the ``last`` checkpoint's selection names.
Resuming is as exact as before: a run killed between checkpoints replays the epochs after ``last`` (the
data order depends only on seed and epoch), and the resumed session rewrites ``history.csv`` from the
checkpoint's rows, dropping the rows of the epochs it replays.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mtlcli.events import BatchEnd, EpochEnd, Notice
from mtlcli.fsio import atomic_write
from mtlcli.recipe import monitor_mode
from mtlcli.run import checkpoint
from mtlcli.run.signals import Interrupted

#: The least number of seconds between two end-of-epoch ``last`` checkpoints (the end of training, a
#: signal and ``train.checkpoint_every`` always write one): what a crash (SIGKILL, power loss) can cost.
CHECKPOINT_SECONDS = 30.0


def scalar(v) -> float:
    """The first element of a Keras log value as a float (NaN when it has none)."""
    try:
        return float(np.asarray(v).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return float("nan")


class NonFinite(Exception):
    """Raised inside ``fit`` when a task's loss is not finite (``train.on_nan: stop``)."""


@dataclass
class Selection:
    """The selection metric: which epoch is ``best``, and early stopping on the same value (Keras's
    EarlyStopping rules: an improvement beats ``best`` by more than ``min_delta``; ``wait`` counts the
    epochs since; stop once ``wait >= patience``)."""

    monitor: str
    mode: str = "min"
    min_delta: float = 0.0
    patience: int | None = None  # None: no early stopping
    restore_best: bool = False
    best: float | None = None
    best_epoch: int | None = None  # 1-based
    wait: int = 0
    stopped: bool = False

    @classmethod
    def from_recipe(cls, recipe, has_validation: bool) -> Selection:
        """The recipe's ``early_stopping`` (its ``val_`` monitor read on the training logs when there
        is no validation data), else ``val_loss`` (``loss`` without validation data) and no stopping."""
        es = recipe.train.early_stopping
        if es is None:
            return cls("val_loss" if has_validation else "loss", "min")
        monitor = es.monitor if has_validation or not es.monitor.startswith("val_") else es.monitor[4:]
        mode = es.mode if es.mode != "auto" else monitor_mode(monitor)
        return cls(monitor, mode, es.min_delta, es.patience, es.restore_best)

    def improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "max":
            return value - self.min_delta > self.best
        return value + self.min_delta < self.best

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("monitor", "mode", "best", "best_epoch", "wait", "stopped")}

    def load(self, saved: dict[str, Any]) -> None:
        if saved.get("monitor") == self.monitor and saved.get("mode") == self.mode:
            self.best, self.best_epoch = saved.get("best"), saved.get("best_epoch")
            self.wait, self.stopped = int(saved.get("wait", 0)), bool(saved.get("stopped", False))


@dataclass
class RunState:
    """What the callback needs from the runner, and what it reports back."""

    run_dir: Path
    epochs: int
    steps: int  # per epoch
    history: list[dict[str, float]]
    selection: Selection
    base_state: dict[str, Any]  # seed, batch size, ... copied into every checkpoint's state.json
    resume_command: str
    checkpoint_every: int | None = None
    checkpoint_seconds: float = 0.0  # 0: a ``last`` checkpoint at every epoch end (CHECKPOINT_SECONDS)
    guard: Any = None  # mtlcli.run.signals.SignalGuard
    first_epoch: int = 0  # where this session starts (0-based epoch, step within it)
    first_step: int = 0
    metrics_from: Path | None = None  # checkpoint whose metric accumulators continue the first epoch
    skip_nonfinite: bool = False
    skipped: int = 0
    skipped_in_epoch: int = 0
    failure: str | None = None
    best_weights: list | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    at: tuple[int, int] | None = None  # (1-based epoch, steps done in it): where an error happened
    board: Any = None  # mtlcli.run.tensorboard.Board (train.tensorboard), or None

    def doing(self) -> str:
        """What the run was doing at :attr:`at`, for an error message."""
        if self.at is None:
            return "starting to train"
        epoch, step = self.at
        if step >= self.steps:
            return f"validating epoch {epoch}"
        return f"training epoch {epoch}, step {step + 1}/{self.steps}"


class RunCallback(keras.callbacks.Callback):
    def __init__(self, on_event, run: RunState, model):
        super().__init__()
        self.on_event, self.run, self.mtl_model = on_event, run, model
        self.epoch = run.first_epoch
        self.offset = 0
        self.t0 = time.time()
        self.saved_at: float | None = None  # time.monotonic() of this session's last ``last`` checkpoint
        self.pending_best: tuple[list, dict[str, Any]] | None = None  # (variable values, state)
        self.history_keys: list[str] | None = None  # history.csv's header, once this session wrote it

    def on_train_begin(self, logs=None):
        schedule = self.mtl_model.freeze_schedule
        if schedule is not None:  # ``freeze_epochs``: the phase its checkpointed flag says
            schedule.sync(self.mtl_model)

    # -- position --------------------------------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        run = self.run
        self.epoch = epoch
        self.t0 = time.time()
        self.mtl_model.epoch_var.assign(epoch)
        schedule = self.mtl_model.freeze_schedule
        if schedule is not None and schedule.begin_epoch(self.mtl_model, epoch):
            self.on_event(
                Notice(
                    f"epoch {epoch + 1}: the layers held by freeze_epochs: {schedule.epochs} train from "
                    f"now on (Adam restarts)"
                )
            )
        run.skipped_in_epoch = 0
        self.offset = run.first_step if epoch == run.first_epoch else 0
        run.at = (epoch + 1, self.offset)
        if epoch == run.first_epoch and run.metrics_from is not None:
            # A mid-epoch resume: Keras reset the metrics just before this; continue the epoch's means.
            checkpoint.restore_metrics(self.mtl_model, run.metrics_from)
            run.metrics_from = None

    def state_at(self, epoch_done: int, step: int) -> dict[str, Any]:
        run = self.run
        return {
            **run.base_state,
            "epoch": epoch_done,
            "step_in_epoch": step,
            "steps_per_epoch": run.steps,
            "global_step": int(self.mtl_model.optimizer.iterations.numpy()),
            "epochs": run.epochs,
            "selection": run.selection.to_dict(),
            "skipped_batches": run.skipped,
            "history": run.history,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    # -- steps -----------------------------------------------------------------------------------
    def on_train_batch_end(self, batch, logs=None):
        run = self.run
        step = self.offset + batch + 1
        run.at = (self.epoch + 1, step)
        losses = self.mtl_model.batch_losses.numpy()
        names = self.mtl_model.task_names
        bad = [(t, float(v)) for t, v in zip(names, losses, strict=True) if not math.isfinite(v)]
        if run.skip_nonfinite:
            if not bool(self.mtl_model.batch_applied.numpy()):
                run.skipped += 1
                run.skipped_in_epoch += 1
                what = (
                    f"task {bad[0][0]!r} loss {bad[0][1]}" if bad else "a non-finite gradient (losses finite)"
                )
                if run.skipped <= 5:
                    self.on_event(
                        Notice(
                            f"skipped batch at epoch {self.epoch + 1}, step {step}: {what} (train.on_nan: skip_batch)"
                        )
                    )
        elif bad:
            task, value = bad[0]
            run.failure = (
                f"task {task!r} produced a non-finite loss ({value}) at epoch {self.epoch + 1}, step "
                f"{step}/{run.steps} (global step {int(self.mtl_model.optimizer.iterations.numpy())}); "
                f"lower train.optimizer.adam.learning_rate or check the data"
            )
            raise NonFinite(run.failure)
        logs = {k: scalar(v) for k, v in (logs or {}).items()}
        if not run.skip_nonfinite and not math.isfinite(logs.get("objective", logs.get("loss", 0.0))):
            run.failure = (
                f"the weighted total loss became non-finite at epoch {self.epoch + 1}, step {step}/{run.steps} "
                f"(every task's loss was finite: the weighting strategy diverged); lower the learning rate"
            )
            raise NonFinite(run.failure)
        self.on_event(BatchEnd(self.epoch + 1, step, run.steps, logs))
        if step >= run.steps:
            return  # the end of the epoch: on_epoch_end checkpoints (after validation)
        interrupted = run.guard is not None and run.guard.received is not None
        periodic = bool(run.checkpoint_every) and step % run.checkpoint_every == 0
        if interrupted or periodic:
            self.save_last(self.state_at(self.epoch, step), with_metrics=True)
        if interrupted:
            raise Interrupted(
                run.guard.received, run.run_dir, self.epoch, step, run.steps, run.resume_command
            )

    # -- epochs ----------------------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        run = self.run
        logs = {k: scalar(v) for k, v in (logs or {}).items()}
        if run.skip_nonfinite and run.skipped_in_epoch >= run.steps - (
            run.first_step if epoch == run.first_epoch else 0
        ):
            run.failure = (
                f"every batch of epoch {epoch + 1} had a non-finite loss or gradient and was skipped "
                f"(train.on_nan: skip_batch); lower train.optimizer.adam.learning_rate or check the data"
            )
            raise NonFinite(run.failure)
        row = {"epoch": epoch + 1, **logs}
        if run.skip_nonfinite:
            row["skipped_batches"] = run.skipped_in_epoch
        run.history.append(row)
        self.write_row(row)
        sel = run.selection
        value = logs.get(sel.monitor)
        improved = False
        if value is not None:
            sel.wait += 1
            if sel.improved(value):
                improved = True
                sel.best, sel.best_epoch, sel.wait = value, epoch + 1, 0
                if sel.restore_best:
                    run.best_weights = self.mtl_model.get_weights()
            elif sel.patience is not None and sel.wait >= sel.patience and epoch > 0:
                sel.stopped = True
                self.model.stop_training = True
        interrupted = run.guard is not None and run.guard.received is not None
        final = sel.stopped or epoch + 1 >= run.epochs
        state = self.state_at(epoch + 1, 0)
        if final or interrupted or self.checkpoint_due():
            if improved:  # one write for both: the epoch's best and last checkpoints are the same files
                self.pending_best = None
                checkpoint.save(self.mtl_model, run.run_dir, "best", state)
                checkpoint.link(run.run_dir, "best", "last")
                self.saved_at = time.monotonic()
            else:
                self.save_last(state)
        elif improved:
            self.pending_best = (self.snapshot(), {**state, "history": list(run.history)})
        if run.board is not None:  # after the checkpoint: a run with events always has one
            run.board.epoch_end(row)
        self.on_event(EpochEnd(epoch + 1, run.epochs, logs, time.time() - self.t0, final))
        if interrupted and not final:
            raise Interrupted(run.guard.received, run.run_dir, epoch + 1, 0, run.steps, run.resume_command)

    # -- checkpoints and history.csv -----------------------------------------------------------------
    def checkpoint_due(self) -> bool:
        """Is an end-of-epoch ``last`` checkpoint due (the end of training and signals aside)?"""
        seconds = self.run.checkpoint_seconds
        if self.saved_at is None or not seconds or self.run.checkpoint_every:
            return True
        return time.monotonic() - self.saved_at >= seconds

    def save_last(self, state: dict[str, Any], *, with_metrics: bool = False) -> None:
        """The ``last`` checkpoint, after a ``best`` one that was waiting (so ``best`` on disk is always
        the epoch ``last``'s selection names)."""
        if self.pending_best is not None:
            values, best_state = self.pending_best
            now = self.snapshot()
            self.restore_snapshot(values)
            try:
                checkpoint.save(self.mtl_model, self.run.run_dir, "best", best_state)
            finally:
                self.restore_snapshot(now)
            self.pending_best = None
        checkpoint.save(self.mtl_model, self.run.run_dir, "last", state, with_metrics=with_metrics)
        self.saved_at = time.monotonic()

    def state_variables(self) -> list:
        """Every variable a checkpoint reads: the model's (weights, strategy state, RNG), the
        optimizer's, the metrics'."""
        model, seen, out = self.mtl_model, set(), []
        for v in (*model.variables, *model.optimizer.variables, *checkpoint.metric_variables(model)):
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        return out

    def snapshot(self) -> list:
        return [np.array(v.numpy(), copy=True) for v in self.state_variables()]

    def restore_snapshot(self, values: list) -> None:
        for v, value in zip(self.state_variables(), values, strict=True):
            v.assign(value)

    def write_row(self, row: dict[str, Any]) -> None:
        """``history.csv``: rewritten from the session's history at its first epoch (dropping rows a
        resumed run replays) or when a row brings a new column; else the row is appended."""
        keys = self.history_keys
        if keys is None or any(k not in keys for k in row):
            self.history_keys = write_history(self.run.run_dir, self.run.history)
            return
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=keys, restval="").writerow(_cells(row))
        with open(self.run.run_dir / "history.csv", "a", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> list[str]:
    """Write ``history.csv`` (atomically) from every row; returns its columns."""
    keys: list[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, restval="")
    writer.writeheader()
    for row in history:
        writer.writerow(_cells(row))
    atomic_write(run_dir / "history.csv", buf.getvalue())
    return keys
