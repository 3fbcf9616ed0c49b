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

import contextlib
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtlcli import distribute, weighting
from mtlcli.model import architectures as arch
from mtlcli.model.architectures import make_layer  # noqa: F401  (re-exported: the recipe-name -> layer map)
from mtlcli.model.embedding import CategoryEmbedding, embedded_inputs
from mtlcli.recipe import dependencies

PACKAGE = "mtl"


# ------------------------------------------------------------------------------------------------
# Layers, losses, metrics from recipe names


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


@keras.saving.register_keras_serializable(package=PACKAGE)
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


def make_metric(metric: str, task_type: str, task: str, target: dict) -> keras.metrics.Metric:
    name = f"{task}_{metric}"
    from mtlcli.model import target_metrics  # multilabel and several-column regression targets

    special = target_metrics.make(metric, task_type, task, target)
    if special is not None:
        return special
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


def _float32_output(spec):
    """Output layers compute in float32 under mixed precision (stable softmax/sigmoid and losses)."""
    if isinstance(spec, str):
        spec = {spec: {}}
    ((name, kwargs),) = spec.items()
    return {name: {"dtype": "float32", **(kwargs or {})}}


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
    """A multi-task network (``spec["architecture"]``); dict inputs and dict outputs keyed by name.

    Every architecture splits into a shared part and a task-specific part at one tensor, the shared
    representation ``z = represent(x)``; ``heads_from(z)`` computes every task's output from ``z`` alone.
    ``shared_variables`` are the variables upstream of ``z`` (:meth:`shared_layers`), ``head_variables``
    those downstream (:meth:`task_layers` of every task), and together with the strategy's parameters
    they are all of ``trainable_variables``:

    * ``hard_sharing``: shared = ``model.shared`` (the trunk); ``z`` = its output; task = each tower.
    * ``mmoe``/``cgc``: shared = ``model.shared`` (a common bottom, may be empty) and the shared experts;
      ``z`` = the shared experts' outputs and the gates' input, flattened and joined; task = each task's
      gate, its own experts (cgc) and its tower.
    * ``ple``: shared = the bottom, every level below the top one (task experts and gates included:
      every task reaches them through the shared gates) and the top shared experts; ``z`` = the top
      shared experts' outputs and each task's input to the top level; task = as cgc at the top level.
    * ``cross_stitch``: shared = every task column and every cross-stitch unit but the last (each task
      reads every column); ``z`` = the columns' outputs; task = its own row of the last mixing, its tower.

    A task with ``inputs_from`` also reads those tasks' outputs (``click``) or last hidden layers
    (``click.hidden``: the input of click's output layer); its tower's input is its own flattened input
    joined with them, and gradients flow into the tasks it reads (up to, not into, the output layer of a
    hidden read). Those variables stay the read task's own.

    Categorical inputs with ``encoding: embedding`` arrive as ids; their :class:`CategoryEmbedding`
    tables (``input_embeddings``) are looked up before the inputs are joined and are shared in every
    architecture (the first of :meth:`shared_layers`).

    ``spec`` is plain JSON-able data (built by :func:`spec_from_recipe`) and is the whole config: the
    saved model carries the layer specs, the task definitions, the weighting strategy and the
    preprocessing statistics, so ``mtl evaluate`` needs nothing else.
    """

    def __init__(self, spec: dict[str, Any], **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.task_names = list(spec["tasks"])
        self.input_names = list(spec["inputs"])
        self._make_structure(spec)
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
        self.task_loss_tracker = VectorMean([f"{t}_loss" for t in self.task_names], name="task_losses")
        self.weight_tracker = VectorMean([f"{t}_weight" for t in self.task_names], name="task_weights")
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
        # pairwise cosines of the task gradients on the shared layers (gradient-based strategies only)
        self.cos_tracker = (
            VectorMean(
                [f"cos_{self.task_names[i]}_{self.task_names[j]}" for i, j in self.pairs], name="cosines"
            )
            if self.pairs
            else None
        )
        # Strategy parameters (trained by Adam) and state (saved in checkpoints), plus step bookkeeping.
        self.strategy_params = {
            k: self.add_weight(
                shape=shape, initializer=keras.initializers.Constant(v), name=f"strategy_{k}", trainable=True
            )
            for k, (shape, v) in self.strategy.param_spec(n).items()
        }
        # State is assigned inside the train step: under tf.distribute every replica computes the same
        # value, and "only_first_replica" makes that assignment legal on mirrored variables.
        self.strategy_state = {
            k: self.add_weight(
                shape=shape,
                initializer=keras.initializers.Constant(v),
                name=f"state_{k}",
                trainable=False,
                aggregation="only_first_replica",
            )
            for k, (shape, v) in self.strategy.state_spec(n).items()
        }
        self.epoch_var = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", name="epoch", trainable=False
        )
        self.seen_epoch = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int64",
            name="seen_epoch",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.seed = int(spec.get("seed", 0))
        # The last train step's raw per-task losses and whether its update was applied, read by the
        # runner's non-finite check (plain tf.Variables: not model weights, not saved). With
        # ``skip_nonfinite`` (``train.on_nan: skip_batch``, set by the runner) a batch whose losses or
        # gradients are not all finite changes nothing: no update, no strategy state, no metrics.
        self.skip_nonfinite = False
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA  # replica-identical values (tf.distribute)
        self.batch_losses = tf.Variable(
            tf.zeros([n]), trainable=False, name="batch_losses", aggregation=first
        )
        self.batch_applied = tf.Variable(True, trainable=False, name="batch_applied", aggregation=first)

    # -- structure ------------------------------------------------------------------------------
    def _make_structure(self, spec: dict[str, Any]) -> None:
        """Create the layers of ``spec["architecture"]`` (built with their shapes in :meth:`build`)."""
        a = dict(spec.get("architecture") or {"name": "hard_sharing"})
        self.architecture = a["name"]
        self.head_order = task_order(
            {t: [d for d, _ in dependencies(s.get("inputs_from"))] for t, s in spec["tasks"].items()}
        )
        tasks, n_tasks = self.task_names, len(self.task_names)
        # Shared part (upstream of the representation z), starting with the categorical embeddings.
        self.input_embeddings = {
            name: CategoryEmbedding(rows, dim, name=f"{name}_embedding")
            for name, (rows, dim) in embedded_inputs(spec).items()
        }
        bottom = self.architecture in ("hard_sharing", "mmoe", "cgc", "ple")
        self.trunk = [make_layer(s, f"shared_{i}") for i, s in enumerate(spec["shared"])] if bottom else []
        self.levels, self.top_experts, self.columns, self.stitches = [], None, {}, []
        # Task-specific part: one block per task between z and its tower, then the tower.
        self.task_blocks = {}
        if self.architecture in ("mmoe", "cgc", "ple"):
            count, layers = int(a["experts"]["count"]), list(a["experts"]["layers"])
            own = 0 if self.architecture == "mmoe" else int(a["task_experts"])
            depth = int(a["levels"]) if self.architecture == "ple" else 1
            self.levels = [
                arch.ExtractionLevel(tasks, count, own, layers, name=f"level_{i}") for i in range(depth - 1)
            ]
            self.top_experts = arch.Experts(count, layers, name="shared_experts")
            self.task_blocks = {
                t: arch.TaskExtraction(count, own, layers, name=f"{t}_extraction") for t in tasks
            }
        elif self.architecture == "cross_stitch":
            self.columns = {
                t: [make_layer(s, f"{t}_column_{i}") for i, s in enumerate(spec["shared"])] for t in tasks
            }
            self.stitches = [
                arch.CrossStitch(n_tasks, name=f"cross_stitch_{i}") for i in range(len(spec["shared"]) - 1)
            ]
            self.task_blocks = {
                t: arch.CrossStitch(n_tasks, rows=[k], name=f"{t}_cross_stitch") for k, t in enumerate(tasks)
            }
        elif self.architecture != "hard_sharing":
            raise ValueError(f"unknown architecture {self.architecture!r}")
        self.towers = {}
        for task, t in spec["tasks"].items():
            layers = [make_layer(s, f"{task}_hidden_{i}") for i, s in enumerate(t["head"])]
            if t.get("output"):
                layers.append(make_layer(_float32_output(t["output"]), f"{task}_output"))
            else:
                layers.append(keras.layers.Dense(t["units"], name=f"{task}_output", dtype="float32"))
            self.towers[task] = layers

    def _inputs_from(self, task: str) -> list[tuple[str, str]]:
        """``(task, "output" | "hidden")`` for each entry of the task's ``inputs_from``."""
        return dependencies(self.spec["tasks"][task].get("inputs_from"))

    def build(self, input_shape=None):
        shapes = {k: (None, *v) for k, v in self.spec["input_shapes"].items()}
        for name, layer in self.input_embeddings.items():  # ids (batch, 1) -> vectors (batch, dim)
            layer.build(shapes[name])
            shapes[name] = layer.compute_output_shape(shapes[name])
        if len(shapes) == 1:
            shape = next(iter(shapes.values()))
        else:
            shape = (None, sum(int(np.prod(s[1:])) for s in shapes.values()))
        shape = arch.build_layers(self.trunk, shape)
        n_tasks = len(self.task_names)
        if self.architecture == "hard_sharing":
            parts, bases = [shape], dict.fromkeys(self.task_names, shape)
        elif self.architecture == "cross_stitch":
            cols = [shape] * n_tasks
            for i in range(len(self.spec["shared"])):
                cols = [
                    arch.build_layers([self.columns[t][i]], cols[k]) for k, t in enumerate(self.task_names)
                ]
                if i < len(self.stitches):
                    self.stitches[i].build(cols)
            parts, bases = cols, {}
            for k, t in enumerate(self.task_names):
                self.task_blocks[t].build(cols)
                bases[t] = cols[k]
        else:
            shared_in, task_ins = shape, [shape] * n_tasks
            for level in self.levels:
                level.build([shared_in, *task_ins])
                shared_in, *task_ins = level.compute_output_shape([shared_in, *task_ins])
            self.top_experts.build(shared_in)
            stacked = self.top_experts.compute_output_shape(shared_in)
            parts, bases = [stacked, *(task_ins if self.levels else [shape])], {}
            for k, t in enumerate(self.task_names):
                selector = parts[1 + k] if self.levels else parts[1]
                self.task_blocks[t].build([selector, stacked])
                bases[t] = self.task_blocks[t].compute_output_shape([selector, stacked])
        # z: the trunk output itself (hard sharing), else the flattened parts joined (see represent).
        self.z_parts = [tuple(int(d) for d in p[1:]) for p in parts]
        if self.architecture == "hard_sharing":
            self.representation_shape = tuple(shape)
        else:
            self.representation_shape = (None, sum(arch.flat_size(p) for p in parts))
        read = {}  # (task, "hidden" | "output") -> shape
        for t in self.head_order:
            s = bases[t]
            deps = self._inputs_from(t)
            if deps:
                s = (None, arch.flat_size(s) + sum(arch.flat_size(read[d]) for d in deps))
            read[(t, "hidden")] = arch.build_layers(self.towers[t][:-1], s)
            read[(t, "output")] = arch.build_layers(self.towers[t][-1:], read[(t, "hidden")])
        self.built = True

    def _joined(self, inputs):
        """The model inputs as one tensor: a single input as it is, several flattened and concatenated.
        Categorical inputs with ``encoding: embedding`` are looked up in their tables first."""
        if self.input_embeddings:
            inputs = dict(inputs)
            for name, layer in self.input_embeddings.items():
                inputs[name] = layer(inputs[name])
        if len(self.input_names) == 1:
            return inputs[self.input_names[0]]
        return tf.concat(
            [
                tf.reshape(tf.cast(inputs[k], self.compute_dtype), [tf.shape(inputs[k])[0], -1])
                for k in self.input_names
            ],
            axis=-1,
        )

    def _pack(self, parts: list):
        return tf.concat([arch.flatten(p) for p in parts], axis=-1)

    def _unpack(self, z) -> list:
        sizes = [math.prod(p) for p in self.z_parts]
        pieces = tf.split(z, sizes, axis=-1) if len(sizes) > 1 else [z]
        return [tf.reshape(x, [-1, *p]) for x, p in zip(pieces, self.z_parts, strict=True)]

    def _bottom_levels(self, h, training=False, gates: dict | None = None):
        """MMoE/CGC/PLE below the top level: returns ``(shared_input, task_inputs)`` of the top level."""
        shared_in, task_ins = h, [h] * len(self.task_names)
        for i, level in enumerate(self.levels):
            if gates is not None:
                for k, t in enumerate(self.task_names):
                    gates[f"level_{i}/{t}"] = level.task_parts[k].gate.weights_for(task_ins[k])
                gates[f"level_{i}/shared"] = level.shared_gate.weights_for(shared_in)
            shared_in, *task_ins = level([shared_in, *task_ins], training=training)
        return shared_in, task_ins

    def represent(self, inputs, training=False):
        """The shared representation ``z``: every task-specific layer reads only ``z``.

        ``hard_sharing``: the trunk's output. ``mmoe``/``cgc``: the top shared experts' outputs and the
        gates' input, flattened and joined. ``ple``: the top shared experts' outputs and each task's input
        to the top level. ``cross_stitch``: every column's output after the last layer (before each
        task's own final mixing).
        """
        h = self._joined(inputs)
        for layer in self.trunk:
            h = layer(h, training=training)
        if self.architecture == "hard_sharing":
            return h
        if self.architecture == "cross_stitch":
            cols = [h] * len(self.task_names)
            for i in range(len(self.spec["shared"])):
                cols = [self.columns[t][i](cols[k], training=training) for k, t in enumerate(self.task_names)]
                if i < len(self.stitches):
                    cols = self.stitches[i](cols)
            return self._pack(cols)
        shared_in, task_ins = self._bottom_levels(h, training=training)
        stacked = self.top_experts(shared_in, training=training)
        return self._pack([stacked, *(task_ins if self.levels else [h])])

    def heads_from(self, z, training=False):
        """Task outputs from the shared representation ``z`` (a dict keyed by task)."""
        if self.architecture == "hard_sharing":
            bases = dict.fromkeys(self.task_names, z)
        else:
            parts = self._unpack(z)
            bases = {}
            for k, t in enumerate(self.task_names):
                if self.architecture == "cross_stitch":
                    bases[t] = self.task_blocks[t](parts)[0]
                else:
                    selector = parts[1 + k] if self.levels else parts[1]
                    bases[t] = self.task_blocks[t]([selector, parts[0]], training=training)
        read = {}  # (task, "hidden" | "output") -> tensor, for the tasks that read them
        for t in self.head_order:
            h = bases[t]
            deps = self._inputs_from(t)
            if deps:
                h = tf.concat([arch.flatten(h), *(tf.cast(arch.flatten(read[d]), h.dtype) for d in deps)], -1)
            for layer in self.towers[t][:-1]:
                h = layer(h, training=training)
            read[(t, "hidden")] = h  # the input of the output layer
            read[(t, "output")] = self.towers[t][-1](h, training=training)
        return {t: read[(t, "output")] for t in self.task_names}

    def call(self, inputs, training=False):
        return self.heads_from(self.represent(inputs, training=training), training=training)

    def gate_weights(self, inputs) -> dict:
        """Per-example softmax gate weights of MMoE/CGC/PLE: ``{"<task>": (batch, experts)}`` for the top
        level (shared experts first, then the task's own), plus ``"level_<i>/<task>"`` and
        ``"level_<i>/shared"`` for PLE's lower levels. Empty for the other architectures."""
        if self.top_experts is None:
            return {}
        h = self._joined(inputs)
        for layer in self.trunk:
            h = layer(h, training=False)
        gates: dict = {}
        _, task_ins = self._bottom_levels(h, gates=gates)
        for k, t in enumerate(self.task_names):
            gates[t] = self.task_blocks[t].gate.weights_for(task_ins[k])
        return gates

    def shared_layers(self) -> list:
        """Every layer upstream of ``z``: its variables get gradients from several tasks."""
        out = [*self.input_embeddings.values(), *self.trunk, *self.levels]
        if self.top_experts is not None:
            out.append(self.top_experts)
        out.extend(layer for t in self.task_names for layer in self.columns.get(t, []))
        return out + list(self.stitches)

    def task_layers(self, task: str) -> list:
        """The layers only ``task`` reads: its gate and its own top-level experts, or its final
        cross-stitch row; then its tower (``head`` + output)."""
        block = [self.task_blocks[task]] if task in self.task_blocks else []
        return block + list(self.towers[task])

    @property
    def heads(self) -> dict:
        """``task -> task-specific layers`` (:meth:`task_layers`)."""
        return {t: self.task_layers(t) for t in getattr(self, "task_names", [])}

    def task_variables(self, task: str) -> list:
        return [v for layer in self.task_layers(task) for v in layer.trainable_variables]

    def _in_keras_order(self, variables: list) -> list:
        # Keras builds a loaded model's optimizer slots in ``trainable_variables`` order, so the train
        # step must hand variables to the optimizer in that order too (all shared ones come first:
        # the shared layers are created before the task-specific ones).
        ids = {id(v) for v in variables}
        return [v for v in self.trainable_variables if id(v) in ids]

    @property
    def shared_variables(self) -> list:
        return self._in_keras_order([v for layer in self.shared_layers() for v in layer.trainable_variables])

    @property
    def head_variables(self) -> list:
        return self._in_keras_order([v for t in self.task_names for v in self.task_variables(t)])

    @property
    def metrics(self):
        out = [self.loss_tracker, self.task_loss_tracker, self.weight_tracker]
        for ms in self.task_metrics.values():
            out.extend(ms)
        return out + ([self.cos_tracker] if self.cos_tracker is not None else [])

    def _results(self, cosines: bool = True) -> dict:
        """The logs of a step: every metric's result, dict results flattened."""
        logs = {}
        for m in self.metrics:
            if m is self.cos_tracker and not cosines:
                continue
            result = m.result()
            if isinstance(result, dict):
                logs.update(result)
            else:
                logs[m.name] = result
        return logs

    # -- losses ---------------------------------------------------------------------------------
    def task_losses(self, y, preds, mask):
        """Per-task masked mean losses, as one ``(T,)`` float32 vector, and label counts.

        Under tf.distribute with several replicas each replica returns its share of the *global* batch's
        losses, ``sum_local(m * l) / count_global`` (the label counts summed over the replicas), so the
        replicas' losses and gradients add up to the single-device ones; the counts returned are local.
        """
        if distribute.replicas() > 1:
            sums, counts = self._task_sums(y, preds, mask)
            return tf.math.divide_no_nan(sums, distribute.all_sum(counts)), counts
        losses, counts = [], []
        for task in self.task_names:
            per_example = self.losses_fn[task](y[task], tf.cast(preds[task], tf.float32))
            per_example = tf.reshape(per_example, [-1])
            m = tf.cast(mask[task], tf.float32)
            count = tf.reduce_sum(m)
            # class weights multiply the per-row losses; the mean is still over the labelled rows
            w = mask.get(f"{task}.weight") if isinstance(mask, dict) else None
            weighted = m if w is None else m * tf.cast(tf.reshape(w, [-1]), tf.float32)
            losses.append(tf.math.divide_no_nan(tf.reduce_sum(per_example * weighted), count))
            counts.append(count)
        return tf.stack(losses), tf.stack(counts)

    def _task_sums(self, y, preds, mask):
        """Per-task sums of the (class-weighted) masked per-example losses and the label counts."""
        sums, counts = [], []
        for task in self.task_names:
            per_example = self.losses_fn[task](y[task], tf.cast(preds[task], tf.float32))
            per_example = tf.reshape(per_example, [-1])
            m = tf.cast(mask[task], tf.float32)
            w = mask.get(f"{task}.weight") if isinstance(mask, dict) else None
            weighted = m if w is None else m * tf.cast(tf.reshape(w, [-1]), tf.float32)
            sums.append(tf.reduce_sum(per_example * weighted))
            counts.append(tf.reduce_sum(m))
        return tf.stack(sums), tf.stack(counts)

    def _combine_global(self, losses, reported, ctx, replicas):
        """A loss-based strategy under tf.distribute: ``combine`` sees the global losses ``reported`` and
        each replica back-propagates ``sum_i dC/dL_i * L_r,i + C / replicas``; summed over the replicas
        (as the optimizer does) its gradient is the single-device gradient of ``C(L)`` for the model and
        for the strategy's own parameters. Returns (result, per-replica surrogate)."""
        with tf.GradientTape() as inner:
            inner.watch(reported)
            result = self.strategy.combine(reported, self._params(), self._state(), ctx)
        slopes = inner.gradient(result.loss, reported)
        slopes = tf.zeros_like(reported) if slopes is None else tf.stop_gradient(slopes)
        return result, tf.reduce_sum(slopes * losses) + result.loss / replicas

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # keras-team/keras#20585 (Keras 3.15): under a tf.distribute strategy ``fit`` averages the first
        # PerReplica batch (MEAN), which fails under MultiWorkerMirroredStrategy and whenever the
        # replicas' shares differ in size (a global batch that does not divide evenly); the build only
        # needs shapes, so build from the first replica's batch instead. (mtlcli.distribute refuses
        # untested Keras versions for multi_worker.)
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is None or strategy is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tf.nest.map_structure(
                lambda v: (
                    strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                batch,
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def _get_metrics_result_or_logs(self, logs):
        # Under tf.distribute the epoch's logs are the metrics read across replicas (global values);
        # Keras only does that when the step's keys equal ``metrics`` (not for test_step, which leaves
        # out the cosines), else it returns the last step's per-replica mean.
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is None or strategy.num_replicas_in_sync == 1 or not isinstance(logs, dict):
            return super()._get_metrics_result_or_logs(logs)
        results = self.get_metrics_result()
        return {k: results.get(k, v) for k, v in logs.items()}

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
        # Several replicas (tf.distribute, decided at trace time): ``losses`` is this replica's share of
        # the global batch's losses (see task_losses), ``reported`` their sum over the replicas (the
        # global losses every strategy sees, tracked and checked), ``counts`` the global label counts
        # split evenly (so per-task loss means read the same on every replica). The optimizer sums the
        # replicas' gradients. One replica: ``reported is losses`` and nothing else changes.
        replicas = distribute.replicas()
        with tf.GradientTape(persistent=self.gradient_based) as tape:
            z = self.represent(x, training=True)
            preds = self.heads_from(z, training=True)
            losses, counts = self.task_losses(y, preds, mask)
            reported = losses
            if replicas > 1:
                reported = distribute.all_sum(tf.stop_gradient(losses))
                counts = distribute.all_sum(counts) / replicas
            if self.gradient_based:
                task_losses = tf.unstack(losses)  # inside the tape: each row is differentiated below
            elif replicas > 1:
                result, surrogate = self._combine_global(losses, reported, ctx, replicas)
                objective = result.loss
            else:
                result = self.strategy.combine(losses, self._params(), self._state(), ctx)
                objective = result.loss
        if not self.gradient_based:
            variables = shared + heads + params
            grads = tape.gradient(objective if replicas == 1 else surrogate, variables)
        else:
            if self.on_representation:
                rows = [tape.gradient(loss, z) for loss in task_losses]
                J = tf.stack([tf.reshape(r if r is not None else tf.zeros_like(z), [-1]) for r in rows])
            else:
                J = tf.stack([_flatten(_grads(tape, loss, shared)) for loss in task_losses])
            J = tf.cast(J, tf.float32)
            if replicas > 1 and self.on_representation:
                # Rows over the representation hold per-example blocks: the global rows are the
                # replicas' blocks side by side, so only the Gramian adds up. The strategy (weighting =
                # True: a function of the Gramian) gets a T x T factor of the global Gramian.
                J = distribute.gram_factor(distribute.all_sum(tf.matmul(J, J, transpose_b=True)))
            elif replicas > 1:
                J = distribute.all_sum(J)  # the task gradients of the global batch
            result = self.strategy.aggregate(J, reported, self._params(), self._state(), ctx)
            if self.on_representation:
                # sum_i w_i dL_i/dtheta in one backward pass (output_gradients weights the loss vector)
                w = tf.stop_gradient(tf.cast(result.weights, losses.dtype))
                shared_grads = _grads(tape, losses, shared, output_gradients=w)
            else:
                # replicas > 1: every replica holds the global direction; the optimizer's sum restores it
                direction = result.direction if replicas == 1 else result.direction / replicas
                shared_grads, offset = [], 0
                for v in shared:
                    size = int(np.prod(v.shape))
                    shared_grads.append(tf.reshape(direction[offset : offset + size], v.shape))
                    offset += size
            # Each head gets the plain gradient of its own loss (gradient of the unweighted sum).
            head_grads = _grads(tape, losses, heads)
            param_grads = [
                (result.param_grads or {}).get(k, tf.zeros_like(v)) for k, v in self.strategy_params.items()
            ]
            if replicas > 1:
                param_grads = [g / replicas for g in param_grads]
            variables = shared + heads + params
            grads = list(shared_grads) + list(head_grads) + param_grads
            gram = tf.matmul(J, J, transpose_b=True)
            norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
            if self.cos_tracker is not None:
                i, j = (list(t) for t in zip(*self.pairs, strict=True))
                cosines = tf.math.divide_no_nan(
                    tf.gather_nd(gram, list(zip(i, j, strict=True))),
                    tf.gather(norms, i) * tf.gather(norms, j),
                )
                self.cos_tracker.update_state(cosines)
            objective = tf.reduce_sum(tf.stop_gradient(tf.cast(result.weights, losses.dtype)) * reported)
            del tape
        # Apply in Keras's own variable order: a reloaded model builds its optimizer in that order, so
        # the saved Adam slots line up whichever path (fit or a direct train_step) built it first.
        order = {id(v): i for i, v in enumerate(self.trainable_variables)}
        pairs = sorted(
            ((g, v) for g, v in zip(grads, variables, strict=True) if g is not None),
            key=lambda p: order[id(p[1])],
        )
        self.batch_losses.assign(tf.cast(reported, tf.float32))

        def update():
            self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            new_state = result.state
            if self.strategy.needs_losses_after_step:
                after, _ = self.task_losses(y, self(x, training=False), mask)
                if replicas > 1:
                    after = distribute.all_sum(after)
                new_state = self.strategy.after_step(reported, after, self._params(), new_state, ctx)
            self._assign_state(new_state)
            self._track(reported, counts, y, preds, mask, objective, result.weights)
            return tf.constant(True)

        if self.skip_nonfinite:
            checks = [tf.reduce_all(tf.math.is_finite(t)) for t in [losses, *(g for g, _ in pairs)]]
            # (not under tf.distribute: an all-reduce inside tf.cond is refused; the recipe check says so)
            applied = tf.cond(tf.reduce_all(tf.stack(checks)), update, lambda: tf.constant(False))
        else:
            applied = update()
        self.batch_applied.assign(applied)
        return self._step_logs(self._results())

    def test_step(self, data):
        x, y, mask = data
        preds = self(x, training=False)
        losses, counts = self.task_losses(y, preds, mask)
        replicas = distribute.replicas()
        if replicas > 1:  # global losses and evenly split global counts, as in train_step
            losses, counts = distribute.all_sum(losses), distribute.all_sum(counts) / replicas
        objective = tf.reduce_sum(tf.constant(self.eval_weights) * losses)
        self._track(losses, counts, y, preds, mask, objective, tf.constant(self.eval_weights))
        return self._step_logs(self._results(cosines=False))

    @staticmethod
    def _step_logs(logs):
        # tensorflow/tensorflow#72388 (Keras 3.15): under MultiWorkerMirroredStrategy step outputs are
        # reduced along axis 0, which scalars lack. (Per-batch logs under tf.distribute are the replicas'
        # mean of their running results: exact for the loss, weight and per-task loss means, which every
        # replica tracks with global values; per-example metrics are exact in the epoch's logs.)
        if distribute.multi_worker():
            return {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def _track(self, losses, counts, y, preds, mask, objective, weights):
        self.loss_tracker.update_state(objective)
        weights = tf.cast(weights, tf.float32)
        self.task_loss_tracker.update_state(losses, sample_weight=counts)
        self.weight_tracker.update_state(weights)
        for task in self.task_names:
            for metric in self.task_metrics[task]:
                metric.update_state(y[task], tf.cast(preds[task], tf.float32), sample_weight=mask[task])

    # -- serialization --------------------------------------------------------------------------
    def get_config(self):
        return {"spec": self.spec, "name": self.name}

    @classmethod
    def from_config(cls, config):
        with dtype_policy(config["spec"].get("mixed_precision")):
            return cls(**config)


@contextlib.contextmanager
def dtype_policy(mixed_precision: str | None):
    """Create layers under ``mixed_<precision>`` (they keep the policy they were created with)."""
    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy(f"mixed_{mixed_precision}")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


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
            "inputs_from": list(t.inputs_from),
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
        "architecture": recipe.model.architecture_spec(),
        "tasks": tasks,
        "weighting": recipe.train.weighting,
        "mixed_precision": recipe.train.mixed_precision,
        "preprocessing": prep_dict,
    }


def task_order(inputs_from: dict[str, list[str]]) -> list[str]:
    """Tasks in an order where every task comes after the tasks it reads (``inputs_from``); otherwise
    in recipe order. The recipe check has already refused cycles and unknown names."""
    order: list[str] = []
    pending = dict(inputs_from)
    while pending:
        ready = [t for t, deps in pending.items() if all(d in order for d in deps)]
        if not ready:
            raise ValueError(f"tasks read each other's outputs in a cycle: {', '.join(pending)}")
        order.extend(ready)
        for t in ready:
            del pending[t]
    return order


def count_params(variables) -> int:
    return int(sum(math.prod(v.shape) for v in variables))
