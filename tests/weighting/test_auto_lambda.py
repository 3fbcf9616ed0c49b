"""Auto-Lambda's math over vectors: the weighted objective, the finite-difference step and hypergradient,
and the Adam update of the weights.

Golden values: the official trainers' meta optimiser, ``torch.optim.Adam([meta_weights], lr=autol_lr)``
with ``meta_weights = [autol_init] * T``, stepped with given gradients (``meta_weights.grad = h``),
float64, to 1e-12 relative. Generated once with PyTorch 2.13 (``/tmp/tjd/bin/python gen.py``)::

    import torch
    torch.set_default_dtype(torch.float64)
    HYPER = [[0.3, -1.2, 0.05], [0.25, -0.9, -0.4], [-2.0, 0.1, 0.0], [1e-3, 5.0, -0.2]]
    out = {}
    for init, lr in ((0.1, 1e-4), (0.5, 0.01)):
        w = torch.tensor([init] * 3, requires_grad=True)
        opt = torch.optim.Adam([w], lr=lr)
        seq = []
        for h in HYPER:
            opt.zero_grad()
            w.grad = torch.tensor(h)
            opt.step()
            seq.append([float(v) for v in w.detach()])
        out[(init, lr)] = seq
    print("HYPER =", HYPER)
    print("ADAM =", out)
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import REGISTRY, check, eager
from mtlcli.weighting.auto_lambda import AutoLambda

# fmt: off
HYPER = [[0.3, -1.2, 0.05], [0.25, -0.9, -0.4], [-2.0, 0.1, 0.0], [0.001, 5.0, -0.2]]
ADAM = {(0.1, 0.0001): [[0.09990000000333334, 0.10009999999916668, 0.09990000002], [0.09980088271946429, 0.10019825750638607, 0.09996553267932139], [0.09984891030684749, 0.10026978954738969, 0.10001618961451103], [0.09988822304627056, 0.10023098266059516, 0.10007920259073992]], (0.5, 0.01): [[0.4900000003333333, 0.5099999999166667, 0.4900000019999996], [0.4800882719464278, 0.5198257506386065, 0.49655326793213744], [0.4848910306847486, 0.5269789547389685, 0.5016189614511023], [0.4888223046270545, 0.523098266059515, 0.5079202590739911]]}  # noqa: E501
# fmt: on


@pytest.mark.parametrize(("init", "lr"), sorted(ADAM))
def test_the_weights_follow_torch_adam(init: float, lr: float) -> None:
    strategy = AutoLambda(weight_init=init, lr=lr)
    state = eager.initial_state(strategy, 3)
    np.testing.assert_array_equal(state["lambd"].numpy(), [init] * 3)
    for step, (h, want) in enumerate(zip(HYPER, ADAM[(init, lr)], strict=True)):
        state = strategy.meta_update(state, tf.constant(h, tf.float64))
        got = state["lambd"].numpy()
        assert np.max(np.abs(got - want)) / np.max(np.abs(want)) <= 1e-12, f"step {step}: {got} vs {want}"
        assert float(state["meta_step"]) == step + 1


def test_the_objective_is_the_lambda_weighted_sum_and_the_heads_are_weighted() -> None:
    strategy = AutoLambda()
    state = dict(eager.initial_state(strategy, 3), lambd=tf.constant([0.2, -0.1, 1.5], tf.float64))
    losses = tf.constant([0.7, 1.9, 0.4], tf.float64)
    result = strategy.update(losses, None, {}, state, eager.make_context(3))
    assert float(result.loss) == pytest.approx(0.2 * 0.7 - 0.1 * 1.9 + 1.5 * 0.4, abs=1e-15)
    np.testing.assert_allclose(result.loss_grads.numpy(), [0.2, -0.1, 1.5], atol=1e-15)
    np.testing.assert_array_equal(result.weights.numpy(), [0.2, -0.1, 1.5])


def test_the_finite_difference_step_and_the_hypergradient() -> None:
    eps = AutoLambda.fd_epsilon(tf.constant(4.0, tf.float64))
    assert float(eps) == pytest.approx(0.0025)
    assert np.isfinite(float(AutoLambda.fd_epsilon(tf.constant(0.0, tf.float64))))
    plus, minus = tf.constant([1.0, 2.0], tf.float64), tf.constant([0.5, 2.5], tf.float64)
    h = AutoLambda.hypergradient(tf.constant(0.1, tf.float64), plus, minus, eps)
    np.testing.assert_allclose(h.numpy(), [-0.1 * 0.5 / 0.005, 0.1 * 0.5 / 0.005])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"auto_lambda": {"lr": 0}}, "`lr` must be a finite number > 0"),
        ({"auto_lambda": {"weight_init": float("nan")}}, "`weight_init` must be a finite number"),
        ({"auto_lambda": {"every": 2}}, "auto_lambda is loss-based"),
    ],
)
def test_bad_parameters_are_refused(spec, message) -> None:
    problems = check(spec)
    assert problems and message in problems[-1].message, problems


def test_registered_as_a_loss_based_strategy_that_reads_validation_batches() -> None:
    cls = REGISTRY["auto_lambda"]
    assert cls is AutoLambda and cls.needs == "losses" and cls.needs_validation and cls.batches == 1
    assert not any(c.needs_validation for n, c in REGISTRY.items() if n != "auto_lambda")
