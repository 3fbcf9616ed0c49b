"""Per-task metrics in the targets' own units, the vector means the train step logs, and the metric of
each recipe metric name (:func:`make_metric`).

Heads output logits: a binary or multi-label decision is positive when its logit is > 0 (probability
0.5). ``sample_weight`` is the task's per-row label mask, so rows without the task's label do not count.
Regression targets are standardised for training; their metrics undo the scaling (``mean``/``std``).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mtlcli.model.registration import serializable


@serializable
class RegressionMetric(keras.metrics.Metric):
    """MAE / MSE / RMSE / R² in the target's original units (targets are standardised for training)."""

    #: the running sums each kind needs (besides the total weight): fewer variables to update and reset
    SUMS = {"mae": ("abs_err",), "mse": ("sq_err",), "rmse": ("sq_err",), "r2": ("sq_err", "sum_y", "sum_y2")}

    def __init__(self, kind: str = "mae", mean: float = 0.0, std: float = 1.0, name: str | None = None, **kw):
        super().__init__(name=name or kind, **kw)
        self.kind, self.mean, self.std = kind, float(mean), float(std)
        self.total_w = self.add_variable(shape=(), initializer="zeros", name="total_w")
        self.sums = {k: self.add_variable(shape=(), initializer="zeros", name=k) for k in self.SUMS[kind]}

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(tf.reshape(y_true, [tf.shape(y_true)[0], -1]), tf.float32) * self.std + self.mean
        y_pred = tf.cast(tf.reshape(y_pred, [tf.shape(y_pred)[0], -1]), tf.float32) * self.std + self.mean
        w = (
            tf.ones_like(y_true)
            if sample_weight is None
            else tf.cast(tf.reshape(sample_weight, [-1, 1]), tf.float32) * tf.ones_like(y_true)
        )
        err = y_pred - y_true
        self.total_w.assign_add(tf.reduce_sum(w))
        terms = {
            "abs_err": lambda: w * tf.abs(err),
            "sq_err": lambda: w * err * err,
            "sum_y": lambda: w * y_true,
            "sum_y2": lambda: w * y_true * y_true,
        }
        for key, var in self.sums.items():
            var.assign_add(tf.reduce_sum(terms[key]()))

    def result(self):
        n = tf.maximum(self.total_w, 1e-12)
        if self.kind == "mae":
            return self.sums["abs_err"] / n
        mse = self.sums["sq_err"] / n
        if self.kind == "mse":
            return mse
        if self.kind == "rmse":
            return tf.sqrt(mse)
        var = self.sums["sum_y2"] / n - tf.square(self.sums["sum_y"] / n)
        return 1.0 - mse / tf.maximum(var, 1e-12)

    def get_config(self):
        return {"kind": self.kind, "mean": self.mean, "std": self.std, "name": self.name}


@serializable
class VectorMean(keras.metrics.Metric):
    """Weighted running means of a vector, logged as one value per name.

    One metric for all tasks' losses (or weights, or gradient cosines) instead of one ``Mean`` per
    value: two variables to update each step and to reset each epoch instead of two per value.
    """

    def __init__(self, names: list[str], name: str = "vector_mean", **kw):
        super().__init__(name=name, **kw)
        self.names = list(names)
        self.total = self.add_variable(shape=(len(self.names),), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(len(self.names),), initializer="zeros", name="count")

    def update_state(self, values, sample_weight=None):
        values = tf.cast(tf.reshape(values, [-1]), tf.float32)
        w = (
            tf.ones_like(values)
            if sample_weight is None
            else tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        )
        self.total.assign_add(values * w)
        self.count.assign_add(w * tf.ones_like(values))

    def result(self):
        means = tf.math.divide_no_nan(self.total, self.count)
        return {name: means[i] for i, name in enumerate(self.names)}

    def get_config(self):
        return {"names": self.names, "name": self.name}


def _row_weights(y_true, sample_weight):
    n = tf.shape(y_true)[0]
    if sample_weight is None:
        return tf.ones([n], tf.float32)
    return tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)


@serializable
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


@serializable
class MultiLabelAUC(keras.metrics.AUC):
    """Micro-averaged ROC AUC over every (row, label) decision, from logits; rows weighted by the mask."""

    def __init__(self, name: str | None = None, **kw):
        kw.setdefault("from_logits", True)
        super().__init__(name=name, **kw)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.float32)
        w = _row_weights(y_true, sample_weight)[:, None] * tf.ones_like(y_true)
        return super().update_state(tf.reshape(y_true, [-1]), tf.reshape(y_pred, [-1]), tf.reshape(w, [-1]))


@serializable
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


def make_metric(metric: str, task_type: str, task: str, target: dict) -> keras.metrics.Metric:
    """The metric ``metric`` of a task, named ``<task>_<metric>``."""
    name = f"{task}_{metric}"
    if task_type == "regression":
        if isinstance(target.get("mean"), list):  # several columns, each in its own units
            return ColumnsRegressionMetric(metric, target["mean"], target["std"], name=name)
        return RegressionMetric(metric, target["mean"], target["std"], name=name)
    if task_type == "multilabel":
        if metric == "auc":
            return MultiLabelAUC(name=name)
        if metric == "crossentropy":
            return keras.metrics.BinaryCrossentropy(from_logits=True, name=name)
        return MultiLabelMetric(metric, name=name)
    if task_type == "classification":
        if metric == "accuracy":
            return keras.metrics.SparseCategoricalAccuracy(name=name)
        return keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name=name)
    # binary heads output logits: thresholds at 0 == probability 0.5
    return {
        "accuracy": lambda: keras.metrics.BinaryAccuracy(threshold=0.0, name=name),
        "auc": lambda: keras.metrics.AUC(from_logits=True, name=name),
        "precision": lambda: keras.metrics.Precision(thresholds=0.0, name=name),
        "recall": lambda: keras.metrics.Recall(thresholds=0.0, name=name),
        "crossentropy": lambda: keras.metrics.BinaryCrossentropy(from_logits=True, name=name),
    }[metric]()
