"""Metrics for multi-label tasks and multi-column regression (imports TensorFlow).

Heads output logits: a label is predicted when its logit is > 0 (probability 0.5). ``sample_weight`` is
the task's per-row label mask, so rows without the task's label do not count.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

PACKAGE = "mtl"


def _row_weights(y_true, sample_weight):
    n = tf.shape(y_true)[0]
    if sample_weight is None:
        return tf.ones([n], tf.float32)
    return tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiLabelMetric(keras.metrics.Metric):
    """``hamming`` (share of wrong label decisions), ``exact_match`` (share of rows with every label
    right), ``accuracy`` (1 - hamming), ``precision`` / ``recall`` (micro-averaged over labels)."""

    def __init__(self, kind: str = "hamming", name: str | None = None, **kw):
        super().__init__(name=name or kind, **kw)
        self.kind = kind
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(tf.cast(y_pred, tf.float32) > 0.0, tf.float32)
        w = _row_weights(y_true, sample_weight)
        labels = tf.cast(tf.shape(y_true)[-1], tf.float32)
        if self.kind in ("hamming", "accuracy"):
            wrong = tf.reduce_sum(tf.abs(y_true - y_pred), axis=-1)
            value = wrong if self.kind == "hamming" else labels - wrong
            self.total.assign_add(tf.reduce_sum(value * w))
            self.count.assign_add(tf.reduce_sum(w) * labels)
        elif self.kind == "exact_match":
            right = tf.cast(tf.reduce_all(tf.equal(y_true, y_pred), axis=-1), tf.float32)
            self.total.assign_add(tf.reduce_sum(right * w))
            self.count.assign_add(tf.reduce_sum(w))
        else:  # precision / recall: true positives over predicted / actual positives
            tp = tf.reduce_sum(tf.reduce_sum(y_true * y_pred, axis=-1) * w)
            base = y_pred if self.kind == "precision" else y_true
            self.total.assign_add(tp)
            self.count.assign_add(tf.reduce_sum(tf.reduce_sum(base, axis=-1) * w))

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiLabelAUC(keras.metrics.AUC):
    """Micro-averaged ROC AUC over every (row, label) decision, from logits; rows weighted by the mask."""

    def __init__(self, name: str | None = None, **kw):
        kw.setdefault("from_logits", True)
        super().__init__(name=name, **kw)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.float32)
        w = _row_weights(y_true, sample_weight)[:, None] * tf.ones_like(y_true)
        return super().update_state(tf.reshape(y_true, [-1]), tf.reshape(y_pred, [-1]), tf.reshape(w, [-1]))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ColumnsRegressionMetric(keras.metrics.Metric):
    """MAE / MSE / RMSE / R² of a several-column regression target, each column in its own units
    (targets are standardised per column for training); MAE/MSE/RMSE average over every value, R² is
    the mean of the per-column R²."""

    def __init__(self, kind: str = "mae", mean=None, std=None, name: str | None = None, **kw):
        super().__init__(name=name or kind, **kw)
        self.kind = kind
        self.mean = [float(m) for m in (mean or [0.0])]
        self.std = [float(s) for s in (std or [1.0])]
        k = len(self.mean)
        self.total_w = self.add_variable(shape=(), initializer="zeros", name="total_w")
        self.abs_err = self.add_variable(shape=(k,), initializer="zeros", name="abs_err")
        self.sq_err = self.add_variable(shape=(k,), initializer="zeros", name="sq_err")
        self.sum_y = self.add_variable(shape=(k,), initializer="zeros", name="sum_y")
        self.sum_y2 = self.add_variable(shape=(k,), initializer="zeros", name="sum_y2")

    def update_state(self, y_true, y_pred, sample_weight=None):
        mean = tf.constant(np.array(self.mean, np.float32))
        std = tf.constant(np.array(self.std, np.float32))
        y_true = tf.cast(y_true, tf.float32) * std + mean
        y_pred = tf.cast(y_pred, tf.float32) * std + mean
        w = _row_weights(y_true, sample_weight)[:, None]
        err = y_pred - y_true
        self.total_w.assign_add(tf.reduce_sum(w))
        self.abs_err.assign_add(tf.reduce_sum(tf.abs(err) * w, axis=0))
        self.sq_err.assign_add(tf.reduce_sum(tf.square(err) * w, axis=0))
        self.sum_y.assign_add(tf.reduce_sum(y_true * w, axis=0))
        self.sum_y2.assign_add(tf.reduce_sum(tf.square(y_true) * w, axis=0))

    def result(self):
        n = self.total_w
        if self.kind == "mae":
            return tf.reduce_mean(tf.math.divide_no_nan(self.abs_err, n))
        mse = tf.math.divide_no_nan(self.sq_err, n)
        if self.kind == "mse":
            return tf.reduce_mean(mse)
        if self.kind == "rmse":
            return tf.sqrt(tf.reduce_mean(mse))
        var = tf.math.divide_no_nan(self.sum_y2, n) - tf.square(tf.math.divide_no_nan(self.sum_y, n))
        return tf.reduce_mean(1.0 - tf.math.divide_no_nan(mse, var))

    def reset_state(self):
        for v in (self.total_w, self.abs_err, self.sq_err, self.sum_y, self.sum_y2):
            v.assign(tf.zeros_like(v))

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "mean": self.mean, "std": self.std}


def make(metric: str, task_type: str, task: str, target: dict) -> keras.metrics.Metric | None:
    """The metric for a multilabel task or a several-column regression task; None for other tasks."""
    name = f"{task}_{metric}"
    if task_type == "regression" and isinstance(target.get("mean"), list):
        return ColumnsRegressionMetric(metric, target["mean"], target["std"], name=name)
    if task_type != "multilabel":
        return None
    if metric == "auc":
        return MultiLabelAUC(name=name)
    if metric == "crossentropy":
        return keras.metrics.BinaryCrossentropy(from_logits=True, name=name)
    return MultiLabelMetric(metric, name=name)
