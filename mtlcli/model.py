"""Recipe -> Keras model: a shared trunk, one head per task, and the multi-task ``train_step``.

Importing this module imports TensorFlow; the CLI imports it lazily. It registers every custom object
under the ``mtl`` package so ``model.keras`` files load with ``safe_mode=True``.

The train step
--------------
1. Forward pass: inputs -> shared trunk (representation ``z``) -> each head.
2. Per-task losses ``L_i``: the mean of the task's per-example loss over the rows that carry its label
   (missing labels are masked, the row still trains the other tasks).
3. The weighting strategy (``mtlcli.weighting``):

   * loss-based: ``objective = strategy.combine(L)``; one gradient of it w.r.t. every variable (heads are
     weighted too);
   * gradient-based: per-task gradients of the shared variables (a loop of ``tape.gradient``, which was
     measured faster than ``tape.jacobian`` here) form ``J`` (T x P); the strategy turns ``J`` into one
     direction for the shared variables, and each head gets the plain gradient of its own loss
     (TorchJD's convention). With ``on: representation`` ``J`` holds gradients w.r.t. ``z`` instead
     (MGDA-UB style, one extra backward pass in all) and ``sum_i w_i L_i`` is back-propagated once.
4. One Adam update of everything.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtlcli import weighting

PACKAGE = "mtl"


# ------------------------------------------------------------------------------------------------
# Layers, losses, metrics from recipe names


def make_layer(spec: dict[str, Any], name: str | None = None) -> keras.layers.Layer:
    """``{dense: {units: 8}}`` -> ``keras.layers.Dense(units=8)`` (names checked by the recipe layer)."""
    from mtlcli import layer_table

    if isinstance(spec, str):
        spec = {spec: {}}
    ((layer_name, kwargs),) = spec.items()
    entry = layer_table.table()[layer_name]
    kwargs = dict(kwargs or {})
    if name and "name" not in kwargs:
        kwargs["name"] = name
    return getattr(keras.layers, entry["class"])(**kwargs)


def make_loss(name: str) -> keras.losses.Loss:
    """Per-example loss objects (reduction 'none'); tasks are reduced with their label masks."""
    if name == "sparse_categorical_crossentropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    if name == "binary_crossentropy":
        return keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)
    if name == "binary_focal_crossentropy":
        return keras.losses.BinaryFocalCrossentropy(from_logits=True, reduction=None)
    if name == "mse":
        return keras.losses.MeanSquaredError(reduction=None)
    if name == "mae":
        return keras.losses.MeanAbsoluteError(reduction=None)
    if name == "huber":
        return keras.losses.Huber(reduction=None)
    if name == "log_cosh":
        return keras.losses.LogCosh(reduction=None)
    raise ValueError(f"unknown loss {name!r}")


@keras.saving.register_keras_serializable(package=PACKAGE)
class RegressionMetric(keras.metrics.Metric):
    """MAE / MSE / RMSE / R² in the target's original units (targets are standardised for training)."""

    def __init__(self, kind: str = "mae", mean: float = 0.0, std: float = 1.0, name: str | None = None, **kw):
        super().__init__(name=name or kind, **kw)
        self.kind, self.mean, self.std = kind, float(mean), float(std)
        self.total_w = self.add_variable(shape=(), initializer="zeros", name="total_w")
        self.abs_err = self.add_variable(shape=(), initializer="zeros", name="abs_err")
        self.sq_err = self.add_variable(shape=(), initializer="zeros", name="sq_err")
        self.sum_y = self.add_variable(shape=(), initializer="zeros", name="sum_y")
        self.sum_y2 = self.add_variable(shape=(), initializer="zeros", name="sum_y2")

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
        self.abs_err.assign_add(tf.reduce_sum(w * tf.abs(err)))
        self.sq_err.assign_add(tf.reduce_sum(w * err * err))
        self.sum_y.assign_add(tf.reduce_sum(w * y_true))
        self.sum_y2.assign_add(tf.reduce_sum(w * y_true * y_true))

    def result(self):
        n = tf.maximum(self.total_w, 1e-12)
        mse = self.sq_err / n
        if self.kind == "mae":
            return self.abs_err / n
        if self.kind == "mse":
            return mse
        if self.kind == "rmse":
            return tf.sqrt(mse)
        var = self.sum_y2 / n - tf.square(self.sum_y / n)
        return 1.0 - mse / tf.maximum(var, 1e-12)

    def get_config(self):
        return {"kind": self.kind, "mean": self.mean, "std": self.std, "name": self.name}


def make_metric(metric: str, task_type: str, task: str, target: dict) -> keras.metrics.Metric:
    name = f"{task}_{metric}"
    if task_type == "regression":
        return RegressionMetric(metric, target["mean"], target["std"], name=name)
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


def _grads(tape, target, variables, output_gradients=None) -> list:
    """``tape.gradient`` with zeros for unconnected variables (Keras variables report dtype as a string,
    which ``UnconnectedGradients.ZERO`` cannot handle)."""
    grads = tape.gradient(target, variables, output_gradients=output_gradients)
    return [
        g if g is not None else tf.zeros(v.shape, tf.float32) for g, v in zip(grads, variables, strict=True)
    ]


def _flatten(tensors: list) -> tf.Tensor:
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


# ------------------------------------------------------------------------------------------------
# The model


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiTaskModel(keras.Model):
    """A shared trunk and one head per task; dict inputs and dict outputs keyed by name.

    ``spec`` is plain JSON-able data (built by :func:`spec_from_recipe`) and is the whole config: the
    saved model carries the layer specs, the task definitions, the weighting strategy and the
    preprocessing statistics, so ``mtl evaluate`` needs nothing else.
    """

    def __init__(self, spec: dict[str, Any], **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.task_names = list(spec["tasks"])
        self.input_names = list(spec["inputs"])
        self.trunk = [make_layer(s, f"shared_{i}") for i, s in enumerate(spec["shared"])]
        self.heads = {}
        for task, t in spec["tasks"].items():
            layers = [make_layer(s, f"{task}_hidden_{i}") for i, s in enumerate(t["head"])]
            if t.get("output"):
                layers.append(make_layer(t["output"], f"{task}_output"))
            else:
                layers.append(keras.layers.Dense(t["units"], name=f"{task}_output"))
            self.heads[task] = layers
        self.strategy = weighting.get(spec["weighting"])
        self.losses_fn = {t: make_loss(spec["tasks"][t]["loss"]) for t in self.task_names}
        self.task_weights = np.array([spec["tasks"][t]["weight"] for t in self.task_names], np.float32)
        total = float(self.task_weights.sum())
        # Validation/evaluation loss: the recipe's static weights normalised to sum 1, whatever the
        # strategy, so it is comparable across epochs and strategies (used for early stopping).
        self.eval_weights = (
            self.task_weights / total
            if total > 0
            else np.full_like(self.task_weights, 1 / len(self.task_weights))
        )
        # Trackers (reset by Keras each epoch through the ``metrics`` property).
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = {t: keras.metrics.Mean(name=f"{t}_loss") for t in self.task_names}
        self.weight_trackers = {t: keras.metrics.Mean(name=f"{t}_weight") for t in self.task_names}
        self.task_metrics = {
            t: [
                make_metric(m, spec["tasks"][t]["type"], t, spec["preprocessing"]["targets"][t])
                for m in spec["tasks"][t]["metrics"]
            ]
            for t in self.task_names
        }
        n = len(self.task_names)
        self.gradient_based = self.strategy.needs == "gradients"
        self.on_representation = getattr(self.strategy, "on", "parameters") == "representation"
        self.pairs = [(i, j) for i in range(n) for j in range(i + 1, n)] if self.gradient_based else []
        self.cos_trackers = {
            (i, j): keras.metrics.Mean(name=f"cos_{self.task_names[i]}_{self.task_names[j]}")
            for i, j in self.pairs
        }
        # Strategy parameters (trained by Adam) and state (saved in checkpoints), plus step bookkeeping.
        self.strategy_params = {
            k: self.add_weight(
                shape=shape, initializer=keras.initializers.Constant(v), name=f"strategy_{k}", trainable=True
            )
            for k, (shape, v) in self.strategy.param_spec(n).items()
        }
        self.strategy_state = {
            k: self.add_weight(
                shape=shape, initializer=keras.initializers.Constant(v), name=f"state_{k}", trainable=False
            )
            for k, (shape, v) in self.strategy.state_spec(n).items()
        }
        self.epoch_var = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", name="epoch", trainable=False
        )
        self.seen_epoch = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", name="seen_epoch", trainable=False
        )
        self.seed = int(spec.get("seed", 0))

    # -- structure ------------------------------------------------------------------------------
    def build(self, input_shape=None):
        shapes = {k: (None, *v) for k, v in self.spec["input_shapes"].items()}
        if len(shapes) == 1:
            shape = next(iter(shapes.values()))
        else:
            shape = (None, sum(int(np.prod(s[1:])) for s in shapes.values()))
        for layer in self.trunk:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.representation_shape = shape
        for layers in self.heads.values():
            s = shape
            for layer in layers:
                layer.build(s)
                s = layer.compute_output_shape(s)
        self.built = True

    def represent(self, inputs, training=False):
        """The shared representation ``z``."""
        if len(self.input_names) == 1:
            h = inputs[self.input_names[0]]
        else:
            h = tf.concat(
                [
                    tf.reshape(tf.cast(inputs[k], self.compute_dtype), [tf.shape(inputs[k])[0], -1])
                    for k in self.input_names
                ],
                axis=-1,
            )
        for layer in self.trunk:
            h = layer(h, training=training)
        return h

    def heads_from(self, z, training=False):
        out = {}
        for task, layers in self.heads.items():
            h = z
            for layer in layers:
                h = layer(h, training=training)
            out[task] = h
        return out

    def call(self, inputs, training=False):
        return self.heads_from(self.represent(inputs, training=training), training=training)

    @property
    def shared_variables(self) -> list:
        return [v for layer in self.trunk for v in layer.trainable_variables]

    @property
    def head_variables(self) -> list:
        return [v for layers in self.heads.values() for layer in layers for v in layer.trainable_variables]

    @property
    def metrics(self):
        out = [self.loss_tracker, *self.task_loss_trackers.values(), *self.weight_trackers.values()]
        for ms in self.task_metrics.values():
            out.extend(ms)
        return out + list(self.cos_trackers.values())

    # -- losses ---------------------------------------------------------------------------------
    def task_losses(self, y, preds, mask):
        """Per-task masked mean losses, as one ``(T,)`` float32 vector, and label counts."""
        losses, counts = [], []
        for task in self.task_names:
            per_example = self.losses_fn[task](y[task], tf.cast(preds[task], tf.float32))
            per_example = tf.reshape(per_example, [-1])
            m = tf.cast(mask[task], tf.float32)
            count = tf.reduce_sum(m)
            losses.append(tf.math.divide_no_nan(tf.reduce_sum(per_example * m), count))
            counts.append(count)
        return tf.stack(losses), tf.stack(counts)

    def _context(self):
        step = tf.cast(self.optimizer.iterations, tf.int64)
        epoch = tf.cast(self.epoch_var, tf.int64)
        new_epoch = tf.logical_and(tf.not_equal(epoch, self.seen_epoch), epoch > 0)
        self.seen_epoch.assign(epoch)
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        return weighting.Context(
            step=step,
            epoch=epoch,
            seed=seed,
            task_weights=tf.constant(self.task_weights),
            new_epoch=new_epoch,
        )

    def _params(self):
        return {k: tf.convert_to_tensor(v) for k, v in self.strategy_params.items()}

    def _state(self):
        return {k: tf.convert_to_tensor(v) for k, v in self.strategy_state.items()}

    def _assign_state(self, state):
        for k, v in state.items():
            self.strategy_state[k].assign(tf.cast(v, self.strategy_state[k].dtype))

    # -- steps ----------------------------------------------------------------------------------
    def train_step(self, data):
        x, y, mask = data
        ctx = self._context()
        shared = self.shared_variables
        heads = self.head_variables
        params = list(self.strategy_params.values())
        with tf.GradientTape(persistent=self.gradient_based) as tape:
            z = self.represent(x, training=True)
            preds = self.heads_from(z, training=True)
            losses, counts = self.task_losses(y, preds, mask)
            if self.gradient_based:
                task_losses = tf.unstack(losses)  # inside the tape: each row is differentiated below
            else:
                result = self.strategy.combine(losses, self._params(), self._state(), ctx)
                objective = result.loss
        if not self.gradient_based:
            variables = shared + heads + params
            grads = tape.gradient(objective, variables)
        else:
            if self.on_representation:
                rows = [tape.gradient(loss, z) for loss in task_losses]
                J = tf.stack([tf.reshape(r if r is not None else tf.zeros_like(z), [-1]) for r in rows])
            else:
                J = tf.stack([_flatten(_grads(tape, loss, shared)) for loss in task_losses])
            J = tf.cast(J, tf.float32)
            result = self.strategy.aggregate(J, losses, self._params(), self._state(), ctx)
            if self.on_representation:
                # sum_i w_i dL_i/dtheta in one backward pass (output_gradients weights the loss vector)
                w = tf.stop_gradient(tf.cast(result.weights, losses.dtype))
                shared_grads = _grads(tape, losses, shared, output_gradients=w)
            else:
                shared_grads, offset = [], 0
                for v in shared:
                    size = int(np.prod(v.shape))
                    shared_grads.append(tf.reshape(result.direction[offset : offset + size], v.shape))
                    offset += size
            # Each head gets the plain gradient of its own loss (gradient of the unweighted sum).
            head_grads = _grads(tape, losses, heads)
            param_grads = [
                (result.param_grads or {}).get(k, tf.zeros_like(v)) for k, v in self.strategy_params.items()
            ]
            variables = shared + heads + params
            grads = list(shared_grads) + list(head_grads) + param_grads
            gram = tf.matmul(J, J, transpose_b=True)
            norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
            for (i, j), tracker in self.cos_trackers.items():
                tracker.update_state(tf.math.divide_no_nan(gram[i, j], norms[i] * norms[j]))
            objective = tf.reduce_sum(tf.stop_gradient(tf.cast(result.weights, losses.dtype)) * losses)
            del tape
        pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        new_state = result.state
        if self.strategy.needs_losses_after_step:
            after, _ = self.task_losses(y, self(x, training=False), mask)
            new_state = self.strategy.after_step(losses, after, self._params(), new_state, ctx)
        self._assign_state(new_state)
        self._track(losses, counts, y, preds, mask, objective, result.weights)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y, mask = data
        preds = self(x, training=False)
        losses, counts = self.task_losses(y, preds, mask)
        objective = tf.reduce_sum(tf.constant(self.eval_weights) * losses)
        self._track(losses, counts, y, preds, mask, objective, tf.constant(self.eval_weights))
        return {m.name: m.result() for m in self.metrics if not m.name.startswith("cos_")}

    def _track(self, losses, counts, y, preds, mask, objective, weights):
        self.loss_tracker.update_state(objective)
        weights = tf.cast(weights, tf.float32)
        for i, task in enumerate(self.task_names):
            self.task_loss_trackers[task].update_state(losses[i], sample_weight=counts[i])
            self.weight_trackers[task].update_state(weights[i])
            for metric in self.task_metrics[task]:
                metric.update_state(y[task], tf.cast(preds[task], tf.float32), sample_weight=mask[task])

    # -- serialization --------------------------------------------------------------------------
    def get_config(self):
        return {"spec": self.spec, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def spec_from_recipe(recipe, prep, seed: int) -> dict[str, Any]:
    """The JSON-able model spec: everything needed to rebuild and evaluate the model."""
    tasks = {}
    for task, t in recipe.model.tasks.items():
        target = prep.targets[task]
        tasks[task] = {
            "type": t.type,
            "head": list(t.head),
            "output": t.output,
            "units": target.units,
            "loss": recipe.loss(task),
            "metrics": recipe.metrics(task),
            "weight": float(t.weight),
        }
    prep_dict = prep.to_dict()
    shapes = {k: list(v) for k, v in prep.input_shapes().items()}
    return {
        "format": 1,
        "name": recipe.name,
        "seed": int(seed),
        "inputs": {k: v["kind"] for k, v in prep_dict["inputs"].items()},
        "input_shapes": shapes,
        "shared": list(recipe.model.shared),
        "tasks": tasks,
        "weighting": recipe.train.weighting,
        "preprocessing": prep_dict,
    }


def count_params(variables) -> int:
    return int(sum(math.prod(v.shape) for v in variables))
