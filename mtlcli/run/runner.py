"""Sequences a training run and an evaluation. Reports events through a callback; never prints.

Run directory (``runs/<name>/<N>/`` or ``--output DIR``)::

    model.keras      the trained model (weights, optimizer state, recipe spec, preprocessing); loads with
                     keras.saving.load_model(..., safe_mode=True) after ``import mtlcli.model.train_step``
    recipe.yaml      the recipe exactly as given
    resolved.yaml    the recipe with every default filled in
    history.csv      one row per epoch, one column per logged value (per task and metric)
    metrics.json     final per-task results on the validation and test splits
    data.json        data files (absolute path, sha256, rows), split sizes, seeded split indices, label coverage
    env.json         versions (mtl, TensorFlow, Keras, numpy, Python), seed, command line, timings
    checkpoints/     last/ and best/ (see mtlcli.run.checkpoint): what --resume and --fork continue from
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mtlcli import __version__
from mtlcli.data import pipeline
from mtlcli.data import preprocess as data
from mtlcli.errors import CheckpointError, DataError, Problem, RunError, UsageError
from mtlcli.events import Event, Finished, Resumed, Started
from mtlcli.recipe import LoadedRecipe, monitor_mode

# ------------------------------------------------------------------------------------------------
# Files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, content: bytes | str) -> None:
    """Write via a temporary file in the same directory, fsync, then rename."""
    raw = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with_suppress_unlink(tmp)
        raise


def with_suppress_unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def save_model_atomic(model, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with_suppress_unlink(tmp)
        raise


def _noop(_event: Event) -> None:
    pass


def new_run_dir(name: str, output: str | Path | None, force: bool, root: Path | None = None) -> Path:
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
                import shutil

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


# ------------------------------------------------------------------------------------------------
# Training


@dataclass
class RunResult:
    run_dir: Path
    results: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    chief: bool = True  # False: a multi_worker worker that is not the chief (run_dir was its scratch copy)
    task: str = ""  # "worker 1" under multi_worker


def train(
    loaded: LoadedRecipe | None,
    *,
    output: str | Path | None = None,
    force: bool = False,
    seed: int | None = None,
    epochs: int | None = None,
    on_event: Callable[[Event], None] = _noop,
    verbose: bool = False,
    resume: str | Path | None = None,
    fork: str | Path | None = None,
) -> RunResult:
    """Train a recipe into a new run directory, or continue a run from its checkpoint.

    ``resume=RUN_DIR`` continues RUN_DIR from ``checkpoints/last`` in place (``loaded`` may be None: the
    run's own recipe is used). With ``fork=NEW_DIR`` as well, a new run starts in NEW_DIR from that
    checkpoint (``resume`` may then also name a checkpoint directory such as ``RUN_DIR/checkpoints/best``).
    The recipe may differ from the run's only in :data:`mtlcli.run.checkpoint.RESUME_SAFE` keys (a fork:
    :data:`~mtlcli.run.checkpoint.FORK_SAFE`); other differences are refused, naming the keys.
    """
    from mtlcli.run import checkpoint

    if fork is not None and resume is None:
        raise UsageError("--fork NEW_DIR needs --resume RUN_DIR: the run (or checkpoint) to start from")
    if resume is not None and output is not None:
        raise UsageError(
            "--resume continues the run in its own directory; --output does not apply "
            "(to continue into a new directory use --fork NEW_DIR)"
        )
    source = _resume_source(Path(resume), forking=fork is not None) if resume is not None else None
    if loaded is None:
        if source is None:
            raise UsageError("missing RECIPE: give a recipe file (or --resume RUN_DIR)")
        loaded = source.original
    recipe = loaded.recipe
    if source is not None:
        seed, epochs = _resume_seed_epochs(source, loaded, seed, epochs)
    seed = recipe.seed if seed is None else int(seed)
    prepared = data.prepare(loaded, seed=seed)  # user errors surface before any directory is made
    epochs = epochs or recipe.train.epochs
    resolved = _resolved(loaded, seed, epochs)
    batch = recipe.train.batch_size
    train_arr = prepared.splits["train"]
    val_arr = prepared.splits.get("validation")
    steps = math.ceil(train_arr.n / batch)

    applied: list[str] = []
    notes: list[str] = []
    first_epoch = first_step = 0
    state: dict[str, Any] = {}
    if source is not None:
        changes = checkpoint.diff(
            _comparable(source.resolved, source.info), _comparable(resolved, prepared.info)
        )
        changes += _data_changes(source.info, prepared.info)
        ok, refused = checkpoint.split_changes(changes, fork=fork is not None)
        if refused:
            raise UsageError(checkpoint.refusal(refused, source.run_dir, fork is not None))
        applied = [c.render() for c in ok]
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

    from mtlcli.tfutil import import_tf

    tf = import_tf(verbose)
    import keras

    from mtlcli import distribute

    # train.distribute: before anything creates a tensor (logical devices, collective ops). A worker
    # that is not the chief runs every step (the collectives need it) but prints nothing and writes
    # into a scratch directory that is removed at the end.
    dist = distribute.setup(recipe.train, tf)
    scratch = None if dist.is_chief else Path(tempfile.mkdtemp(prefix="mtl-worker-"))
    if scratch is not None:
        on_event = _noop
    keras.utils.set_random_seed(seed)
    with dist.scope():
        from mtlcli.model.build import build_model

        model = build_model(loaded, prepared, seed)
        model.optimizer.build(model.trainable_variables)  # before any restore and before the first step
    selection = _selection(recipe, val_arr is not None)
    history: list[dict[str, Any]] = []
    best_weights = None
    if source is not None:
        selection.load(state.get("selection") or {})
        if selection.stopped and selection.patience is not None and selection.wait < selection.patience:
            selection.stopped = False  # a longer patience lets an early-stopped run go on
            notes.append(
                f"early stopping: patience {selection.patience} > {selection.wait} epochs without improvement, continuing"
            )
        keep_optimizer = fork is None or not any(
            c.key.startswith(("train.weighting", "train.optimizer")) for c in ok
        )
        if not keep_optimizer:
            notes.append(
                "train.optimizer or train.weighting changed: the optimizer and weighting state start fresh"
            )
        best = checkpoint.find(source.run_dir, "best")
        if selection.restore_best and best is not None and selection.best is not None:
            checkpoint.restore(model, best, checkpoint.read_state(best), optimizer=keep_optimizer)
            best_weights = model.get_weights()
        checkpoint.restore(model, source.ckpt, state, optimizer=keep_optimizer)
        history = [dict(row) for row in state.get("history", [])]
        if selection.best is None and state.get("selection", {}).get("best") is not None:
            notes.append(f"the selection metric is now {selection.monitor!r}: best-so-far starts afresh")

    finished = source is not None and first_step == 0 and (first_epoch >= epochs or selection.stopped)
    if source is not None and fork is None:
        run_dir = source.run_dir
        if finished and (run_dir / "model.keras").exists() and (run_dir / "metrics.json").exists():
            why = "stopped early" if selection.stopped else f"{first_epoch} of {epochs} epochs"
            raise UsageError(
                f"{run_dir} has already finished ({why}); to train longer pass --epochs N with N > {first_epoch}"
                + (" and raise train.early_stopping.patience" if selection.stopped else "")
            )
        run_dir = run_dir if scratch is None else scratch
        _record_resume(run_dir, resolved, source, applied)
    else:
        target = scratch or (output if fork is None else fork)
        run_dir = _fresh_run_dir(loaded, target, force, prepared, seed, epochs)
        if source is not None:
            _record_fork(run_dir, source, applied)
            best = checkpoint.find(source.run_dir, "best")
            if best is not None and selection.best is not None and source.ckpt != best:
                import shutil

                shutil.copytree(best, run_dir / "checkpoints" / "best")
            if history:
                from mtlcli.run.callbacks import write_history

                write_history(run_dir, history)

    tasks_info = {
        t: {
            "type": spec.type,
            "metrics": recipe.metrics(t),
            "main": f"{t}_{recipe.metrics(t)[0]}" if recipe.metrics(t) else f"{t}_loss",
        }
        for t, spec in recipe.model.tasks.items()
    }
    from mtlcli.model import build as mtl_model

    params = {"shared": mtl_model.count_params(model.shared_variables)}
    for t, layers in model.heads.items():
        params[t] = mtl_model.count_params([v for layer in layers for v in layer.trainable_variables])
    on_event(
        Started(
            run_dir,
            tasks_info,
            prepared.info["split_rows"],
            prepared.info["coverage"],
            params,
            epochs,
            steps,
            _weighting_name(recipe.train.weighting),
            seed,
        )
    )
    if source is not None:
        on_event(
            Resumed(
                run_dir, source.ckpt, first_epoch, first_step, steps, epochs, applied, notes, fork is not None
            )
        )

    import shlex

    from mtlcli.run.callbacks import NonFinite, RunCallback, RunState

    run = RunState(
        run_dir=run_dir,
        epochs=epochs,
        steps=steps,
        history=history,
        selection=selection,
        base_state={"seed": seed, "batch_size": batch},
        resume_command=f"mtl train --resume {shlex.quote(str(run_dir))}",
        checkpoint_every=recipe.train.checkpoint_every,
        first_epoch=first_epoch,
        first_step=first_step,
        metrics_from=source.ckpt if source is not None and first_step else None,
        skip_nonfinite=recipe.train.on_nan == "skip_batch",
        skipped=int(state.get("skipped_batches", 0)),
        best_weights=best_weights,
    )
    model.skip_nonfinite = run.skip_nonfinite
    callback = RunCallback(on_event, run, model)
    if fork is not None:  # the fork's starting point is its first checkpoint (resumable, "last good")
        if first_step:
            checkpoint.restore_metrics(model, source.ckpt)
        checkpoint.save(model, run_dir, "last", callback.state_at(first_epoch, first_step), with_metrics=True)
    val_ds = dist.dataset(pipeline.dataset(tf, val_arr, max(batch, 256), seed)) if val_arr else None
    started = time.time()
    try:
        with checkpoint.SignalGuard() as guard:
            run.guard = guard
            epoch = first_epoch
            if first_step and not finished:  # the rest of a partly done epoch
                stream = dist.dataset(
                    pipeline.train_stream(tf, train_arr, batch, seed, epoch, first_step, epoch + 1)
                )
                model.fit(
                    stream,
                    validation_data=val_ds,
                    initial_epoch=epoch,
                    epochs=epoch + 1,
                    steps_per_epoch=steps - first_step,
                    callbacks=[callback],
                    verbose=0,
                    shuffle=False,
                )
                epoch += 1
            if epoch < epochs and not selection.stopped and not finished:
                stream = dist.dataset(pipeline.train_stream(tf, train_arr, batch, seed, epoch, 0, epochs))
                model.fit(
                    stream,
                    validation_data=val_ds,
                    initial_epoch=epoch,
                    epochs=epochs,
                    steps_per_epoch=steps,
                    callbacks=[callback],
                    verbose=0,
                    shuffle=False,
                )
    except NonFinite:
        last = checkpoint.find(run_dir, "last")
        if last is not None:
            st = checkpoint.read_state(last)
            where = f"epoch {st['epoch']}" + (f", step {st['step_in_epoch']}" if st["step_in_epoch"] else "")
            tail = (
                f"; the last good checkpoint ({where}) is {last}; to retry from it with other settings: "
                f"mtl train RECIPE --resume {shlex.quote(str(last))} --fork NEW_DIR"
            )
        else:
            tail = "; no checkpoint had been written yet"
        raise RunError(run.failure + tail) from None
    except OSError as exc:
        raise checkpoint.disk_error(exc, f"to the run directory {run_dir}") from None
    seconds = time.time() - started

    if selection.restore_best and run.best_weights is not None:
        model.set_weights(run.best_weights)
    try:
        save_model_atomic(model, run_dir / "model.keras")
        results: dict[str, Any] = {"splits": {}}
        for split in ("validation", "test"):
            if split in prepared.splits:
                results["splits"][split] = evaluate_arrays(tf, model, prepared.splits[split])
        results["epochs_run"] = len(history)
        results["train_seconds"] = round(seconds, 3)
        if run.skip_nonfinite:
            results["skipped_batches"] = run.skipped
        if selection.best is not None:
            results["best"] = {
                "monitor": selection.monitor,
                "value": selection.best,
                "epoch": selection.best_epoch,
            }
        atomic_write(run_dir / "metrics.json", json.dumps(results, indent=2) + "\n")
        env = json.loads((run_dir / "env.json").read_text())
        total = (
            float(env.get("train_seconds") or 0.0) + seconds
            if source is not None and fork is None
            else seconds
        )
        env.update({"epochs_run": len(history), "train_seconds": round(total, 3)})
        if dist.kind != "none":
            env["distribute"] = {"kind": dist.kind, "replicas": dist.replicas, "workers": dist.workers}
        atomic_write(run_dir / "env.json", json.dumps(env, indent=2) + "\n")
    except OSError as exc:
        raise checkpoint.disk_error(exc, f"to the run directory {run_dir}") from None
    on_event(Finished(run_dir, len(history), selection.stopped, seconds, results))
    if scratch is not None:  # a worker that is not the chief: its copy of the run goes
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
        return RunResult(scratch, results, history, chief=False, task=dist.task)
    return RunResult(run_dir, results, history)


def _selection(recipe, has_validation: bool):
    from mtlcli.run.callbacks import Selection

    es = recipe.train.early_stopping
    if es is None:
        return Selection("val_loss" if has_validation else "loss", "min")
    monitor = es.monitor if has_validation or not es.monitor.startswith("val_") else es.monitor[4:]
    mode = es.mode if es.mode != "auto" else monitor_mode(monitor)
    return Selection(monitor, mode, es.min_delta, es.patience, es.restore_best)


def _resolved(loaded: LoadedRecipe, seed: int, epochs: int) -> dict[str, Any]:
    resolved = loaded.recipe.resolved()
    resolved["name"] = loaded.name
    resolved["seed"] = seed
    resolved["train"]["epochs"] = epochs
    return resolved


@dataclass
class _Source:
    run_dir: Path
    ckpt: Path
    state: dict[str, Any]
    resolved: dict[str, Any]
    info: dict[str, Any]
    env: dict[str, Any]
    original: LoadedRecipe


def _resume_source(path: Path, forking: bool) -> _Source:
    from mtlcli import recipe as recipe_mod
    from mtlcli.run import checkpoint

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
    original = recipe_mod.loads(files["recipe.yaml"], file=str(run_dir / "recipe.yaml"), base_dir=base)
    original.name = resolved.get("name", original.name)
    return _Source(run_dir, ckpt, state, resolved, info, env, original)


def _resume_seed_epochs(source: _Source, loaded: LoadedRecipe, seed, epochs):
    """Without --seed/--epochs, a recipe that keeps the original recipe's seed / train.epochs continues
    with what the run actually used (which may have come from --seed/--epochs)."""
    original = source.original.recipe
    if seed is None and loaded.recipe.seed == original.seed:
        seed = source.resolved.get("seed")
    if epochs is None and loaded.recipe.train.epochs == original.train.epochs:
        epochs = (source.resolved.get("train") or {}).get("epochs")
    return seed, epochs


def _comparable(resolved: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """A resolved recipe with data paths made absolute (a recipe moved elsewhere is the same recipe)."""
    import copy

    out = copy.deepcopy(resolved)
    files = info.get("files") or {}
    for key in ("train", "validation", "test"):
        if isinstance((out.get("data") or {}).get(key), str) and isinstance(files.get(key), dict):
            out["data"][key] = files[key].get("path", out["data"][key])
    return out


def _data_changes(old: dict[str, Any], new: dict[str, Any]) -> list:
    from mtlcli.run.checkpoint import Change

    out = []
    a, b = old.get("files") or {}, new.get("files") or {}
    for key in dict.fromkeys([*a, *b]):
        da = (a.get(key) or {}).get("sha256") if isinstance(a.get(key), dict) else None
        db = (b.get(key) or {}).get("sha256") if isinstance(b.get(key), dict) else None
        if da != db:
            out.append(Change(f"data.{key} (file content, sha256)", (da or "")[:12], (db or "")[:12]))
    return out


def _fresh_run_dir(loaded, output, force, prepared, seed, epochs) -> Path:
    """Create the run directory and its static files; a failure leaves no half-made directory."""
    import shutil

    existed = output is not None and Path(output).exists()
    try:
        run_dir = new_run_dir(loaded.name, output, force)
    except OSError as exc:
        where = output if output is not None else Path.cwd() / "runs" / loaded.name
        raise UsageError(f"cannot create the run directory {where}: {exc.strerror or exc}") from None
    try:
        _write_static_files(run_dir, loaded, prepared, seed, epochs)
    except OSError as exc:
        if not existed:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise UsageError(f"cannot write to the run directory {run_dir}: {exc.strerror or exc}") from None
    return run_dir


def _record_resume(run_dir: Path, resolved: dict[str, Any], source: _Source, applied: list[str]) -> None:
    env = dict(source.env)
    env.setdefault("resumes", []).append(
        {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "from_epoch": source.state["epoch"],
            "from_step": source.state["step_in_epoch"],
            "changes": applied,
            "argv": sys.argv,
        }
    )
    try:
        atomic_write(run_dir / "resolved.yaml", yaml.safe_dump(resolved, sort_keys=False))
        atomic_write(run_dir / "env.json", json.dumps(env, indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write to the run directory {run_dir}: {exc.strerror or exc}") from None


def _record_fork(run_dir: Path, source: _Source, applied: list[str]) -> None:
    env = json.loads((run_dir / "env.json").read_text())
    env["forked_from"] = {
        "run": str(source.run_dir.resolve()),
        "checkpoint": str(source.ckpt.resolve()),
        "epoch": source.state["epoch"],
        "step": source.state["step_in_epoch"],
        "changes": applied,
    }
    atomic_write(run_dir / "env.json", json.dumps(env, indent=2) + "\n")


def _weighting_name(spec: Any) -> str:
    from mtlcli.weighting import spec_name

    return spec_name(spec)


def _write_static_files(run_dir: Path, loaded: LoadedRecipe, prepared: data.Prepared, seed: int, epochs: int):
    import keras
    import tensorflow as tf

    source = loaded.path.read_text(encoding="utf-8") if loaded.path else yaml.safe_dump(loaded.source.data)
    atomic_write(run_dir / "recipe.yaml", source)
    resolved = loaded.recipe.resolved()
    resolved["name"] = loaded.name
    resolved["seed"] = seed
    resolved["train"]["epochs"] = epochs
    atomic_write(run_dir / "resolved.yaml", yaml.safe_dump(resolved, sort_keys=False))
    atomic_write(run_dir / "data.json", json.dumps(prepared.info, indent=1) + "\n")
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
    atomic_write(run_dir / "env.json", json.dumps(env, indent=2) + "\n")


def _scalar(v) -> float:
    try:
        return float(np.asarray(v).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return float("nan")


# ------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_arrays(tf, model, arrays: data.Arrays, batch_size: int = 1024) -> dict[str, Any]:
    ds = pipeline.dataset(tf, arrays, batch_size)
    logs = model.evaluate(ds, verbose=0, return_dict=True)
    support = arrays.support()
    out: dict[str, Any] = {"loss": _scalar(logs["loss"]), "n": arrays.n, "tasks": {}}
    for task in model.task_names:
        row = {"loss": _scalar(logs[f"{task}_loss"])}
        for metric in model.spec["tasks"][task]["metrics"]:
            row[metric] = _scalar(logs[f"{task}_{metric}"])
        row["n"] = support.get(task, 0)
        out["tasks"][task] = row
    return out


def load_model(path: Path, verbose: bool = False):
    """Load a ``model.keras`` with safe_mode=True; any failure is a CheckpointError."""
    import_tf = __import__("mtlcli.tfutil", fromlist=["import_tf"]).import_tf
    import_tf(verbose)
    import keras

    from mtlcli.model import train_step as mtl_model  # registers the custom objects

    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - any loader failure means the file is not a usable model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot load the model safely: {first}") from None
    if not isinstance(model, mtl_model.MultiTaskModel):
        raise CheckpointError(f"{path}: not an mtl model (found {type(model).__name__})")
    model.compile(optimizer="adam")
    return model


@dataclass
class EvalResult:
    source: str  # what was evaluated (split name or file)
    results: dict[str, Any]
    model_path: Path


def evaluate(
    target: str | Path,
    *,
    data_path: str | Path | None = None,
    split: str | None = None,
    verbose: bool = False,
) -> EvalResult:
    target = Path(target)
    if target.is_dir():
        model_path = target / "model.keras"
        run_dir = target
        if not model_path.exists():
            raise UsageError(f"{target} is not a run directory (no model.keras in it)")
    else:
        model_path, run_dir = target, None
        if not target.exists():
            raise UsageError(f"{target}: no such run directory or model file")
    if split is not None and data_path is not None:
        raise UsageError("give either --data or --split, not both")
    if data_path is None and run_dir is not None:
        from mtlcli.data import stream as streaming

        streamed = streaming.evaluate_run(run_dir, split, model_path, verbose)
        if streamed is not None:  # a streamed run: its split is read in chunks again
            return EvalResult(*streamed)

    # Read the data before the (slow) model load so data mistakes are reported at once.
    if data_path is not None:
        table = data.sources.read_source(str(data_path))
        source = str(data_path)
    else:
        if run_dir is None:
            raise UsageError("evaluating a model file needs --data FILE (a run directory knows its own data)")
        table, source = _run_split(run_dir, split)
    tf = __import__("mtlcli.tfutil", fromlist=["import_tf"]).import_tf(verbose)
    model = load_model(model_path, verbose)
    prep = data.Preprocessing.from_dict(model.spec["preprocessing"])
    missing = [t for t, st in prep.targets.items() if any(c not in table.columns for c in st.columns)]
    if len(missing) == len(prep.targets):
        cols = ", ".join(repr(c) for t in missing for c in prep.targets[t].columns)
        raise DataError(
            problems=[Problem(f"none of the target columns ({cols}) is in the data", "", table.file)]
        )
    arrays = data.transform(prep, table, tasks=[t for t in prep.targets if t not in missing])
    for t in missing:  # tasks without labels in this file: evaluated on no rows (n = 0)
        st = prep.targets[t]
        arrays.y[t] = (
            np.zeros((table.n_rows,), np.int32)
            if st.type == "classification"
            else np.zeros((table.n_rows, st.units), np.float32)
        )
        arrays.mask[t] = np.zeros((table.n_rows,), np.float32)
    results = evaluate_arrays(tf, model, arrays)
    for t in missing:
        results["tasks"][t] = {
            "loss": None,
            "n": 0,
            "note": f"column {prep.targets[t].columns[0]!r} not in the data",
        }
    return EvalResult(source, results, model_path)


def _run_split(run_dir: Path, split: str | None) -> tuple[data.Table, str]:
    info_path = run_dir / "data.json"
    if not info_path.exists():
        raise CheckpointError(f"{run_dir}: data.json is missing; pass --data FILE")
    try:
        info = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{info_path}: not valid JSON ({exc})") from None
    split = data.choose_split(run_dir, info, split)
    files = info["files"]
    if split in files:
        entry, index = files[split], None
    else:
        entry, index = files["train"], np.array(info["fraction_indices"][split], dtype=np.int64)
    source = entry.get("source", entry["path"])  # a path, a glob or a source mapping (absolute paths)
    shown = entry["path"]
    try:
        files_now = data.sources.source_files(source)
        digest = data.sources.digest(source) if files_now and all(f.exists() for f in files_now) else None
    except DataError:
        digest = None
    if digest is None:
        raise DataError(
            problems=[Problem(f"the {split} data of this run is gone; pass --data FILE", "", str(shown))]
        )
    if digest != entry["sha256"]:
        raise DataError(
            problems=[
                Problem(
                    f"the file changed since training (sha256 differs), so the {split} "
                    f"split cannot be rebuilt; pass --data FILE to evaluate it anyway",
                    "",
                    str(shown),
                )
            ]
        )
    table = data.sources.read_source(source)
    if index is not None:
        table = table.take(index)
    return table, split
