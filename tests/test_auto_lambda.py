"""Auto-Lambda's train step (the meta step on a validation batch, then the ordinary update), the
runner's validation batches, and the recipe checks.

The step is checked against a reference written here in the official code's structure
(``AutoLambda.unrolled_backward`` and ``compute_hessian``): a *copy* of the model takes the virtual
step, the validation gradient is taken on the copy, the finite differences on a second copy; the
weights' Adam step is written out with NumPy. Plain SGD (learning rate 0.1) reads the applied update:
a variable's change is ``-0.1`` times the gradient of ``Σ λ_i L_i`` with the *new* ``λ`` -- which also
shows that the meta step restored every variable.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.model.build import build_model

LR = 0.1


def _setup(
    tiny_project, spec: str = "{auto_lambda: {lr: 0.01, weight_init: 0.3}}", primary: str | None = None
):
    text = tiny_project.read_text().replace("weighting: static", f"weighting: {spec}")
    if primary is not None:  # Auto-Lambda's auxiliary-learning setting
        text = text.replace(f"weighting: {spec}", f"weighting: {spec}\n  primary: {primary}")
    loaded = R.loads(text, file="r.yaml", base_dir=tiny_project.parent)
    prepared = data.prepare(loaded)
    models = [build_model(loaded, prepared, seed=3) for _ in range(3)]
    for m in models[1:]:
        m.set_weights(models[0].get_weights())
    models[0].compile(optimizer=keras.optimizers.SGD(learning_rate=LR))
    models[0].optimizer.build(models[0].trainable_variables)
    return models, prepared


def _batch(split, start: int, end: int):
    return tuple(
        {k: tf.constant(np.asarray(v)[start:end]) for k, v in part.items()}
        for part in (split.x, split.y, split.mask)
    )


def _losses(model, x, y, mask):
    return model.task_losses(y, model.heads_from(model.represent(x, training=True), training=True), mask)[0]


def _variables(model):
    return model.shared_variables + model.head_variables


def _reference(copy, probe, train, validation, lambd, lr_meta: float, primaries):
    """The official algorithm on model copies (``primaries``: its binary ``pri_weights``):
    ``(new λ, Adam's m, v)``."""
    with tf.GradientTape() as tape:
        weighted = tf.reduce_sum(lambd * _losses(copy, *train))
    grads = tape.gradient(weighted, _variables(copy))
    theta = [v.numpy().copy() for v in _variables(copy)]
    for v, t, g in zip(_variables(copy), theta, grads, strict=True):
        v.assign(t - LR * (np.zeros_like(t) if g is None else g.numpy()))  # virtual step on the copy
    with tf.GradientTape() as tape:
        val = tf.reduce_sum(tf.constant(primaries, tf.float32) * _losses(copy, *validation))
    d = [
        np.zeros(v.shape, np.float32) if g is None else g.numpy()
        for g, v in zip(tape.gradient(val, _variables(copy)), _variables(copy), strict=True)
    ]
    eps = 0.01 / np.sqrt(sum(float(np.sum(x.astype(np.float64) ** 2)) for x in d))
    at = []
    for sign in (1, -1):
        for v, t, dd in zip(_variables(probe), theta, d, strict=True):
            v.assign(t + sign * eps * dd)
        at.append(_losses(probe, *train).numpy().astype(np.float64))
    h = -LR * (at[0] - at[1]) / (2 * eps)
    m, v = 0.1 * h, 0.001 * h**2
    new = lambd - lr_meta * (m / 0.1) / (np.sqrt(v / 0.001) + 1e-8)
    return new, m, v


@pytest.mark.parametrize(("primary", "primaries"), [(None, [1, 1, 1]), ("flag", [0, 1, 0])])
def test_one_step_equals_the_official_algorithm_on_model_copies(tiny_project, primary, primaries):
    (mtl, copy, probe), prepared = _setup(tiny_project, primary=primary)
    assert mtl.spec["primary"] == primary
    train, validation = _batch(prepared.splits["train"], 0, 32), _batch(prepared.splits["validation"], 0, 32)
    before = [v.numpy().copy() for v in _variables(mtl)]
    _, kind_only, _ = _reference(copy, probe, train, validation, np.full(3, 0.3), 0.01, [1, 0, 0])
    for model in (copy, probe):  # back at the original weights
        for w, b in zip(_variables(model), before, strict=True):
            w.assign(b)
    new, m, v = _reference(copy, probe, train, validation, np.full(3, 0.3), 0.01, primaries)
    assert np.max(np.abs(kind_only - m)) > 0.01 * np.max(np.abs(m))  # the primaries change h
    mtl.train_step((train, validation))
    state = {k: s.numpy() for k, s in mtl.strategy_state.items()}
    np.testing.assert_allclose(state["lambd"], new, rtol=1e-5)
    np.testing.assert_allclose(state["meta_m"], m, rtol=2e-3, atol=1e-6 * np.abs(m).max())
    assert float(state["meta_step"]) == 1
    assert np.max(np.abs(new - 0.3)) > 5e-3  # the step moved λ (Adam's first step: about lr per task)
    # the update: SGD on Σ λ_new L at the original weights (the meta step restored them)
    for w, b in zip(_variables(probe), before, strict=True):  # the probe back at the original weights
        w.assign(b)
    with tf.GradientTape() as tape:
        weighted = tf.reduce_sum(tf.constant(state["lambd"], tf.float32) * _losses(probe, *train))
    grads = tape.gradient(weighted, _variables(probe))
    for var, b, g in zip(_variables(mtl), before, grads, strict=True):
        expected = -LR * (np.zeros_like(b) if g is None else g.numpy())
        scale = np.max(np.abs(expected)) + 1e-12
        np.testing.assert_allclose(var.numpy() - b, expected, atol=2e-4 * scale, err_msg=var.path)


def test_two_steps_match_the_official_code_on_a_torch_copy_of_the_model(tiny_project):
    """``_auto_lambda_values.py``: the official ``AutoLambda`` class and trainer loop, float64; mtl in
    float32 (measured: weights to 2e-7, every variable's change to 3e-7 relative)."""
    from ._auto_lambda_values import CHANGE_NORMS, LAMBDAS

    (mtl, _, _), prepared = _setup(tiny_project)
    rng = np.random.default_rng(7)  # the golden file's weights
    for v in _variables(mtl):
        v.assign(rng.normal(0.0, 0.5, v.shape).astype(np.float32))
    start = {v.path: v.numpy().copy() for v in _variables(mtl)}
    train, val = prepared.splits["train"], prepared.splits["validation"]
    for step, ((a, b), (c, d)) in enumerate((((0, 32), (0, 15)), ((32, 64), (15, 30)))):
        mtl.train_step((_batch(train, a, b), _batch(val, c, d)))
        np.testing.assert_allclose(mtl.strategy_state["lambd"].numpy(), LAMBDAS[step], rtol=0, atol=2e-6)
    for v in _variables(mtl):
        norm = float(np.linalg.norm(v.numpy() - start[v.path]))
        key = v.path.split("/", 1)[1].replace("/", ".")
        assert norm == pytest.approx(CHANGE_NORMS[key], rel=1e-5), key
    assert len(CHANGE_NORMS) == len(start)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ("validation: 0.25", "validation: null"),
            "auto_lambda reads a validation batch every step, and data.validation is null",
        ),
        (
            ("batch_size: 32", "batch_size: 32\n  distribute: mirrored"),
            "auto_lambda is not available with train.distribute mirrored",
        ),
    ],
)
def test_the_recipe_check_refuses_without_a_validation_split_or_with_distribution(
    extra, message, cli, tiny_project
):
    text = tiny_project.read_text().replace("weighting: static", "weighting: auto_lambda")
    tiny_project.write_text(text.replace(*extra))
    result = cli("validate", tiny_project)
    assert result.exit_code == 2, result.output
    assert "recipe.yaml:" in result.output and message in result.output, result.output


@pytest.mark.slow
def test_four_epochs_equal_two_plus_two_with_a_resume(cli, tiny_project, tmp_path):
    """The validation batches continue where they were (the stream skips the steps already taken)."""
    from tests.test_resume import _history, _same_weights

    spec = "{auto_lambda: {lr: 0.01}}"
    tiny_project.write_text(tiny_project.read_text().replace("weighting: static", f"weighting: {spec}"))
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli("train", tiny_project, "-o", one, "--epochs", "4").exit_code == 0
    assert cli("train", tiny_project, "-o", two, "--epochs", "2").exit_code == 0
    result = cli("train", "--resume", two, "--epochs", "4")
    assert result.exit_code == 0, result.output
    _same_weights(one / "model.keras", two / "model.keras")
    assert _history(one) == _history(two)
    rows = _history(one)
    assert rows[-1]["kind_weight"] != rows[0]["kind_weight"]  # λ moved


def test_mtl_strategies_says_it_reads_a_validation_batch(cli):
    import json

    rows = {r["name"]: r for r in json.loads(cli("strategies", "--json").output)}
    assert rows["auto_lambda"]["needs_validation"] is True and rows["auto_lambda"]["needs"] == "losses"
    assert "needs_validation" not in rows["static"]
