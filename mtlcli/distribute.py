"""Training on several devices or machines with TensorFlow's own engine (``train.distribute``).

* ``none``: the default strategy (one device).
* ``mirrored``: ``tf.distribute.MirroredStrategy`` over the local GPUs (``train.devices: N``: the first
  N); on a machine without GPUs ``devices: N`` splits the CPU into N logical devices.
* ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` configured by ``TF_CONFIG``. Only the
  chief writes the run directory and reports progress (:attr:`Setup.is_chief`).

The strategy must be created before TensorFlow initialises its devices (the logical CPU split and
the collective ops of ``multi_worker`` are process-global), so :func:`setup` runs right after the
TensorFlow import and before anything creates a tensor.

Keras 3.15's ``fit`` does not work with MultiWorkerMirroredStrategy out of the box
(keras-team/keras#20585: its symbolic build reduces the first PerReplica batch with ``MEAN``;
tensorflow/tensorflow#72388: step outputs are reduced with ``axis=0``, which scalars lack).
The model carries the two-part workaround: :class:`mtlcli.model.network.Network`'s
``_maybe_symbolic_build`` builds from the first replica's batch, and
:class:`mtlcli.model.train_step.MultiTaskModel`'s train and test steps return ``(1,)`` tensors under
this strategy. Both parts touch private Keras code, so ``multi_worker`` refuses Keras versions it was not
tested with (:data:`TESTED_KERAS`); ``tests/test_distribute.py`` is the regression test.

The math of the train step under a strategy is in :mod:`mtlcli.model.backward` (global-batch losses,
the all-reduced task Jacobian or Gramian); the helpers at the end of this module are what it calls, and
each is the identity on one replica, so the train step reads the same with or without a strategy.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any

from mtlcli.errors import UsageError

KINDS = ("none", "mirrored", "multi_worker")
#: Keras versions the multi_worker workaround was tested with (``keras.__version__`` prefixes).
TESTED_KERAS = ("3.15.",)


@dataclass
class Setup:
    """The distribution of one training process."""

    kind: str = "none"
    strategy: Any = None  # a tf.distribute.Strategy, or None for ``none``
    is_chief: bool = True  # False: this process writes nothing to the run directory and prints nothing
    replicas: int = 1
    workers: int = 1
    task: str = ""  # "worker 1" under multi_worker

    def scope(self):
        """The strategy's scope (variables created in it are mirrored), or a no-op."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def dataset(self, ds):
        """``ds`` (batches of the *global* batch size) as Keras hands it to the strategy: under
        multi_worker each global batch is split across every worker's replicas (auto-shard by data:
        every worker reads the same rows and keeps its part), so the global batch is the recipe's."""
        if self.kind != "multi_worker":
            return ds
        import tensorflow as tf

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.with_options(options)


# ------------------------------------------------------------------------------------------------
# TF_CONFIG


def parse_tf_config(text: str | None) -> dict[str, Any]:
    """The ``TF_CONFIG`` JSON, checked: ``{"cluster": {"worker": [...], ...}, "task": {"type", "index"}}``."""
    if text is None or not text.strip():
        raise UsageError(
            "train.distribute: multi_worker needs the TF_CONFIG environment variable on every worker, e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
            '"index": 0}}\''
        )
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"TF_CONFIG: expected JSON, received {text[:60]!r} ({exc.msg})") from None
    if not isinstance(cfg, dict):
        raise UsageError(f"TF_CONFIG: expected a JSON object with cluster and task, received {text[:60]!r}")
    problems = []
    cluster, task = cfg.get("cluster"), cfg.get("task")
    if not isinstance(cluster, dict) or not any(
        isinstance(v, list) and v for k, v in cluster.items() if k in ("chief", "worker")
    ):
        problems.append('cluster: expected {"worker": ["host:port", ...]} (and optionally "chief")')
    if not isinstance(task, dict) or not isinstance(task.get("type"), str):
        problems.append('task: expected {"type": "worker", "index": N}')
    elif not isinstance(task.get("index", 0), int) or isinstance(task.get("index", 0), bool):
        problems.append(f"task.index: expected an integer, received {task.get('index')!r}")
    elif isinstance(cluster, dict):
        members = cluster.get(task["type"])
        if not isinstance(members, list) or not 0 <= task.get("index", 0) < len(members):
            size = len(members) if isinstance(members, list) else 0
            problems.append(
                f"task: {task['type']} {task.get('index', 0)} is not in the cluster "
                f"({size} {task['type']} address(es))"
            )
    if problems:
        raise UsageError("TF_CONFIG: " + "; ".join(problems))
    return cfg


def is_chief(cfg: dict[str, Any]) -> bool:
    """TensorFlow's convention: the ``chief`` task when the cluster has one, else worker 0."""
    task = cfg["task"]
    if cfg["cluster"].get("chief"):
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task.get("index", 0)) == 0


# ------------------------------------------------------------------------------------------------
# Devices


def _local_devices(tf, n: int | None, kind: str) -> list[str] | None:
    """Device names for ``n`` local replicas (None: the strategy's default). Splits the CPU into ``n``
    logical devices when there is no GPU; that must happen before TensorFlow initialises its devices."""
    if n is None:
        return None
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if n > len(gpus):
            raise UsageError(
                f"train.devices: expected at most {len(gpus)} (the GPUs of this machine), received {n}"
            )
        if kind == "multi_worker":
            tf.config.set_visible_devices(gpus[:n], "GPU")
            return None
        return [f"/gpu:{i}" for i in range(n)]
    if kind == "multi_worker":
        if n > 1:
            raise UsageError(
                f"train.devices: {n} needs {n} GPUs per worker with multi_worker; this machine has none "
                f"(each worker trains on its CPU as one device: remove train.devices)"
            )
        return None
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if (len(current) if current else 1) != n:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError:
            have = len(tf.config.list_logical_devices("CPU"))
            raise UsageError(
                f"train.devices: cannot split the CPU into {n} devices: TensorFlow has already initialised "
                f"{have} in this process (split it before creating any tensor, e.g. in a fresh process)"
            ) from None
    return [f"/cpu:{i}" for i in range(n)]


def setup(train_spec, tf, environ=None) -> Setup:
    """Create the strategy of ``train.distribute`` (call right after importing TensorFlow)."""
    kind = getattr(train_spec, "distribute", "none") or "none"
    n = getattr(train_spec, "devices", None)
    if kind == "none":
        return Setup()
    environ = os.environ if environ is None else environ
    if kind == "mirrored":
        devices = _local_devices(tf, n, kind)
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        return Setup(kind, strategy, True, strategy.num_replicas_in_sync, 1)
    cfg = parse_tf_config(environ.get("TF_CONFIG"))
    import keras

    if not keras.__version__.startswith(TESTED_KERAS):
        raise UsageError(
            f"train.distribute: multi_worker works around Keras bugs (keras-team/keras#20585, "
            f"tensorflow/tensorflow#72388) with code tested on Keras {', '.join(v + 'x' for v in TESTED_KERAS)}; "
            f"this is Keras {keras.__version__}: install keras~=3.15.0 or use distribute: mirrored"
        )
    _local_devices(tf, n, kind)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"train.distribute: multi_worker cannot start: {first}") from None
    workers = sum(len(cfg["cluster"].get(k) or []) for k in ("chief", "worker"))
    task = f"{cfg['task']['type']} {cfg['task'].get('index', 0)}"
    return Setup(kind, strategy, is_chief(cfg), strategy.num_replicas_in_sync, workers, task)


# ------------------------------------------------------------------------------------------------
# Helpers for the train step (trace time, inside ``strategy.run``)


def replicas() -> int:
    """Replicas in sync under the current strategy (1 without one)."""
    import tensorflow as tf

    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def all_sum(value):
    """Sum ``value`` over every replica (every worker's too); identical on all of them."""
    import tensorflow as tf

    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def multi_worker() -> bool:
    """True under MultiWorkerMirroredStrategy (whose step outputs need the ``(1,)`` workaround)."""
    import tensorflow as tf

    return isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)


def gram_factor(gram):
    """A ``(T, T)`` matrix ``F`` with ``F Fᵀ = gram`` (symmetric positive semi-definite): what a
    weighting strategy that depends only on the Gramian of its rows (``weighting = True``) sees in place
    of the ``(T, P)`` rows. From the eigen-decomposition, so a singular Gramian (a task without labels in
    the batch) needs no jitter."""
    import tensorflow as tf

    g = tf.cast(gram, tf.float64)
    values, vectors = tf.linalg.eigh(0.5 * (g + tf.transpose(g)))
    return tf.cast(vectors * tf.sqrt(tf.maximum(values, 0.0))[tf.newaxis, :], gram.dtype)


def global_losses(losses, counts):
    """``(global losses, global label counts split evenly)`` from this replica's share of the losses and
    its label counts: the losses every strategy sees, tracked and checked, and counts under which the
    per-task loss means read the same on every replica. One replica: ``(losses, counts)`` as they are."""
    n = replicas()
    if n == 1:
        return losses, counts
    import tensorflow as tf

    return all_sum(tf.stop_gradient(losses)), all_sum(counts) / n


def global_sum(value):
    """:func:`all_sum` under several replicas; ``value`` itself on one."""
    return value if replicas() == 1 else all_sum(value)


def share(value):
    """This replica's share of a value every replica computes identically (a direction, a strategy
    parameter's gradient): the optimizer sums the replicas' gradients, so each hands in ``1/n`` of it."""
    n = replicas()
    return value if n == 1 else value / n
