"""The model builder, the multi-task train step and model.keras round trips."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcli import data, fsio
from mtlcli import recipe as R
from mtlcli.errors import CheckpointError
from mtlcli.model.build import build_model
from mtlcli.run import evaluate as run_eval


@pytest.fixture
def built(tiny_project):
    loaded = R.load(tiny_project)
    prepared = data.prepare(loaded)
    model = build_model(loaded, prepared, seed=3)
    return loaded, prepared, model


def test_outputs_are_a_dict_named_after_tasks_with_the_right_shapes(built):
    _, prepared, model = built
    out = model(prepared.splits["train"].x)
    assert set(out) == {"kind", "flag", "value"}
    assert out["kind"].shape == (90, 3) and out["flag"].shape == (90, 1) and out["value"].shape == (90, 1)


def test_shared_and_head_variables_partition_the_model(built):
    _, _, model = built
    shared = {id(v) for v in model.shared_variables}
    heads = {id(v) for v in model.head_variables}
    assert shared and heads and not shared & heads
    assert shared | heads == {id(v) for v in model.trainable_variables}


def test_masked_task_loss_is_the_mean_over_labelled_rows(built):
    _, _, model = built
    y = {
        "kind": tf.constant([0, 1, 2, 0]),
        "flag": tf.constant([[1.0], [0.0], [1.0], [0.0]]),
        "value": tf.constant([[1.0], [2.0], [3.0], [100.0]]),
    }
    preds = {"kind": tf.zeros((4, 3)), "flag": tf.zeros((4, 1)), "value": tf.zeros((4, 1))}
    mask = {"kind": tf.ones(4), "flag": tf.ones(4), "value": tf.constant([1.0, 1.0, 1.0, 0.0])}
    losses, counts = model.task_losses(y, preds, mask)
    # uniform logits: CE = log 3 and BCE = log 2; MSE over the 3 labelled rows = (1 + 4 + 9) / 3
    np.testing.assert_allclose(losses.numpy(), [np.log(3), np.log(2), 14 / 3], rtol=1e-5)
    np.testing.assert_allclose(counts.numpy(), [4, 4, 3])


def test_static_step_matches_a_hand_written_weighted_sum(tiny_project):
    """One train step of mtl equals Adam on sum_i w_i L_i with weights normalised to sum 1."""
    loaded = R.load(tiny_project)
    loaded = R.loads(
        tiny_project.read_text().replace(
            "value: {type: regression, metrics: [mae]}",
            "value: {type: regression, metrics: [mae], weight: 2}",
        ),
        file="r.yaml",
        base_dir=tiny_project.parent,
    )
    prepared = data.prepare(loaded)
    a = build_model(loaded, prepared, seed=3)
    b = build_model(loaded, prepared, seed=3)
    b.set_weights(a.get_weights())
    arr = prepared.splits["train"]
    batch = (
        {k: v[:32] for k, v in arr.x.items()},
        {k: v[:32] for k, v in arr.y.items()},
        {k: v[:32] for k, v in arr.mask.items()},
    )
    a.train_step(batch)
    x, y, m = batch
    with tf.GradientTape() as tape:
        losses, _ = b.task_losses(y, b(x, training=True), m)
        total = tf.reduce_sum(tf.constant([0.25, 0.25, 0.5]) * losses)
    grads = tape.gradient(total, b.trainable_variables)
    b.optimizer.apply(grads, b.trainable_variables)
    for va, vb in zip(a.trainable_variables, b.trainable_variables, strict=True):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6)


def test_keras_round_trip_safe_mode(built, tmp_path):
    _, prepared, model = built
    x = prepared.splits["validation"].x
    before = model.predict(x, verbose=0)
    fsio.save_model_atomic(model, tmp_path / "model.keras")
    loaded = run_eval.load_model(tmp_path / "model.keras")
    after = loaded.predict(x, verbose=0)
    for task in before:
        np.testing.assert_array_equal(before[task], after[task])
    assert loaded.spec == json.loads(json.dumps(model.spec))


def test_lambda_layer_in_a_model_file_is_refused(built, tmp_path):
    _, _, model = built
    path = tmp_path / "model.keras"
    fsio.save_model_atomic(model, path)
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["spec"]["shared"] = [{"lambda": {}}]
    files["config.json"] = json.dumps(config).encode()
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    with pytest.raises(CheckpointError, match="cannot load the model safely"):
        run_eval.load_model(bad)


def test_truncated_model_file(built, tmp_path):
    _, _, model = built
    path = tmp_path / "model.keras"
    fsio.save_model_atomic(model, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cannot load the model safely"):
        run_eval.load_model(path)


@pytest.mark.parametrize("weighting", ["uncertainty", "pcgrad", "{mgda: {on: representation}}"])
def test_strategies_train_a_step_without_nan(tiny_project, weighting):
    loaded = R.loads(
        tiny_project.read_text().replace("weighting: static", f"weighting: {weighting}"),
        file="r.yaml",
        base_dir=tiny_project.parent,
    )
    prepared = data.prepare(loaded)
    model = build_model(loaded, prepared, seed=3)
    arr = prepared.splits["train"]
    before = [v.numpy().copy() for v in model.trainable_variables]
    logs = model.train_step((arr.x, arr.y, arr.mask))
    assert all(np.isfinite(float(v)) for v in logs.values())
    moved = [not np.allclose(b, v.numpy()) for b, v in zip(before, model.trainable_variables, strict=True)]
    assert all(moved[: len(model.shared_variables)])


def test_direct_train_step_then_reload_with_optimizer_state(tiny_project, tmp_path):
    """Adam slots saved after a direct train_step line up with a reloaded model's variable order."""
    loaded = R.loads(
        tiny_project.read_text().replace("weighting: static", "weighting: uncertainty"),
        file="r.yaml",
        base_dir=tiny_project.parent,
    )
    prepared = data.prepare(loaded)
    model = build_model(loaded, prepared, seed=3)
    arr = prepared.splits["train"]
    model.train_step((arr.x, arr.y, arr.mask))
    path = tmp_path / "model.keras"
    fsio.save_model_atomic(model, path)

    again = keras.saving.load_model(path, safe_mode=True, compile=True)
    assert int(again.optimizer.iterations.numpy()) == 1
    for a, b in zip(model.optimizer.variables, again.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_uncertainty_step_matches_a_hand_written_objective(tiny_project):
    """A loss-based strategy with learnable parameters: one train step equals Adam on the gradient of
    ``sum_i 0.5 exp(-s_i) L_i + 0.5 s_i`` w.r.t. every variable, the log-variances ``s`` included."""
    loaded = R.loads(
        tiny_project.read_text().replace("weighting: static", "weighting: {uncertainty: {init: 0.3}}"),
        file="r.yaml",
        base_dir=tiny_project.parent,
    )
    prepared = data.prepare(loaded)
    a = build_model(loaded, prepared, seed=3)
    b = build_model(loaded, prepared, seed=3)
    b.set_weights(a.get_weights())
    x, y, m = ({k: v[:32] for k, v in part.items()} for part in prepared.splits["train"].feed())
    a.train_step((x, y, m))
    with tf.GradientTape() as tape:
        losses, _ = b.task_losses(y, b(x, training=True), m)
        s = b.strategy_params["log_var"]
        total = tf.reduce_sum(0.5 * tf.exp(-s) * losses + 0.5 * s)
    grads = tape.gradient(total, b.trainable_variables)
    b.optimizer.apply(grads, b.trainable_variables)
    assert any(v is s for v in b.trainable_variables)
    for va, vb in zip(a.trainable_variables, b.trainable_variables, strict=True):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("weighting", "kind"),
    [
        ("static", "LossBackward"),
        ("famo", "LossBackward"),
        ("pcgrad", "ParameterBackward"),
        ("{mgda: {on: representation}}", "RepresentationBackward"),
    ],
)
def test_the_backward_pass_follows_what_the_strategy_needs(tiny_project, weighting, kind):
    loaded = R.loads(
        tiny_project.read_text().replace("weighting: static", f"weighting: {weighting}"),
        file="r.yaml",
        base_dir=tiny_project.parent,
    )
    model = build_model(loaded, data.prepare(loaded), seed=3)
    assert type(model.backward).__name__ == kind
    assert model.backward.persistent == (kind != "LossBackward")


def test_apply_if_finite_runs_the_update_only_for_finite_values():
    from mtlcli.model.train_step import apply_if_finite

    counter = tf.Variable(0)

    @tf.function
    def step(values):
        def apply():
            counter.assign_add(1)
            return tf.constant(True)

        return apply_if_finite(apply, [values, 2 * values])

    assert bool(step(tf.constant([1.0, 2.0]))) and int(counter.numpy()) == 1
    assert not bool(step(tf.constant([1.0, np.nan]))) and int(counter.numpy()) == 1
    assert not bool(step(tf.constant([np.inf, 0.0]))) and int(counter.numpy()) == 1


def test_only_the_train_step_imports_weighting_in_the_model_package():
    import ast
    from pathlib import Path

    import mtlcli.model

    importers = []
    for f in sorted(Path(mtlcli.model.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [f"{node.module}.{a.name}" for a in node.names]
                if isinstance(node, ast.ImportFrom) and node.module
                else []
            )
            if any(n.startswith("mtlcli.weighting") or n == "mtlcli.weighting" for n in names):
                importers.append(f.name)
    assert sorted(set(importers)) == ["train_step.py"]


@pytest.mark.parametrize("weighting", ["static", "pcgrad", "uncertainty", "{mgda: {on: representation}}"])
def test_train_and_validation_loss_are_the_same_static_weighted_sum(tiny_project, weighting):
    """``loss`` is the recipe's static weighted sum on both splits, whatever the strategy: a train step
    logs the very value a test step on the same batch (same weights, no dropout) logs. The strategy's
    own objective is ``objective``, in training only (``static``: none, it would repeat ``loss``)."""
    loaded = R.loads(
        tiny_project.read_text()
        .replace("weighting: static", f"weighting: {weighting}")
        .replace(
            "value: {type: regression, metrics: [mae]}",
            "value: {type: regression, metrics: [mae], weight: 3}",
        ),
        file="r.yaml",
        base_dir=tiny_project.parent,
    )
    prepared = data.prepare(loaded)
    model = build_model(loaded, prepared, seed=3)
    batch = tuple(prepared.splits["train"].feed())
    test_logs = {k: float(v) for k, v in model.test_step(batch).items()}
    for m in model.metrics:
        m.reset_state()
    train_logs = {k: float(v) for k, v in model.train_step(batch).items()}

    w = np.array([1.0, 1.0, 3.0]) / 5.0
    static = sum(wi * test_logs[f"{t}_loss"] for wi, t in zip(w, ["kind", "flag", "value"], strict=True))
    np.testing.assert_allclose(test_logs["loss"], static, rtol=1e-6)
    np.testing.assert_allclose(train_logs["loss"], test_logs["loss"], rtol=1e-6)
    assert "objective" not in test_logs
    if weighting == "static":
        assert "objective" not in train_logs
    else:
        strategy_sum = sum(
            train_logs[f"{t}_weight"] * train_logs[f"{t}_loss"] for t in ["kind", "flag", "value"]
        )
        if weighting == "uncertainty":  # sum_i 0.5 exp(-s_i) L_i + 0.5 s_i, with s_i = 0 at the start
            assert train_logs["objective"] == pytest.approx(
                0.5 * sum(test_logs[f"{t}_loss"] for t in ["kind", "flag", "value"]), rel=1e-5
            )
        else:
            assert train_logs["objective"] == pytest.approx(strategy_sum, rel=1e-5)
        assert train_logs["objective"] != pytest.approx(train_logs["loss"], rel=1e-3)
