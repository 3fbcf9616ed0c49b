"""Per-task losses: the Keras loss object of each recipe loss name, and the masked per-task means.

A row without a task's label still trains the other tasks: every loss is per example
(``reduction=None``) and each task's mean is taken over the rows its mask marks as labelled.  Class
weights (``mask["<task>.weight"]``) multiply the per-row losses; the mean stays over the labelled rows.

Tasks with the same one-value-per-row loss (binary logits, single-column regression) are computed
together, as one ``[batch, tasks]`` block (:func:`groups`): one loss call, one masked sum and one count
for all of them instead of an op group per task, which kept the step's graph growing by about 70 ops
(forward and backward) per task.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mtlcli import distribute

#: recipe loss name -> per-example Keras loss (heads output logits)
LOSSES = {
    "sparse_categorical_crossentropy": lambda: keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None
    ),
    "binary_crossentropy": lambda: keras.losses.BinaryCrossentropy(from_logits=True, reduction=None),
    "binary_focal_crossentropy": lambda: keras.losses.BinaryFocalCrossentropy(
        from_logits=True, reduction=None
    ),
    "mse": lambda: keras.losses.MeanSquaredError(reduction=None),
    "mae": lambda: keras.losses.MeanAbsoluteError(reduction=None),
    "huber": lambda: keras.losses.Huber(reduction=None),
    "log_cosh": lambda: keras.losses.LogCosh(reduction=None),
}


def make_loss(name: str) -> keras.losses.Loss:
    """Per-example loss objects (reduction 'none'); tasks are reduced with their label masks."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}")
    loss = LOSSES[name]()
    loss.recipe_name = name  # what :func:`groups` reads: these settings, whatever the object
    return loss


#: recipe losses of one value per row (a binary logit, a single regression column): tasks with the same
#: one of these are computed as one ``[batch, tasks]`` block (:func:`_weighted_sums`). MSE, MAE and
#: Huber give the very same bits as one task at a time; the cross-entropy's ``log``/``exp`` on a longer
#: tensor take more of TensorFlow's vectorised path and may differ in the last bit of float32 (measured:
#: at most 1.2e-7 absolute). The focal loss and log-cosh stay per task.
ELEMENTWISE = ("binary_crossentropy", "mse", "mae", "huber")


def groups(losses_fn: dict, y, preds) -> list[list[str]]:
    """The tasks in ``losses_fn`` order, as groups computed together: tasks with the same elementwise
    recipe loss (:data:`ELEMENTWISE`, made by :func:`make_loss`) whose label and prediction are one
    value per row share a group (in their own order); every other task is a group of its own."""
    out: list[list[str]] = []
    where: dict[str, int] = {}
    for task, loss in losses_fn.items():
        p, t = tf.TensorShape(preds[task].shape), tf.TensorShape(y[task].shape)
        one = p.rank == 2 and p[-1] == 1 and (t.rank == 1 or (t.rank == 2 and t[-1] == 1))
        key = getattr(loss, "recipe_name", None) if one else None
        if key not in ELEMENTWISE:
            out.append([task])
        elif key in where:
            out[where[key]].append(task)
        else:
            where[key] = len(out)
            out.append([task])
    return out


def _column(t):
    """``[batch]`` or ``[batch, 1]`` as ``[batch, 1]`` float32."""
    return tf.reshape(tf.cast(t, tf.float32), [-1, 1])


def _task_sums(task: str, loss, y, preds, mask):
    """One task's sum of (class-weighted) masked per-example losses and its label count (scalars)."""
    per_example = tf.reshape(loss(y[task], tf.cast(preds[task], tf.float32)), [-1])
    m = tf.cast(mask[task], tf.float32)
    w = mask.get(f"{task}.weight") if isinstance(mask, dict) else None
    weighted = m if w is None else m * tf.cast(tf.reshape(w, [-1]), tf.float32)
    return tf.reduce_sum(per_example * weighted), tf.reduce_sum(m)


def _group_sums(tasks: list[str], loss, y, preds, mask):
    """:func:`_task_sums` of several tasks with one elementwise loss, ``(len(tasks),)`` each: labels and
    logits stacked as ``[batch, tasks, 1]``, so one loss call gives the ``[batch, tasks]`` per-example
    losses (each row's mean over its one value)."""
    labels = tf.stack([_column(y[t]) for t in tasks], axis=1)
    logits = tf.stack([_column(preds[t]) for t in tasks], axis=1)
    per_example = loss(labels, logits)  # [batch, tasks]
    m = tf.stack([tf.cast(tf.reshape(mask[t], [-1]), tf.float32) for t in tasks], axis=1)
    weights = [mask.get(f"{t}.weight") if isinstance(mask, dict) else None for t in tasks]
    weighted = m
    if any(w is not None for w in weights):
        ones = tf.ones_like(m[:, 0])
        w = [ones if w is None else tf.cast(tf.reshape(w, [-1]), tf.float32) for w in weights]
        weighted = m * tf.stack(w, axis=1)
    # reduced along the batch as rows of [tasks, batch]: each task's sum as its own vector's would be
    return tf.reduce_sum(tf.transpose(per_example * weighted), axis=1), tf.reduce_sum(tf.transpose(m), axis=1)


def _weighted_sums(losses_fn: dict, y, preds, mask):
    """Per-task sums of the (class-weighted) masked per-example losses, and the label counts, in
    ``losses_fn`` order; tasks of one group (:func:`groups`) as one ``[batch, tasks]`` block."""
    parts = groups(losses_fn, y, preds)
    alone = [tasks[0] for tasks in parts if len(tasks) == 1]
    together = [tasks for tasks in parts if len(tasks) > 1]
    sums, counts = [], []
    if alone:
        pairs = [_task_sums(t, losses_fn[t], y, preds, mask) for t in alone]
        sums.append(tf.stack([s for s, _ in pairs]))
        counts.append(tf.stack([c for _, c in pairs]))
    for tasks in together:
        s, c = _group_sums(tasks, losses_fn[tasks[0]], y, preds, mask)
        sums.append(s)
        counts.append(c)
    order = alone + [t for tasks in together for t in tasks]
    sums, counts = (v[0] if len(v) == 1 else tf.concat(v, 0) for v in (sums, counts))
    if order != list(losses_fn):
        back = [order.index(t) for t in losses_fn]
        sums, counts = tf.gather(sums, back), tf.gather(counts, back)
    return sums, counts


def task_losses(losses_fn: dict, y, preds, mask):
    """Per-task masked mean losses, as one ``(T,)`` float32 vector (tasks in ``losses_fn`` order), and
    the label counts.

    Under tf.distribute with several replicas each replica returns its share of the *global* batch's
    losses, ``sum_local(m * l) / count_global`` (the label counts summed over the replicas), so the
    replicas' losses and gradients add up to the single-device ones; the counts returned are local.
    """
    sums, counts = _weighted_sums(losses_fn, y, preds, mask)
    total = distribute.all_sum(counts) if distribute.replicas() > 1 else counts
    return tf.math.divide_no_nan(sums, total), counts
