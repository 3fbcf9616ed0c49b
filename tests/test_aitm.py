"""AITM: the calibrator penalty on hand-computed values, the information-transfer layer's attention
(weights sum to 1, output a convex mix of h3), a safe_mode round trip, finite gradients; then
``model.architecture: aitm``: the shared/task split, the calibrator term in the train step's gradients,
training (static, mgda) and a model.keras round trip, and the recipe errors."""

from __future__ import annotations

import numpy as np


def test_calibrator_penalty_hand_computed():
    from mtlcli.model.aitm import calibrator_penalty

    click = np.array([0.5, 0.2, 0.9, 0.1], np.float32)
    buy = np.array([0.6, 0.1, 0.95, 0.1], np.float32)  # gaps 0.1, -0.1, 0.05, 0 -> mean(max) = 0.0375
    assert abs(float(calibrator_penalty([click, buy])) - 0.0375) < 1e-7
    repurchase = np.array([0.0, 0.3, 0.0, 0.5], np.float32)  # vs buy: 0, 0.2, 0, 0.4 -> 0.15
    assert abs(float(calibrator_penalty([click, buy, repurchase])) - 0.1875) < 1e-6
    assert float(calibrator_penalty([buy, buy * 0.5])) == 0.0


def test_information_transfer_attention_and_round_trip(tmp_path):
    import keras
    import tensorflow as tf

    from mtlcli.model.aitm import InformationTransfer

    prev, own = keras.Input((5,)), keras.Input((4,))
    layer = InformationTransfer(4, name="ait")
    model = keras.Model([prev, own], layer([prev, own]))
    rng = np.random.default_rng(0)
    args = [rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=(8, 4)).astype(np.float32)]
    w = np.asarray(layer.attention(args))
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    u = np.stack([np.asarray(layer.transfer(args[0])), args[1]], axis=1)
    expected = np.sum(w[:, :, None] * np.asarray(layer.h3(u)), axis=1)
    np.testing.assert_allclose(np.asarray(model(args)), expected, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(args)), np.asarray(model(args)), atol=1e-6)
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(model(args))
    grads = tape.gradient(out, model.trainable_variables)
    assert all(np.isfinite(g.numpy()).all() for g in grads)


# ------------------------------------------------------------------------------------------------
# model.architecture: aitm

import textwrap  # noqa: E402

import pytest  # noqa: E402

AITM_RECIPE = """\
name: aitm
seed: 1
data:
  train: funnel.csv
  validation: 0.25
  inputs: {a: numeric, b: numeric}
model:
  architecture: aitm
  aitm: {order: [click, buy], calibrator_weight: 0.6}
  shared: [{dense: {units: 8, activation: relu}}]
  tasks:
    click: {type: binary, head: [{dense: {units: 4, activation: relu}}]}
    buy: {type: binary, head: [{dense: {units: 6, activation: relu}}]}
    value: {type: regression}
train: {epochs: 2, batch_size: 16, weighting: static}
"""


def _funnel(path, n: int = 80):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=n), rng.normal(size=n)
    click = (a > 0).astype(int)
    buy = click * (b > 0.3)
    lines = ["a,b,click,buy,value"] + [
        f"{a[i]:.4f},{b[i]:.4f},{click[i]},{buy[i]},{a[i] + b[i]:.4f}" for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")


def _build(tmp_path, text: str = AITM_RECIPE):
    import keras

    from mtlcli import data
    from mtlcli import recipe as R
    from mtlcli.model.build import build_model

    _funnel(tmp_path / "funnel.csv")
    keras.utils.set_random_seed(3)  # the run sets it too
    loaded = R.loads(text, file="r.yaml", base_dir=tmp_path)
    prepared = data.prepare(loaded)
    return prepared, build_model(loaded, prepared, seed=3)


def test_aitm_split_wiring_and_calibrator_value(tmp_path):
    import tensorflow as tf

    prepared, model = _build(tmp_path)
    assert model.architecture == "aitm" and list(model.transfers) == ["buy"]
    ids = lambda vs: {id(v) for v in vs}  # noqa: E731
    shared, heads = ids(model.shared_variables), ids(model.head_variables)
    assert shared == ids(model.trunk[0].trainable_variables)  # the bottom only
    assert ids(model.transfers["buy"].trainable_variables) <= ids(model.task_variables("buy"))
    assert shared | heads | ids(model.strategy_params.values()) == ids(model.trainable_variables)
    arr = prepared.splits["train"]
    with tf.GradientTape(persistent=True) as tape:
        preds = model(arr.x, training=False)
        losses, _ = model.task_losses(arr.y, preds, arr.mask)
        rows = tf.unstack(losses)

    def touched(i, owner):
        grads = tape.gradient(rows[i], model.task_variables(owner))
        return any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)

    # buy's loss reaches click's tower through the transfer; no other loss reaches another task's tower
    assert touched(1, "click") and touched(1, "buy") and touched(0, "click") and touched(2, "value")
    assert not touched(0, "buy") and not touched(2, "buy") and not touched(0, "value")
    # calibrator: 0.6 * mean(max(sigmoid(buy) - sigmoid(click), 0)), by hand on 3 rows
    logits = {"click": tf.constant([[0.0], [2.0], [-1.0]]), "buy": tf.constant([[1.0], [0.0], [-1.0]])}
    p = {k: 1 / (1 + np.exp(-v.numpy().ravel())) for k, v in logits.items()}
    hand = 0.6 * np.mean(np.maximum(p["buy"] - p["click"], 0))  # (0.7311 - 0.5) / 3 * 0.6 = 0.046212
    assert abs(hand - 0.0462117) < 1e-6
    assert abs(float(model.calibrator_term(logits)) - hand) < 1e-6


def test_aitm_size_estimate_counts_the_transfer_layers(tmp_path):
    import math

    from mtlcli import recipe as R
    from mtlcli.model import size

    # buy listed before click, the task it reads: buy's transfer takes click's 4 features into buy's 6
    # (the transfer dense, then h1, h2, h3 of 6 x 6 with biases)
    buy = "    buy: {type: binary, head: [{dense: {units: 6, activation: relu}}]}\n"
    text = AITM_RECIPE.replace(buy, "").replace("  tasks:\n", "  tasks:\n" + buy)
    prepared, model = _build(tmp_path, text)
    est = size.estimate(R.loads(text, file="r.yaml", base_dir=tmp_path).recipe, prepared.prep)
    assert est.complete
    transfer = sum(math.prod(v.shape) for v in model.transfers["buy"].trainable_variables)
    assert est.layers[("model", "aitm")].params == (4 + 1) * 6 + 3 * (6 + 1) * 6 == transfer
    state = sum(math.prod(v.shape) for v in model.strategy_state.values())
    assert est.params == model.count_params() - state


def test_aitm_train_step_adds_the_calibrator_gradient(tmp_path):
    """One static step with calibrator_weight 0.6 moves every variable by the step of weight 0 plus
    exactly the plain gradient of the penalty (SGD, so updates are linear in the gradients)."""
    import keras
    import tensorflow as tf

    from mtlcli.model.backward import grads_or_zeros

    prepared, model = _build(tmp_path)
    arr = prepared.splits["train"]
    model.towers["buy"][-1].bias.assign([1.0])  # buy above click on some rows: a positive penalty
    variables = model.shared_variables + model.head_variables
    start = [v.numpy() for v in variables]
    with tf.GradientTape() as tape:
        penalty = model.calibrator_term(model(arr.x, training=True))
    extra = grads_or_zeros(tape, penalty, variables)
    moved = {}
    for weight in (0.6, 0.0):
        for v, s in zip(variables, start, strict=True):
            v.assign(s)
        model.calibrator_weight = weight
        model.optimizer = keras.optimizers.SGD(1.0)
        model.train_step((arr.x, arr.y, arr.mask))
        moved[weight] = [s - v.numpy() for v, s in zip(variables, start, strict=True)]
    assert float(penalty) > 0
    for a, b, g in zip(moved[0.6], moved[0.0], extra, strict=True):
        np.testing.assert_allclose(a - b, g.numpy(), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["static", "mgda"])
def test_aitm_trains_and_round_trips(tmp_path, weighting):
    import keras

    from mtlcli import fsio

    prepared, model = _build(tmp_path, AITM_RECIPE.replace("weighting: static", f"weighting: {weighting}"))
    arr = prepared.splits["train"]
    for _ in range(5):
        logs = model.train_step((arr.x, arr.y, arr.mask))
    assert all(np.isfinite(float(v)) for v in logs.values()) and bool(model.batch_applied)
    path = tmp_path / "model.keras"
    fsio.save_model_atomic(model, path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.architecture == "aitm" and list(loaded.transfers) == ["buy"]
    before, after = model(arr.x), loaded(arr.x)
    for t in before:
        np.testing.assert_array_equal(before[t].numpy(), after[t].numpy())


def _problems(text: str) -> list[str]:
    from mtlcli import recipe as R
    from mtlcli.errors import RecipeError

    with pytest.raises(RecipeError) as info:
        R.loads(textwrap.dedent(text), file="r.yaml")
    return [p.render() for p in info.value.problems]


def test_aitm_recipe_errors(cli, tmp_path):
    bad = AITM_RECIPE.replace("order: [click, buy]", "order: [clik, value, buy, buy]")
    assert _problems(bad) == [
        "r.yaml:9 model.aitm.order[0]: unknown task 'clik'; did you mean 'click'? (tasks: click, buy, value)",
        "r.yaml:9 model.aitm.order[1]: aitm.order holds binary tasks (click -> purchase): 'value' is a "
        "regression task",
        "r.yaml:9 model.aitm.order[3]: task 'buy' is listed twice in aitm.order",
    ]
    assert _problems(AITM_RECIPE.replace("  aitm: {order: [click, buy], calibrator_weight: 0.6}\n", "")) == [
        "r.yaml:8 model.architecture: the aitm architecture needs model.aitm, e.g. aitm: {order: [click, purchase]}"
    ]
    other = AITM_RECIPE.replace("architecture: aitm", "architecture: hard_sharing")
    assert _problems(other) == [
        "r.yaml:9 model.aitm: aitm applies to the aitm architecture only; the architecture is 'hard_sharing'"
    ]
    backwards = AITM_RECIPE.replace("order: [click, buy]", "order: [buy, click]").replace(
        "buy: {type: binary,", "buy: {type: binary, inputs_from: [click],"
    )
    assert _problems(backwards) == [
        "r.yaml:9 model.aitm.order[0]: task 'buy' reads 'click' through inputs_from, so it cannot come "
        "before it in aitm.order (information flows along the order)"
    ]
    path = tmp_path / "r.yaml"
    path.write_text(bad)
    result = cli("validate", path)
    assert result.exit_code == 2 and "did you mean 'click'?" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("weighting", ["static", "mgda"])
def test_plan_shows_the_calibrator_term(cli, tmp_path, weighting):
    _funnel(tmp_path / "funnel.csv")
    path = tmp_path / "r.yaml"
    path.write_text(AITM_RECIPE.replace("weighting: static", f"weighting: {weighting}"))
    result = cli("plan", path)
    assert result.exit_code == 0, result.output
    if weighting == "static":
        assert "objective: L = 0.3333·bce(click) + 0.3333·bce(buy) + 0.3333·mse(value) + " in result.output
    assert "0.6·calibrator(click → buy)" in result.output.replace("\n", " ")
    assert "validation loss: L = 0.3333·bce(click) + 0.3333·bce(buy) + 0.3333·mse(value)\n" in result.output
    assert "it joins the training objective, not the validation loss" in result.output.replace("\n", " ")
    without = AITM_RECIPE.replace("calibrator_weight: 0.6", "calibrator_weight: 0")
    path.write_text(without)
    assert "calibrator(" not in cli("plan", path).output
