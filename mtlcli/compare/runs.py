"""Finding and reading finished run directories for ``mtl compare`` (no TensorFlow).

A run directory is a directory holding ``resolved.yaml``; it is finished when it also holds
``metrics.json``. :func:`find_runs` takes run directories, directories of runs and sweep directories
(``.../<point>/seed-<k>/`` nested at any depth) and returns the finished runs in natural path order
(``seed-2`` before ``seed-10``), with a note for every run it skipped.

A run is the **single-task baseline** for task ``T`` when

- its recipe has exactly one task ``T``, or
- its ``env.json`` has ``"single_task": "T"``, or
- a ``sweep.json`` in one of its parent directories lists it: ``{"runs": [{"dir": "<path relative to
  sweep.json>", "single_task": "T"}, ...]}`` (``"path"`` is accepted for ``"dir"``).

Only task ``T``'s results of such a run are read (the other heads of a dropped-loss run are untrained).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtlcli.errors import UsageError
from mtlcli.run.resume import flatten
from mtlcli.weighting.registry import label

#: recipe keys that never make two runs different configurations
IGNORED_KEYS = ("seed", "name")
#: directories never searched for runs
SKIP_DIRS = ("checkpoints", "__pycache__")


@dataclass
class Run:
    """One finished run: its results per split and task, and what it was trained with."""

    path: Path
    metrics: dict[str, Any]  # metrics.json
    resolved: dict[str, Any]  # resolved.yaml
    env: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # data.json
    single_task: str | None = None

    @property
    def seed(self) -> Any:
        return self.resolved.get("seed", self.env.get("seed"))

    def splits(self) -> list[str]:
        return [s for s, v in (self.metrics.get("splits") or {}).items() if isinstance(v, dict)]

    def tasks(self, split: str) -> dict[str, dict[str, Any]]:
        """``{task: {loss, <metric>..., n}}`` on ``split`` (only the single task for a baseline)."""
        tasks = ((self.metrics.get("splits") or {}).get(split) or {}).get("tasks") or {}
        if self.single_task is not None:
            tasks = {t: v for t, v in tasks.items() if t == self.single_task}
        return {t: v for t, v in tasks.items() if isinstance(v, dict)}


def natural_key(path: Path) -> list:
    """Sort key that orders numbers by value: ``seed-2`` before ``seed-10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


#: defaults that ``resolved.yaml`` leaves out (as runs before those keys wrote it), so that a group
#: with the default shows its value rather than null (:meth:`mtlcli.recipe.spec.Recipe.resolved`)
RESOLVED_LEAVES_OUT = {"model.fusion": "concat"}


def configuration(run: Run) -> dict[str, Any]:
    """The run's flattened resolved recipe without the keys that do not make a configuration
    (``seed``, ``name``), its data files named by content (``data.json``'s sha256, so the same data
    read through different relative paths is the same configuration). The strategy is one key,
    ``train.weighting``, its whole spec as a label (``cagrad(c=0.5)``, ``cr_mogm(base=mgda, alpha=0.5)``),
    so a group keeps the strategy's name next to its parameters."""
    resolved = {k: v for k, v in run.resolved.items() if k not in IGNORED_KEYS}
    train = resolved.get("train")
    if isinstance(train, dict) and isinstance(train.get("weighting"), dict):
        resolved["train"] = {**train, "weighting": label(train["weighting"])}
    flat = flatten(resolved)
    for key, default in RESOLVED_LEAVES_OUT.items():
        if isinstance(resolved.get("model"), dict):
            flat.setdefault(key, default)
    files = run.data.get("files") or {}
    for key in ("train", "validation", "test"):
        entry = files.get(key)
        if not isinstance(entry, dict) or not entry.get("sha256"):
            continue
        name = f"sha256:{entry['sha256'][:12]}"
        if f"data.{key}" in flat:
            flat[f"data.{key}"] = name
        if f"data.{key}.path" in flat:
            flat[f"data.{key}.path"] = name
    return flat


def _sweep_markers(root: Path) -> dict[Path, str]:
    """``{run dir: task}`` for the single-task runs a ``sweep.json`` under ``root`` (or above it) lists."""
    out: dict[Path, str] = {}
    candidates = [p / "sweep.json" for p in [root, *root.parents]]
    candidates += list(root.rglob("sweep.json")) if root.is_dir() else []
    for sweep in dict.fromkeys(candidates):
        for entry in _read_json(sweep).get("runs") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("single_task"), str):
                continue
            rel = entry.get("dir") or entry.get("path")
            if isinstance(rel, str):
                out[(sweep.parent / rel).resolve()] = entry["single_task"]
    return out


def read_run(path: Path, markers: dict[Path, str] | None = None) -> tuple[Run | None, str | None]:
    """``(run, None)`` for a finished run directory, ``(None, why it is skipped)`` otherwise."""
    if not (path / "metrics.json").is_file():
        return None, f"{path}: skipped, no metrics.json (still training, interrupted or failed)"
    try:
        resolved = yaml.safe_load((path / "resolved.yaml").read_text())
        metrics = json.loads((path / "metrics.json").read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        return None, f"{path}: skipped, unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    if not isinstance(resolved, dict) or not isinstance(metrics, dict):
        return None, f"{path}: skipped, resolved.yaml or metrics.json is not a mapping"
    env = _read_json(path / "env.json")
    run = Run(path, metrics, resolved, env, _read_json(path / "data.json"))
    tasks = list((resolved.get("model") or {}).get("tasks") or {})
    marker = env.get("single_task") or (markers or {}).get(path.resolve())
    if isinstance(marker, str):
        run.single_task = marker
    elif len(tasks) == 1:
        run.single_task = tasks[0]
    return run, None


def _run_dirs(root: Path) -> list[Path]:
    """Every directory with a ``resolved.yaml`` at or under ``root`` (not looking inside runs)."""
    if (root / "resolved.yaml").is_file():
        return [root]
    out = []
    for child in sorted(root.iterdir(), key=natural_key):
        if child.is_dir() and not child.name.startswith(".") and child.name not in SKIP_DIRS:
            out.extend(_run_dirs(child))
    return out


def find_runs(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """The finished runs at or under ``paths`` (each run once) and notes on the ones skipped.

    Raises :class:`UsageError` for a path that does not exist, is not a directory or holds no run
    directory, and when no run at all is finished.
    """
    runs, notes, seen, unfinished = [], [], set(), 0
    for root in paths:
        if not root.exists():
            raise UsageError(f"{root}: no such file or directory")
        if not root.is_dir():
            raise UsageError(f"{root}: expected a run directory or a directory of runs, received a file")
        dirs = _run_dirs(root)
        if not dirs:
            raise UsageError(
                f"{root}: no run directory (one with resolved.yaml and metrics.json) in it or below"
            )
        markers = _sweep_markers(root)
        for d in dirs:
            if d.resolve() in seen:
                continue
            seen.add(d.resolve())
            run, why = read_run(d, markers)
            if run is None:
                notes.append(why or f"{d}: skipped")
                unfinished += 1
            else:
                runs.append(run)
    if not runs:
        raise UsageError(
            f"no finished run: {unfinished} run director{'y' if unfinished == 1 else 'ies'} found, none "
            "with a readable metrics.json (still training or interrupted?)\n" + "\n".join(notes)
        )
    return runs, notes
