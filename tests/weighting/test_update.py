"""``Strategy.update``: the one call the train step makes, for every registered strategy.

Gradient-based strategies: ``update`` is ``aggregate`` exactly. Loss-based ones: ``update`` returns
``combine``'s result plus the gradients of its objective, ``loss_grads = dC/dL`` and
``param_grads = dC/dparams``, which must equal an independent tape over ``combine``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import REGISTRY, eager, get

LOSSES = [0.7, 1.9, 0.4]
J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0], [0.5, -2.0, 3.0]])


def _inputs(strategy, step: int = 0):
    T = len(LOSSES)
    params = eager.initial_params(strategy, T)
    params = {k: v + 0.25 for k, v in params.items()}  # away from the initial value: non-trivial slopes
    return params, eager.initial_state(strategy, T), eager.make_context(T, seed=5, step=step)


@pytest.mark.parametrize("name", sorted(n for n, c in REGISTRY.items() if c.needs == "losses"))
def test_loss_based_update_differentiates_the_objective(name: str) -> None:
    strategy = get(name)
    params, state, ctx = _inputs(strategy)
    losses = tf.constant(LOSSES, tf.float64)
    result = strategy.update(losses, None, params, state, ctx)

    with tf.GradientTape() as tape:
        tape.watch([losses, *params.values()])
        reference = strategy.combine(losses, params, state, ctx)
    slopes, *grads = tape.gradient(reference.loss, [losses, *params.values()])

    np.testing.assert_array_equal(result.loss.numpy(), reference.loss.numpy())
    np.testing.assert_array_equal(result.weights.numpy(), reference.weights.numpy())
    np.testing.assert_array_equal(result.loss_grads.numpy(), slopes.numpy())
    assert set(result.param_grads) == set(params)
    for key, grad in zip(params, grads, strict=True):
        np.testing.assert_array_equal(result.param_grads[key].numpy(), grad.numpy())
    for key, value in reference.state.items():
        np.testing.assert_array_equal(np.asarray(result.state[key]), np.asarray(value))


def test_loss_grads_are_the_weights_for_a_weighted_sum() -> None:
    # static: C = sum_i w_i L_i with w = task_weights / sum, so dC/dL = w exactly
    strategy = get("static")
    ctx = eager.make_context(3, task_weights=[1.0, 2.0, 1.0])
    result = strategy.update(tf.constant(LOSSES, tf.float64), None, {}, {}, ctx)
    np.testing.assert_allclose(result.loss_grads.numpy(), [0.25, 0.5, 0.25])
    assert result.param_grads == {}


@pytest.mark.parametrize("name", sorted(n for n, c in REGISTRY.items() if c.needs == "gradients"))
def test_gradient_based_update_is_aggregate(name: str) -> None:
    strategy = get(name)
    params, state, ctx = _inputs(strategy, step=2)
    # a two-batch strategy (MoDo, SDMGrad) reads (2, T, P): J and a second batch's gradients
    rows = J if strategy.batches == 1 else np.stack([J, J[::-1] + 0.5])
    losses, jacobian = tf.constant(LOSSES, tf.float64), tf.constant(rows)
    result = strategy.update(losses, jacobian, params, state, ctx)
    reference = strategy.aggregate(jacobian, losses, params, state, ctx)
    np.testing.assert_array_equal(result.direction.numpy(), reference.direction.numpy())
    np.testing.assert_array_equal(result.weights.numpy(), reference.weights.numpy())
    assert result.loss_grads is None
