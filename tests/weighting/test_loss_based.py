"""Loss-based strategies: static, mean/equal, sum, uncertainty, dwa, rlw, gls, famo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import aggregate, check, eager, get

from . import _inputs
from ._asserts import (
    assert_expected_structure,
    assert_graph_matches_eager,
    assert_state_round_trip,
)

LOSS_STRATEGIES = ["static", "mean", "equal", "sum", "uncertainty", "dwa", "rlw", "gls", "famo"]
DETERMINISTIC = ["static", "mean", "equal", "sum", "uncertainty", "dwa", "gls", "famo"]


def _combine(spec, losses, *, params=None, state=None, task_weights=None, seed=0, step=0, new_epoch=False):
    strategy = get(spec)
    T = len(losses)
    p = eager.initial_params(strategy, T)
    p.update({k: tf.constant(v, tf.float64) for k, v in (params or {}).items()})
    s = eager.initial_state(strategy, T)
    s.update({k: tf.constant(v, tf.float64) for k, v in (state or {}).items()})
    ctx = eager.make_context(T, seed=seed, step=step, new_epoch=new_epoch, task_weights=task_weights)
    return strategy.combine(tf.constant(losses, tf.float64), p, s, ctx)


@pytest.mark.parametrize("name", LOSS_STRATEGIES)
def test_declarations(name: str) -> None:
    cls = type(get(name))
    assert cls.needs == "losses" and cls.name == name and cls.paper and cls.summary and cls.__doc__
    assert check(name) == []


@pytest.mark.parametrize("name", LOSS_STRATEGIES)
@pytest.mark.parametrize("J", _inputs.matrices(_inputs.ALL), ids=_inputs.ids(_inputs.ALL))
def test_structure(name: str, J: np.ndarray) -> None:
    assert_expected_structure(aggregate(name, J, losses=_inputs.losses_for(J)), J)


@pytest.mark.parametrize("name", LOSS_STRATEGIES)
def test_weights_are_the_gradient_of_the_loss(name: str) -> None:
    # the contract: `weights` is d loss / d L_i (so d = weights @ J is the shared gradient)
    losses = tf.constant([0.7, 2.5, 1.3], tf.float64)
    strategy = get(name)
    params = eager.initial_params(strategy, 3)
    params = {k: v + tf.constant([0.3, -0.2, 0.1], tf.float64) for k, v in params.items()}
    state = eager.initial_state(strategy, 3)
    if name == "famo":
        state["logits"] = tf.constant([0.5, -1.0, 0.2], tf.float64)
    ctx = eager.make_context(3, task_weights=[1.0, 2.0, 5.0], seed=4)
    with tf.GradientTape() as tape:
        tape.watch(losses)
        result = strategy.combine(losses, params, state, ctx)
    np.testing.assert_allclose(tape.gradient(result.loss, losses).numpy(), result.weights.numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_weights_follow_their_task_under_permutation(name: str) -> None:
    losses = np.array([0.5, 3.0, 1.2, 2.2])
    tw = np.array([1.0, 2.0, 3.0, 4.0])
    log_var = np.array([0.1, -0.4, 0.3, 0.0])
    logits = np.array([0.2, 0.0, -0.3, 1.0])
    params = {"log_var": log_var} if name == "uncertainty" else {}
    state = {"logits": logits} if name == "famo" else {}
    w = _combine(name, losses, params=params, state=state, task_weights=tw).weights.numpy()
    for perm in ([3, 2, 1, 0], [1, 3, 0, 2]):
        params_p = {k: v[perm] for k, v in params.items()}
        state_p = {k: v[perm] for k, v in state.items()}
        w_p = _combine(
            name, losses[perm], params=params_p, state=state_p, task_weights=tw[perm]
        ).weights.numpy()
        np.testing.assert_allclose(w_p, w[perm], rtol=1e-12)


@pytest.mark.parametrize("name", LOSS_STRATEGIES)
def test_graph_mode(name: str) -> None:
    J = _inputs.TYPICAL[3][1]
    assert_graph_matches_eager(name, J, _inputs.losses_for(J), step=3, seed=9)


def test_static_hand_values() -> None:
    # task weights [1, 3] -> [1/4, 3/4]; L = 0.25 * 2 + 0.75 * 4 = 3.5
    result = _combine("static", [2.0, 4.0], task_weights=[1.0, 3.0])
    np.testing.assert_allclose(result.weights.numpy(), [0.25, 0.75])
    assert result.loss.numpy() == pytest.approx(3.5)


def test_mean_equal_sum_hand_values() -> None:
    J = _inputs.J_GOLDEN
    np.testing.assert_allclose(aggregate("mean", J), [1.0, 1.0, 1.0])  # ([-4,1,1] + [6,1,1]) / 2
    np.testing.assert_allclose(aggregate("equal", J), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(aggregate("sum", J), [2.0, 2.0, 2.0])
    assert _combine("sum", [1.0, 2.5]).loss.numpy() == pytest.approx(3.5)


def test_uncertainty_hand_values() -> None:
    # s = [0, ln 2], L = [2, 4]: loss = 0.5*2 + 0 + 0.5*0.5*4 + 0.5*ln2 = 2 + 0.5 ln 2; weights 0.5 e^-s = [0.5, 0.25]
    s = [0.0, math.log(2.0)]
    result = _combine("uncertainty", [2.0, 4.0], params={"log_var": s})
    assert result.loss.numpy() == pytest.approx(2.0 + 0.5 * math.log(2.0))
    np.testing.assert_allclose(result.weights.numpy(), [0.5, 0.25])
    # d loss / d s = -0.5 e^-s L + 0.5 = [-0.5, -0.5]: both variances grow towards L
    var = tf.Variable(s, dtype=tf.float64)
    strategy = get("uncertainty")
    with tf.GradientTape() as tape:
        loss = strategy.combine(
            tf.constant([2.0, 4.0], tf.float64), {"log_var": var}, {}, eager.make_context(2)
        ).loss
    np.testing.assert_allclose(tape.gradient(loss, var).numpy(), [-0.5, -0.5])


def test_uncertainty_init_parameter() -> None:
    assert get("uncertainty").param_spec(3) == {"log_var": ((3,), 0.0)}
    assert get({"uncertainty": {"init": -0.5}}).param_spec(2) == {"log_var": ((2,), -0.5)}  # LibMTL's init


def test_dwa_hand_values_over_epochs() -> None:
    # epoch 0: [1, 1] twice; epoch 1: [0.5, 1] once; epoch 2, first step: r = [0.5/1, 1/1] = [0.5, 1]
    # w = 2 softmax([0.25, 0.5]) = 2 [e^.25, e^.5] / (e^.25 + e^.5) = [0.87563, 1.12437]
    sequence = [([1.0, 1.0], False), ([1.0, 1.0], False), ([0.5, 1.0], True), ([7.0, 3.0], True)]
    state = None
    weights = []
    for k, (losses, new_epoch) in enumerate(sequence):
        d, state = aggregate(
            "dwa", np.eye(2), losses=losses, state=state, step=k, new_epoch=new_epoch, return_state=True
        )
        weights.append(d)
    expected = 2 * np.exp([0.25, 0.5]) / np.exp([0.25, 0.5]).sum()
    np.testing.assert_allclose(weights[:3], np.ones((3, 2)))
    np.testing.assert_allclose(weights[3], expected, rtol=1e-12)
    np.testing.assert_allclose(weights[3].sum(), 2.0)  # LibMTL/TorchJD scale: weights sum to T
    np.testing.assert_allclose(state["prev1"], [0.5, 1.0])
    np.testing.assert_allclose(state["prev2"], [1.0, 1.0])
    assert state["epochs_done"] == 2 and state["epoch_count"] == 1
    np.testing.assert_allclose(state["epoch_sum"], [7.0, 3.0])


def test_dwa_round_trip_and_validation() -> None:
    J = _inputs.TYPICAL[3][1]
    assert_state_round_trip("dwa", J, steps=3, losses=_inputs.losses_for(J), new_epoch=True)
    assert check({"dwa": {"temperature": 0}})[0].message == "`temperature` must be > 0, received 0"


def test_rlw_is_a_seeded_random_simplex_point() -> None:
    draws = np.array([_combine("rlw", [1.0, 1.0, 1.0], seed=3, step=k).weights.numpy() for k in range(200)])
    np.testing.assert_allclose(draws.sum(axis=1), 1.0)
    assert np.all(draws > 0)
    assert len({tuple(np.round(w, 12)) for w in draws}) == 200  # a new draw every step
    np.testing.assert_allclose(draws.mean(axis=0), [1 / 3] * 3, atol=0.03)  # exchangeable tasks
    again = _combine("rlw", [1.0, 1.0, 1.0], seed=3, step=17).weights.numpy()
    np.testing.assert_array_equal(again, draws[17])  # repeatable from (seed, step)


def test_gls_hand_values() -> None:
    # L = [1, 4]: GLS = sqrt(4) = 2; weights GLS / (T L_i) = [2/2, 2/8] = [1, 0.25]
    result = _combine("gls", [1.0, 4.0])
    assert result.loss.numpy() == pytest.approx(2.0)
    np.testing.assert_allclose(result.weights.numpy(), [1.0, 0.25])


def test_gls_zero_loss_is_finite() -> None:
    result = _combine("gls", [0.0, 4.0])
    assert np.isfinite(result.loss.numpy()) and np.all(np.isfinite(result.weights.numpy()))


def test_famo_hand_values() -> None:
    # logits 0 -> z = [.5, .5]; L = [1, 3]: c = 1 / (.5/1 + .5/3) = 1.5; weights c z / L = [.75, .25]
    # loss = 1.5 * (.5 ln 1 + .5 ln 3) = .75 ln 3
    result = _combine("famo", [1.0, 3.0])
    np.testing.assert_allclose(result.weights.numpy(), [0.75, 0.25], rtol=1e-7)
    assert result.loss.numpy() == pytest.approx(0.75 * math.log(3.0), rel=1e-7)
    # after the step L = [0.5, 3]: delta = [ln 2, 0]; grad = z (delta - z.delta) = [ln2/4, -ln2/4]
    # first Adam step moves each logit by lr * sign(grad): [-0.025, +0.025]
    strategy = get("famo")
    state = eager.initial_state(strategy, 2)
    new = strategy.after_step(
        tf.constant([1.0, 3.0], tf.float64),
        tf.constant([0.5, 3.0], tf.float64),
        {},
        state,
        eager.make_context(2),
    )
    np.testing.assert_allclose(new["logits"].numpy(), [-0.025, 0.025], rtol=1e-6)
    np.testing.assert_allclose(new["adam_m"].numpy(), [0.1 * math.log(2) / 4, -0.1 * math.log(2) / 4])
    assert new["adam_t"].numpy() == 1.0


def test_famo_after_step_graph_mode_and_round_trip() -> None:
    strategy = get({"famo": {"w_lr": 0.1, "gamma": 0.01}})
    before = tf.constant([1.0, 2.0, 0.5], tf.float32)
    after = tf.constant([0.9, 1.5, 0.5], tf.float32)
    state = eager.initial_state(strategy, 3, tf.float32)
    ctx = eager.make_context(3, dtype=tf.float32)
    once = strategy.after_step(before, after, {}, state, ctx)
    eager2 = strategy.after_step(before, after, {}, once, ctx)
    graph = tf.function(strategy.after_step)
    traced = graph(before, after, {}, state, ctx)
    traced2 = graph(before, after, {}, traced, ctx)
    for key in eager2:
        np.testing.assert_allclose(traced2[key].numpy(), eager2[key].numpy(), rtol=1e-6)
    # a slower-improving task (index 2, no decrease) gets more weight
    assert np.argmax(eager2["logits"].numpy()) == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"famo": {"w_lr": 0}}, "`w_lr` must be > 0, received 0"),
        ({"famo": {"gamma": -1}}, "`gamma` must be >= 0, received -1"),
        ({"famo": {"eps": -1.0}}, "`eps` must be >= 0, received -1.0"),
    ],
)
def test_famo_validation(spec: dict, message: str) -> None:
    assert [p.message for p in check(spec)] == [message]


def test_famo_declares_after_step() -> None:
    assert get("famo").needs_losses_after_step is True
    assert all(not get(n).needs_losses_after_step for n in LOSS_STRATEGIES if n != "famo")
