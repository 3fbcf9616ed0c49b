"""MoCo (LibMTL ``MoCo``): tracked loss-scaled unit gradients ``Y`` and softmax-updated ``lambda``.

Golden values: LibMTL's own class over 4 steps (``_libmtl_values.py``), float64, to 1e-10 relative:
each step's direction and ``lambda``, and the final ``Y`` (every step is closed form; the state is
compared along the way, so an error in the EMA or in the decay of the step sizes shows).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import REGISTRY, aggregate, check, eager
from mtlcli.weighting.moco import MoCo

from ._libmtl_values import VALUES

SEQUENCES = VALUES["sequences"]
GOLDEN = VALUES["moco"]
FIELDS = ("beta", "beta_sigma", "gamma", "gamma_sigma", "rho")


def _state(strategy, T: int, P: int, dtype=tf.float64) -> dict:
    return eager.initial_state(strategy, T, dtype, num_params=P)


def _drive(strategy, steps, state=None, dtype=tf.float64):
    """Run ``strategy.update`` over ``[(J, losses), ...]``; returns per-step results and the last state."""
    T, P = np.asarray(steps[0][0]).shape
    state = _state(strategy, T, P, dtype) if state is None else state
    out = []
    for k, (J, losses) in enumerate(steps):
        ctx = eager.make_context(T, step=k, dtype=dtype)
        result = strategy.update(tf.constant(losses, dtype), tf.constant(J, dtype), {}, state, ctx)
        out.append(result)
        state = result.state
    return out, state


def _rel(actual, expected) -> float:
    expected = np.asarray(expected)
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_matches_libmtl_over_four_steps(key: str) -> None:
    case, params = key.split("/")
    strategy = MoCo(**dict(zip(FIELDS, map(float, params.split(",")), strict=True)))
    results, state = _drive(strategy, SEQUENCES[case])
    for result, expected in zip(results, GOLDEN[key]["steps"], strict=True):
        assert _rel(result.direction.numpy(), expected["direction"]) < 1e-10
        assert _rel(result.state["lambd"].numpy(), expected["lambd"]) < 1e-10
    assert _rel(state["y"].numpy(), GOLDEN[key]["y"]) < 1e-10


def test_first_step_by_hand() -> None:
    # step 1: beta_1 = 0.5, Y = 0.5 L_i u_i = [[1, 0], [0, 0.5]]; Y Y^T = diag(1, 0.25);
    # lambda = softmax([0.5, 0.5] - 0.1 [0.5, 0.125]) = softmax([0.45, 0.4875]); d = Y^T lambda
    J, losses = [[3.0, 0.0], [0.0, 2.0]], [2.0, 1.0]
    [result], _ = _drive(MoCo(), [(J, losses)])
    lam = np.exp([0.45, 0.4875]) / np.exp([0.45, 0.4875]).sum()
    np.testing.assert_allclose(result.state["lambd"].numpy(), lam, rtol=1e-8)  # the 1e-8 offset in u_i
    np.testing.assert_allclose(result.direction.numpy(), [lam[0], 0.5 * lam[1]], rtol=1e-7)  # eps 1e-8


def test_permutation_equivariant() -> None:
    steps = [(np.asarray(J), np.asarray(c)) for J, c in SEQUENCES["conflicting_4x9"]]
    perm = np.array([3, 1, 0, 2])
    reference, state = _drive(MoCo(rho=0.1), steps)
    permuted, pstate = _drive(MoCo(rho=0.1), [(J[perm], c[perm]) for J, c in steps])
    for a, b in zip(reference, permuted, strict=True):
        assert _rel(b.direction.numpy(), a.direction.numpy()) < 1e-12
        np.testing.assert_allclose(b.weights.numpy(), a.weights.numpy()[perm], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(pstate["lambd"].numpy(), state["lambd"].numpy()[perm], rtol=1e-12)


def test_resumed_state_continues_exactly() -> None:
    steps = SEQUENCES["normal_3x6"]
    straight, _ = _drive(MoCo(), steps)
    _, saved = _drive(MoCo(), steps[:3])
    resumed, _ = _drive(MoCo(), steps[3:], state={k: tf.identity(v) for k, v in saved.items()})
    np.testing.assert_array_equal(straight[3].direction.numpy(), resumed[0].direction.numpy())


def test_float32_in_tf_function_matches_float64() -> None:
    steps = SEQUENCES["conflicting_4x9"]
    strategy = MoCo()
    expected, _ = _drive(strategy, steps)
    state = _state(strategy, 4, 9, tf.float32)

    @tf.function(autograph=False)
    def step(J, losses, state, ctx):
        return strategy.update(losses, J, {}, state, ctx)

    for k, (J, losses) in enumerate(steps):
        ctx = eager.make_context(4, step=k, dtype=tf.float32)
        result = step(tf.constant(J, tf.float32), tf.constant(losses, tf.float32), state, ctx)
        assert result.direction.dtype == tf.float32
        assert _rel(result.direction.numpy(), expected[k].direction.numpy()) < 1e-5
        state = result.state


def test_declarations_and_recipe_checks() -> None:
    assert MoCo.needs == "gradients" and not MoCo.weighting and MoCo.paper and MoCo.summary
    assert MoCo().state_spec(4) == {"step": ((), 0.0), "lambd": ((4,), 0.25)}
    assert MoCo().sized_state_spec(4, 9) == {"y": ((4, 9), 0.0)}
    assert REGISTRY["moco"] is MoCo
    assert check({"moco": {"beta": 0.9, "gamma": 1, "rho": 0.1}}) == []
    [problem] = check({"moco": {"gamma": -0.1}})
    assert problem.message == "`gamma` must be >= 0, received -0.1"
    [problem] = check({"moco": {"rho": True}})
    assert problem.path == ("moco", "rho") and problem.message == "expected a number, received True"
    [problem] = check({"moco": {"gama": 0.1}})
    assert "unknown parameter 'gama'" in problem.message and "gamma" in problem.message


def test_public_aggregate_carries_the_sized_state() -> None:
    # weighting.aggregate creates the (T, P) state from J's shape and hands it back for the next call
    steps = SEQUENCES["mixed_norms_3x5"]
    expected, _ = _drive(MoCo(), steps)
    state = None
    for k, (J, losses) in enumerate(steps):
        d, state = aggregate("moco", J, losses=losses, step=k, state=state, return_state=True)
        np.testing.assert_array_equal(d, expected[k].direction.numpy())
    assert state["step"] == len(steps)
