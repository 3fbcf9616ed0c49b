"""The model's size before anything is built: parameter counts from the recipe and the data's input
widths, and the refusal of a model whose weights cannot fit in the machine's memory.

Pure Python (no TensorFlow): ``mtl validate`` runs it after reading the data, and
:func:`mtlcli.model.build.build_model` runs it before creating a single variable, so ``units:
1000000000`` is a message naming its line, not an out-of-memory traceback after minutes of allocation.

The walk mirrors :meth:`mtlcli.model.network.Network.build`: input widths from
:meth:`mtlcli.data.Preprocessing.input_shapes` (categorical embeddings, then ``model.encoders``), the trunk or the
architecture's blocks (experts × count per level, cross-stitch columns × tasks), then each task's tower
and output. Every parameter is attributed to the recipe line that makes it (``model.shared[0].dense``,
``model.experts.layers[1].dense``, ``data.inputs.island``), copies included.

A layer kind this module does not know contributes nothing and makes every shape after it unknown, so
the total is then a lower bound (:attr:`Estimate.complete` is False): the refusal compares a lower
bound with the memory, and so never refuses a model that fits. A Keras Applications backbone is counted
exactly for its default options (:mod:`mtlcli.model.backbone_checks`), and is a lower bound otherwise.

Bytes: every variable is float32 -- also under ``mixed_precision``, where Keras keeps the variables in
float32 and only computes in 16 bits (activations halve, weights do not) -- and Adam keeps two slots
(first and second moments, three with ``amsgrad``) per trainable value. Gradients, activations and the
data come on top; the check counts only what must be resident, so what it refuses cannot train.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlcli.errors import RecipeError
from mtlcli.model.backbone_checks import BACKBONE_CLASSES, backbone_size
from mtlcli.model.backbone_checks import problems as backbone_problems
from mtlcli.model.encoders import encoder_specs
from mtlcli.model.encoders import problems as encoder_problems
from mtlcli.recipe import dependencies

if TYPE_CHECKING:
    from mtlcli.data.preprocess import Preprocessing
    from mtlcli.recipe import LoadedRecipe, Recipe

Shape = tuple[int, ...] | None  # one example's shape (no batch axis); None: unknown
BYTES_PER_VALUE = 4  # float32, mixed precision included

#: The argument whose value makes a layer big, named in the message (the layer's own line).
SIZE_ARGUMENT = {
    "Dense": "units",
    "Conv1D": "filters",
    "Conv2D": "filters",
    "Conv3D": "filters",
    "Embedding": "input_dim",
    "LSTM": "units",
    "GRU": "units",
    "SimpleRNN": "units",
}


@dataclass
class LayerSize:
    """The parameters one recipe line makes, over all its copies."""

    path: tuple
    trainable: int = 0
    fixed: int = 0  # non-trainable (batch normalization's moving statistics): no Adam slots
    copies: int = 0

    @property
    def params(self) -> int:
        return self.trainable + self.fixed


@dataclass
class Estimate:
    """Parameters per recipe line; ``complete`` when every layer was estimated (the count is exact)."""

    layers: dict[tuple, LayerSize] = field(default_factory=dict)
    complete: bool = True
    #: each input's shape where the inputs meet (after its embedding and encoder; None: unknown)
    widths: dict[str, Shape] = field(default_factory=dict)
    #: every Keras Applications backbone met: ``(recipe path, table name, arguments, input shape)``
    backbones: list[tuple] = field(default_factory=list)

    def add(self, path: tuple, trainable: int, fixed: int = 0, copies: int = 1) -> None:
        entry = self.layers.setdefault(tuple(path), LayerSize(tuple(path)))
        entry.trainable += trainable * copies
        entry.fixed += fixed * copies
        entry.copies += copies

    @property
    def params(self) -> int:
        return sum(e.params for e in self.layers.values())

    @property
    def trainable(self) -> int:
        return sum(e.trainable for e in self.layers.values())

    def bytes(self, slots: int = 2) -> int:
        """Bytes of the variables and of Adam's ``slots`` per trainable value (float32)."""
        return BYTES_PER_VALUE * (self.params + slots * self.trainable)


# ------------------------------------------------------------------------------------------------
# Layers: (trainable, non-trainable, output shape) from the input shape; None when not known


def _tuple(value: Any, n: int) -> tuple[int, ...] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (value,) * n
    if isinstance(value, list | tuple) and len(value) == n and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def _window(n: int, size: int, stride: int, padding: str, dilation: int = 1) -> int:
    """Keras's output length of a convolution or pooling window along one axis."""
    if padding in ("same", "causal"):
        return (n + stride - 1) // stride
    return (n - dilation * (size - 1) - 1) // stride + 1


def _channels(kw: dict, shape: tuple, rank: int):
    """``(spatial dims, channels, channels_first)`` of a ``rank``-D conv/pool input, or None."""
    if len(shape) != rank + 1:
        return None
    first = kw.get("data_format") == "channels_first"
    return (shape[1:], shape[0], first) if first else (shape[:-1], shape[-1], first)


def _conv(kw: dict, shape: tuple, rank: int):
    parts = _channels(kw, shape, rank)
    kernel, strides = _tuple(kw.get("kernel_size"), rank), _tuple(kw.get("strides", 1), rank)
    dilation, filters, groups = (
        _tuple(kw.get("dilation_rate", 1), rank),
        kw.get("filters"),
        kw.get("groups", 1),
    )
    if (
        None in (parts, kernel, strides, dilation)
        or not isinstance(filters, int)
        or not isinstance(groups, int)
    ):
        return None
    spatial, channels, first = parts
    if groups < 1 or channels % groups:
        return None
    padding = str(kw.get("padding", "valid")).lower()
    out = tuple(
        _window(n, k, s, padding, d) for n, k, s, d in zip(spatial, kernel, strides, dilation, strict=True)
    )
    if min(out, default=1) < 1:
        return None
    params = math.prod(kernel) * (channels // groups) * filters + (filters if kw.get("use_bias", True) else 0)
    return params, 0, ((filters, *out) if first else (*out, filters))


def _pool(kw: dict, shape: tuple, rank: int):
    parts = _channels(kw, shape, rank)
    size = _tuple(kw.get("pool_size", 2), rank)
    strides = _tuple(kw["strides"], rank) if kw.get("strides") is not None else size
    if None in (parts, size, strides):
        return None
    spatial, channels, first = parts
    padding = str(kw.get("padding", "valid")).lower()
    out = tuple(_window(n, p, s, padding) for n, p, s in zip(spatial, size, strides, strict=True))
    if min(out, default=1) < 1:
        return None
    return 0, 0, ((channels, *out) if first else (*out, channels))


def _global_pool(kw: dict, shape: tuple, rank: int):
    parts = _channels(kw, shape, rank)
    if parts is None:
        return None
    _, channels, first = parts
    if kw.get("keepdims"):
        ones = (1,) * rank
        return 0, 0, ((channels, *ones) if first else (*ones, channels))
    return 0, 0, (channels,)


def _axes(axis: Any, shape: tuple) -> list[int] | None:
    """Keras axes (counted with the batch axis) -> indices into ``shape`` (without it)."""
    axes = axis if isinstance(axis, list | tuple) else [axis]
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int):
            return None
        i = a + len(shape) + 1 if a < 0 else a
        if not 1 <= i <= len(shape):
            return None
        out.append(i - 1)
    return out


def _normalization(kind: str, kw: dict, shape: tuple):
    axes = _axes(kw.get("axis", -1), shape)
    if axes is None or not shape:
        return None
    size = math.prod(shape[i] for i in axes)
    center, scale = bool(kw.get("center", True)), bool(kw.get("scale", True))
    if kind == "BatchNormalization":
        return size * (center + scale), 2 * size, shape
    if kind == "LayerNormalization":
        if kw.get("rms_scaling"):
            return None
        return size * (center + scale), 0, shape
    if kind == "RMSNormalization":
        return size, 0, shape
    return None


def _recurrent(kind: str, kw: dict, shape: tuple):
    units = kw.get("units")
    if len(shape) != 2 or not isinstance(units, int) or kw.get("return_state"):
        return None
    features, bias = shape[1], bool(kw.get("use_bias", True))
    per_gate = units * (features + units)
    if kind == "LSTM":
        params = 4 * per_gate + 4 * units * bias
    elif kind == "GRU":
        params = 3 * per_gate + (2 if kw.get("reset_after", True) else 1) * 3 * units * bias
    else:
        params = per_gate + units * bias
    return params, 0, ((shape[0], units) if kw.get("return_sequences") else (units,))


def _reshape(kw: dict, shape: tuple):
    target = kw.get("target_shape")
    if not isinstance(target, list | tuple) or not all(isinstance(d, int) for d in target):
        return None
    total, known = math.prod(shape), math.prod(d for d in target if d != -1)
    if list(target).count(-1) == 1 and known and total % known == 0:
        target = [total // known if d == -1 else d for d in target]
    return (0, 0, tuple(target)) if math.prod(target) == total and min(target, default=1) > 0 else None


#: Layers that change neither the shape nor hold any variable.
SHAPE_KEEPING = {
    "Activation", "ActivityRegularization", "AlphaDropout", "Dropout", "ELU", "GaussianDropout",
    "GaussianNoise", "Identity", "LeakyReLU", "Masking", "ReLU", "Softmax", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "UnitNormalization",
}  # fmt: skip


def layer_size(kind: str, kw: dict, shape: tuple):
    """``(trainable, non-trainable, output shape)`` of Keras layer class ``kind`` with arguments ``kw``
    on one example of ``shape``; None for a kind (or arguments) this module cannot estimate."""
    if kind in SHAPE_KEEPING:
        return 0, 0, shape
    if kind == "Dense":
        units = kw.get("units")
        if not shape or not isinstance(units, int):
            return None
        return shape[-1] * units + (units if kw.get("use_bias", True) else 0), 0, (*shape[:-1], units)
    if kind in ("Conv1D", "Conv2D", "Conv3D"):
        return _conv(kw, shape, int(kind[4]))
    if kind in ("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
                "AveragePooling3D"):  # fmt: skip
        return _pool(kw, shape, int(kind[-2]))
    if kind.startswith(("GlobalMaxPooling", "GlobalAveragePooling")):
        return _global_pool(kw, shape, int(kind[-2]))
    if kind in BACKBONE_CLASSES:
        return backbone_size(kind, kw, shape)
    if kind == "Flatten":
        return 0, 0, (math.prod(shape),)
    if kind == "Reshape":
        return _reshape(kw, shape)
    if kind == "Embedding":
        rows, dim = kw.get("input_dim"), kw.get("output_dim")
        if not isinstance(rows, int) or not isinstance(dim, int) or kw.get("lora_rank"):
            return None
        return rows * dim, 0, (*shape, dim)
    if kind in ("BatchNormalization", "LayerNormalization", "RMSNormalization"):
        return _normalization(kind, kw, shape)
    if kind in ("LSTM", "GRU", "SimpleRNN"):
        return _recurrent(kind, kw, shape)
    if kind == "RepeatVector" and len(shape) == 1 and isinstance(kw.get("n"), int):
        return 0, 0, (kw["n"], shape[0])
    if kind == "PReLU":
        shared = _axes(kw.get("shared_axes") or [], shape) if kw.get("shared_axes") else []
        if shared is None:
            return None
        return math.prod(1 if i in shared else d for i, d in enumerate(shape)), 0, shape
    return None


# ------------------------------------------------------------------------------------------------
# The model


def _parse(spec: dict | str) -> tuple[str, dict]:
    from mtlcli.recipe import layer_table

    name, kw = (spec, {}) if isinstance(spec, str) else next(iter(spec.items()))
    entry = layer_table.table().get(name)
    return (entry["class"] if entry else ""), dict(kw or {})


class _Walk:
    """One pass over the recipe's network, adding each layer's parameters to ``est``."""

    def __init__(self, est: Estimate):
        self.est = est

    def stack(self, layers: list, base: tuple, shape: Shape, copies: int = 1) -> Shape:
        """Layers in sequence from ``shape``; ``base + (i,)`` is layer ``i``'s recipe path."""
        for i, spec in enumerate(layers):
            shape = self.layer(spec, (*base, i), shape, copies)
        return shape

    def layer(self, spec: dict | str, path: tuple, shape: Shape, copies: int = 1) -> Shape:
        """One recipe layer at ``path`` (its parameters go to its size argument's line)."""
        kind, kw = _parse(spec)
        if kind in BACKBONE_CLASSES:
            name = spec if isinstance(spec, str) else next(iter(spec))
            self.est.backbones.append((path, name, kw, shape))
        size = None if shape is None else layer_size(kind, kw, shape)
        if size is None:
            self.est.complete = False
            return None
        trainable, fixed, shape = size
        if kw.get("trainable") is False:
            trainable, fixed = 0, trainable + fixed
        name = spec if isinstance(spec, str) else next(iter(spec))
        arg = SIZE_ARGUMENT.get(kind)
        self.est.add((*path, name, arg) if arg and arg in kw else path, trainable, fixed, copies)
        return shape

    def dense(self, path: tuple, shape: Shape, units: int, copies: int = 1) -> None:
        """A gate: ``Dense(units)`` on the flattened ``shape``."""
        if shape is None:
            self.est.complete = False
            return
        self.est.add(path, (math.prod(shape) + 1) * units, 0, copies)


def _flat(shape: Shape) -> Shape:
    return None if shape is None else (math.prod(shape),)


def _joined(walk: _Walk, recipe: Recipe, prep: Preprocessing) -> Shape:
    """The trunk's input: each input's shape (embedded categoricals, then ``model.encoders``), one
    input as it is, several flattened and joined (``fusion: concat``), added (``sum``) or through
    :class:`~mtlcli.model.fusion.InputAttention` (``attention``)."""
    shapes: dict[str, Shape] = {k: tuple(v) for k, v in prep.input_shapes().items()}
    for name, (rows, dim) in prep.embeddings().items():
        if name in shapes:
            walk.est.add(("data", "inputs", name), rows * dim)
            shapes[name] = (dim,)
    for name, layers in encoder_specs(recipe, prep).items():
        shapes[name] = walk.stack(layers, ("model", "encoders", name), shapes[name])
    walk.est.widths = dict(shapes)
    if len(shapes) == 1:
        return next(iter(shapes.values()))
    if None in shapes.values():
        return None
    flat = [math.prod(s) for s in shapes.values()]
    if recipe.model.fusion in ("sum", "attention"):
        if len(set(flat)) > 1:
            return None
        if recipe.model.fusion == "attention":  # InputAttention: query, key, value, output of width w
            walk.est.add(("model", "fusion"), 4 * flat[0] * (flat[0] + 1))
        return (flat[0],)
    return (sum(flat),)


def _experts(walk: _Walk, recipe: Recipe, h: Shape) -> dict[str, Shape]:
    """MMoE / CGC / PLE blocks from the trunk's output ``h``; returns each task's tower input."""
    a = recipe.model.architecture_spec()
    tasks = list(recipe.model.tasks)
    if "experts" not in a:  # the recipe check asks for them; estimate nothing rather than guess
        walk.est.complete = False
        return dict.fromkeys(tasks)
    count, layers = int(a["experts"]["count"]), list(a["experts"]["layers"])
    own = 0 if a["name"] == "mmoe" else int(a["task_experts"])
    depth = int(a["levels"]) if a["name"] == "ple" else 1
    where, gates = ("model", "experts", "layers"), ("model", "experts")
    n = len(tasks)
    shared_in, task_ins = h, [h] * n
    for _ in range(depth - 1):
        out = walk.stack(layers, where, shared_in, copies=count)
        for k in range(n):
            if own:
                walk.stack(layers, where, task_ins[k], copies=own)
            walk.dense(gates, _flat(task_ins[k]), count + own)
        walk.dense(gates, _flat(shared_in), count + own * n)
        shared_in, task_ins = out, [out] * n
    out = walk.stack(layers, where, shared_in, copies=count)
    bases = {}
    for k, t in enumerate(tasks):
        selector = task_ins[k] if depth > 1 else h
        if own:
            walk.stack(layers, where, selector, copies=own)
        walk.dense(gates, _flat(selector), count + own)
        bases[t] = out
    return bases


def _cross_stitch(walk: _Walk, recipe: Recipe, h: Shape) -> dict[str, Shape]:
    tasks, shared = list(recipe.model.tasks), list(recipe.model.shared)
    n = len(tasks)
    out = walk.stack(shared, ("model", "shared"), h, copies=n)
    walk.est.add(("model", "architecture"), (max(len(shared) - 1, 0) + 1) * n * n)
    return dict.fromkeys(tasks, out)


def _transfer(walk: _Walk, order: list[str], task: str, read: dict) -> Shape:
    """AITM: ``task``'s flattened representation, and after the first task of the order its
    :class:`~mtlcli.model.aitm.InformationTransfer` (a ``transfer`` dense from the previous task's
    representation and three ``units x units`` projections), counted at ``model.aitm``."""
    own = read[(task, "hidden")]
    k = order.index(task)
    if own is None:
        return None
    units = math.prod(own)
    prev = read[(order[k - 1], "hidden")] if k else None
    if k and prev is None:
        walk.est.complete = False
    elif k:
        walk.est.add(("model", "aitm"), (math.prod(prev) + 1) * units + 3 * (units + 1) * units)
    return (units,)


def _towers(walk: _Walk, recipe: Recipe, prep: Preprocessing, bases: dict[str, Shape]) -> None:
    read: dict[tuple[str, str], Shape] = {}
    aitm = recipe.model.aitm if recipe.model.architecture == "aitm" else None
    order = list(aitm.order) if aitm is not None else []

    def tower(task: str) -> None:  # depth-first: the tasks it reads first (the recipe refused cycles)
        if (task, "output") in read:
            return
        spec = recipe.model.tasks[task]
        if task in order[1:]:
            tower(order[order.index(task) - 1])
        deps = dependencies(spec.inputs_from)
        for d, _ in deps:
            tower(d)
        shape = bases[task]
        if deps:
            parts = [shape, *(read[d] for d in deps)]
            shape = None if None in parts else (sum(math.prod(p) for p in parts),)
        base = ("model", "tasks", task)
        read[(task, "hidden")] = shape = walk.stack(list(spec.head), (*base, "head"), shape)
        if task in order:
            read[(task, "hidden")] = shape = _transfer(walk, order, task, read)
        if spec.output:
            read[(task, "output")] = walk.layer(spec.output, (*base, "output"), shape)
        elif shape is None:
            walk.est.complete = False
            read[(task, "output")] = None
        else:  # Dense(units) on the last axis, at the task's own line
            units = prep.targets[task].units
            walk.est.add(base, (shape[-1] + 1) * units)
            read[(task, "output")] = (*shape[:-1], units)

    for task in recipe.model.tasks:
        tower(task)


def estimate(recipe: Recipe, prep: Preprocessing) -> Estimate:
    """The parameters of the model ``recipe`` builds on data with ``prep``'s statistics, per recipe
    line: every variable of the built model but the weighting strategy's own (a few values per task;
    only :mod:`mtlcli.model.train_step` reads :mod:`mtlcli.weighting`), the epoch counters included."""
    est = Estimate()
    walk = _Walk(est)
    h = _joined(walk, recipe, prep)
    name = recipe.model.architecture
    if name != "cross_stitch":
        h = walk.stack(list(recipe.model.shared), ("model", "shared"), h)
    if name in ("hard_sharing", "aitm"):
        bases = dict.fromkeys(recipe.model.tasks, h)
    elif name == "cross_stitch":
        bases = _cross_stitch(walk, recipe, h)
    else:
        bases = _experts(walk, recipe, h)
    _towers(walk, recipe, prep, bases)
    est.add(("train", "epochs"), 0, 2)  # the epoch counters (``epoch``, ``seen_epoch``)
    return est


def _cgroup_limits() -> list[int]:
    """The memory limits of this process's cgroups (v2 ``memory.max``, v1 ``memory.limit_in_bytes``)."""
    root, out = Path("/sys/fs/cgroup"), []
    own = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            if controllers in ("", "memory") or "memory" in controllers.split(","):
                own.append(where.lstrip("/"))
    except (OSError, ValueError):
        pass
    candidates = [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    for where in own:
        candidates += [root / where / "memory.max", root / "memory" / where / "memory.limit_in_bytes"]
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or v1's "unlimited" (2**63 - a page)
            out.append(int(text))
    return out


def available_memory() -> int | None:
    """Bytes this process may use: the machine's memory, or a smaller cgroup limit (containers)."""
    try:
        limits = [os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
    except (ValueError, OSError, AttributeError):
        limits = []
    limits += _cgroup_limits()
    return min(limits) if limits else None


def gib(n: int) -> str:
    """Bytes in GiB, or in the unit above when that reads better (``1.5 TiB``, ``4.0 EiB``)."""
    value, unit = n / 2**30, "GiB"
    for bigger in ("TiB", "PiB", "EiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:,.1f} {unit}"


def check(loaded: LoadedRecipe, prep: Preprocessing, memory: int | None = None) -> Estimate | None:
    """Refuse (RecipeError, exit 2) a model whose weights and Adam slots exceed ``memory`` (default:
    :func:`available_memory`), naming its biggest layers' lines, or whose encoders do not fit their
    inputs (:func:`mtlcli.model.encoders.problems`); returns the estimate otherwise (None when the
    recipe could not be walked)."""
    recipe = loaded.recipe
    try:
        est = estimate(recipe, prep)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        # A recipe shape this walk does not foresee: the build itself reports what is wrong; the size
        # check must never be what stops a model that Keras would build.
        est = None
    mistakes = encoder_problems(loaded, prep, est.widths if est is not None else {})
    mistakes += backbone_problems(loaded, est.backbones if est is not None else [])
    if mistakes:
        raise RecipeError(problems=mistakes)
    if est is None:
        return None
    memory = available_memory() if memory is None else memory
    slots = 3 if recipe.train.optimizer.adam.amsgrad else 2
    need = est.bytes(slots)
    if memory is None or need <= memory:
        return est
    total = est.params
    at_least = "" if est.complete else "at least "
    head = (
        f"the model is too big for this machine: {at_least}{total:,} parameters need {gib(need)} for "
        f"the weights and Adam's {slots} slots per weight (float32, also under mixed precision), "
        f"more than the {gib(memory)} of memory here; make the layers below smaller"
    )
    big = sorted(est.layers.values(), key=lambda e: -e.params)
    problems = []
    for entry in big[:3]:
        if entry.params * 100 < total and problems:
            break
        copies = f" ({entry.copies:,} copies)" if entry.copies > 1 else ""
        share = BYTES_PER_VALUE * (entry.params + slots * entry.trainable)
        problems.append(
            loaded.problem(
                f"{entry.params:,} parameters{copies}, {gib(share)} with Adam's slots "
                f"(the model: {gib(need)}, the memory: {gib(memory)})",
                entry.path,
            )
        )
    raise RecipeError(head, problems=problems)
