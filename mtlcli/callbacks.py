"""Keras callbacks used by the runner (imports Keras)."""

from __future__ import annotations

import csv
import io
import math
import time

import keras
import numpy as np

from mtlcli.events import BatchEnd, EpochEnd


def _scalar(v) -> float:
    try:
        return float(np.asarray(v).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return float("nan")


class EventCallback(keras.callbacks.Callback):
    """Turns Keras callbacks into events, writes history.csv each epoch, stops on a non-finite loss."""

    def __init__(self, on_event, epochs, steps, history, run_dir, model):
        super().__init__()
        self.on_event, self.epochs, self.steps = on_event, epochs, steps
        self.history, self.run_dir, self.mtl_model = history, run_dir, model
        self.failure: str | None = None
        self.t0 = time.time()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.t0 = time.time()
        self.mtl_model.epoch_var.assign(epoch)

    def on_train_batch_end(self, batch, logs=None):
        logs = {k: _scalar(v) for k, v in (logs or {}).items()}
        bad = [t for t in self.mtl_model.task_names if not math.isfinite(logs.get(f"{t}_loss", 0.0))]
        if bad:
            self.failure = (
                f"task {bad[0]!r} produced a non-finite loss at epoch {self.epoch + 1}, step "
                f"{batch + 1}; lower train.optimizer.adam.learning_rate or check the data"
            )
            self.model.stop_training = True
            return
        self.on_event(BatchEnd(self.epoch + 1, batch + 1, self.steps, logs))

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: _scalar(v) for k, v in (logs or {}).items()}
        row = {"epoch": epoch + 1, **logs}
        self.history.append(row)
        self._write_history()
        self.on_event(EpochEnd(epoch + 1, self.epochs, logs, time.time() - self.t0))

    def _write_history(self):
        keys: list[str] = []
        for row in self.history:
            keys.extend(k for k in row if k not in keys)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, restval="")
        writer.writeheader()
        for row in self.history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        from mtlcli.runner import atomic_write

        atomic_write(self.run_dir / "history.csv", buf.getvalue())
