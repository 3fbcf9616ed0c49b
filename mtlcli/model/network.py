"""The multi-task Keras network: inputs, the shared part (trunk or architecture), one head per task.

:class:`Network` is everything about the forward pass and the split into shared and task-specific
variables; it knows no loss, no strategy and no train step (those are in :mod:`mtlcli.model.train_step`,
whose ``MultiTaskModel`` is the registered, saved class). Importing this module imports TensorFlow;
the CLI imports it lazily.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtlcli.model import architectures as arch
from mtlcli.model.aitm import InformationTransfer, calibrator_penalty
from mtlcli.model.architectures import make_layer
from mtlcli.model.embedding import CategoryEmbedding, embedded_inputs
from mtlcli.model.esmm import ProductOfProbabilities
from mtlcli.model.fusion import InputAttention
from mtlcli.recipe import dependencies


def _float32_output(spec):
    """Output layers compute in float32 under mixed precision (stable softmax/sigmoid and losses)."""
    if isinstance(spec, str):
        spec = {spec: {}}
    ((name, kwargs),) = spec.items()
    return {name: {"dtype": "float32", **(kwargs or {})}}


class Network(keras.Model):
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
    * ``aitm``: shared = ``model.shared`` (the bottom); ``z`` = its output, as hard sharing; task = each
      tower and, for every task of ``aitm.order`` after the first, its :class:`InformationTransfer`
      (the transfer of the previous task's representation and the attention). Task ``t`` reads task
      ``t-1``'s transferred representation as ``inputs_from`` reads a hidden layer: task ``t``'s loss
      reaches ``t-1``'s tower, whose variables stay ``t-1``'s own. The calibrator penalty
      (:meth:`calibrator_term`) is an extra objective term outside the strategy (see the train step).

    A task with ``inputs_from`` also reads those tasks' outputs (``click``) or last hidden layers
    (``click.hidden``: the input of click's output layer); its tower's input is its own flattened input
    joined with them, and gradients flow into the tasks it reads (up to, not into, the output layer of a
    hidden read). Those variables stay the read task's own.

    Categorical inputs with ``encoding: embedding`` arrive as ids; their :class:`CategoryEmbedding`
    tables (``input_embeddings``) are looked up before the inputs are joined and are shared in every
    architecture (the first of :meth:`shared_layers`). Then each input named in ``model.encoders``
    goes through its own :class:`~mtlcli.model.architectures.LayerStack` (``encoders``, next in
    :meth:`shared_layers`: every task's loss reaches them); the inputs then meet (``fusion``: flattened
    and joined, added, or :class:`~mtlcli.model.fusion.InputAttention`, itself shared) and feed the
    trunk, the experts or the columns, whatever the architecture.

    ``spec`` is plain JSON-able data (built by :func:`mtlcli.model.build.spec_from_recipe`) and is the whole config: the
    saved model carries the layer specs, the task definitions, the weighting strategy and the
    preprocessing statistics, so ``mtl evaluate`` needs nothing else.
    """

    def __init__(self, spec: dict[str, Any], **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.task_names = list(spec["tasks"])
        #: ESMM: tasks whose output is the product of other tasks' probabilities (no layers of their own)
        self.products = {t: list(s["product_of"]) for t, s in spec["tasks"].items() if s.get("product_of")}
        #: the tasks with layers (a tower, and a gate or a column in the soft-sharing architectures)
        self.tower_names = [t for t in self.task_names if t not in self.products]
        self.input_names = list(spec["inputs"])
        self._make_structure(spec)

    # -- structure ------------------------------------------------------------------------------
    def _make_structure(self, spec: dict[str, Any]) -> None:
        """Create the layers of ``spec["architecture"]`` (built with their shapes in :meth:`build`)."""
        a = dict(spec.get("architecture") or {"name": "hard_sharing"})
        self.architecture = a["name"]
        aitm = a.get("aitm") or {}
        #: AITM: the tasks information flows along, and the calibrator's weight (0 elsewhere)
        self.aitm_order = list(aitm.get("order", [])) if self.architecture == "aitm" else []
        self.calibrator_weight = float(aitm.get("calibrator_weight", 0.0)) if self.aitm_order else 0.0
        previous = dict(zip(self.aitm_order[1:], self.aitm_order, strict=False))
        self.head_order = task_order(
            {
                t: [d for d, _ in dependencies(s.get("inputs_from"))]
                + ([previous[t]] if t in previous else [])
                for t, s in spec["tasks"].items()
                if t not in self.products
            }
        )
        self.product_order = task_order(
            {t: [f for f in fs if f in self.products] for t, fs in self.products.items()}
        )
        self.product_layers = {t: ProductOfProbabilities(name=f"{t}_product") for t in self.product_order}
        tasks, n_tasks = self.tower_names, len(self.tower_names)
        self._make_input_layers(spec)  # the shared part starts with the inputs' own layers
        bottom = self.architecture in ("hard_sharing", "mmoe", "cgc", "ple", "aitm")
        self.trunk = [make_layer(s, f"shared_{i}") for i, s in enumerate(spec["shared"])] if bottom else []
        self.levels, self.top_experts, self.columns, self.stitches = [], None, {}, []
        # Task-specific part: one block per task between z and its tower, then the tower.
        self.task_blocks = {}
        if self.architecture in ("mmoe", "cgc", "ple"):
            count, layers = int(a["experts"]["count"]), list(a["experts"]["layers"])
            own = 0 if self.architecture == "mmoe" else int(a["task_experts"])
            depth = int(a["levels"]) if self.architecture == "ple" else 1
            gate = a.get("gate")  # None: softmax gates
            self.levels = [
                arch.ExtractionLevel(tasks, count, own, layers, gate, name=f"level_{i}")
                for i in range(depth - 1)
            ]
            self.top_experts = arch.Experts(count, layers, name="shared_experts")
            self.task_blocks = {
                t: arch.TaskExtraction(count, own, layers, gate, name=f"{t}_extraction") for t in tasks
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
        elif self.architecture not in ("hard_sharing", "aitm"):
            raise ValueError(f"unknown architecture {self.architecture!r}")
        self.towers = {}
        for task, t in spec["tasks"].items():
            if task in self.products:
                continue
            layers = [make_layer(s, f"{task}_hidden_{i}") for i, s in enumerate(t["head"])]
            if t.get("output"):
                layers.append(make_layer(_float32_output(t["output"]), f"{task}_output"))
            else:
                layers.append(keras.layers.Dense(t["units"], name=f"{task}_output", dtype="float32"))
            self.towers[task] = layers
        #: AITM: ``task -> InformationTransfer`` for the tasks of aitm.order after the first (built in
        #: :meth:`build`, once the width of each tower's last hidden layer is known)
        self.transfers = {}

    def _make_input_layers(self, spec: dict[str, Any]) -> None:
        """The layers upstream of the trunk: categorical embeddings, ``model.encoders`` and the fusion."""
        self.input_embeddings = {
            name: CategoryEmbedding(rows, dim, name=f"{name}_embedding")
            for name, (rows, dim) in embedded_inputs(spec).items()
        }
        #: ``model.encoders``: ``input -> LayerStack`` applied to that input alone before the inputs meet
        self.encoders = {
            name: arch.LayerStack(layers, name=f"{name}_encoder")
            for name, layers in (spec.get("encoders") or {}).items()
        }
        self.fusion = spec.get("fusion") or "concat"
        #: ``fusion: attention`` with several inputs: the inputs attend to each other, then are averaged
        self.input_attention = (
            InputAttention(name="input_attention")
            if self.fusion == "attention" and len(self.input_names) > 1
            else None
        )

    def _inputs_from(self, task: str) -> list[tuple[str, str]]:
        """``(task, "output" | "hidden")`` for each entry of the task's ``inputs_from``."""
        return dependencies(self.spec["tasks"][task].get("inputs_from"))

    def build(self, input_shape=None):
        shapes = {k: (None, *v) for k, v in self.spec["input_shapes"].items()}
        for name, layer in self.input_embeddings.items():  # ids (batch, 1) -> vectors (batch, dim)
            layer.build(shapes[name])
            shapes[name] = layer.compute_output_shape(shapes[name])
        for name, layer in self.encoders.items():
            shapes[name] = arch.build_layers([layer], shapes[name])
        #: where the inputs meet (the trunk's input), after their embeddings and encoders
        self.fused_shape = shape = self._fused_shape(shapes)
        shape = arch.build_layers(self.trunk, shape)
        n_tasks = len(self.tower_names)
        if self.architecture in ("hard_sharing", "aitm"):
            parts, bases = [shape], dict.fromkeys(self.tower_names, shape)
        elif self.architecture == "cross_stitch":
            cols = [shape] * n_tasks
            for i in range(len(self.spec["shared"])):
                cols = [
                    arch.build_layers([self.columns[t][i]], cols[k]) for k, t in enumerate(self.tower_names)
                ]
                if i < len(self.stitches):
                    self.stitches[i].build(cols)
            parts, bases = cols, {}
            for k, t in enumerate(self.tower_names):
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
            for k, t in enumerate(self.tower_names):
                selector = parts[1 + k] if self.levels else parts[1]
                self.task_blocks[t].build([selector, stacked])
                bases[t] = self.task_blocks[t].compute_output_shape([selector, stacked])
        # z: the trunk output itself (hard sharing), else the flattened parts joined (see represent).
        self.z_parts = [tuple(int(d) for d in p[1:]) for p in parts]
        if self.architecture in ("hard_sharing", "aitm"):
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
            if t in self.aitm_order:
                read[(t, "hidden")] = self._build_transfer(t, read)
            read[(t, "output")] = arch.build_layers(self.towers[t][-1:], read[(t, "hidden")])
        self.built = True

    def _fused_shape(self, shapes: dict) -> tuple:
        """The trunk's input shape: one input's as it is; several flattened, then joined (``concat``)
        or added (``sum``, one width: :func:`mtlcli.model.encoders.problems` refuses others first)."""
        if len(shapes) == 1:
            return tuple(next(iter(shapes.values())))
        widths = {k: int(np.prod(s[1:])) for k, s in shapes.items()}
        if self.fusion in ("sum", "attention"):
            if len(set(widths.values())) > 1:
                raise ValueError(f"fusion: {self.fusion} needs inputs of one width, received {widths}")
            width = next(iter(widths.values()))
            if self.input_attention is not None:
                self.input_attention.build((None, len(widths), width))
            return (None, width)
        return (None, sum(widths.values()))

    def _build_transfer(self, task: str, read: dict) -> tuple:
        """AITM: the shape of ``task``'s representation (its flattened last hidden layer, mixed with the
        previous task's through a new :class:`InformationTransfer` after the first task of the order)."""
        own = (None, arch.flat_size(read[(task, "hidden")]))
        k = self.aitm_order.index(task)
        if k == 0:
            return own
        prev = read[(self.aitm_order[k - 1], "hidden")]
        layer = InformationTransfer(own[1], name=f"{task}_transfer")
        layer.build([prev, own])
        self.transfers[task] = layer
        return layer.compute_output_shape([prev, own])

    def _transferred(self, task: str, h, read: dict):
        """AITM: ``task``'s representation ``z_t`` from its tower's ``q_t`` (``h``) and ``z_{t-1}``."""
        h = arch.flatten(h)
        if task not in self.transfers:
            return h
        prev = read[(self.aitm_order[self.aitm_order.index(task) - 1], "hidden")]
        return self.transfers[task]([tf.cast(prev, h.dtype), h])

    def calibrator_term(self, preds):
        """AITM's ``calibrator_weight * sum_t mean(max(p_t - p_{t-1}, 0))`` over ``aitm.order`` (the
        tasks' sigmoid probabilities, every row of the batch, labelled or not); None elsewhere or at
        weight 0."""
        if not self.calibrator_weight:
            return None
        probs = [tf.sigmoid(tf.cast(tf.reshape(preds[t], [-1]), tf.float32)) for t in self.aitm_order]
        return self.calibrator_weight * calibrator_penalty(probs)

    def _joined(self, inputs, training=False):
        """The model inputs as one tensor: a single input as it is, several flattened and concatenated
        (``fusion: concat``) or added (``sum``). Categorical inputs with ``encoding: embedding`` are
        looked up in their tables first, then each input with an encoder goes through it."""
        if self.input_embeddings or self.encoders:
            inputs = dict(inputs)
            for name, layer in self.input_embeddings.items():
                inputs[name] = layer(inputs[name])
            for name, layer in self.encoders.items():
                inputs[name] = layer(inputs[name], training=training)
        if len(self.input_names) == 1:
            return inputs[self.input_names[0]]
        flat = [
            tf.reshape(tf.cast(inputs[k], self.compute_dtype), [tf.shape(inputs[k])[0], -1])
            for k in self.input_names
        ]
        if self.input_attention is not None:
            return self.input_attention(tf.stack(flat, axis=1), training=training)
        return tf.add_n(flat) if self.fusion == "sum" else tf.concat(flat, axis=-1)

    def _pack(self, parts: list):
        return tf.concat([arch.flatten(p) for p in parts], axis=-1)

    def _unpack(self, z) -> list:
        sizes = [math.prod(p) for p in self.z_parts]
        pieces = tf.split(z, sizes, axis=-1) if len(sizes) > 1 else [z]
        return [tf.reshape(x, [-1, *p]) for x, p in zip(pieces, self.z_parts, strict=True)]

    def _bottom_levels(self, h, training=False, gates: dict | None = None):
        """MMoE/CGC/PLE below the top level: returns ``(shared_input, task_inputs)`` of the top level."""
        shared_in, task_ins = h, [h] * len(self.tower_names)
        for i, level in enumerate(self.levels):
            if gates is not None:
                for k, t in enumerate(self.tower_names):
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
        h = self._joined(inputs, training=training)
        for layer in self.trunk:
            h = layer(h, training=training)
        if self.architecture in ("hard_sharing", "aitm"):
            return h
        if self.architecture == "cross_stitch":
            cols = [h] * len(self.tower_names)
            for i in range(len(self.spec["shared"])):
                cols = [
                    self.columns[t][i](cols[k], training=training) for k, t in enumerate(self.tower_names)
                ]
                if i < len(self.stitches):
                    cols = self.stitches[i](cols)
            return self._pack(cols)
        shared_in, task_ins = self._bottom_levels(h, training=training)
        stacked = self.top_experts(shared_in, training=training)
        return self._pack([stacked, *(task_ins if self.levels else [h])])

    def heads_from(self, z, training=False):
        """Task outputs from the shared representation ``z`` (a dict keyed by task)."""
        if self.architecture in ("hard_sharing", "aitm"):
            bases = dict.fromkeys(self.tower_names, z)
        else:
            parts = self._unpack(z)
            bases = {}
            for k, t in enumerate(self.tower_names):
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
            if t in self.aitm_order:
                h = self._transferred(t, h, read)
            read[(t, "hidden")] = h  # the input of the output layer
            read[(t, "output")] = self.towers[t][-1](h, training=training)
        out = {t: read[(t, "output")] for t in self.tower_names}
        for t in self.product_order:  # ESMM: after its factors (products of products come later)
            out[t] = self.product_layers[t]([out[f] for f in self.products[t]])
        return {t: out[t] for t in self.task_names}

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
        for k, t in enumerate(self.tower_names):
            gates[t] = self.task_blocks[t].gate.weights_for(task_ins[k])
        return gates

    def shared_layers(self) -> list:
        """Every layer upstream of ``z``: its variables get gradients from several tasks."""
        out = [*self.input_embeddings.values(), *self.encoders.values()]
        out += [self.input_attention] if self.input_attention is not None else []
        out += [*self.trunk, *self.levels]
        if self.top_experts is not None:
            out.append(self.top_experts)
        out.extend(layer for t in self.tower_names for layer in self.columns.get(t, []))
        return out + list(self.stitches)

    def named_parts(self, layers: str | list[str]) -> list:
        """The layers a warm start's ``layers:`` names: ``shared`` (every shared layer, input embeddings
        and encoders included), or a list of input names (their encoders and embeddings) and ``trunk``
        (``model.shared``). The recipe check has refused unknown names."""
        if layers == "shared":
            return list(self.shared_layers())
        out = []
        for name in layers:
            if name == "trunk":
                out.extend(self.trunk)
                continue
            out.extend(d[name] for d in (self.input_embeddings, self.encoders) if name in d)
        return out

    def task_layers(self, task: str) -> list:
        """The layers only ``task`` reads: its gate and its own top-level experts, or its final
        cross-stitch row; then its tower (``head`` + output)."""
        block = [self.task_blocks[task]] if task in self.task_blocks else []
        transfer = getattr(self, "transfers", {})
        block += [transfer[task]] if task in transfer else []
        return block + list(self.towers.get(task, []))

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
