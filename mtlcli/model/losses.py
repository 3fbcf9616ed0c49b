"""Per-task losses: the Keras loss object of each recipe loss name, and the masked per-task means.

A row without a task's label still trains the other tasks: every loss is per example
(``reduction=None``) and each task's mean is taken over the rows its mask marks as labelled.  Class
weights (``mask["<task>.weight"]``) multiply the per-row losses; the mean stays over the labelled rows.
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
    return LOSSES[name]()


def _weighted_sums(losses_fn: dict, y, preds, mask):
    """Per-task sums of the (class-weighted) masked per-example losses, and the label counts."""
    sums, counts = [], []
    for task, loss in losses_fn.items():
        per_example = tf.reshape(loss(y[task], tf.cast(preds[task], tf.float32)), [-1])
        m = tf.cast(mask[task], tf.float32)
        w = mask.get(f"{task}.weight") if isinstance(mask, dict) else None
        weighted = m if w is None else m * tf.cast(tf.reshape(w, [-1]), tf.float32)
        sums.append(tf.reduce_sum(per_example * weighted))
        counts.append(tf.reduce_sum(m))
    return tf.stack(sums), tf.stack(counts)


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
