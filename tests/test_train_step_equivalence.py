"""mtl's train step, for every gradient-based strategy, equals an independent reference step.

The reference uses no mtl code beyond the strategy's public :func:`mtlcli.weighting.aggregate` (and the
model's forward pass and its shared/head variable lists, which define *what* is trained): per-task
losses are computed here with Keras losses and the label masks, per-task gradients with one
``tf.GradientTape`` per task, and a fresh ``keras.optimizers.Adam`` with the recipe's hyper-parameters
updates a second model built with the same weights.

The convention checked (``MultiTaskModel.train_step``, TorchJD's ``mtl_backward``):

* ``L_i`` is the mean of task ``i``'s per-example loss over the rows that carry its label (unlabelled
  rows are masked out; the row still trains the other tasks). Recipe task weights are *not* applied to
  the losses; they reach the strategy only as ``task_weights`` of its context.
* Shared variables get the strategy's direction ``d = aggregate(J)``, with ``J`` the ``(T, P)`` matrix of
  per-task gradients of the shared variables, flattened and concatenated in ``shared_variables`` order.
  For a two-batch strategy (``batches == 2``: MoDo, SDMGrad) ``J`` is ``(2, T, P)``: those of the first
  and the second half of the batch's rows, each half with its own forward pass and masked mean losses,
  and the heads' gradients are those of the halves' mean loss.
  With ``on: representation`` the rows of ``J`` are the gradients of ``L_i`` w.r.t. the shared
  representation ``z`` (all rows of the batch flattened), and the shared variables get
  ``sum_i w_i dL_i/dtheta``, which is the vector-Jacobian product of ``z`` with ``d = w^T J``.
* Head variables get their plain, unweighted gradient: that of ``sum_i L_i`` (for a head that no other
  task reads, the gradient of its own loss).
* The strategy's context is ``seed = (recipe seed, optimizer step)``, ``step`` = optimizer step before
  the update, ``epoch = 0``; its state carries over from step to step; GradNorm's learnable logits get
  the exact gradient of its auxiliary loss (computed here by a tape over the documented loss) and are
  updated by the same Adam. The strategy sees the unweighted per-task losses ``L``.
* Randomness (PCGrad's and GradVac's visiting orders, GradDrop's draws) comes from that seed, so the
  reference reproduces it by passing ``seed``/``step`` to ``aggregate``. GradDrop is the exception:
  ``tf.random.stateless_uniform`` draws different numbers in float64 (``aggregate``) than in float32
  (training), so its reference is TorchJD's formula written here with the float32 draws.

Adam is invariant to a constant scale of the gradient and its first step is nearly ``-lr * sign(g)``,
so comparing weights alone would hide a wrongly scaled direction. After each of three steps on
different batches this test therefore compares, besides every variable's change, the optimizer's
first and second moments (``m = (1 - beta_1) g`` after the first step): the applied gradients
themselves. Tolerances are relative to each array's scale (the strategy runs in float32 in training
and in float64 through ``aggregate``).
"""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcli import data, weighting
from mtlcli import recipe as R
from mtlcli.model.build import build_model
from mtlcli.weighting import REGISTRY, aggregate

from .conftest import add_primary

#: every registered strategy that replaces the shared gradient by an aggregate of the task gradients
GRADIENT_BASED = sorted(name for name, cls in REGISTRY.items() if cls.needs == "gradients")
#: the gradient-based strategies that accept ``on: representation``
REPRESENTATION = sorted(
    name for name in GRADIENT_BASED if "on" in {f.name for f in dataclasses.fields(REGISTRY[name])}
)
#: non-default settings that change the math (not only a constant)
VARIANTS = [
    {"mgda": {"normalization": "loss+"}},
    {"mgda": {"normalization": "l2"}},
    {"cagrad": {"c": 0.5, "rescale": 1}},
    {"nash_mtl": {"max_norm": 0.0}},
    {"graddrop": {"leak": 0.3}},
    # a wrapper: its base's (T, P) state carried, and its base's on: representation
    {"cr_mogm": {"base": "excess_mtl", "alpha": 0.5}},
    {"cr_mogm": {"base": {"mgda": {"on": "representation"}}, "alpha": 0.5}},
]
CASES = [
    *GRADIENT_BASED,
    *({name: {"on": "representation"}} for name in REPRESENTATION),
    *VARIANTS,
]

#: ``(rtol of Adam's moments, rtol of each variable's change)``, relative to each array's scale. Measured
#: (three runs): moments agree to <= 1.5e-6 and changes to <= 2.5e-5 for every case but CAGrad. Changes
#: are looser than moments because Adam divides by ``sqrt(v)``: a coordinate whose gradient is tiny
#: next to the array's scale turns float32 round-off into a visible change.
TOLERANCE = (1e-5, 1e-3)
#: CAGrad's ``d = g0 + (c ||g0|| / ||g_w||) g_w`` is ill-conditioned on these Gramians (task gradient
#: norms 0.2 to 2.2): in float32 (training) its direction differs from float64 (``aggregate``) by 1.4e-4
#: relative for the *same* J, measured; moments then agree to <= 2.5e-4 and changes to <= 1.3e-2.
#: MGDA's Frank-Wolfe min-norm solver amplifies float32 round-off of the Gramian: on PLE with
#: ``on: representation`` its moments agreed to 1.05e-5 on CI's machine (1.5e-6 here).
#: SDMGrad's inner loop (20 projected steps at lr 10 on the T x T problem) amplifies float32 round-off of
#: J1 J2ᵀ the same way: on MMoE its moments differed by 1.3e-4 relative in a clean-clone CI run.
TOLERANCES = {"cagrad": (1e-3, 5e-2), "mgda": (5e-5, 1e-3), "sdmgrad": (5e-4, 1e-2)}

SEED = 3
STEPS = 3
BATCH = 30

KERAS_LOSSES = {
    "sparse_categorical_crossentropy": lambda: keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None
    ),
    "binary_crossentropy": lambda: keras.losses.BinaryCrossentropy(from_logits=True, reduction=None),
    "mse": lambda: keras.losses.MeanSquaredError(reduction=None),
}


def _case_id(spec) -> str:
    return spec if isinstance(spec, str) else json.dumps(spec).replace(" ", "").replace('"', "")


def _name(spec) -> str:
    return spec if isinstance(spec, str) else next(iter(spec))


def _params(spec) -> dict:
    return {} if isinstance(spec, str) else dict(next(iter(spec.values())))


def _setup(tiny_project, spec, model_section: str = "", flag_reads_kind: bool = False):
    """Two models built from the same recipe with equal weights, and STEPS different batches."""
    text = tiny_project.read_text().replace("weighting: static", f"weighting: {json.dumps(spec)}")
    text = add_primary(text, spec, task="flag")  # PCD: a primary that is not the first task
    text = text.replace("model:\n", "model:\n" + model_section)
    if flag_reads_kind:
        text = text.replace("flag: {type: binary,", "flag: {type: binary, inputs_from: [kind],")
    # a non-unit task weight: it must reach the strategy's context only, never the losses
    text = text.replace("value: {type: regression, metrics: [mae]}", "value: {type: regression, weight: 2}")
    loaded = R.loads(text, file="r.yaml", base_dir=tiny_project.parent)
    prepared = data.prepare(loaded)
    mtl = build_model(loaded, prepared, seed=SEED)
    ref = build_model(loaded, prepared, seed=SEED)
    ref.set_weights(mtl.get_weights())
    arr = prepared.splits["train"]
    assert len(arr.mask["flag"]) >= STEPS * BATCH
    batches = [
        tuple(
            {k: v[s * BATCH : (s + 1) * BATCH] for k, v in part.items()} for part in (arr.x, arr.y, arr.mask)
        )
        for s in range(STEPS)
    ]
    # some labels are missing in the batches: the masks are exercised
    assert any(np.asarray(m["flag"]).min() == 0 for _, _, m in batches)
    return loaded, mtl, ref, batches


def _task_losses(model, y, preds, mask) -> list:
    """Masked per-task mean losses, written here from Keras losses (not the model's own)."""
    out = []
    for task, tspec in model.spec["tasks"].items():
        per_example = tf.reshape(
            KERAS_LOSSES[tspec["loss"]]()(y[task], tf.cast(preds[task], tf.float32)), [-1]
        )
        m = tf.cast(mask[task], tf.float32)
        out.append(tf.reduce_sum(per_example * m) / tf.reduce_sum(m))
    return out


def _per_task_gradients(model, x, y, mask, variables, num_tasks):
    """Per task ``i``: a fresh tape over the forward pass; gradients of ``L_i`` w.r.t. ``variables``,
    w.r.t. ``z`` and the loss itself."""
    grads, z_grads, losses = [], [], []
    for i in range(num_tasks):
        with tf.GradientTape() as tape:
            z = model.represent(x, training=True)
            tape.watch(z)
            loss = _task_losses(model, y, model.heads_from(z, training=True), mask)[i]
        g_vars, g_z = tape.gradient(loss, [variables, z])
        grads.append([tf.zeros(v.shape) if g is None else g for g, v in zip(g_vars, variables, strict=True)])
        z_grads.append(tf.zeros_like(z) if g_z is None else g_z)
        losses.append(float(loss))
    return grads, z_grads, np.array(losses)


def _two_halves(model, x, y, mask, variables, num_tasks, num_shared):
    """A two-batch strategy's reference (``batches == 2``): per-task gradients of each half of the batch
    (its first ``n // 2`` rows and the rest, each with its own forward pass and masked mean losses):
    ``(per-task gradients of (L¹_i + L²_i) / 2, J of shape (2, T, P))``."""
    n = len(next(iter(mask.values())))
    parts = [
        [{k: v[start:end] for k, v in part.items()} for part in (x, y, mask)]
        for start, end in ((0, n // 2), (n // 2, n))
    ]
    halves = [_per_task_gradients(model, *part, variables, num_tasks)[0] for part in parts]
    pair = np.stack([np.stack([_flat(g[:num_shared]) for g in half]) for half in halves])
    mean = [[(a + b) / 2 for a, b in zip(g1, g2, strict=True)] for g1, g2 in zip(*halves, strict=True)]
    return mean, pair


def _flat(tensors) -> np.ndarray:
    return np.concatenate([np.reshape(np.asarray(t, np.float64), -1) for t in tensors])


def _gradnorm_logit_grad(J, losses, initial, logits, alpha: float) -> np.ndarray:
    """Gradient of GradNorm's auxiliary loss ``sum_i |lambda_i n_i - sg(mean(lambda n) r_i^alpha)|``
    w.r.t. the logits ``s`` (``lambda = T softmax(s)``, ``n_i = ||g_i||``, ``r`` = relative inverse
    training rates against the first step's losses), by a tape (Chen et al. 2018, LibMTL's form)."""
    s = tf.Variable(np.asarray(logits, np.float64))
    norms = tf.constant(np.linalg.norm(J, axis=1))
    ratios = losses / initial
    rel = tf.constant(ratios / ratios.mean())
    with tf.GradientTape() as tape:
        lam = len(losses) * tf.nn.softmax(s)
        weighted = lam * norms
        target = tf.stop_gradient(tf.reduce_mean(weighted) * rel**alpha)
        aux = tf.reduce_sum(tf.abs(weighted - target))
    return tape.gradient(aux, s).numpy()


def _graddrop_direction(J32: np.ndarray, step: int, leak: float) -> np.ndarray:
    """GradDrop (TorchJD's formula) with the training step's own uniform draws.

    ``aggregate`` runs in float64, and ``tf.random.stateless_uniform`` draws different numbers for
    float64 than for the float32 ``J`` of training, so the reference draws ``U`` itself: one
    ``Uniform[0, 1)`` per column from the context's seed ``(recipe seed, step)`` in J's dtype.
    """
    u = tf.random.stateless_uniform((J32.shape[1],), seed=[SEED, step], dtype=tf.float32).numpy()
    purity = 0.5 * (
        1
        + np.divide(J32.sum(0), np.abs(J32).sum(0), out=np.zeros(J32.shape[1]), where=np.abs(J32).sum(0) > 0)
    )
    keep = ((purity > u)[None] & (J32 > 0)) | ((purity < u)[None] & (J32 < 0))
    return ((leak + (1 - leak) * keep) * J32).sum(0)


def _assert_close(actual, expected, what: str, rtol: float):
    """Elementwise ``|a - e| <= rtol * (|e| + max|e|)``: relative to each array's own scale."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    err = np.abs(actual - expected)
    bound = rtol * (np.abs(expected) + scale) + 1e-12
    assert np.all(err <= bound), f"{what}: max error {err.max():.3g} (scale {scale:.3g})"


def _slots(optimizer) -> dict:
    """Adam's per-variable moments by variable name (``..._momentum`` / ``..._velocity``; the
    optimizer's own name prefix is dropped)."""
    return {
        v.path.split("/", 1)[-1]: v.numpy()
        for v in optimizer.variables
        if v.path.endswith("_momentum") or v.path.endswith("_velocity")
    }


@pytest.mark.parametrize("spec", CASES, ids=_case_id)
def test_train_step_equals_adam_on_aggregate_of_independent_task_gradients(tiny_project, spec):
    _check_equivalence(spec, *_setup(tiny_project, spec))


EXPERT = "[{dense: {units: 8, activation: relu}}]"
#: other architectures move the split between shared and task-specific variables (and ``z``); with
#: ``flag`` reading ``kind``'s output, ``kind``'s head also gets ``dL_flag/d(kind head)`` (the gradient of
#: the unweighted sum of the losses)
ARCHITECTURES = {
    "ple": f"  architecture: ple\n  levels: 2\n  experts: {{count: 2, layers: {EXPERT}}}\n",
    "mmoe": f"  architecture: mmoe\n  experts: {{count: 3, layers: {EXPERT}}}\n",
    "cross_stitch": "  architecture: cross_stitch\n",
    "hard_sharing": "",
}
ARCHITECTURE_CASES = [
    ("ple", "upgrad"),
    ("ple", {"mgda": {"on": "representation"}}),
    ("mmoe", {"gradnorm": {"on": "representation"}}),
    ("cross_stitch", "pcgrad"),
    ("hard_sharing", "nash_mtl"),
]


@pytest.mark.parametrize(
    ("architecture", "spec"), ARCHITECTURE_CASES, ids=[f"{a}-{_case_id(s)}" for a, s in ARCHITECTURE_CASES]
)
def test_train_step_equivalence_on_other_architectures_and_a_task_reading_another(
    tiny_project, architecture, spec
):
    setup = _setup(tiny_project, spec, ARCHITECTURES[architecture], flag_reads_kind=True)
    assert setup[1].spec["tasks"]["flag"]["inputs_from"] == ["kind"]
    _check_equivalence(spec, *setup)


def _check_equivalence(spec, loaded, mtl, ref, batches):
    """The body of the tests above (see the module docstring)."""
    name, params = _name(spec), _params(spec)
    strategy = weighting.get(mtl.spec["weighting"])  # the recipe's, with PCD's primary index
    on_z = getattr(strategy, "on", "parameters") == "representation"  # a wrapper's follows its base
    rtol_moments, rtol_change = TOLERANCES.get(name, TOLERANCE)
    adam_spec = loaded.recipe.train.optimizer.adam
    adam = keras.optimizers.Adam(
        learning_rate=adam_spec.learning_rate,
        beta_1=adam_spec.beta_1,
        beta_2=adam_spec.beta_2,
        epsilon=adam_spec.epsilon,
        amsgrad=adam_spec.amsgrad,
        weight_decay=adam_spec.weight_decay,
        clipnorm=adam_spec.clipnorm,
    )
    task_names = list(ref.spec["tasks"])
    num_tasks = len(task_names)
    task_weights = np.array([ref.spec["tasks"][t]["weight"] for t in task_names])
    assert task_weights.tolist() == [1.0, 1.0, 2.0]
    shared, heads = ref.shared_variables, ref.head_variables
    logits = ref.strategy_params.get("logits")
    loss_scale = ref.strategy_params.get("loss_scale")  # IMTL-L's learned log-scales
    variables = shared + heads + [p for p in (logits, loss_scale) if p is not None]
    assert {id(v) for v in variables} == {id(v) for v in ref.trainable_variables}
    state, initial_losses = None, None

    for step, (x, y, mask) in enumerate(batches):
        before = [v.numpy().copy() for v in mtl.trainable_variables]
        mtl.train_step((x, y, mask))

        grads, z_grads, losses = _per_task_gradients(ref, x, y, mask, shared + heads, num_tasks)
        J = np.stack([_flat(g[: len(shared)]) for g in grads])
        J_z = np.stack([_flat(g) for g in z_grads])
        rows = J_z if on_z else J
        if strategy.batches == 2:  # (J1, J2) of the batch's halves; the step trains on their mean loss
            grads, rows = _two_halves(ref, x, y, mask, shared + heads, num_tasks, len(shared))
        extra = {}
        if logits is not None:
            extra["params"] = {"logits": logits.numpy()}
        if loss_scale is not None:
            extra["params"] = {"loss_scale": loss_scale.numpy()}
        if name == "graddrop":
            d = _graddrop_direction(rows.astype(np.float32), step, params.get("leak", 0.0))
        else:
            d, state = aggregate(
                strategy,
                rows,
                losses=losses,
                task_weights=task_weights,
                seed=SEED,
                step=step,
                state=state,
                return_state=True,
                **extra,
            )
        if on_z:
            with tf.GradientTape() as tape:
                z = ref.represent(x, training=True)
            cotangent = tf.reshape(tf.constant(d, tf.float32), tf.shape(z))
            shared_grads = tape.gradient(z, shared, output_gradients=cotangent)
        else:
            shared_grads, offset = [], 0
            for v in shared:
                size = int(np.prod(v.shape))
                shared_grads.append(tf.constant(np.reshape(d[offset : offset + size], v.shape), tf.float32))
                offset += size
        head_grads = [tf.add_n([g[len(shared) + k] for g in grads]) for k in range(len(heads))]
        all_grads = list(shared_grads) + head_grads
        if logits is not None:
            initial_losses = losses if initial_losses is None else initial_losses
            all_grads.append(
                tf.constant(
                    _gradnorm_logit_grad(rows, losses, initial_losses, logits.numpy(), strategy.alpha),
                    tf.float32,
                )
            )
        if loss_scale is not None:  # d(e^s_i L_i - s_i)/ds_i, written out here
            all_grads.append(tf.constant(np.exp(loss_scale.numpy()) * losses - 1, tf.float32))
        adam.apply(all_grads, variables)

        ref_slots, mtl_slots = _slots(adam), _slots(mtl.optimizer)
        assert set(ref_slots) == set(mtl_slots)
        for key, value in ref_slots.items():
            _assert_close(mtl_slots[key], value, f"step {step}: Adam slot {key}", rtol_moments)
        after = {v.path: v.numpy() for v in ref.trainable_variables}
        for v, b in zip(mtl.trainable_variables, before, strict=True):
            _assert_close(v.numpy() - b, after[v.path] - b, f"step {step}: change of {v.path}", rtol_change)
    for key, value in (state or {}).items():
        _assert_close(mtl.strategy_state[key].numpy(), value, f"strategy state {key}", rtol_moments)


def test_every_gradient_based_strategy_is_checked():
    """The cases above come from the registry; a new gradient-based strategy is checked automatically."""
    assert set(GRADIENT_BASED) <= {_name(c) for c in CASES}
    assert GRADIENT_BASED and REPRESENTATION
    assert {"mgda", "pcgrad", "upgrad", "gradnorm", "graddrop"} <= set(GRADIENT_BASED)
