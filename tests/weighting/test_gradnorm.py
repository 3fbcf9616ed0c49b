"""GradNorm: weights T softmax(s), the analytic gradient of the auxiliary L1 loss, the L(0) state."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import aggregate, check, eager, get

from . import _inputs
from ._asserts import (
    assert_expected_structure,
    assert_graph_matches_eager,
    assert_permutation_equivariant,
    assert_state_round_trip,
)


def _call(J, losses, logits=None, state=None, alpha=1.5):
    strategy = get({"gradnorm": {"alpha": alpha}})
    T = J.shape[0]
    params = {"logits": tf.constant(np.ones(T) if logits is None else logits, tf.float64)}
    s = eager.initial_state(strategy, T)
    s.update({k: tf.constant(v, tf.float64) for k, v in (state or {}).items()})
    return strategy.aggregate(
        tf.constant(J), tf.constant(losses, tf.float64), params, s, eager.make_context(T)
    )


def test_declarations() -> None:
    strategy = get("gradnorm")
    assert strategy.needs == "gradients" and strategy.weighting
    assert strategy.param_spec(3) == {"logits": ((3,), 1.0)}
    assert check({"gradnorm": {"alpha": -1}})[0].message == "`alpha` must be >= 0, received -1"


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.ALL), ids=_inputs.ids(_inputs.ALL))
def test_structure(J: np.ndarray) -> None:
    d = aggregate("gradnorm", J, losses=_inputs.losses_for(J))
    assert_expected_structure(d, J)
    result = _call(J, _inputs.losses_for(J), logits=np.linspace(-1, 1, J.shape[0]))
    assert np.all(np.isfinite(result.param_grads["logits"].numpy()))


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL), ids=_inputs.ids(_inputs.TYPICAL))
def test_permutation_invariant_direction(J: np.ndarray) -> None:
    # equal logits: lambda = 1, d = sum of rows whatever the order
    assert_permutation_equivariant(lambda M: aggregate("gradnorm", M), J, rtol=1e-12)


def test_hand_values_first_step() -> None:
    # J = diag(3, 4): norms [3, 4]; s = [1, 1] -> lambda = [1, 1]; N = [3, 4], mean 3.5; first step r = [1, 1]
    # target 3.5; a = sign(N - 3.5) * n = [-3, 4]; z = [.5, .5]; grad = 2 z (a - z.a) = [-3.5, 3.5]
    result = _call(np.diag([3.0, 4.0]), [2.0, 5.0])
    np.testing.assert_allclose(result.weights.numpy(), [1.0, 1.0])
    np.testing.assert_allclose(result.direction.numpy(), [3.0, 4.0])
    np.testing.assert_allclose(result.param_grads["logits"].numpy(), [-3.5, 3.5])
    np.testing.assert_allclose(result.state["initial_losses"].numpy(), [2.0, 5.0])
    assert result.state["recorded"].numpy() == 1.0


def _aux_loss_gradient_by_autodiff(J, losses, initial, logits, alpha):
    s = tf.Variable(logits, dtype=tf.float64)
    norms = tf.norm(tf.constant(J), axis=1)
    ratios = tf.constant(losses, tf.float64) / tf.constant(initial, tf.float64)
    rel = ratios / tf.reduce_mean(ratios)
    with tf.GradientTape() as tape:
        lam = len(losses) * tf.nn.softmax(s)
        weighted = lam * norms
        target = tf.stop_gradient(tf.reduce_mean(weighted) * rel**alpha)
        aux = tf.reduce_sum(tf.abs(weighted - target))
    return tape.gradient(aux, s).numpy()


@pytest.mark.parametrize("alpha", [0.0, 1.5, 3.0])
@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL[2:6]), ids=_inputs.ids(_inputs.TYPICAL[2:6]))
def test_param_grads_equal_autodiff_of_the_auxiliary_loss(J: np.ndarray, alpha: float) -> None:
    T = J.shape[0]
    rng = np.random.default_rng(T)
    initial = 1.0 + rng.random(T)
    losses = 0.5 + rng.random(T)
    logits = rng.standard_normal(T)
    result = _call(J, losses, logits=logits, state={"initial_losses": initial, "recorded": 1.0}, alpha=alpha)
    expected = _aux_loss_gradient_by_autodiff(J, losses, initial, logits, alpha)
    np.testing.assert_allclose(result.param_grads["logits"].numpy(), expected, rtol=1e-10, atol=1e-12)
    lam = T * np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(result.weights.numpy(), lam, rtol=1e-12)
    np.testing.assert_allclose(result.direction.numpy(), lam @ J, rtol=1e-12)


def test_initial_losses_recorded_once() -> None:
    J = _inputs.TYPICAL[3][1]
    _, s1 = aggregate("gradnorm", J, losses=[1.0, 2.0, 3.0], return_state=True)
    _, s2 = aggregate("gradnorm", J, losses=[0.1, 0.1, 0.1], state=s1, step=1, return_state=True)
    np.testing.assert_allclose(s2["initial_losses"], [1.0, 2.0, 3.0])


def test_slow_task_gets_pushed_up() -> None:
    # equal gradient norms; task 0's loss has not decreased while task 1's halved: raise lambda_0
    J = np.eye(2)
    result = _call(J, [1.0, 0.5], state={"initial_losses": [1.0, 1.0], "recorded": 1.0})
    grad = result.param_grads["logits"].numpy()
    assert grad[0] < 0 < grad[1]  # gradient descent on s increases s_0


def test_state_round_trip_and_graph_mode() -> None:
    J = _inputs.TYPICAL[4][1]
    assert_state_round_trip("gradnorm", J, steps=3, losses=_inputs.losses_for(J))
    assert_graph_matches_eager("gradnorm", J, _inputs.losses_for(J))
