"""STCH (LibMTL ``STCH``): log-sum warm-up, nadir point from epoch ``warmup_epoch``, then a smooth max.

Golden values: LibMTL's own class over 8 steps spanning epochs 0-3 with ``warmup_epoch: 1``
(``_libmtl_values.py``), float64: ``dC/dL_i`` to 1e-10 relative at every step, and the nadir point.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import check, eager, get

from ._libmtl_values import VALUES

GOLDEN = VALUES["stch"]


def _drive(strategy, steps, state=None, dtype=tf.float64):
    """``strategy.update`` over ``[(epoch, losses), ...]`` (``new_epoch`` when the epoch changes)."""
    T = len(steps[0][1])
    state = eager.initial_state(strategy, T, dtype) if state is None else state
    out, previous = [], None
    for k, (epoch, losses) in enumerate(steps):
        new_epoch = previous is not None and epoch != previous
        ctx = eager.make_context(T, step=k, epoch=epoch, new_epoch=new_epoch, dtype=dtype)
        result = strategy.update(tf.constant(losses, dtype), None, {}, state, ctx)
        out.append(result)
        state, previous = result.state, epoch
    return out, state


def _rel(actual, expected) -> float:
    expected = np.asarray(expected)
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_matches_libmtl_across_warm_up_and_after(key: str) -> None:
    mu = float(key.split("=")[1])
    steps = [(s["epoch"], s["losses"]) for s in GOLDEN[key]["steps"]]
    results, state = _drive(get({"stch": {"mu": mu, "warmup_epoch": 1}}), steps)
    for result, expected in zip(results, GOLDEN[key]["steps"], strict=True):
        assert _rel(result.loss_grads.numpy(), expected["loss_grads"]) < 1e-10
        np.testing.assert_allclose(result.weights.numpy(), result.loss_grads.numpy(), rtol=1e-12)
    assert _rel(state["nadir"].numpy(), GOLDEN[key]["nadir"]) < 1e-12
    assert state["nadir_set"].numpy() == 1 and state["warm_count"].numpy() == 3


def test_warm_up_is_log_sum_and_nadir_is_the_warm_up_epoch_mean() -> None:
    strategy = get({"stch": {"warmup_epoch": 1}})
    steps = [(0, [1.0, 4.0]), (1, [2.0, 2.0]), (1, [4.0, 6.0]), (2, [3.0, 4.0])]
    results, state = _drive(strategy, steps)
    for result, (_, losses) in zip(results[:3], steps[:3], strict=True):
        np.testing.assert_allclose(result.loss.numpy(), np.log(losses).sum(), rtol=1e-12)
    np.testing.assert_allclose(state["nadir"].numpy(), [3.0, 4.0])  # epoch 1's mean only
    # after: l = log(L / z) = [0, 0]: C = T mu log(2) and weights T softmax(l)_i / L_i = [1/3, 1/4]
    np.testing.assert_allclose(results[3].loss.numpy(), 2 * np.log(2.0), rtol=1e-12)
    np.testing.assert_allclose(results[3].loss_grads.numpy(), [1 / 3, 1 / 4], rtol=1e-12)


def test_tends_to_the_max_as_mu_goes_to_zero() -> None:
    losses = [1.5, 0.9, 3.0]
    state = {"warm_sum": [2.0, 1.0, 2.0], "warm_count": 2.0, "nadir": [0.0] * 3, "nadir_set": 0.0}
    state = {k: tf.constant(v, tf.float64) for k, v in state.items()}
    logs = np.log(np.array(losses) / np.array([1.0, 0.5, 1.0]))  # max is task 2: log 3
    for mu, tol in [(1e-2, 1e-2), (1e-4, 1e-4)]:
        [result], _ = _drive(get({"stch": {"mu": mu, "warmup_epoch": 0}}), [(1, losses)], state=dict(state))
        assert abs(result.loss.numpy() / 3 - logs.max()) < tol
        np.testing.assert_allclose(result.loss_grads.numpy(), [0, 0, 3 / 3.0], atol=tol)


def test_permutation_equivariant() -> None:
    steps = [(s["epoch"], np.asarray(s["losses"])) for s in GOLDEN["conflicting_4x9/mu=0.3"]["steps"]]
    perm = np.array([1, 3, 0, 2])
    reference, _ = _drive(get({"stch": {"mu": 0.3, "warmup_epoch": 1}}), steps)
    permuted, _ = _drive(get({"stch": {"mu": 0.3, "warmup_epoch": 1}}), [(e, c[perm]) for e, c in steps])
    for a, b in zip(reference, permuted, strict=True):
        np.testing.assert_allclose(b.loss_grads.numpy(), a.loss_grads.numpy()[perm], rtol=1e-12)
        np.testing.assert_allclose(b.loss.numpy(), a.loss.numpy(), rtol=1e-12)


def test_resumed_run_keeps_the_nadir_point() -> None:
    steps = [(s["epoch"], s["losses"]) for s in GOLDEN["normal_3x6/mu=1.0"]["steps"]]
    straight, _ = _drive(get({"stch": {"warmup_epoch": 1}}), steps)
    _, saved = _drive(get({"stch": {"warmup_epoch": 1}}), steps[:6])
    resumed, _ = _drive(get({"stch": {"warmup_epoch": 1}}), steps[6:], state=dict(saved))
    for a, b in zip(straight[6:], resumed, strict=True):
        np.testing.assert_array_equal(a.loss_grads.numpy(), b.loss_grads.numpy())


def test_no_recorded_warm_up_takes_the_first_losses_as_nadir() -> None:
    [result], state = _drive(get({"stch": {"warmup_epoch": 0}}), [(3, [2.0, 5.0])])
    np.testing.assert_allclose(state["nadir"].numpy(), [2.0, 5.0])
    assert np.all(np.isfinite(result.loss_grads.numpy()))


def test_float32_in_tf_function_matches_float64() -> None:
    steps = [(s["epoch"], s["losses"]) for s in GOLDEN["mixed_norms_3x5/mu=0.3"]["steps"]]
    strategy = get({"stch": {"mu": 0.3, "warmup_epoch": 1}})
    expected, _ = _drive(strategy, steps)
    state = eager.initial_state(strategy, 3, tf.float32)
    step = tf.function(
        lambda losses, state, ctx: strategy.update(losses, None, {}, state, ctx), autograph=False
    )
    for k, (epoch, losses) in enumerate(steps):
        ctx = eager.make_context(3, step=k, epoch=epoch, dtype=tf.float32)
        result = step(tf.constant(losses, tf.float32), state, ctx)
        assert result.loss.dtype == tf.float32
        assert _rel(result.loss_grads.numpy(), expected[k].loss_grads.numpy()) < 1e-5
        state = result.state


def test_recipe_checks() -> None:
    assert check({"stch": {"mu": 0.5, "warmup_epoch": 0}}) == []
    [problem] = check({"stch": {"mu": 0}})
    assert problem.message == "`mu` must be > 0, received 0"
    [problem] = check({"stch": {"warmup_epoch": 1.5}})
    assert problem.path == ("stch", "warmup_epoch")
    assert problem.message == "expected an integer, received 1.5"
    [problem] = check({"stch": {"warmup_epoch": -1}})
    assert problem.message == "`warmup_epoch` must be >= 0, received -1"
    [problem] = check({"stch": {"warmup": 2}})
    assert "unknown parameter 'warmup'" in problem.message and "warmup_epoch" in problem.message
    cls = type(get("stch"))
    assert cls.needs == "losses" and cls.paper and cls.summary
