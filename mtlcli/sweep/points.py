"""The runs a sweep makes: grid points, ``--pareto`` and ``--single-task`` points, their directory
names, the sweep's id, and the recipe check of every one before anything trains (no TensorFlow).

- **Grid points**: the cartesian product of the axes, the first ``--grid`` outermost. A point's
  overrides are the base ``--set`` texts, then one ``KEY=VALUE`` per axis.
- **Pareto points** (``--pareto K``, 2 or 3 tasks): ``train.weighting=static`` and task weights on the
  simplex, rounded to 4 decimals: for 2 tasks ``(1 - i/(K-1), i/(K-1))``, ``i = 0..K-1``; for 3 tasks
  the simplex lattice ``(a, b, c)/H`` with ``a + b + c = H``, which has ``(H+1)(H+2)/2`` points (K
  must be one of 3, 6, 10, 15 ...).
- **Single-task points** (``--single-task``): per task ``T``, the recipe with ``model.tasks`` holding
  ``T`` alone (its spec as written), ``train.weighting=static``, and an early-stopping monitor that
  named another task replaced by ``val_loss`` (or ``loss``). A task whose head reads another task
  (``inputs_from``) cannot be trained alone: it is skipped with a note.

A point's directory name (:func:`slug`) is its ``KEY=VALUE`` pairs joined by commas, characters
outside ``A-Z a-z 0-9 . _ = , + -`` replaced by ``_``; a name that had to be changed or is longer
than 120 characters ends with a hash of the exact pairs, so two points never share a directory.
The sweep's id (:func:`sweep_id`) is a hash of the recipe file's content, the base overrides, the
grid, ``--single-task`` and ``--pareto`` (not the seeds: ``--seeds 5`` after ``--seeds 3`` adds two
seeds to the same sweep).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from mtlcli.errors import Problem, RecipeError, UsageError
from mtlcli.recipe import LoadedRecipe, Override, format_set, load, monitor_names, parse_set
from mtlcli.recipe.overrides import flow
from mtlcli.recipe.spec import SEED_MAX
from mtlcli.sweep.spec import SweepSpec

_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")
MAX_SLUG = 120


@dataclass(frozen=True)
class Labelled(Override):
    """An override that names where it came from (``--grid KEY=VALUE``, ``--pareto 3``) in messages."""

    origin: str = ""

    @property
    def label(self) -> str:
        return self.origin or f"--set {self.text}"


def labelled(text: str, origin: str) -> Labelled:
    path, value = parse_set(text)
    return Labelled(text, path, value, origin)


@dataclass(frozen=True)
class Point:
    """One configuration: its directory name, the overrides that make it from the recipe file (base
    ``--set`` first), what it is (``grid``, ``pareto``, ``single_task``) and its own key=values."""

    name: str
    overrides: tuple[Override, ...]
    kind: str = "grid"
    single_task: str | None = None
    values: tuple[tuple[str, Any], ...] = ()

    def sets(self) -> list[str]:
        """The ``KEY=VALUE`` texts of its overrides, in order."""
        return [o.text for o in self.overrides]


def slug(pairs: list[tuple[str, Any]] | tuple, prefix: str = "") -> str:
    """A readable, filesystem-safe directory name for ``pairs`` (see the module docstring)."""
    parts = [f"{k}={flow(v)}" for k, v in pairs]
    exact = ",".join([prefix, *parts] if prefix else parts) or "base"
    safe = _UNSAFE.sub("_", exact)
    if safe == exact and len(safe) <= MAX_SLUG:
        return safe
    digest = hashlib.sha256(exact.encode()).hexdigest()[:8]
    return f"{safe[:MAX_SLUG].rstrip('_,')}-{digest}"


def sweep_id(recipe_bytes: bytes, spec: SweepSpec) -> str:
    """The short hash naming the sweep's directory (same recipe and grid: same sweep)."""
    doc = {
        "recipe": hashlib.sha256(recipe_bytes).hexdigest(),
        "set": list(spec.sets),
        "grid": [[a.key, a.sets()] for a in spec.grid],
        "single_task": bool(spec.single_task),
        "pareto": spec.pareto,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:8]


def pareto_weights(k: int, n_tasks: int) -> list[tuple[float, ...]]:
    """``k`` preference vectors spread evenly over the simplex of ``n_tasks`` (2 or 3) tasks."""
    if n_tasks not in (2, 3):
        raise UsageError(
            f"--pareto: spreads weights over 2 or 3 tasks; the recipe has {n_tasks} "
            "(sweep model.tasks.<task>.weight with --grid instead)"
        )
    if k < 2:
        raise UsageError(f"--pareto: expected at least 2 points, received {k}")
    if n_tasks == 2:
        return [(round(1 - i / (k - 1), 4), round(i / (k - 1), 4)) for i in range(k)]
    sizes = {(h + 1) * (h + 2) // 2: h for h in range(1, 200)}
    if k not in sizes:
        near = sorted(sizes, key=lambda s: (abs(s - k), s))[:2]
        raise UsageError(
            f"--pareto {k}: for 3 tasks the evenly spread points form a lattice of 3, 6, 10, 15, 21 ... "
            f"points; use --pareto {min(near)} or {max(near)}"
        )
    h = sizes[k]
    return [
        (round(a / h, 4), round(b / h, 4), round((h - a - b) / h, 4))
        for a in range(h, -1, -1)
        for b in range(h - a, -1, -1)
    ]


def grid_points(spec: SweepSpec, base: list[Override]) -> list[Point]:
    """The cartesian product of the grid (one point, ``base``, without a grid)."""
    axes = spec.grid
    out = []
    for combo in itertools.product(*(range(len(a.values)) for a in axes)):
        pairs = tuple((a.key, a.values[i]) for a, i in zip(axes, combo, strict=True))
        own = [
            labelled(format_set(a.key, a.values[i]), a.labels[i]) for a, i in zip(axes, combo, strict=True)
        ]
        out.append(Point(slug(list(pairs)), (*base, *own), "grid", None, pairs))
    return out


def pareto_points(loaded: LoadedRecipe, k: int, base: list[Override]) -> list[Point]:
    """``k`` static-weighting points with the tasks' weights on the simplex."""
    tasks = list(loaded.recipe.model.tasks)
    out = []
    for weights in pareto_weights(k, len(tasks)):
        pairs = tuple(zip(tasks, weights, strict=True))
        sets = ["train.weighting=static", *(format_set(f"model.tasks.{t}.weight", w) for t, w in pairs)]
        own = [labelled(s, f"--pareto {k}") for s in sets]
        out.append(Point(slug(list(pairs), "pareto"), (*base, *own), "pareto", None, pairs))
    return out


def single_task_points(loaded: LoadedRecipe, base: list[Override]) -> tuple[list[Point], list[str]]:
    """One point per task that can stand alone, and a note for each task skipped."""
    tasks = (loaded.source.data.get("model") or {}).get("tasks") or {}
    points, notes = [], []
    early = loaded.recipe.train.early_stopping
    for task, spec in tasks.items():
        if isinstance(spec, dict) and spec.get("inputs_from"):
            reads = ", ".join(str(d) for d in spec["inputs_from"])
            notes.append(f"--single-task: {task} is skipped: its head reads {reads} (inputs_from)")
            continue
        origin = f"--single-task ({task})"
        sets = [format_set("model.tasks", {task: spec}), "train.weighting=static"]
        if early is not None and early.monitor not in monitor_names({task: spec}):
            monitor = "val_loss" if early.monitor.startswith("val_") else "loss"
            sets.append(format_set("train.early_stopping.monitor", monitor))
            notes.append(f"--single-task {task}: early stopping watches {monitor} (not {early.monitor})")
        own = [labelled(s, origin) for s in sets]
        points.append(Point(slug([("single_task", task)]), (*base, *own), "single_task", task))
    return points, notes


def expand(spec: SweepSpec, loaded: LoadedRecipe) -> tuple[list[Point], list[str]]:
    """Every point of the sweep (grid, then pareto, then single-task) and notes on what was skipped.
    ``loaded`` is the recipe with the base ``--set`` overrides."""
    base = list(loaded.overrides)
    points = grid_points(spec, base)
    if spec.pareto:
        points += pareto_points(loaded, spec.pareto, base)
    notes: list[str] = []
    if spec.single_task:
        single, notes = single_task_points(loaded, base)
        if len(loaded.recipe.model.tasks) < 2:
            raise UsageError("--single-task: the recipe has one task; it is its own single-task baseline")
        points += single
    names = [p.name for p in points]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:  # a pareto point equal to a grid point, say: train it once
        seen: set[str] = set()
        points = [p for p in points if not (p.name in seen or seen.add(p.name))]
        notes.append(f"points named twice were kept once: {', '.join(dupes)}")
    return points, notes


def seeds_of(loaded: LoadedRecipe, n: int) -> list[int]:
    """Seed ``k`` of a point is the recipe's seed + ``k``."""
    return [loaded.recipe.seed + k for k in range(n)]


def check(spec: SweepSpec, points: list[Point], seeds: list[int]) -> dict[str, LoadedRecipe]:
    """Load every point's recipe: ``{point name: loaded}``; the last seed is checked against the seed
    range. All problems of all
    points are raised at once as one RecipeError, each naming the ``--grid`` (or option) it came from."""
    problems: list[Problem] = []
    out: dict[str, LoadedRecipe] = {}
    if seeds and seeds[-1] > SEED_MAX:
        why = f"seed {seeds[-1]} is over {SEED_MAX} (the recipe's seed + {len(seeds) - 1})"
        problems.append(Problem(why, "seed", f"--seeds {len(seeds)}"))
    for p in points:
        try:
            out[p.name] = load(spec.recipe, overrides=p.overrides)
        except RecipeError as exc:
            problems += exc.problems or [Problem(exc.message, "", p.name)]
    unique = list({pr.render(): pr for pr in problems}.values())
    if unique:
        n = len(unique)
        raise RecipeError(
            f"{n} problem{'s' if n != 1 else ''} in the sweep's points; no run was started", problems=unique
        )
    return out
