"""Checkpoints: everything a run needs to continue exactly where it stopped, written atomically.

Layout inside a run directory::

    checkpoints/
      last/          the latest state: written at the end of an epoch (at most every 30 s, always at the
                     end of training: :data:`mtlcli.run.callbacks.CHECKPOINT_SECONDS`), every
                     ``train.checkpoint_every`` steps when set, and when SIGINT/SIGTERM stops the run
        model.keras  model weights and optimizer state (Adam moments and ``iterations``) plus the spec.
                     The weighting strategy's parameters and state are model variables, so they are in
                     here too. It is a normal model file: ``mtl evaluate .../model.keras --data FILE``.
        arrays.npz   what ``model.keras`` does not hold: the dropout RNG states (Keras SeedGenerators) and,
                     for a mid-epoch checkpoint, the running epoch metrics
        state.json   epoch and step, the data position inside the epoch, best-so-far and early-stopping
                     counters, the history rows so far, sha256 of the two files above (written last)
      best/          the same files, for the epoch with the best selection metric (the recipe's
                     ``early_stopping.monitor``, else ``val_loss`` with validation data, else ``loss``)

A checkpoint is written into ``checkpoints/.<name>.new-<pid>/`` (every file fsynced), the previous one is
renamed to ``.<name>.old``, the new one renamed into place, the directory fsynced, and only then is the
old one removed. Whatever instant the process dies at, either ``<name>/`` or ``.<name>.old/`` is complete;
:func:`find` falls back to the latter, and a file whose sha256 does not match ``state.json`` is refused.

The data order does not depend on iterator history: epoch ``e`` visits the training rows in the
permutation ``numpy.random.default_rng([seed, e])``, so a resumed run sees exactly the batches the
uninterrupted run would have seen (:func:`mtlcli.data.pipeline.train_stream`).

An epoch whose ``best`` and ``last`` checkpoints are the same state writes the model once: ``last`` is
made of hard links to ``best``'s files (:func:`link`).

This module owns the checkpoint files only (:func:`save`, :func:`link`, :func:`find`, :func:`read_state`,
:func:`restore`, :func:`restore_metrics`); which recipe changes a resume accepts is
:mod:`mtlcli.run.resume`, signals are :mod:`mtlcli.run.signals`. It imports TensorFlow only inside the
functions that need it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli import __version__, fsio
from mtlcli.errors import CheckpointError

FORMAT = 1
NAMES = ("last", "best")


def extra_variables(model) -> list:
    """Model state that ``model.keras`` does not store: the SeedGenerator states (dropout RNG)."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def metric_variables(model) -> list:
    return [v for m in model.metrics for v in m.variables]


def save(model, run_dir: Path, name: str, state: dict[str, Any], *, with_metrics: bool = False) -> Path:
    """Write checkpoint ``name`` (``last`` or ``best``) atomically; returns its directory."""
    root = run_dir / "checkpoints"
    tmp = root / f".{name}.new-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root, name)
        tmp.mkdir()
        model.save(tmp / "model.keras")
        fsio.fsync_file(tmp / "model.keras")
        arrays = {f"rng_{i}": np.asarray(v.numpy()) for i, v in enumerate(extra_variables(model))}
        if with_metrics:
            arrays.update(
                {f"metric_{i}": np.asarray(v.numpy()) for i, v in enumerate(metric_variables(model))}
            )
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        fsio.write_synced(tmp / "arrays.npz", buf.getvalue())
        state = {
            **state,
            "format": FORMAT,
            "mtl": __version__,
            "name": name,
            "files": {f: fsio.sha256(tmp / f) for f in ("model.keras", "arrays.npz")},
        }
        fsio.write_synced(
            tmp / "state.json", (json.dumps(state, indent=1, default=_json_default) + "\n").encode()
        )
        _install(root, name, tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise fsio.disk_error(exc, f"the {name} checkpoint in {root}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / name


def _install(root: Path, name: str, tmp: Path) -> None:
    """Rename the complete checkpoint ``tmp`` into ``root/name`` (the previous one waits as ``.old``)."""
    final, old = root / name, root / f".{name}.old"
    fsio.fsync_dir(tmp)
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    # else: a crash may have left only .old, the one valid copy: keep it until the new one is in place
    os.replace(tmp, final)
    fsio.fsync_dir(root)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def link(run_dir: Path, source: str, name: str) -> Path:
    """Checkpoint ``name`` holding the same files as the complete checkpoint ``source`` of the same run
    (hard links, copies where the filesystem has none; checkpoint files are never changed in place),
    with its own ``state.json``; atomic like :func:`save`. Returns its directory."""
    root = run_dir / "checkpoints"
    src, tmp = root / source, root / f".{name}.new-{os.getpid()}"
    try:
        _remove_stale(root, name)
        tmp.mkdir()
        state = json.loads((src / "state.json").read_text(encoding="utf-8"))
        for file in state["files"]:
            try:
                os.link(src / file, tmp / file)
            except OSError:
                shutil.copy2(src / file, tmp / file)
                fsio.fsync_file(tmp / file)
        state["name"] = name
        fsio.write_synced(tmp / "state.json", (json.dumps(state, indent=1) + "\n").encode())
        _install(root, name, tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise fsio.disk_error(exc, f"the {name} checkpoint in {root}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / name


def _remove_stale(root: Path, name: str) -> None:
    """Remove half-written ``.<name>.new-<pid>`` directories of processes that no longer run (killed
    while writing) and our own."""
    for tmp in root.glob(f".{name}.new-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        alive = False
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            shutil.rmtree(tmp, ignore_errors=True)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def find(run_dir: Path, name: str = "last") -> Path | None:
    """The complete checkpoint ``name`` of a run (falling back to the copy a crash left), or None."""
    root = Path(run_dir) / "checkpoints"
    for candidate in (root / name, root / f".{name}.old"):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def read_state(ckpt: Path) -> dict[str, Any]:
    """``state.json`` of a checkpoint, after checking that its files are complete and unchanged."""
    path = ckpt / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt}: not a checkpoint (no state.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if (
        not isinstance(state, dict)
        or state.get("format") != FORMAT
        or not isinstance(state.get("files"), dict)
    ):
        raise CheckpointError(f"{path}: not an mtl checkpoint (format {FORMAT} expected)")
    for file, digest in state["files"].items():
        target = ckpt / file
        if not target.is_file():
            raise CheckpointError(f"{ckpt}: {file} is missing; the checkpoint is incomplete")
        if fsio.sha256(target) != digest:
            raise CheckpointError(f"{target}: corrupted (sha256 differs from state.json)")
    return state


def restore(
    model, ckpt: Path, state: dict[str, Any], *, optimizer: bool = True, metrics: bool = False
) -> None:
    """Load a checkpoint's weights (and optimizer state, RNG states, metric accumulators) into ``model``.

    ``model`` must be built from the same recipe; its optimizer is built here so that Keras restores the
    Adam moments and ``iterations`` instead of skipping them.
    """
    import warnings

    if optimizer and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if optimizer:
                model.load_weights(ckpt / "model.keras")
            else:
                import keras

                from mtlcli.model import train_step as _registered  # noqa: F401 - registers the custom objects

                # A fork with another optimizer or weighting: copy the layers' weights (and the epoch
                # counters) in order, leaving the weighting strategy's variables as they start.
                source = keras.saving.load_model(ckpt / "model.keras", safe_mode=True, compile=False)

                def layer_weights(m):
                    return [
                        v
                        for v in m.weights
                        if not v.path.rsplit("/", 1)[-1].startswith(("strategy_", "state_"))
                    ]

                ours, theirs = layer_weights(model), layer_weights(source)
                if [tuple(v.shape) for v in ours] != [tuple(v.shape) for v in theirs]:
                    raise CheckpointError(f"{ckpt}: the checkpoint's layers do not match this model's")
                for v, w in zip(ours, theirs, strict=True):
                    v.assign(w)
        with np.load(ckpt / "arrays.npz") as arrays:
            rng = extra_variables(model)
            for i, v in enumerate(rng):
                if f"rng_{i}" in arrays:
                    v.assign(arrays[f"rng_{i}"])
            if metrics:
                for i, v in enumerate(metric_variables(model)):
                    if f"metric_{i}" in arrays:
                        v.assign(arrays[f"metric_{i}"])
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure means the checkpoint does not fit
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{ckpt}: the checkpoint does not fit this model: {first}") from None


def restore_metrics(model, ckpt: Path) -> None:
    """Load the running epoch metrics of a mid-epoch checkpoint (after Keras reset them)."""
    with np.load(ckpt / "arrays.npz") as arrays:
        for i, v in enumerate(metric_variables(model)):
            if f"metric_{i}" in arrays:
                v.assign(arrays[f"metric_{i}"])
