"""The run directory: where it is made, and the files written around training (not the checkpoints).

Run directory (``runs/<name>/<N>/`` or ``--output DIR``)::

    model.keras      the trained model (weights, optimizer state, recipe spec, preprocessing); loads with
                     keras.saving.load_model(..., safe_mode=True) after ``import mtlcli.model.network``
    recipe.yaml      the recipe exactly as given
    resolved.yaml    the recipe with every default filled in, each value's source as a trailing comment
                     (``# recipe.yaml:14``, ``# --set``, ``# default``); yaml.safe_load reads it as a recipe
    history.csv      one row per epoch, one column per logged value (per task and metric)
    tb/              TensorBoard event files, train/ and validation/ (see mtlcli.run.tensorboard)
    metrics.json     final per-task results on the validation and test splits
    data.json        data files (absolute path, sha256, rows), split sizes, seeded split indices, label coverage
    env.json         versions (mtl, TensorFlow, Keras, numpy, Python), seed, command line, the ``--set``
                     overrides (``overrides``: recipe.yaml plus these is the run's recipe), timings;
                     every ``--resume`` appends to ``resumes``, a fork records ``forked_from``
    checkpoints/     last/ and best/ (see mtlcli.run.checkpoint): what --resume and --fork continue from

Every file is replaced atomically (:func:`mtlcli.fsio.atomic_write`): a crash leaves the old file or the
new one. A run directory that cannot be made or written is a :class:`~mtlcli.errors.UsageError` (exit 2)
before training starts; once it has started, a :class:`~mtlcli.errors.RunError` (:func:`mtlcli.fsio.disk_error`).

Making or entering a run directory returns an :class:`Opened`: until the run's first checkpoint, a
failure puts the directory back as it was (removed, or an existing one restored), so that neither a
re-run nor ``--resume`` is blocked by a half-written run.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mtlcli import __version__
from mtlcli.errors import UsageError
from mtlcli.fsio import atomic_write, disk_error, save_model_atomic
from mtlcli.recipe import LoadedRecipe, annotated_yaml
from mtlcli.run import checkpoint


def resolved_recipe(loaded: LoadedRecipe, seed: int, epochs: int) -> dict[str, Any]:
    """What ``resolved.yaml`` holds: the recipe with defaults, its name, and the seed and epochs used
    (a :class:`mtlcli.recipe.overrides.Resolved`: it also knows each value's source)."""
    return loaded.resolved(seed, epochs, file=loaded.path.name if loaded.path else "recipe.yaml")


RESOLVED_HEADER = """\
The recipe this run was trained with, every default filled in. After each value, where it came from:
FILE:LINE (a line of the recipe file; a new run copies it to recipe.yaml here), --set (a command-line
override; env.json lists them), --seed or --epochs (the command line), or default."""


def resolved_text(resolved: dict[str, Any]) -> str:
    """``resolved.yaml``'s text: the resolved recipe with each value's source as a trailing comment."""
    return annotated_yaml(resolved, RESOLVED_HEADER)


#: What a run writes into its directory. ``--force`` moves the ones an earlier run left aside (they
#: would be mistaken for this run's) and deletes them only once this run has written a checkpoint.
RUN_FILES = (
    "model.keras",
    "metrics.json",
    "history.csv",
    "tb",
    "checkpoints",
    "recipe.yaml",
    "resolved.yaml",
    "data.json",
    "env.json",
)


@dataclass
class Opened:
    """A run directory this session made or entered, and what a failed start has to undo.

    A start is not final until the run has written a ``last`` checkpoint: before that, a failure (out
    of memory, a non-finite loss in the first steps, a bad value TensorFlow refuses, Ctrl-C twice)
    would leave a directory that neither ``--resume`` (no checkpoint) nor a re-run (``--output ... is
    not empty``) accepts. :meth:`close` then puts everything back as it was: directories this session
    made are removed, files it added to an existing directory are deleted, and the files it moved
    aside (``--force``) or is about to rewrite (a resume in place) are moved back. Nothing the user
    had there before is ever deleted. The files wait in ``.mtl-replaced-*/`` inside the run
    directory (a rename, so no copy of a large model; a process killed with SIGKILL leaves them there).
    """

    path: Path
    made: list[Path] = field(default_factory=list)  # directories made by this session, outermost first
    before: set[str] | None = None  # the names in an existing directory (None: the directory is new)
    aside: Path | None = None
    started_from: bytes | None = None  # checkpoints/last/state.json when the session started

    def keep(self, name: str, *, move: bool) -> None:
        """Put ``name`` aside until the start is final (``move``: gone from the run directory meanwhile;
        else a copy, for a file the session rewrites in place)."""
        src = self.path / name
        if not src.exists():
            return
        if self.aside is None:
            self.aside = Path(tempfile.mkdtemp(prefix=".mtl-replaced-", dir=self.path))
        if move:
            os.replace(src, self.aside / name)
        else:
            shutil.copy2(src, self.aside / name)

    def progressed(self) -> bool:
        """Has this session written a ``last`` checkpoint (the run can be resumed from it)?"""
        return _last_state(self.path) not in (None, self.started_from)

    def close(self, failed: bool) -> None:
        """The session ends: a success, or a failure after a checkpoint, keeps the directory (and
        drops what was put aside); a failure before one puts the directory back as it was."""
        if failed and not self.progressed():
            self._roll_back()
        elif self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
        self.aside = None
        self.made = []

    def _roll_back(self) -> None:
        with contextlib.suppress(OSError):
            if self.before is None:
                shutil.rmtree(self.path, ignore_errors=True)
                # the parents it made (runs/<name>/), only while empty: another run may use them now
                for parent in reversed(self.made[:-1]):
                    with contextlib.suppress(OSError):
                        parent.rmdir()
                return
            for entry in self.path.iterdir():
                if entry.name not in self.before and entry != self.aside:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
            if self.aside is not None:
                for kept in self.aside.iterdir():
                    target = self.path / kept.name
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target, ignore_errors=True)
                    os.replace(kept, target)
                self.aside.rmdir()


def _last_state(run_dir: Path) -> bytes | None:
    ckpt = checkpoint.find(run_dir, "last")
    try:
        return (ckpt / "state.json").read_bytes() if ckpt is not None else None
    except OSError:
        return None


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, outermost first."""
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            break
        missing.append(p)
    return missing[::-1]


def new_run_dir(name: str, output: str | Path | None, force: bool, root: Path | None = None) -> Opened:
    """``--output DIR`` (refused when not empty, unless ``force``), else the next ``runs/<name>/<N>``."""
    if output is not None:
        out = Path(output)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--output {out} exists and is not a directory")
        if out.exists():
            before = {p.name for p in out.iterdir()}
            if before and not force:
                raise UsageError(
                    f"--output {out} is not empty; choose another directory or pass --force to write into it"
                )
            opened = Opened(out, before=before)
            for leftover in RUN_FILES:  # another run's checkpoints must not be resumed by mistake
                opened.keep(leftover, move=True)
            return opened
        made = _missing_dirs(out)
        out.mkdir(parents=True, exist_ok=True)
        return Opened(out, made=made)
    base = (root or Path.cwd()) / "runs" / name
    made = _missing_dirs(base)
    base.mkdir(parents=True, exist_ok=True)
    n = 1 + max((int(p.name) for p in base.iterdir() if p.name.isdigit()), default=0)
    while True:
        try:
            (base / str(n)).mkdir()
            return Opened(base / str(n), made=[*made, base / str(n)])
        except FileExistsError:  # a concurrent run took it
            n += 1


def create(loaded: LoadedRecipe, output, force: bool, info: dict[str, Any], seed: int, epochs: int) -> Opened:
    """Create the run directory and its static files; a failure leaves no half-made directory."""
    try:
        opened = new_run_dir(loaded.name, output, force)
    except OSError as exc:
        where = output if output is not None else Path.cwd() / "runs" / loaded.name
        raise UsageError(f"cannot create the run directory {where}: {exc.strerror or exc}") from None
    try:
        write_static_files(opened.path, loaded, info, seed, epochs)
    except OSError as exc:
        opened.close(failed=True)
        raise UsageError(f"cannot write to the run directory {opened.path}: {exc.strerror or exc}") from None
    except BaseException:
        opened.close(failed=True)
        raise
    return opened


def enter(run_dir: Path) -> Opened:
    """A run continued in its own directory (a resume in place): the files the session rewrites
    before its first checkpoint are kept, so that a failed start leaves the run as it was."""
    opened = Opened(run_dir, before={p.name for p in run_dir.iterdir()}, started_from=_last_state(run_dir))
    try:
        for name in ("resolved.yaml", "env.json", "history.csv"):
            opened.keep(name, move=False)
    except OSError as exc:
        opened.close(failed=True)
        raise UsageError(f"cannot write to the run directory {run_dir}: {exc.strerror or exc}") from None
    return opened


def write_static_files(run_dir: Path, loaded: LoadedRecipe, info: dict[str, Any], seed: int, epochs: int):
    """recipe.yaml, resolved.yaml, data.json and env.json of a new run (imports TensorFlow for its
    version: the run has already imported it)."""
    import keras
    import tensorflow as tf

    if loaded.path:
        source = loaded.path.read_text(encoding="utf-8")
    else:  # a fork of a run: its recipe.yaml as written (its lines are the sources' lines)
        base = getattr(loaded.source, "base", loaded.source)
        source = base.text if base.text is not None else yaml.safe_dump(base.data)
    atomic_write(run_dir / "recipe.yaml", source)
    atomic_write(run_dir / "resolved.yaml", resolved_text(resolved_recipe(loaded, seed, epochs)))
    from mtlcli.data.step import recorded  # data paths relative to the run directory too (relocatable)

    atomic_write(run_dir / "data.json", json.dumps(recorded(info, run_dir, loaded.base_dir), indent=1) + "\n")
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
        "overrides": [o.text for o in loaded.overrides],  # --set, applied to recipe.yaml in this order
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
    """A resume in place: the new resolved recipe, and one more entry in env.json's ``resumes``; the
    run's ``overrides`` become those this session applied (a later ``--resume`` continues with them)."""
    env = dict(env)
    if getattr(resolved, "overrides", None) is not None:
        env["overrides"] = list(resolved.overrides)
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
        atomic_write(run_dir / "resolved.yaml", resolved_text(resolved))
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
