"""The train step of the two-batch strategies (``batches == 2``: MoDo, SDMGrad): ``J1``, ``J2`` from the
halves of each batch, the shared update ``w · (J1 + J2) / 2``, the heads' mean-of-halves gradients.

Each step is checked against a reference written here with NumPy and one ``tf.GradientTape`` per task
and half (no mtl code but the model's forward pass and its variable lists): MoDo's weights by its
formula (one projected step from ``1/T``, the projection by bisection), the applied gradient read
from plain SGD with learning rate 1 (a variable's change is minus its gradient). The edge cases: an odd
batch (halves of 7 and 8 rows) whose first half has no label of a task, a batch of one row (both halves
are that row), and (slow) tf.distribute over two logical CPU devices, where each replica splits its
own share.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.model.build import build_model

from .weighting.test_modo import bisection_projection

KERAS_LOSSES = {
    "sparse_categorical_crossentropy": lambda: keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None
    ),
    "binary_crossentropy": lambda: keras.losses.BinaryCrossentropy(from_logits=True, reduction=None),
    "mse": lambda: keras.losses.MeanSquaredError(reduction=None),
}


def _models(tiny_project, spec: str, text_extra: str = ""):
    text = tiny_project.read_text().replace("weighting: static", f"weighting: {spec}") + text_extra
    loaded = R.loads(text, file="r.yaml", base_dir=tiny_project.parent)
    prepared = data.prepare(loaded)
    models = [build_model(loaded, prepared, seed=3) for _ in range(2)]
    models[1].set_weights(models[0].get_weights())
    for m in models:
        m.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
        m.optimizer.build(m.trainable_variables)
    return models, prepared.splits["train"]


def _rows(arr, start: int, end: int, drop_first_flags: int = 0):
    x, y, mask = (
        {k: np.asarray(v[start:end]).copy() for k, v in part.items()} for part in (arr.x, arr.y, arr.mask)
    )
    mask["flag"][:drop_first_flags] = 0
    return x, y, mask


def _masked_losses(model, x, y, mask) -> np.ndarray:
    """The per-task masked mean losses of a batch (0 for a task without labels)."""
    preds = model.heads_from(model.represent(x, training=True), training=True)
    out = []
    for task, tspec in model.spec["tasks"].items():
        per_example = tf.reshape(
            KERAS_LOSSES[tspec["loss"]]()(y[task], tf.cast(preds[task], tf.float32)), [-1]
        )
        m = tf.cast(mask[task], tf.float32)
        out.append(float(tf.math.divide_no_nan(tf.reduce_sum(per_example * m), tf.reduce_sum(m))))
    return np.array(out)


def _half_gradients(model, x, y, mask):
    """Per task: the gradient of the half's masked mean loss (0 without labels) w.r.t. shared + heads."""
    variables = model.shared_variables + model.head_variables
    out = []
    for task, tspec in model.spec["tasks"].items():
        with tf.GradientTape() as tape:
            preds = model.heads_from(model.represent(x, training=True), training=True)
            per_example = tf.reshape(
                KERAS_LOSSES[tspec["loss"]]()(y[task], tf.cast(preds[task], tf.float32)), [-1]
            )
            m = tf.cast(mask[task], tf.float32)
            loss = tf.math.divide_no_nan(tf.reduce_sum(per_example * m), tf.reduce_sum(m))
        grads = tape.gradient(loss, variables)
        out.append(
            [
                np.zeros(v.shape) if g is None else g.numpy().astype(np.float64)
                for g, v in zip(grads, variables, strict=True)
            ]
        )
    return out


def _modo_reference(model, halves, gamma=0.1, rho=0.1):
    """``(w, expected gradient per variable of shared + heads)`` for MoDo's first step."""
    g1, g2 = (_half_gradients(model, *h) for h in halves)
    ns = len(model.shared_variables)
    J1, J2 = (np.stack([np.concatenate([a.ravel() for a in g[:ns]]) for g in gs]) for gs in (g1, g2))
    T = len(g1)
    lam = np.full(T, 1 / T)
    w = bisection_projection(lam - gamma * (J1 @ J2.T @ lam + rho * lam))
    expected = []
    for k in range(len(g1[0])):
        mean = [(g1[i][k] + g2[i][k]) / 2 for i in range(T)]
        expected.append(sum(w[i] * mean[i] for i in range(T)) if k < ns else sum(mean))
    return w, expected


def _check_step(mtl, ref, batch, halves):
    before = [v.numpy().copy() for v in ref.shared_variables + ref.head_variables]
    w, expected = _modo_reference(ref, halves)
    whole = _masked_losses(ref, *batch)
    mtl.train_step(tuple({k: tf.constant(v) for k, v in part.items()} for part in batch))
    np.testing.assert_allclose(mtl.strategy_state["lambd"].numpy(), w, atol=1e-6)
    # logged and checked: the whole batch's masked mean losses (not the halves' mean)
    np.testing.assert_allclose(mtl.batch_losses.numpy(), whole, rtol=1e-5)
    for v, b, g in zip(mtl.shared_variables + mtl.head_variables, before, expected, strict=True):
        scale = np.max(np.abs(g)) + 1e-12
        np.testing.assert_allclose(b - v.numpy(), g, atol=2e-5 * scale, err_msg=v.path)
    return w


def test_an_odd_batch_with_no_label_of_a_task_in_its_first_half(tiny_project):
    (mtl, ref), arr = _models(tiny_project, "modo")
    batch = _rows(arr, 0, 15, drop_first_flags=7)  # halves: rows 0-6 (no flag label) and 7-14
    assert batch[2]["flag"][7:].sum() > 0
    halves = [tuple({k: v[a:b] for k, v in part.items()} for part in batch) for a, b in ((0, 7), (7, 15))]
    second = _masked_losses(ref, *halves[1])
    w = _check_step(mtl, ref, batch, halves)
    assert np.all(np.isfinite(w)) and abs(w.sum() - 1) < 1e-6
    # flag's labels are all in the second half: the logged flag loss is that half's (its training
    # objective (0 + L²) / 2 is half of it, the documented 1/2 weight of each half)
    np.testing.assert_allclose(mtl.batch_losses.numpy()[1], second[1], rtol=1e-5)


def test_a_batch_of_one_row_uses_that_row_for_both_halves(tiny_project):
    (mtl, ref), arr = _models(tiny_project, "modo")
    batch = _rows(arr, 3, 4)
    _check_step(mtl, ref, batch, [batch, batch])


def test_an_even_batch_trains_on_the_mean_of_its_halves(tiny_project):
    (mtl, ref), arr = _models(tiny_project, "modo")
    batch = _rows(arr, 0, 20)
    halves = [tuple({k: v[a:b] for k, v in part.items()} for part in batch) for a, b in ((0, 10), (10, 20))]
    _check_step(mtl, ref, batch, halves)


@pytest.mark.parametrize("spec", ["{modo: {every: 2}}", "sdmgrad"])
def test_fit_runs_a_few_epochs_without_nan(tiny_project, spec):
    (mtl, _), arr = _models(tiny_project, spec)
    ds = tf.data.Dataset.from_tensor_slices((arr.x, arr.y, arr.mask)).batch(32)
    history = mtl.fit(ds, epochs=2, verbose=0)
    assert all(np.isfinite(v).all() for v in history.history.values())
    weights = [k for k in history.history if k.endswith("_weight")]
    assert len(weights) == 3


def _mirrored_job(path: str, spec: str) -> None:
    """``python -m tests.test_two_batch RECIPE SPEC``: 3 steps under ``mirrored`` over 2 logical CPU
    devices on global batches of 28 (14 a replica, halves of 7), and 3 steps on one device on the same
    batches with their rows reordered so that its halves are the replicas' first halves and second
    halves; prints the largest difference of the weights and of the strategy's state as JSON (measured
    6e-8 and 0 for MoDo; the single device on the batches as they are differs by 1e-2 and 2e-3)."""
    from pathlib import Path

    from mtlcli import distribute
    from mtlcli.tfutil import import_tf

    tf_ = import_tf()
    text = Path(path).read_text().replace("weighting: static", f"weighting: {spec}")
    loaded = R.loads(
        text + "  distribute: mirrored\n  devices: 2\n", file="r.yaml", base_dir=Path(path).parent
    )
    dist = distribute.setup(loaded.recipe.train, tf_)
    loaded = R.loads(text, file="r.yaml", base_dir=Path(path).parent)
    prepared = data.prepare(loaded)
    arr = prepared.splits["train"]
    n, steps = 28, 3
    order = np.concatenate(
        [
            np.r_[s * n : s * n + 7, s * n + 14 : s * n + 21, s * n + 7 : s * n + 14, s * n + 21 : s * n + 28]
            for s in range(steps)
        ]
    )

    def pick(idx):
        return tuple({k: np.asarray(v)[idx] for k, v in part.items()} for part in (arr.x, arr.y, arr.mask))

    def make(scope):
        with scope:
            model = build_model(loaded, prepared, seed=3)
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
            model.optimizer.build(model.trainable_variables)
        return model

    single, mirrored = make(distribute.Setup().scope()), make(dist.scope())
    mirrored.set_weights(single.get_weights())
    plain = tf_.data.Dataset.from_tensor_slices(pick(np.arange(steps * n))).batch(n)
    reordered = tf_.data.Dataset.from_tensor_slices(pick(order)).batch(n)
    mirrored.fit(plain, epochs=1, verbose=0, shuffle=False)
    single.fit(reordered, epochs=1, verbose=0, shuffle=False)

    def flat(variables):
        return np.concatenate([v.numpy().ravel() for v in variables])

    print(
        json.dumps(
            {
                "replicas": int(mirrored.distribute_strategy.num_replicas_in_sync),
                "steps": int(mirrored.optimizer.iterations.numpy()),
                "weights_diff": float(
                    np.max(np.abs(flat(single.trainable_variables) - flat(mirrored.trainable_variables)))
                ),
                "state_diff": float(
                    np.max(
                        np.abs(flat(single.strategy_state.values()) - flat(mirrored.strategy_state.values()))
                    )
                ),
            }
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["modo", "sdmgrad"])
def test_mirrored_replicas_split_their_own_shares_into_the_global_halves(tiny_project, spec):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(repo))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_two_batch", str(tiny_project), spec],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert row["replicas"] == 2 and row["steps"] == 3, row
    assert row["weights_diff"] <= 1e-5 and row["state_diff"] <= 1e-5, row


if __name__ == "__main__":
    import sys

    _mirrored_job(sys.argv[1], sys.argv[2])


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["modo", "{sdmgrad: {every: 2}}"])
def test_four_epochs_equal_two_plus_two_with_a_resume(spec, cli, tiny_project, tmp_path):
    from tests.test_resume import _history, _same_weights

    tiny_project.write_text(tiny_project.read_text().replace("weighting: static", f"weighting: {spec}"))
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli("train", tiny_project, "-o", one, "--epochs", "4").exit_code == 0
    assert cli("train", tiny_project, "-o", two, "--epochs", "2").exit_code == 0
    result = cli("train", "--resume", two, "--epochs", "4")
    assert result.exit_code == 0, result.output
    _same_weights(one / "model.keras", two / "model.keras")  # includes the weights' state
    assert _history(one) == _history(two)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{modo: {on: representation}}", "train.weighting.modo.on: unknown parameter 'on'; modo takes"),
        ("{sdmgrad: {momentum: 1}}", "train.weighting.sdmgrad: `momentum` must be in [0, 1), received 1"),
    ],
)
def test_unsupported_options_are_refused_with_file_and_line(spec, message, cli, tiny_project):
    tiny_project.write_text(tiny_project.read_text().replace("weighting: static", f"weighting: {spec}"))
    result = cli("validate", tiny_project)
    assert result.exit_code == 2
    assert "recipe.yaml:20 " in result.output and message in result.output, result.output


def test_mtl_strategies_says_which_read_two_half_batches(cli):
    rows = {r["name"]: r for r in json.loads(cli("strategies", "--json").output)}
    assert rows["modo"]["batches"] == rows["sdmgrad"]["batches"] == 2
    assert "batches" not in rows["upgrad"]


@pytest.mark.parametrize("architecture", ["ple", "mmoe", "cross_stitch"])
def test_the_halves_train_step_equivalence_on_other_architectures(tiny_project, architecture):
    """The train-step equivalence check (tests/test_train_step_equivalence.py, which reads the halves for
    a two-batch strategy) on architectures whose shared part is not one trunk, flag reading kind."""
    from tests.test_train_step_equivalence import ARCHITECTURES, _check_equivalence, _setup

    spec = "sdmgrad" if architecture == "mmoe" else "modo"
    setup = _setup(tiny_project, spec, ARCHITECTURES[architecture], flag_reads_kind=True)
    _check_equivalence(spec, *setup)
