"""Events a training run reports (the CLI renders them; library code never prints)."""

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


@dataclass
class Finished:
    run_dir: Path
    epochs_run: int
    stopped_early: bool
    seconds: float
    results: dict[str, Any]


Event = Started | BatchEnd | EpochEnd | Finished
