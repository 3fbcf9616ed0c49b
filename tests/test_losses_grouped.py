"""Tasks with the same one-value-per-row loss are computed as one [batch, tasks] block
(mtlcli.model.losses.groups): the same per-task masked means as one task at a time, in the tasks' order."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcli.model import losses


def _one_at_a_time(fn, y, preds, mask):
    """The per-task reference: each task's masked (class-weighted) mean on its own."""
    out = []
    for task, loss in fn.items():
        s, c = losses._task_sums(task, loss, y, preds, mask)
        out.append((s / c).numpy() if c.numpy() else 0.0)
    return np.array(out, np.float32)


def test_tasks_group_by_loss_and_settings_in_their_order():
    b = 4
    one, two, three = tf.zeros([b, 1]), tf.zeros([b, 2]), tf.zeros([b, 3])
    fn = {
        "click": losses.make_loss("binary_crossentropy"),
        "price": losses.make_loss("mse"),
        "kind": losses.make_loss("sparse_categorical_crossentropy"),
        "buy": losses.make_loss("binary_crossentropy"),
        "size": losses.make_loss("mse"),
        "xy": losses.make_loss("mse"),  # two columns: alone
        "rare": losses.make_loss("binary_focal_crossentropy"),  # not grouped
        "rare2": losses.make_loss("binary_focal_crossentropy"),
        "robust": losses.make_loss("huber"),
        "own": keras.losses.Huber(delta=2.0, reduction=None),  # not a recipe loss: alone
        "robust2": losses.make_loss("huber"),
    }
    preds = {t: one for t in fn} | {"kind": three, "xy": two}
    y = {t: tf.zeros([b]) for t in fn} | {"xy": tf.zeros([b, 2]), "price": tf.zeros([b, 1])}
    assert losses.groups(fn, y, preds) == [
        ["click", "buy"],
        ["price", "size"],
        ["kind"],
        ["xy"],
        ["rare"],
        ["rare2"],
        ["robust", "robust2"],
        ["own"],
    ]


def test_two_regression_tasks_by_hand():
    fn = {"a": losses.make_loss("mse"), "b": losses.make_loss("mae")}
    fn["c"] = losses.make_loss("mse")
    y = {
        "a": tf.constant([1.0, 2.0, 3.0]),
        "b": tf.constant([0.0, 0.0, 0.0]),
        "c": tf.constant([0.0, 1.0, 0.0]),
    }
    preds = {"a": tf.constant([[0.0], [0.0], [0.0]]), "b": tf.constant([[1.0], [-2.0], [4.0]])}
    preds["c"] = tf.constant([[2.0], [1.0], [-1.0]])
    mask = {
        "a": tf.constant([1.0, 1.0, 0.0]),
        "b": tf.constant([1.0, 0.0, 1.0]),
        "c": tf.constant([0.0, 0.0, 0.0]),
    }
    mask["a.weight"] = tf.constant([2.0, 1.0, 5.0])
    got, counts = losses.task_losses(fn, y, preds, mask)
    # a: (2*1 + 1*4) / 2 labelled rows = 3; b: (1 + 4) / 2 = 2.5; c: no label -> 0
    np.testing.assert_array_equal(got.numpy(), [3.0, 2.5, 0.0])
    np.testing.assert_array_equal(counts.numpy(), [2.0, 2.0, 0.0])


@pytest.mark.parametrize("batch", [1, 7, 32, 129])
def test_grouped_equals_one_task_at_a_time(batch):
    rng = np.random.default_rng(batch)
    names = ["b0", "r0", "c0", "b1", "r1", "h0", "b2", "h1", "r2"]
    kind = {"b": "binary_crossentropy", "r": "mse", "c": "sparse_categorical_crossentropy", "h": "huber"}
    fn = {t: losses.make_loss(kind[t[0]]) for t in names}
    y, preds, mask = {}, {}, {}
    for t in names:
        if t[0] == "c":
            y[t] = tf.constant(rng.integers(0, 3, batch))
            preds[t] = tf.constant(rng.normal(size=(batch, 3)), tf.float32)
        elif t[0] == "b":
            y[t] = tf.constant(rng.integers(0, 2, (batch, 1)).astype(np.float32))
            preds[t] = tf.constant(rng.normal(size=(batch, 1)), tf.float32)
        else:
            y[t] = tf.constant(rng.normal(size=batch), tf.float32)
            preds[t] = tf.constant(rng.normal(size=(batch, 1)), tf.float32)
        mask[t] = tf.constant((rng.random(batch) < 0.7).astype(np.float32))
    mask["b1.weight"] = tf.constant(rng.random(batch).astype(np.float32) * 3)
    mask["r2.weight"] = tf.constant(rng.random(batch).astype(np.float32) * 3)
    assert losses.groups(fn, y, preds) == [["b0", "b1", "b2"], ["r0", "r1", "r2"], ["c0"], ["h0", "h1"]]
    got, _ = losses.task_losses(fn, y, preds, mask)
    expected = _one_at_a_time(fn, y, preds, mask)
    exact = [i for i, t in enumerate(names) if t[0] in "rhc"]
    np.testing.assert_array_equal(got.numpy()[exact], expected[exact])  # the very same bits
    # cross-entropy: TensorFlow's vectorised log/exp may differ in the last bit
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-7, atol=2e-7)

    def gradient(fn_losses):
        with tf.GradientTape() as tape:
            tape.watch(list(preds.values()))
            total = tf.reduce_sum(fn_losses() * tf.range(1.0, len(names) + 1.0))
        return tape.gradient(total, list(preds.values()))

    def reference():
        return tf.stack([losses._task_sums(t, fn[t], y, preds, mask)[0] for t in names]) / tf.maximum(
            tf.stack([tf.reduce_sum(mask[t]) for t in names]), 1.0
        )

    mine = gradient(lambda: losses.task_losses(fn, y, preds, mask)[0])
    for a, b in zip(mine, gradient(reference), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
