"""The run directory: where it is made, and the files written around training (not the checkpoints).

Run directory (``runs/<name>/<N>/`` or ``--output DIR``)::

    model.keras      the trained model (weights, optimizer state, recipe spec, preprocessing); loads with
                     keras.saving.load_model(..., safe_mode=True) after ``import mtlcli.model.network``
    recipe.yaml      the recipe exactly as given
    resolved.yaml    the recipe with every default filled in
    history.csv      one row per epoch, one column per logged value (per task and metric)
    metrics.json     final per-task results on the validation and test splits
    data.json        data files (absolute path, sha256, rows), split sizes, seeded split indices, label coverage
    env.json         versions (mtl, TensorFlow, Keras, numpy, Python), seed, command line, timings;
                     every ``--resume`` appends to ``resumes``, a fork records ``forked_from``
    checkpoints/     last/ and best/ (see mtlcli.run.checkpoint): what --resume and --fork continue from

Every file is replaced atomically (:func:`mtlcli.fsio.atomic_write`): a crash leaves the old file or the
new one. A run directory that cannot be made or written is a :class:`~mtlcli.errors.UsageError` (exit 2)
before training starts; once it has started, a :class:`~mtlcli.errors.RunError` (:func:`mtlcli.fsio.disk_error`).
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mtlcli import __version__
from mtlcli.errors import UsageError
from mtlcli.fsio import atomic_write, disk_error, save_model_atomic
from mtlcli.recipe import LoadedRecipe


def resolved_recipe(loaded: LoadedRecipe, seed: int, epochs: int) -> dict[str, Any]:
    """What ``resolved.yaml`` holds: the recipe with defaults, its name, and the seed and epochs used."""
    resolved = loaded.recipe.resolved()
    resolved["name"] = loaded.name
    resolved["seed"] = seed
    resolved["train"]["epochs"] = epochs
    return resolved


def new_run_dir(name: str, output: str | Path | None, force: bool, root: Path | None = None) -> Path:
    """``--output DIR`` (refused when not empty, unless ``force``), else the next ``runs/<name>/<N>``."""
    if output is not None:
        out = Path(output)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--output {out} exists and is not a directory")
        if out.exists() and any(out.iterdir()):
            if not force:
                raise UsageError(
                    f"--output {out} is not empty; choose another directory or pass --force to write into it"
                )
            for leftover in ("model.keras", "metrics.json", "history.csv"):
                (out / leftover).unlink(missing_ok=True)
            if (out / "checkpoints").is_dir():  # another run's checkpoints must not be resumed by mistake
                shutil.rmtree(out / "checkpoints")
        out.mkdir(parents=True, exist_ok=True)
        return out
    base = (root or Path.cwd()) / "runs" / name
    base.mkdir(parents=True, exist_ok=True)
    n = 1 + max((int(p.name) for p in base.iterdir() if p.name.isdigit()), default=0)
    while True:
        try:
            (base / str(n)).mkdir()
            return base / str(n)
        except FileExistsError:  # a concurrent run took it
            n += 1


def create(loaded: LoadedRecipe, output, force: bool, info: dict[str, Any], seed: int, epochs: int) -> Path:
    """Create the run directory and its static files; a failure leaves no half-made directory."""
    existed = output is not None and Path(output).exists()
    try:
        run_dir = new_run_dir(loaded.name, output, force)
    except OSError as exc:
        where = output if output is not None else Path.cwd() / "runs" / loaded.name
        raise UsageError(f"cannot create the run directory {where}: {exc.strerror or exc}") from None
    try:
        write_static_files(run_dir, loaded, info, seed, epochs)
    except OSError as exc:
        if not existed:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise UsageError(f"cannot write to the run directory {run_dir}: {exc.strerror or exc}") from None
    return run_dir


def write_static_files(run_dir: Path, loaded: LoadedRecipe, info: dict[str, Any], seed: int, epochs: int):
    """recipe.yaml, resolved.yaml, data.json and env.json of a new run (imports TensorFlow for its
    version: the run has already imported it)."""
    import keras
    import tensorflow as tf

    source = loaded.path.read_text(encoding="utf-8") if loaded.path else yaml.safe_dump(loaded.source.data)
    atomic_write(run_dir / "recipe.yaml", source)
    resolved = resolved_recipe(loaded, seed, epochs)
    atomic_write(run_dir / "resolved.yaml", yaml.safe_dump(resolved, sort_keys=False))
    atomic_write(run_dir / "data.json", json.dumps(info, indent=1) + "\n")
    env = {
        "mtl": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seed": seed,
        "argv": sys.argv,
        "recipe": str(loaded.path.resolve()) if loaded.path else None,
        "recipe_dir": str(loaded.base_dir.resolve()),  # relative data paths resolve from here (--resume)
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_env(run_dir, env)


def read_env(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "env.json").read_text())


def write_env(run_dir: Path, env: dict[str, Any]) -> None:
    atomic_write(run_dir / "env.json", json.dumps(env, indent=2) + "\n")


def record_resume(
    run_dir: Path, resolved: dict[str, Any], env: dict[str, Any], state: dict[str, Any], applied: list[str]
) -> None:
    """A resume in place: the new resolved recipe, and one more entry in env.json's ``resumes``."""
    env = dict(env)
    env.setdefault("resumes", []).append(
        {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "from_epoch": state["epoch"],
            "from_step": state["step_in_epoch"],
            "changes": applied,
            "argv": sys.argv,
        }
    )
    try:
        atomic_write(run_dir / "resolved.yaml", yaml.safe_dump(resolved, sort_keys=False))
        write_env(run_dir, env)
    except OSError as exc:
        raise UsageError(f"cannot write to the run directory {run_dir}: {exc.strerror or exc}") from None


def record_fork(
    run_dir: Path, source_run: Path, ckpt: Path, state: dict[str, Any], applied: list[str]
) -> None:
    """A fork: env.json says which run and checkpoint it started from, and what changed."""
    env = read_env(run_dir)
    env["forked_from"] = {
        "run": str(source_run.resolve()),
        "checkpoint": str(ckpt.resolve()),
        "epoch": state["epoch"],
        "step": state["step_in_epoch"],
        "changes": applied,
    }
    write_env(run_dir, env)


def save_model(run_dir: Path, model) -> None:
    """The trained model as ``model.keras`` (before it is evaluated, as ``mtl evaluate`` will load it)."""
    try:
        save_model_atomic(model, run_dir / "model.keras")
    except OSError as exc:
        raise disk_error(exc, f"to the run directory {run_dir}") from None


def write_results(
    run_dir: Path,
    results: dict[str, Any],
    epochs_run: int,
    seconds: float,
    *,
    continued: bool,
    distribution: dict[str, Any] | None = None,
) -> None:
    """metrics.json, and the epochs and training time in env.json (``continued``: a resume in place,
    whose earlier sessions' time is added)."""
    try:
        atomic_write(run_dir / "metrics.json", json.dumps(results, indent=2) + "\n")
        env = read_env(run_dir)
        total = float(env.get("train_seconds") or 0.0) + seconds if continued else seconds
        env.update({"epochs_run": epochs_run, "train_seconds": round(total, 3)})
        if distribution is not None:
            env["distribute"] = distribution
        write_env(run_dir, env)
    except OSError as exc:
        raise disk_error(exc, f"to the run directory {run_dir}") from None
