"""``mtl plan``: what a recipe builds, before training -- the model graph, its parameters (shared and per
task) and the training objective with its resolved weights.

The computation lives here (it builds the model, so it imports TensorFlow); ``mtlcli.cli`` renders it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from mtlcli import data
from mtlcli.recipe import LoadedRecipe

#: Loss-based strategies whose weights never change during training.
FIXED_WEIGHTS = ("static", "mean", "equal", "sum")
#: Short names of the losses in the printed objective.
LOSS_SYMBOLS = {
    "sparse_categorical_crossentropy": "ce",
    "binary_crossentropy": "bce",
    "binary_focal_crossentropy": "focal",
}
#: Initial task losses further apart than this factor get a warning.
SCALE_WARNING = 10.0


@dataclass
class Block:
    """One row of the graph summary."""

    part: str  # "shared" or a task name
    name: str  # the Keras layer's name
    what: str  # a short description, e.g. "4 experts x [dense 64 relu]"
    params: int


@dataclass
class Plan:
    name: str
    architecture: dict[str, Any]
    inputs: dict[str, int]  # input -> features per example
    rows: dict[str, int]  # split -> rows
    blocks: list[Block]
    representation: int  # features of z (what ``on: representation`` strategies differentiate)
    params: dict[str, int]  # "shared", each task, "strategy", "total"
    tasks: dict[str, dict[str, Any]]  # task -> type, loss, outputs, weight, inputs_from
    weighting: dict[str, Any]  # name, parameters, needs, on, summary
    weights: dict[str, float] | None  # the training weights at the first step (loss-based strategies)
    weights_fixed: bool
    eval_weights: dict[str, float]  # the validation loss's weights (recipe weights normalised)
    eval_objective: str  # the validation loss with those weights
    objective: str
    initial_losses: dict[str, float]  # each task's loss on the first training batch, before training
    batch: int  # rows in that batch
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: features per example where the inputs meet (after their embeddings and ``model.encoders``)
    fused: int | None = None
    #: ``model.init_from``: the source run (as written and resolved), the layers it starts and how they
    #: train (:func:`warm_start`); None without a warm start
    warm_start: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def describe(layer) -> str:
    """A short human description of a layer (recipe layers by their main arguments)."""
    from mtlcli.model import architectures as arch

    if isinstance(layer, arch.LayerStack):
        return " -> ".join(describe(x) for x in layer.stack) or "identity"
    if isinstance(layer, arch.Experts):
        inner = describe(layer.experts[0]) if layer.experts else "identity"
        return f"{layer.count} expert{'s' if layer.count != 1 else ''} x [{inner}]"
    if isinstance(layer, arch.TaskExtraction):
        gate = f"gate over {layer.shared_count} shared"
        if layer.own is None:
            return f"{gate} experts"
        return f"{describe(layer.own)} (own); {gate} + {layer.task_count} own experts"
    if isinstance(layer, arch.ExtractionLevel):
        own = f" + {layer.task_count} per task" if layer.task_count else ""
        inner = describe(layer.shared_experts.experts[0])
        return (
            f"extraction level: {layer.shared_count} shared{own} experts x [{inner}], "
            f"{len(layer.tasks)} task gates + 1 shared gate"
        )
    if type(layer).__name__ == "InputAttention":
        return "self-attention over the inputs (one head), then their mean"
    if type(layer).__name__ == "CategoryEmbedding":
        return f"embedding {layer.rows} values x {layer.dim} (row 0: unknown)"
    if isinstance(layer, arch.CrossStitch):
        return f"cross-stitch mixing {len(layer.rows)} x {layer.columns} (init {layer.self_weight} on own column)"
    config = layer.get_config()
    kind = type(layer).__name__
    bits = [kind]
    for key in ("units", "filters", "kernel_size", "pool_size", "rate", "target_shape"):
        if key in config:
            bits.append(str(config[key]).replace(" ", ""))
    activation = config.get("activation")
    if isinstance(activation, str) and activation != "linear":
        bits.append(activation)
    return " ".join(bits)


def plan(loaded: LoadedRecipe, seed: int | None = None) -> Plan:
    """Prepare the data, build the model and describe it (nothing is trained or written)."""
    from mtlcli.tfutil import import_tf

    recipe = loaded.recipe
    seed = recipe.seed if seed is None else int(seed)
    prepared = data.prepare(loaded, seed=seed)
    import_tf(False)
    import keras

    from mtlcli.model.build import build_model

    keras.utils.set_random_seed(seed)  # as mtl train does: the same initial weights and losses
    model = build_model(loaded, prepared, seed)
    blocks, params = _blocks_and_params(model)
    weights, fixed, objective = _objective(model, params)
    eval_weights = {t: float(w) for t, w in zip(model.task_names, model.eval_weights, strict=True)}
    initial, batch = _initial_losses(model, prepared, recipe.train.batch_size, seed)
    warning = scale_warning(initial)
    return Plan(
        name=loaded.name,
        architecture=dict(model.spec.get("architecture") or {"name": "hard_sharing"}),
        inputs={  # an embedded categorical input counts its vector's size (what the trunk reads)
            k: int(model.input_embeddings[k].dim if k in model.input_embeddings else _features(v))
            for k, v in model.spec["input_shapes"].items()
        },
        rows=dict(prepared.info["split_rows"]),
        blocks=blocks,
        representation=int(_features(model.representation_shape[1:])),
        params=params,
        tasks=_tasks(model),
        weighting=_weighting(model.strategy),
        weights=weights,
        weights_fixed=fixed,
        eval_weights=eval_weights,
        eval_objective="L = "
        + " + ".join(f"{eval_weights[t]:.4g}·{_loss_term(model, t)}" for t in model.task_names),
        objective=objective,
        initial_losses=initial,
        batch=batch,
        notes=_notes(model),
        warnings=[warning] if warning else [],
        fused=int(_features(model.fused_shape[1:])),
        warm_start=warm_start(loaded, model, prepared.info.get("init_from")),
    )


def warm_start(loaded: LoadedRecipe, model, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where ``model.init_from``'s layers start: the run as written and resolved, the layers (Keras
    names, as in the graph summary, and their recipe places) and how they train: ``frozen`` for the
    whole run, ``frozen for the first N epochs`` (``freeze_epochs``) or ``trained``."""
    spec = loaded.recipe.model.init_from
    if spec is None or record is None:
        return None
    from mtlcli.model import warmstart

    epochs = spec.freeze_epochs
    if epochs:
        training = f"frozen for the first {'epoch' if epochs == 1 else f'{epochs} epochs'}, then trained"
    elif spec.freeze:
        training = "frozen for the whole run"
    else:
        training = "trained from there"
    return {
        "run": spec.run,
        "resolved": record["run"],
        "model": record["model"],
        "layers": [layer.name for layer in warmstart.parts(model, spec.layers)],
        "copied": list(record["copied"]),
        "freeze": bool(spec.freeze),
        "freeze_epochs": None if epochs is None else int(epochs),
        "training": training,
    }


def _blocks_and_params(model) -> tuple[list[Block], dict[str, int]]:
    """The graph summary's rows (shared layers first, then each task's) and the parameter counts."""
    from mtlcli.model.build import count_params as count

    # a ``freeze_epochs`` schedule's layers are frozen now and trained later: counted as trained
    later = model.freeze_schedule.ids if model.freeze_schedule is not None else frozenset()

    def trained(layer) -> list:
        return [v for v in layer.weights if v.trainable or id(v) in later]

    blocks = [
        Block("shared", layer.name, describe(layer), count(trained(layer))) for layer in model.shared_layers()
    ]
    params = {"shared": count(model.train_shared_variables)}
    for t in model.task_names:
        for layer in model.task_layers(t):
            blocks.append(Block(t, layer.name, describe(layer), count(layer.trainable_variables)))
        params[t] = count(model.task_variables(t))
    params["strategy"] = count(list(model.strategy_params.values()))
    params["total"] = count(model.trainable_variables) + count([v for v in model.weights if id(v) in later])
    return blocks, params


def _tasks(model) -> dict[str, dict[str, Any]]:
    tasks = {}
    for t in model.task_names:
        spec = model.spec["tasks"][t]
        tasks[t] = {
            "type": spec["type"],
            "loss": spec["loss"],
            "outputs": int(spec["units"]),
            "weight": float(spec["weight"]),
            "inputs_from": list(spec.get("inputs_from") or []),
        }
    return tasks


def _weighting(strategy) -> dict[str, Any]:
    on = getattr(strategy, "on", "parameters")
    return {
        "name": strategy.name,
        "parameters": strategy.get_config(),
        "needs": strategy.needs,
        "on": on if strategy.needs == "gradients" else None,
        "summary": strategy.summary,
    }


def _objective(model, params: dict[str, int]) -> tuple[dict[str, float] | None, bool, str]:
    """(first-step weights, whether they stay fixed, the objective in words). A loss-based strategy
    is a weighted sum of the task losses; a gradient-based one combines per-task gradients instead."""
    strategy, names = model.strategy, model.task_names
    if strategy.needs == "losses":
        weights = _first_weights(model)
        fixed = strategy.name in FIXED_WEIGHTS
        objective = "L = " + " + ".join(f"{weights[t]:.4g}·{_loss_term(model, t)}" for t in names)
        objective += _calibrator(model, " + ")
        if not fixed:
            objective += f"  (weights at the first step; {strategy.name}: {strategy.summary})"
        return weights, fixed, objective
    if getattr(strategy, "on", "parameters") == "representation":
        z = _features(model.representation_shape[1:])
        objective = (
            f"shared parameters: the gradient of sum_i w_i L_i, with the weights w that {strategy.name} "
            f"computes each step from the {len(names)} per-task gradients w.r.t. the representation z "
            f"({z:,} features per example)"
        )
    elif getattr(strategy, "batches", 1) == 2:
        objective = (
            f"shared parameters: the two half-batches' mean gradient of sum_i w_i L_i, with the weights w "
            f"that {strategy.name} computes each step from J1 J2ᵀ, the {len(names)} per-task gradients of "
            f"the {params['shared']:,} shared parameters on each half of the batch (two independent "
            f"mini-batches); each task's own parameters: the gradient of its own loss"
        )
        return None, False, objective + _calibrator(model, "; plus, outside the strategy, ")
    else:
        objective = (
            f"shared parameters: {strategy.name} combines the {len(names)} per-task gradients of the "
            f"{params['shared']:,} shared parameters into one direction each step"
        )
    objective += "; each task's own parameters: the gradient of its own loss"
    return None, False, objective + _calibrator(model, "; plus, outside the strategy, ")


def _calibrator(model, joint: str) -> str:
    """AITM's calibrator term as it joins the training objective (not the validation loss), or ''."""
    weight = float(getattr(model, "calibrator_weight", 0.0) or 0.0)
    if not weight:
        return ""
    return f"{joint}{weight:.4g}·calibrator({' → '.join(model.aitm_order)})"


def _notes(model) -> list[str]:
    """What counts as shared in the architectures where that is not obvious, and AITM's calibrator."""
    architecture = model.architecture
    if _calibrator(model, ""):
        return [
            "aitm: calibrator(" + " → ".join(model.aitm_order) + ") = Σ_t mean(max(p_t − p_{t−1}, 0)) over "
            "the tasks' probabilities along the order, on every row; it joins the training objective, "
            "not the validation loss"
        ]
    if architecture == "ple":
        return [
            "ple: the levels below the top one (their task experts and gates included) count as shared: "
            "every task's loss reaches them through the shared gates"
        ]
    if architecture == "cross_stitch":
        return [
            "cross_stitch: the task columns and all cross-stitch units but the last count as shared "
            "(every task reads every column); each task owns its final mixing row"
        ]
    return []


def scale_warning(losses: dict[str, float]) -> str | None:
    """A warning when the largest positive task loss exceeds the smallest by more than
    :data:`SCALE_WARNING` times (tasks without labels in the batch report 0 and are ignored)."""
    finite = {t: v for t, v in losses.items() if math.isfinite(v) and v > 0}
    if len(finite) < 2:
        return None
    hi, lo = max(finite, key=finite.get), min(finite, key=finite.get)
    if finite[hi] <= SCALE_WARNING * finite[lo]:
        return None
    return (
        f"the initial task losses differ by more than {SCALE_WARNING:g}x ({hi} {finite[hi]:.4g} vs "
        f"{lo} {finite[lo]:.4g}): consider task weights or a loss-balancing strategy such as "
        f"uncertainty or dwa"
    )


def _loss_term(model, task: str) -> str:
    name = model.spec["tasks"][task]["loss"]
    return f"{LOSS_SYMBOLS.get(name, name)}({task})"


def _initial_losses(model, prepared, batch_size: int, seed: int) -> tuple[dict[str, float], int]:
    """Each task's loss on the first training batch (unshuffled), before any training step."""
    import tensorflow as tf

    from mtlcli.data import pipeline

    arrays = prepared.splits["train"]
    ds = pipeline.dataset(tf, arrays, batch_size, seed).take(1)
    logs = model.evaluate(ds, verbose=0, return_dict=True)
    losses = {t: float(logs[f"{t}_loss"]) for t in model.task_names}
    model.reset_metrics()
    return losses, min(batch_size, arrays.n)


def _features(shape) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def _first_weights(model) -> dict[str, float]:
    """A loss-based strategy's weights at the first step (unit losses, initial parameters and state)."""
    import tensorflow as tf

    from mtlcli import weighting

    n = len(model.task_names)
    params, state = model.strategy_values()
    ctx = weighting.Context(
        step=tf.constant(0, tf.int64),
        epoch=tf.constant(0, tf.int64),
        seed=tf.constant([model.seed, 0], tf.int64),
        task_weights=tf.constant(model.task_weights),
        new_epoch=tf.constant(False),
    )
    result = model.strategy.combine(tf.ones((n,), tf.float32), params, state, ctx)
    return {t: float(w) for t, w in zip(model.task_names, result.weights.numpy(), strict=True)}
