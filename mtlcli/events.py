"""Events a training run and ``mtl predict`` report (the CLI renders them; library code never prints)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Started:
    run_dir: Path
    tasks: dict[str, dict[str, Any]]  # task -> {"type", "metrics", "main"}
    rows: dict[str, int]
    coverage: dict[str, dict[str, int]]
    params: dict[str, int]
    epochs: int
    steps_per_epoch: int
    weighting: str
    seed: int


@dataclass
class BatchEnd:
    epoch: int
    step: int
    steps: int
    logs: dict[str, float]


@dataclass
class EpochEnd:
    epoch: int  # 1-based
    epochs: int
    logs: dict[str, float]
    seconds: float
    final: bool = False  # the run trains no further epoch (the last one, or early stopping ends it)


@dataclass
class EarlyStopped:
    """``train.early_stopping`` ended the run after ``epoch`` (1-based)."""

    epoch: int
    monitor: str
    waited: int  # epochs since the best value
    min_delta: float
    best_epoch: int | None
    restored: bool  # the weights of ``best_epoch`` are put back (``restore_best``)


@dataclass
class Finished:
    run_dir: Path
    epochs_run: int
    stopped_early: bool
    seconds: float
    results: dict[str, Any]
    weights_epoch: int | None = None  # the epoch whose weights the final results are from


@dataclass
class Resumed:
    """A run continues from a checkpoint (``--resume``) or a new run starts from one (``--fork``)."""

    run_dir: Path
    source: Path  # the checkpoint directory
    epoch: int  # completed epochs in the checkpoint
    step: int  # steps done in the next epoch (0 at an epoch boundary)
    steps: int
    epochs: int
    applied: list[str]  # recipe changes applied, rendered "key: old -> new"
    notes: list[str]
    fork: bool


@dataclass
class Notice:
    """A one-line message during training (e.g. a batch skipped by ``on_nan: skip_batch``)."""

    message: str


@dataclass
class PredictStarted:
    """``mtl predict`` has loaded the model and starts reading ``source``."""

    model_path: Path
    source: str
    output: str  # the file written, "-" for standard output, "" when the rows are only shown
    tasks: list[str]
    total: int | None  # rows to predict when known (Parquet metadata, an in-memory source)


@dataclass
class PredictProgress:
    """Rows predicted so far (after each chunk)."""

    rows: int
    total: int | None
    seconds: float


Event = (
    Started
    | BatchEnd
    | EpochEnd
    | EarlyStopped
    | Finished
    | Resumed
    | Notice
    | PredictStarted
    | PredictProgress
)
