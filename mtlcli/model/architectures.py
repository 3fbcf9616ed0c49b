"""Building blocks of the multi-task architectures a recipe can choose (``model.architecture``).

Every block is a registered Keras layer (package ``mtl``) with ``get_config``, so a ``model.keras`` that
uses them loads with ``safe_mode=True``; none runs code from the recipe (no ``Lambda``).

=================  ============================================================================
architecture       blocks
=================  ============================================================================
``hard_sharing``   ``model.shared`` as a trunk, one tower (``head`` + output) per task
``mmoe``           :class:`Experts` shared by all tasks; each task's :class:`TaskExtraction` holds a
                   softmax :class:`Gate` over them (Ma et al., KDD 2018)
``cgc``            as ``mmoe`` plus ``task_experts`` experts per task inside its
                   :class:`TaskExtraction` (Tang et al., RecSys 2020)
``ple``            ``levels - 1`` stacked :class:`ExtractionLevel` blocks (shared experts, task
                   experts, task gates and a shared gate), then a CGC level (Tang et al., 2020)
``cross_stitch``   one column per task (``model.shared`` replicated), a :class:`CrossStitch` unit
                   after each layer (Misra et al., CVPR 2016)
``aitm``           ``model.shared`` as a bottom, one tower per task; along ``model.aitm.order`` each
                   task after the first mixes the previous task's transferred representation and its
                   own by attention (:class:`mtlcli.model.aitm.InformationTransfer`; Xi et al., KDD 2021)
=================  ============================================================================

How the model splits into a shared part and a task-specific part (what the gradient-based weighting
strategies need) is documented on :class:`mtlcli.model.network.Network`.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from mtlcli.model import backbones, sequence  # noqa: F401 - registers the layers make_layer names
from mtlcli.model.gates import DSelectGate
from mtlcli.model.registration import serializable

ARCHITECTURES = ("hard_sharing", "mmoe", "cgc", "ple", "cross_stitch", "aitm")
#: Cross-stitch initialisation: weight on a task's own column (Misra et al. use 0.9 / 0.1 for two
#: tasks); the rest, ``1 - SELF_WEIGHT``, is split equally over the other columns.
SELF_WEIGHT = 0.9


def make_layer(spec: dict[str, Any] | str, name: str | None = None) -> keras.layers.Layer:
    """``{dense: {units: 8}}`` -> ``keras.layers.Dense(units=8)`` (names checked by the recipe layer)."""
    from mtlcli.recipe import layer_table

    if isinstance(spec, str):
        spec = {spec: {}}
    ((layer_name, kwargs),) = spec.items()
    entry = layer_table.table()[layer_name]
    kwargs = dict(kwargs or {})
    if name and "name" not in kwargs:
        kwargs["name"] = name
    for arg in entry.get("layers", ()):  # a wrapped layer (bidirectional's) is itself a recipe layer
        if arg in kwargs:
            kwargs[arg] = make_layer(kwargs[arg])
    if entry.get("package"):  # mtl's own (mtlcli.model.sequence), registered as mtl>Class
        return keras.saving.get_registered_object(f"{entry['package']}>{entry['class']}")(**kwargs)
    return getattr(keras.layers, entry["class"])(**kwargs)


def build_layers(layers: list, shape: tuple) -> tuple:
    """Build ``layers`` in sequence from ``shape``; returns the output shape."""
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return tuple(shape)


def flat_size(shape: tuple) -> int:
    """Number of features per example of a ``(batch, ...)`` shape."""
    return int(math.prod(int(d) for d in shape[1:]))


def flatten(x):
    """``(batch, ...)`` -> ``(batch, features)``."""
    return ops.reshape(x, (ops.shape(x)[0], -1))


def make_gate(experts: int, gate: dict | None, name: str) -> keras.layers.Layer:
    """The gate of ``model.gate``: softmax (``None``) or ``{"dselect_k": {"k": 2, "gamma": 1.0}}``."""
    if gate and gate.get("dselect_k") is not None:
        return DSelectGate(experts, **gate["dselect_k"], name=name)
    return Gate(experts, name=name)


# ------------------------------------------------------------------------------------------------
# Blocks


@serializable
class LayerStack(keras.layers.Layer):
    """A sequence of recipe layers applied in order: one expert, or a tower.

    Args:
        layers: recipe layer specs, e.g. ``[{"dense": {"units": 64, "activation": "relu"}}]``.
    """

    def __init__(self, layers: list, **kwargs):
        super().__init__(**kwargs)
        self.layer_specs = list(layers)
        self.stack = [make_layer(s, f"{self.name}_{i}") for i, s in enumerate(self.layer_specs)]

    def build(self, input_shape):
        self.output_shape_ = build_layers(self.stack, tuple(input_shape))

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.stack:
            shape = layer.compute_output_shape(shape)
        return tuple(shape)

    def call(self, x, training=None):
        for layer in self.stack:
            x = layer(x, training=training)
        return x

    def get_config(self):
        return {**super().get_config(), "layers": self.layer_specs}


@serializable
class Experts(keras.layers.Layer):
    """``count`` independent experts with the same layers; output ``(batch, count, *expert_output)``."""

    def __init__(self, count: int, layers: list, **kwargs):
        super().__init__(**kwargs)
        self.count = int(count)
        self.layer_specs = list(layers)
        self.experts = [LayerStack(self.layer_specs, name=f"expert_{i}") for i in range(self.count)]

    def build(self, input_shape):
        for expert in self.experts:
            expert.build(tuple(input_shape))

    def compute_output_shape(self, input_shape):
        out = self.experts[0].compute_output_shape(tuple(input_shape))
        return (out[0], self.count, *out[1:])

    def call(self, x, training=None):
        return ops.stack([expert(x, training=training) for expert in self.experts], axis=1)

    def get_config(self):
        return {**super().get_config(), "count": self.count, "layers": self.layer_specs}


@serializable
class Gate(keras.layers.Layer):
    """A softmax gate: ``softmax(W flatten(selector) + b)`` weights ``experts`` expert outputs.

    ``call([selector, stacked])`` with ``stacked`` of shape ``(batch, experts, *d)`` returns the
    weighted sum ``(batch, *d)``; :meth:`weights_for` returns the ``(batch, experts)`` weights (each row
    sums to 1).
    """

    def __init__(self, experts: int, **kwargs):
        super().__init__(**kwargs)
        self.experts = int(experts)
        self.logits = keras.layers.Dense(self.experts, name="logits")

    def build(self, input_shape):
        selector_shape = tuple(input_shape[0])
        self.logits.build((selector_shape[0], flat_size(selector_shape)))

    def compute_output_shape(self, input_shape):
        stacked = tuple(input_shape[1])
        return (stacked[0], *stacked[2:])

    def weights_for(self, selector):
        return ops.softmax(self.logits(flatten(selector)), axis=-1)

    def call(self, inputs):
        selector, stacked = inputs
        w = ops.cast(self.weights_for(selector), stacked.dtype)
        w = ops.reshape(w, (-1, self.experts) + (1,) * (len(stacked.shape) - 2))
        return ops.sum(w * stacked, axis=1)

    def get_config(self):
        return {**super().get_config(), "experts": self.experts}


@serializable
class TaskExtraction(keras.layers.Layer):
    """One task's side of a CGC/PLE extraction level (MMoE: ``task_count = 0``).

    ``call([task_input, shared_stacked])``: the task's own ``task_count`` experts read ``task_input``;
    its gate (also reading ``task_input``) mixes the ``shared_count`` shared expert outputs and its own.
    """

    def __init__(self, shared_count: int, task_count: int, layers: list, gate: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.shared_count = int(shared_count)
        self.task_count = int(task_count)
        self.layer_specs = list(layers)
        self.gate_spec = gate
        self.own = Experts(self.task_count, self.layer_specs, name="experts") if self.task_count else None
        self.gate = make_gate(self.shared_count + self.task_count, gate, "gate")

    def build(self, input_shape):
        task_shape, stacked_shape = tuple(input_shape[0]), tuple(input_shape[1])
        if self.own is not None:
            self.own.build(task_shape)
        all_shape = (stacked_shape[0], self.shared_count + self.task_count, *stacked_shape[2:])
        self.gate.build([task_shape, all_shape])

    def compute_output_shape(self, input_shape):
        stacked = tuple(input_shape[1])
        return (stacked[0], *stacked[2:])

    def own_experts(self, task_input, training=None):
        """The task's own expert outputs ``(batch, task_count, *d)``, or ``None`` without any."""
        return None if self.own is None else self.own(task_input, training=training)

    def mix(self, task_input, stacked):
        return self.gate([task_input, stacked])

    def call(self, inputs, training=None):
        task_input, shared = inputs
        own = self.own_experts(task_input, training=training)
        return self.mix(task_input, shared if own is None else ops.concatenate([shared, own], axis=1))

    def get_config(self):
        return {
            **super().get_config(),
            "shared_count": self.shared_count,
            "task_count": self.task_count,
            "layers": self.layer_specs,
            **({"gate": self.gate_spec} if self.gate_spec else {}),
        }


@serializable
class ExtractionLevel(keras.layers.Layer):
    """A PLE extraction level below the top one.

    ``call([shared_input, *task_inputs])`` returns ``[shared_output, *task_outputs]``: task ``k``'s
    gate mixes the shared experts and task ``k``'s experts; the shared gate (reading ``shared_input``)
    mixes every expert of the level, shared and task-specific.
    """

    def __init__(
        self,
        tasks: list,
        shared_count: int,
        task_count: int,
        layers: list,
        gate: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.gate_spec = gate
        self.tasks = list(tasks)
        self.shared_count = int(shared_count)
        self.task_count = int(task_count)
        self.layer_specs = list(layers)
        self.shared_experts = Experts(self.shared_count, self.layer_specs, name="shared_experts")
        self.task_parts = [
            TaskExtraction(self.shared_count, self.task_count, self.layer_specs, gate, name=f"{t}_extraction")
            for t in self.tasks
        ]
        self.shared_gate = make_gate(
            self.shared_count + self.task_count * len(self.tasks), gate, "shared_gate"
        )

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        self.shared_experts.build(shapes[0])
        stacked = self.shared_experts.compute_output_shape(shapes[0])
        for part, shape in zip(self.task_parts, shapes[1:], strict=True):
            part.build([shape, stacked])
        total = self.shared_count + self.task_count * len(self.tasks)
        self.shared_gate.build([shapes[0], (stacked[0], total, *stacked[2:])])

    def compute_output_shape(self, input_shape):
        stacked = self.shared_experts.compute_output_shape(tuple(input_shape[0]))
        out = (stacked[0], *stacked[2:])
        return [out] * (1 + len(self.tasks))

    def call(self, inputs, training=None):
        shared_input, task_inputs = inputs[0], list(inputs[1:])
        shared = self.shared_experts(shared_input, training=training)
        every, outputs = [shared], []
        for part, task_input in zip(self.task_parts, task_inputs, strict=True):
            own = part.own_experts(task_input, training=training)
            stacked = shared if own is None else ops.concatenate([shared, own], axis=1)
            outputs.append(part.mix(task_input, stacked))
            if own is not None:
                every.append(own)
        shared_output = self.shared_gate([shared_input, ops.concatenate(every, axis=1)])
        return [shared_output, *outputs]

    def get_config(self):
        return {
            **super().get_config(),
            "tasks": self.tasks,
            "shared_count": self.shared_count,
            "task_count": self.task_count,
            "layers": self.layer_specs,
            **({"gate": self.gate_spec} if self.gate_spec else {}),
        }


@serializable
class CrossStitch(keras.layers.Layer):
    """A cross-stitch unit (Misra et al., CVPR 2016): learned linear mixing of ``columns`` task columns.

    ``call([x_1, ..., x_T])`` returns ``[y_r for r in rows]`` with ``y_r = sum_j alpha[r, j] x_j``
    (one scalar per pair of columns, as in the paper's fully connected case). ``alpha`` starts at
    :data:`SELF_WEIGHT` on the task's own column and ``(1 - SELF_WEIGHT) / (T - 1)`` on each other one,
    so each row starts summing to 1. ``rows`` defaults to every column; the model gives each task its
    own one-row unit after the last layer.
    """

    def __init__(self, columns: int, rows: list | None = None, self_weight: float = SELF_WEIGHT, **kwargs):
        super().__init__(**kwargs)
        self.columns = int(columns)
        self.rows = list(range(self.columns)) if rows is None else [int(r) for r in rows]
        self.self_weight = float(self_weight)

    def initial_alpha(self) -> list[list[float]]:
        other = (1.0 - self.self_weight) / (self.columns - 1) if self.columns > 1 else 0.0
        self_w = self.self_weight if self.columns > 1 else 1.0
        return [[self_w if j == r else other for j in range(self.columns)] for r in self.rows]

    def build(self, input_shape):
        self.alpha = self.add_weight(
            shape=(len(self.rows), self.columns), initializer="zeros", name="alpha", trainable=True
        )
        self.alpha.assign(self.initial_alpha())

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape[0])] * len(self.rows)

    def call(self, inputs):
        inputs = list(inputs)
        shape = ops.shape(inputs[0])
        stacked = ops.stack([flatten(x) for x in inputs], axis=1)  # (batch, T, features)
        mixed = ops.einsum("rt,btf->brf", ops.cast(self.alpha, stacked.dtype), stacked)
        return [ops.reshape(mixed[:, i], shape) for i in range(len(self.rows))]

    def get_config(self):
        return {
            **super().get_config(),
            "columns": self.columns,
            "rows": self.rows,
            "self_weight": self.self_weight,
        }
