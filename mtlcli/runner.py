"""Sequences a training run and an evaluation. Reports events through a callback; never prints.

Run directory (``runs/<name>/<N>/`` or ``--output DIR``)::

    model.keras      the trained model (weights, optimizer state, recipe spec, preprocessing); loads with
                     keras.saving.load_model(..., safe_mode=True) after ``import mtlcli.model``
    recipe.yaml      the recipe exactly as given
    resolved.yaml    the recipe with every default filled in
    history.csv      one row per epoch, one column per logged value (per task and metric)
    metrics.json     final per-task results on the validation and test splits
    data.json        data files (absolute path, sha256, rows), split sizes, seeded split indices, label coverage
    env.json         versions (mtl, TensorFlow, Keras, numpy, Python), seed, command line, timings
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

from mtlcli import __version__, data
from mtlcli.errors import CheckpointError, DataError, Problem, RunError, UsageError
from mtlcli.events import Event, Finished, Started
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


def _datasets(tf, arrays: data.Arrays, batch_size: int, seed: int, shuffle: bool):
    ds = tf.data.Dataset.from_tensor_slices((arrays.x, arrays.y, arrays.mask))
    if shuffle:
        ds = ds.shuffle(arrays.n, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def build_model(loaded: LoadedRecipe, prepared: data.Prepared, seed: int):
    """Build and compile the Keras model for a recipe (imports TensorFlow)."""
    import keras

    from mtlcli import model as mtl_model

    recipe = loaded.recipe
    spec = mtl_model.spec_from_recipe(recipe, prepared.prep, seed)
    spec["name"] = loaded.name
    try:
        model = mtl_model.MultiTaskModel(spec, name="mtl_model")
        model.build()
    except (ValueError, TypeError) as exc:
        raise _layer_error(loaded, exc) from None
    adam = recipe.train.optimizer.adam
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=adam.learning_rate,
            beta_1=adam.beta_1,
            beta_2=adam.beta_2,
            epsilon=adam.epsilon,
            amsgrad=adam.amsgrad,
            weight_decay=adam.weight_decay,
            clipnorm=adam.clipnorm,
        )
    )
    return model


def _layer_error(loaded: LoadedRecipe, exc: Exception) -> RunError:
    """A Keras error while building layers is a recipe mistake (bad argument value or shapes)."""
    from mtlcli.errors import RecipeError

    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RecipeError(problems=[loaded.problem(f"the model cannot be built: {msg}", ("model",))])


def train(
    loaded: LoadedRecipe,
    *,
    output: str | Path | None = None,
    force: bool = False,
    seed: int | None = None,
    epochs: int | None = None,
    on_event: Callable[[Event], None] = _noop,
    verbose: bool = False,
) -> RunResult:
    recipe = loaded.recipe
    seed = recipe.seed if seed is None else int(seed)
    prepared = data.prepare(loaded, seed=seed)  # user errors surface before any directory is made
    epochs = epochs or recipe.train.epochs

    from mtlcli.tfutil import import_tf

    tf = import_tf(verbose)
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(loaded, prepared, seed)
    run_dir = new_run_dir(loaded.name, output, force)
    _write_static_files(run_dir, loaded, prepared, seed, epochs)

    train_arr = prepared.splits["train"]
    val_arr = prepared.splits.get("validation")
    batch = recipe.train.batch_size
    train_ds = _datasets(tf, train_arr, batch, seed, shuffle=True)
    val_ds = _datasets(tf, val_arr, max(batch, 256), seed, shuffle=False) if val_arr else None
    steps = math.ceil(train_arr.n / batch)

    from mtlcli import model as mtl_model

    tasks_info = {
        t: {
            "type": spec.type,
            "metrics": recipe.metrics(t),
            "main": f"{t}_{recipe.metrics(t)[0]}" if recipe.metrics(t) else f"{t}_loss",
        }
        for t, spec in recipe.model.tasks.items()
    }
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

    history: list[dict[str, float]] = []
    from mtlcli.callbacks import EventCallback

    events = EventCallback(on_event, epochs, steps, history, run_dir, model)
    callbacks = [events]
    stopping = None
    es = recipe.train.early_stopping
    if es is not None:
        monitor = es.monitor if val_ds is not None or not es.monitor.startswith("val_") else es.monitor[4:]
        mode = es.mode if es.mode != "auto" else monitor_mode(monitor)
        stopping = keras.callbacks.EarlyStopping(
            monitor=monitor,
            patience=es.patience,
            min_delta=es.min_delta,
            mode=mode,
            restore_best_weights=es.restore_best,
        )
        callbacks.append(stopping)
    started = time.time()
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False)
    if events.failure:
        save_model_atomic(model, run_dir / "model.keras")
        raise RunError(events.failure)
    seconds = time.time() - started

    save_model_atomic(model, run_dir / "model.keras")
    results = {"splits": {}}
    for split in ("validation", "test"):
        if split in prepared.splits:
            results["splits"][split] = evaluate_arrays(tf, model, prepared.splits[split])
    results["epochs_run"] = len(history)
    results["train_seconds"] = round(seconds, 3)
    atomic_write(run_dir / "metrics.json", json.dumps(results, indent=2) + "\n")
    env = json.loads((run_dir / "env.json").read_text())
    env.update({"epochs_run": len(history), "train_seconds": round(seconds, 3)})
    atomic_write(run_dir / "env.json", json.dumps(env, indent=2) + "\n")
    stopped = bool(stopping is not None and stopping.stopped_epoch > 0)
    on_event(Finished(run_dir, len(history), stopped, seconds, results))
    return RunResult(run_dir, results, history)


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
    ds = tf.data.Dataset.from_tensor_slices((arrays.x, arrays.y, arrays.mask)).batch(batch_size)
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

    from mtlcli import model as mtl_model  # registers the custom objects

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

    # Read the data before the (slow) model load so data mistakes are reported at once.
    if data_path is not None:
        table = data.read_table(Path(data_path))
        source = str(data_path)
    else:
        if run_dir is None:
            raise UsageError("evaluating a model file needs --data FILE (a run directory knows its own data)")
        table, source = _run_split(run_dir, split)
    tf = __import__("mtlcli.tfutil", fromlist=["import_tf"]).import_tf(verbose)
    model = load_model(model_path, verbose)
    prep = data.Preprocessing.from_dict(model.spec["preprocessing"])
    missing = [t for t, st in prep.targets.items() if st.column not in table.columns]
    if len(missing) == len(prep.targets):
        cols = ", ".join(repr(prep.targets[t].column) for t in missing)
        raise DataError(
            problems=[Problem(f"none of the target columns ({cols}) is in the data", "", table.file)]
        )
    arrays = data.transform(prep, table, tasks=[t for t in prep.targets if t not in missing])
    for t in missing:  # tasks without labels in this file: evaluated on no rows (n = 0)
        st = prep.targets[t]
        arrays.y[t] = (
            np.zeros((table.n_rows,), np.int32)
            if st.type == "classification"
            else np.zeros((table.n_rows, 1), np.float32)
        )
        arrays.mask[t] = np.zeros((table.n_rows,), np.float32)
    results = evaluate_arrays(tf, model, arrays)
    for t in missing:
        results["tasks"][t] = {
            "loss": None,
            "n": 0,
            "note": f"column {prep.targets[t].column!r} not in the data",
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
    available = [s for s in ("test", "validation") if s in info.get("split_rows", {})]
    if split is None:
        if not available:
            raise UsageError(f"{run_dir} has no validation or test split; pass --data FILE")
        split = available[0]
    if split not in info.get("split_rows", {}):
        raise UsageError(
            f"{run_dir} has no {split!r} split (it has: {', '.join(info.get('split_rows', {}))})"
        )
    files = info["files"]
    if split in files:
        entry, index = files[split], None
    else:
        entry, index = files["train"], np.array(info["fraction_indices"][split], dtype=np.int64)
    path = Path(entry["path"])
    if not path.exists():
        raise DataError(
            problems=[Problem(f"the {split} data of this run is gone; pass --data FILE", "", str(path))]
        )
    if data.file_digest(path) != entry["sha256"]:
        raise DataError(
            problems=[
                Problem(
                    f"the file changed since training (sha256 differs), so the {split} "
                    f"split cannot be rebuilt; pass --data FILE to evaluate it anyway",
                    "",
                    str(path),
                )
            ]
        )
    table = data.read_table(path)
    if index is not None:
        table = table.take(index)
    return table, split
