"""Checkpoints: everything a run needs to continue exactly where it stopped, written atomically.

Layout inside a run directory::

    checkpoints/
      last/          the latest state: written at the end of every epoch, every ``train.checkpoint_every``
                     steps when set, and when SIGINT/SIGTERM stops the run
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
uninterrupted run would have seen (:func:`train_stream`).

This module imports TensorFlow only inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli import __version__
from mtlcli.errors import CheckpointError, RunError

FORMAT = 1
NAMES = ("last", "best")

#: Recipe keys a ``--resume`` may change; they are applied and echoed. Anything else is refused.
RESUME_SAFE = (
    "train.epochs",
    "train.early_stopping.patience",
    "train.checkpoint_every",
    "train.on_nan",
    "train.distribute",  # the global batch and the math stay the same on any number of devices
    "train.devices",
    "logging",
)
#: What ``--fork`` may change in addition: the whole ``train`` section and the run name. The model,
#: the data and the seed (which draws the split) must stay, because the weights are tied to them.
FORK_SAFE = ("train", "name", "logging")


# ------------------------------------------------------------------------------------------------
# Errors


class Interrupted(RunError):
    """SIGINT/SIGTERM stopped the run after a checkpoint was written (exit 130 or 143)."""

    def __init__(self, signum: int, run_dir: Path, epoch: int, step: int, steps: int, command: str):
        self.signum, self.run_dir, self.command = signum, run_dir, command
        self.signame = signal.Signals(signum).name
        self.exit_code = 128 + int(signum)
        where = f"epoch {epoch + 1}, step {step}/{steps}" if step else f"the end of epoch {epoch}"
        super().__init__(
            f"{self.signame}: stopped at {where}; checkpoint saved in {run_dir / 'checkpoints' / 'last'}\n"
            f"resume with: {command}"
        )


def disk_error(exc: OSError, what: str) -> RunError:
    """An OSError while writing becomes a clear RunError (disk full, read-only, permissions)."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    return RunError(f"cannot write {what}: {reason}")


# ------------------------------------------------------------------------------------------------
# Files


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_file(path: Path, raw: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(raw)
        fh.flush()
        os.fsync(fh.fileno())


def sha256(path: Path) -> str:
    from mtlcli.data.sources import file_digest

    return file_digest(path)


def extra_variables(model) -> list:
    """Model state that ``model.keras`` does not store: the SeedGenerator states (dropout RNG)."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def metric_variables(model) -> list:
    return [v for m in model.metrics for v in m.variables]


def save(model, run_dir: Path, name: str, state: dict[str, Any], *, with_metrics: bool = False) -> Path:
    """Write checkpoint ``name`` (``last`` or ``best``) atomically; returns its directory."""
    root = run_dir / "checkpoints"
    final, old = root / name, root / f".{name}.old"
    tmp = root / f".{name}.new-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root, name)
        tmp.mkdir()
        model.save(tmp / "model.keras")
        with open(tmp / "model.keras", "rb") as fh:
            os.fsync(fh.fileno())
        arrays = {f"rng_{i}": np.asarray(v.numpy()) for i, v in enumerate(extra_variables(model))}
        if with_metrics:
            arrays.update(
                {f"metric_{i}": np.asarray(v.numpy()) for i, v in enumerate(metric_variables(model))}
            )
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        _write_file(tmp / "arrays.npz", buf.getvalue())
        state = {
            **state,
            "format": FORMAT,
            "mtl": __version__,
            "name": name,
            "files": {f: sha256(tmp / f) for f in ("model.keras", "arrays.npz")},
        }
        _write_file(tmp / "state.json", (json.dumps(state, indent=1, default=_json_default) + "\n").encode())
        _fsync_dir(tmp)
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        # else: a crash may have left only .old, the one valid copy: keep it until the new one is in place
        os.replace(tmp, final)
        _fsync_dir(root)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise disk_error(exc, f"the {name} checkpoint in {root}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


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
        if sha256(target) != digest:
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
    """The leaves that differ between two resolved recipes, in a stable order."""
    a, b = flatten(old), flatten(new)
    keys = list(a) + [k for k in b if k not in a]
    return [
        Change(k, a.get(k, _ABSENT), b.get(k, _ABSENT))
        for k in keys
        if a.get(k, _ABSENT) != b.get(k, _ABSENT)
    ]


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


# ------------------------------------------------------------------------------------------------
# Data position


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of epoch ``epoch`` (0-based): a pure function of (seed, epoch)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)]).permutation(n)


def train_stream(tf, arrays, batch_size: int, seed: int, first_epoch: int, first_step: int, end_epoch: int):
    """A ``tf.data.Dataset`` of the training batches of epochs ``first_epoch..end_epoch-1``, starting at
    batch ``first_step`` of the first one. Use with ``fit(steps_per_epoch=...)`` (the iterator then runs
    across epochs). The last batch of an epoch may be smaller; batches never mix epochs."""
    if getattr(arrays, "streamed", False):  # larger-than-memory data: mtlcli.data.stream (same contract)
        return arrays.train_dataset(tf, batch_size, seed, first_epoch, first_step, end_epoch)
    n = arrays.n
    steps = -(-n // batch_size)
    from mtlcli.data import pipeline  # class weights ride in the mask dict; image files are decoded below

    del steps
    # The arrays live in memory as tensors; per epoch, one call computes the order (numpy, a pure
    # function of (seed, epoch)) and tf.data gathers the batches -- no Python work per step.
    parts = [
        {k: tf.constant(v.astype(str) if v.dtype.kind == "O" else v) for k, v in d.items()}
        for d in pipeline.feed(arrays)
    ]

    def order_of(epoch):
        return epoch_order(n, seed, int(epoch)).astype(np.int64)

    def epoch_batches(epoch):
        order = tf.numpy_function(order_of, [epoch], tf.int64, stateful=False)
        order.set_shape([n])
        skip = tf.where(
            tf.equal(epoch, first_epoch), tf.constant(first_step, tf.int64), tf.constant(0, tf.int64)
        )
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).skip(skip)

    def gather(idx):
        return tuple({k: tf.gather(v, idx) for k, v in part.items()} for part in parts)

    stream = tf.data.Dataset.range(first_epoch, end_epoch).flat_map(epoch_batches)
    stream = stream.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return pipeline.decode_batched(tf, stream, arrays).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------------------
# Signals


class SignalGuard:
    """Turns the first SIGINT/SIGTERM into a flag the training loop checks after each step (a second
    SIGINT interrupts at once). Restores the previous handlers on exit. Outside the main thread (where
    Python cannot install handlers) it does nothing."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, _frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> SignalGuard:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):  # not the main thread: no handlers
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)


def restore_metrics(model, ckpt: Path) -> None:
    """Load the running epoch metrics of a mid-epoch checkpoint (after Keras reset them)."""
    with np.load(ckpt / "arrays.npz") as arrays:
        for i, v in enumerate(metric_variables(model)):
            if f"metric_{i}" in arrays:
                v.assign(arrays[f"metric_{i}"])
