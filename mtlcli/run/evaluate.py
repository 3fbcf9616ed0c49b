"""Evaluating a trained model: ``mtl evaluate`` and the final metrics of a run.

* :func:`load_model` loads a ``model.keras`` safely (``safe_mode=True``: no Lambda layers, only the
  registered ``mtl>`` classes);
* :func:`evaluate_arrays` evaluates prepared arrays, task by task, with each task's support ``n``;
* :func:`evaluate` is the command: a run directory on its own split or any data file;
* :func:`find_model` is the model file a command's TARGET names (a run directory or a model file).

Tasks whose label column is not in an evaluated file are reported with ``n = 0`` and a note instead of
failing, so a model can be evaluated on data that labels only some of its tasks. Tasks are reported in
the recipe's order, the ``train.primary`` task first (the model spec's ``primary``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli import data
from mtlcli.data import pipeline
from mtlcli.errors import CheckpointError, DataError, Problem, UsageError
from mtlcli.recipe.spec import primary_first
from mtlcli.tfutil import import_tf


def evaluate_arrays(tf, model, arrays: data.Arrays, batch_size: int = 1024) -> dict[str, Any]:
    """Loss and metrics per task on prepared arrays (or a streamed split), with each task's support n."""
    from mtlcli.run.callbacks import scalar  # imports Keras

    ds = pipeline.dataset(tf, arrays, batch_size)
    logs = model.evaluate(ds, verbose=0, return_dict=True)
    support = arrays.support()
    out: dict[str, Any] = {"loss": scalar(logs["loss"]), "n": arrays.n, "tasks": {}}
    for task in primary_first(model.task_names, model.spec.get("primary")):
        row = {"loss": scalar(logs[f"{task}_loss"])}
        for metric in model.spec["tasks"][task]["metrics"]:
            row[metric] = scalar(logs[f"{task}_{metric}"])
        row["n"] = support.get(task, 0)
        out["tasks"][task] = row
    return out


def load_model(path: Path, verbose: bool = False):
    """Load a ``model.keras`` with safe_mode=True; any failure is a CheckpointError."""
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
    """``mtl evaluate``: a run directory on its own validation/test split (rebuilt from data.json, the
    files' sha256 checked), or a run directory or model file on ``data_path``."""
    model_path, run_dir = find_model(Path(target))
    if split is not None and data_path is not None:
        raise UsageError("give either --data or --split, not both")
    # Read the data before the (slow) model load so data mistakes are reported at once.
    if data_path is not None:
        table = data.sources.read_source(str(data_path), dialect=data.run_dialect(run_dir))
        source = str(data_path)
    else:
        if run_dir is None:
            raise UsageError("evaluating a model file needs --data FILE (a run directory knows its own data)")
        reloaded = data.reload_split(run_dir, split)  # checks the files' sha256 against data.json
        table, source = reloaded.table, reloaded.name
    tf = import_tf(verbose)
    model = load_model(model_path, verbose)
    if table is None:  # a streamed run: its split is read in chunks again
        try:
            prep = data.Preprocessing.from_dict(model.spec["preprocessing"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{model_path}: no preprocessing in the model spec ({exc})") from None
        return EvalResult(source, evaluate_arrays(tf, model, reloaded.streamed(prep)), model_path)
    return EvalResult(source, _evaluate_table(tf, model, table), model_path)


def find_model(target: Path) -> tuple[Path, Path | None]:
    """(model.keras, run directory or None) of ``mtl evaluate TARGET`` / ``mtl predict TARGET``: a run
    directory, or a model file (a checkpoint's ``model.keras`` too)."""
    if target.is_dir():
        if not (target / "model.keras").exists():
            raise UsageError(f"{target} is not a run directory (no model.keras in it)")
        return target / "model.keras", target
    if not target.exists():
        raise UsageError(f"{target}: no such run directory or model file")
    return target, None


def _evaluate_table(tf, model, table: data.Table) -> dict[str, Any]:
    """Evaluate the rows of a table; tasks whose label columns it lacks get ``n = 0`` and a note."""
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
    order = primary_first(model.task_names, model.spec.get("primary"))
    results["tasks"] = {t: results["tasks"][t] for t in order if t in results["tasks"]}
    return results
