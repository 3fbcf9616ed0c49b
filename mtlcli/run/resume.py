"""Continuing a run: where ``--resume``/``--fork`` start from, which recipe changes they accept, and
what the model gets back from the checkpoint.

* :func:`open_source` reads the run (or checkpoint) directory: its checkpoint state, resolved recipe,
  data facts and environment, and the recipe it was trained with (:class:`Source`): its recipe.yaml
  with the ``--set`` overrides env.json lists (the recipe a run was trained with includes them);
  :func:`run_recipe` is that recipe with more overrides (``mtl train --resume RUN --set ...``);
* :func:`seed_and_epochs` keeps the seed and epoch count the run actually used (they may have come
  from ``--seed``/``--epochs``) unless the new recipe or the command line changes them;
* :func:`check` compares the recipes key by key (:func:`diff`, :data:`RESUME_SAFE`, :data:`FORK_SAFE`)
  and the data files by sha256, refuses what would break the run and checks that the position inside
  the epoch can be kept (:class:`Position`);
* :func:`restore_run` puts weights, optimizer and RNG state, the selection metric and the history back.

Like nanoGPT, a checkpoint carries its config, so anything that ties the weights to the recipe (model,
data, seed) is forced to stay; only what a continued run can honour is applied, and echoed.
"""

from __future__ import annotations

import copy
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtlcli import data
from mtlcli.errors import CheckpointError, UsageError
from mtlcli.recipe import LoadedRecipe
from mtlcli.run import checkpoint

#: Recipe keys a ``--resume`` may change; they are applied and echoed. Anything else is refused.
RESUME_SAFE = (
    "train.epochs",
    "train.early_stopping.patience",
    "train.checkpoint_every",
    "train.on_nan",
    "train.distribute",  # the global batch and the math stay the same on any number of devices
    "train.devices",
    "train.tensorboard",  # event files only: tb/ gets the epochs it lacks at the next epoch end
    "logging",
)
#: What ``--fork`` may change in addition: the whole ``train`` section and the run name. The model,
#: the data and the seed (which draws the split) must stay, because the weights are tied to them.
FORK_SAFE = ("train", "name", "logging")


# ------------------------------------------------------------------------------------------------
# Recipe changes between a run and its resume


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [x]}`` -> ``{"a.b": 1, "c[0]": x}``; empty containers are leaves."""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def _covered(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith((p + ".", p + "[")) for p in prefixes)


@dataclass
class Change:
    key: str
    old: Any
    new: Any

    def render(self) -> str:
        missing = "(absent)"
        old = missing if self.old is _ABSENT else json.dumps(self.old, default=str)
        new = missing if self.new is _ABSENT else json.dumps(self.new, default=str)
        return f"{self.key}: {old} -> {new}"


_ABSENT = object()


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """The leaves that differ between two resolved recipes, in a stable order.

    A key on one side only whose value is ``None`` or empty (``[]``, ``{}``) is no change: it is a
    setting that a later (or earlier) version of mtl has and that is off (``data.csv: null`` in a run
    written before CSV dialects existed, ``product_of: []`` before product tasks), and the run used
    exactly that.
    """
    a, b = flatten(old), flatten(new)
    keys = list(a) + [k for k in b if k not in a]
    changes = [Change(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in keys]
    return [c for c in changes if c.old != c.new and not (_unset(c.old) and _unset(c.new))]


def _unset(value: Any) -> bool:
    return value is _ABSENT or value is None or (isinstance(value, (list, dict)) and not value)


def split_changes(changes: list[Change], fork: bool) -> tuple[list[Change], list[Change]]:
    """(applied, refused) for a resume (``fork=False``) or a fork."""
    safe = FORK_SAFE if fork else RESUME_SAFE
    applied = [c for c in changes if _covered(c.key, safe)]
    refused = [c for c in changes if not _covered(c.key, safe)]
    return applied, refused


def refusal(changes: list[Change], run_dir: Path, fork: bool) -> str:
    lines = [
        f"the recipe differs from the one {run_dir} was trained with in ways that break the run:",
        *(f"  - {c.render()}" for c in changes),
    ]
    if fork:
        lines.append(
            "a fork keeps the model, the data and the seed (the weights and the split depend on them); "
            "start a new run with: mtl train RECIPE"
        )
    else:
        lines.append(
            f"--resume accepts changes to {', '.join(RESUME_SAFE)} only; to change anything in train "
            f"(optimizer, batch size, weighting, ...) fork it: mtl train RECIPE --resume {run_dir} --fork NEW_DIR"
        )
    return "\n".join(lines)


def comparable(resolved: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """A resolved recipe with its data files named by content (a recipe or a whole project moved
    elsewhere is the same recipe; :func:`data_changes` compares the contents by sha256)."""
    out = copy.deepcopy(resolved)
    files = info.get("files") or {}
    for key in ("train", "validation", "test"):
        value, entry = (out.get("data") or {}).get(key), files.get(key)
        if not isinstance(entry, dict):
            continue
        name = "(sha256)" if entry.get("sha256") else entry.get("path")
        if isinstance(value, str):
            out["data"][key] = name or value
        elif isinstance(value, dict) and "path" in value:  # {path: FILE, sep: ...}: the dialect counts
            out["data"][key] = {**value, "path": name or value["path"]}
    return out


def data_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """The data files whose content (sha256 in ``data.json``) differs between two runs."""
    out = []
    a, b = old.get("files") or {}, new.get("files") or {}
    for key in dict.fromkeys([*a, *b]):
        da = (a.get(key) or {}).get("sha256") if isinstance(a.get(key), dict) else None
        db = (b.get(key) or {}).get("sha256") if isinstance(b.get(key), dict) else None
        if da != db:
            out.append(Change(f"data.{key} (file content, sha256)", (da or "")[:12], (db or "")[:12]))
    return out


# ------------------------------------------------------------------------------------------------
# The run a resume starts from


@dataclass
class Source:
    """A run (or one of its checkpoints) that ``--resume``/``--fork`` continues."""

    run_dir: Path
    ckpt: Path
    state: dict[str, Any]  # the checkpoint's state.json
    resolved: dict[str, Any]
    info: dict[str, Any]  # data.json
    env: dict[str, Any]
    original: LoadedRecipe  # recipe.yaml, its data paths resolved as when it was trained


def open_source(path: Path, forking: bool, overrides=()) -> Source:
    """Read the run directory (or ``checkpoints/<name>`` directory) ``path``; user errors name it.
    ``overrides`` (``--set`` texts) are applied to the run's recipe after its own."""
    if not path.is_dir():
        raise UsageError(f"--resume {path}: no such run directory")
    if (path / "state.json").is_file() and path.parent.name == "checkpoints":
        ckpt, run_dir = path, path.parent.parent
        if path.name != "last" and not forking:
            raise UsageError(
                f"--resume {path}: a run continues in place from checkpoints/last only; to start from "
                f"{path.name} use --fork NEW_DIR"
            )
    else:
        run_dir, ckpt = path, checkpoint.find(path, "last")
        if ckpt is None:
            what = "run directory" if (path / "resolved.yaml").exists() else "mtl run directory"
            raise UsageError(f"--resume {path}: this {what} has no checkpoint (checkpoints/last is missing)")
    state = checkpoint.read_state(ckpt)
    resolved, info, env, original = _read_run_files(run_dir, overrides)
    return Source(run_dir, ckpt, state, resolved, info, env, original)


def run_recipe(path: Path, overrides=(), forking: bool = False) -> LoadedRecipe:
    """The recipe the run at ``path`` was trained with (its recipe.yaml and ``--set`` overrides), with
    ``overrides`` applied after them: what ``mtl train --resume RUN --set KEY=VALUE`` continues with."""
    return open_source(Path(path), forking, overrides).original


def _read_run_files(run_dir: Path, overrides=()):
    from mtlcli import recipe

    files = {}
    for name in ("resolved.yaml", "data.json", "env.json", "recipe.yaml"):
        try:
            files[name] = (run_dir / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{run_dir / name}: cannot read it ({exc})") from None
    try:
        resolved = yaml.safe_load(files["resolved.yaml"])
        info = json.loads(files["data.json"])
        env = json.loads(files["env.json"])
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{run_dir}: a run file is damaged ({exc})") from None
    base = Path(env.get("recipe_dir") or (Path(env["recipe"]).parent if env.get("recipe") else run_dir))
    base = data.recipe_dir(run_dir, info, base)  # where the recipe is now, when the project moved
    sets = [*(env.get("overrides") or []), *overrides]
    original = recipe.loads(
        files["recipe.yaml"], file=str(run_dir / "recipe.yaml"), base_dir=base, overrides=sets
    )
    original.name = resolved.get("name", original.name)
    return resolved, info, env, original


def seed_and_epochs(source: Source, loaded: LoadedRecipe, seed, epochs):
    """Without --seed/--epochs, a recipe that keeps the original recipe's seed / train.epochs continues
    with what the run actually used (which may have come from --seed/--epochs)."""
    original = source.original.recipe
    if seed is None and loaded.recipe.seed == original.seed:
        seed = source.resolved.get("seed")
    if epochs is None and loaded.recipe.train.epochs == original.train.epochs:
        epochs = (source.resolved.get("train") or {}).get("epochs")
    return seed, epochs


# ------------------------------------------------------------------------------------------------
# Checking a resume and restoring the model


@dataclass
class Position:
    """Where a run starts: epoch and step (0, 0 for a fresh run), and the recipe changes applied."""

    epoch: int = 0
    step: int = 0
    applied: list[Change] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)  # the checkpoint's state.json ({} when fresh)

    def rendered(self) -> list[str]:
        return [c.render() for c in self.applied]


def check(
    source: Source,
    resolved: dict[str, Any],
    info: dict[str, Any],
    *,
    fork: bool,
    epochs: int,
    batch: int,
    steps: int,
) -> Position:
    """Refuse a resume that would break the run (naming the keys); else the position to start from."""
    changes = diff(comparable(source.resolved, source.info), comparable(resolved, info))
    changes += data_changes(source.info, info)
    ok, refused = split_changes(changes, fork=fork)
    if refused:
        message = refusal(refused, source.run_dir, fork)
        if source.env.get("overrides"):  # a --set left off looks like a change of the recipe
            sets = " ".join(f"--set {shlex.quote(t)}" for t in source.env["overrides"])
            message += (
                f"\nthe run was trained with {sets}: give them again, or leave RECIPE out to continue with "
                f"the run's own recipe and overrides"
            )
        raise UsageError(message)
    state = source.state
    first_epoch, first_step = int(state["epoch"]), int(state["step_in_epoch"])
    if first_step and int(state.get("steps_per_epoch", steps)) != steps:
        raise UsageError(
            f"{source.ckpt} was saved in the middle of epoch {first_epoch + 1} with "
            f"{state.get('steps_per_epoch')} steps per epoch; with train.batch_size {batch} an epoch has "
            f"{steps} steps, so the position cannot be kept; fork from an end-of-epoch checkpoint "
            f"(such as checkpoints/best) or keep the batch size"
        )
    if epochs < first_epoch + (1 if first_step else 0):
        raise UsageError(
            f"train.epochs {epochs} is less than the {first_epoch} epoch(s) the checkpoint has already done"
        )
    return Position(first_epoch, first_step, ok, state)


@dataclass
class Restored:
    """What :func:`restore_run` gives back besides the model's own state."""

    history: list[dict[str, Any]]
    best_weights: list | None
    notes: list[str]


def restore_run(model, source: Source, position: Position, selection, *, fork: bool) -> Restored:
    """Load the checkpoint into ``model`` (the best one first when ``restore_best`` needs its weights),
    continue the selection metric and early stopping, and return the history so far."""
    notes: list[str] = []
    state = position.state
    selection.load(state.get("selection") or {})
    if selection.stopped and selection.patience is not None and selection.wait < selection.patience:
        selection.stopped = False  # a longer patience lets an early-stopped run go on
        notes.append(
            f"early stopping: patience {selection.patience} > {selection.wait} epochs without improvement, continuing"
        )
    keep_optimizer = not fork or not any(
        c.key.startswith(("train.weighting", "train.optimizer")) for c in position.applied
    )
    if not keep_optimizer:
        notes.append(
            "train.optimizer or train.weighting changed: the optimizer and weighting state start fresh"
        )
    best_weights = None
    best = checkpoint.find(source.run_dir, "best")
    if selection.restore_best and best is not None and selection.best is not None:
        checkpoint.restore(model, best, checkpoint.read_state(best), optimizer=keep_optimizer)
        best_weights = model.get_weights()
    checkpoint.restore(model, source.ckpt, state, optimizer=keep_optimizer)
    history = [dict(row) for row in state.get("history", [])]
    if selection.best is None and state.get("selection", {}).get("best") is not None:
        notes.append(f"the selection metric is now {selection.monitor!r}: best-so-far starts afresh")
    return Restored(history, best_weights, notes)
