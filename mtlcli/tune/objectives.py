"""What ``mtl tune`` optimises: ``per-task`` (each task's headline validation metric with its
direction), ``loss`` (the total validation loss, minimised) or an explicit ``TASK.METRIC,...`` list;
and where each value is read: the ``history.csv`` column per epoch (pruning, the live table) and
``metrics.json``'s validation split at the end (the value told to Optuna). No TensorFlow, no Optuna.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlcli.compare.stats import higher_is_better, oriented, pareto_mask
from mtlcli.errors import Problem, RecipeError, did_you_mean
from mtlcli.recipe import LoadedRecipe


@dataclass(frozen=True)
class Objective:
    """One objective: ``task`` (None for the total loss), ``metric`` and whether higher is better."""

    task: str | None
    metric: str
    higher: bool

    @property
    def name(self) -> str:
        return self.metric if self.task is None else f"{self.task}.{self.metric}"

    @property
    def column(self) -> str:
        """Its ``history.csv`` column (``val_<task>_<metric>`` or ``val_loss``)."""
        return "val_loss" if self.task is None else f"val_{self.task}_{self.metric}"

    @property
    def direction(self) -> str:
        return "maximize" if self.higher else "minimize"

    def read(self, metrics: dict[str, Any]) -> float | None:
        """Its value in a ``metrics.json`` document (the validation split), None when absent."""
        split = (metrics.get("splits") or {}).get("validation") or {}
        value = (
            split.get("loss")
            if self.task is None
            else ((split.get("tasks") or {}).get(self.task) or {}).get(self.metric)
        )
        return float(value) if isinstance(value, (int, float)) else None


def _fail(text: str, message: str) -> Problem:
    return Problem(message, "", f"--objectives {text}", None, ())


def resolve(text: str | None, loaded: LoadedRecipe) -> list[Objective]:
    """The objectives ``text`` names for the recipe ``loaded`` (default ``per-task``); an unknown task
    or metric is a RecipeError with a did-you-mean (exit 2)."""
    recipe = loaded.recipe
    text = (text or "per-task").strip()
    if text == "loss":
        return [Objective(None, "loss", False)]
    if text == "per-task":
        return [
            Objective(t, m := recipe.metrics(t)[0], bool(higher_is_better(m))) for t in recipe.model.tasks
        ]
    out, problems = [], []
    for item in (s.strip() for s in text.split(",")):
        task, dot, metric = item.partition(".")
        if not dot:
            problems.append(_fail(text, f"{item!r}: expected per-task, loss or TASK.METRIC[,TASK.METRIC...]"))
        elif task not in recipe.model.tasks:
            problems.append(_fail(text, f"unknown task {task!r}{did_you_mean(task, recipe.model.tasks)}"))
        elif metric not in (known := [*recipe.metrics(task), "loss"]):
            problems.append(
                _fail(
                    text,
                    f"task {task} has no metric {metric!r} (it reports {', '.join(known)}){did_you_mean(metric, known)}",
                )
            )
        else:
            objective = Objective(task, metric, bool(higher_is_better(metric)))
            if objective in out:
                problems.append(_fail(text, f"{item} is named twice"))
            out.append(objective)
    if problems:
        raise RecipeError(problems=problems)
    return out


def read_values(run_dir: Path, objectives: list[Objective]) -> list[float] | None:
    """The objectives' values from ``run_dir/metrics.json``; None when it or a value is missing."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    values = [o.read(metrics) for o in objectives]
    return None if any(v is None for v in values) else values


def pareto(values: list[list[float]], objectives: list[Objective]) -> list[bool]:
    """Which of ``values`` (one list per trial) no other trial dominates, each objective in its direction."""
    if not values:
        return []
    return pareto_mask(oriented(values, [o.higher for o in objectives]))
