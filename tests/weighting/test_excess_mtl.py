"""ExcessMTL (TorchJD 0.18 ``ExcessMTL``): exponentiated-gradient weights on relative excess risks.

Golden values: TorchJD's own aggregator driven over 3-4 successive matrices (``_torchjd_values_h2.py``),
float64, every call's direction and the final state to 1e-10 relative (closed form per step).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import REGISTRY, aggregate, check, eager
from mtlcli.weighting.excess_mtl import ExcessMTL

from ._torchjd_values_h2 import VALUES

SEQUENCES = VALUES["sequences"]
GOLDEN = VALUES["excess_mtl"]


def _drive(strategy, steps, state=None, dtype=tf.float64):
    """``strategy.update`` over the matrices ``steps``; returns directions, weights and the last state."""
    T, P = np.asarray(steps[0]).shape
    state = eager.initial_state(strategy, T, dtype, num_params=P) if state is None else state
    directions, weights = [], []
    for k, J in enumerate(steps):
        ctx = eager.make_context(T, step=k, dtype=dtype)
        result = strategy.update(tf.ones([T], dtype), tf.constant(J, dtype), {}, state, ctx)
        directions.append(result.direction.numpy())
        weights.append(result.weights.numpy())
        state = result.state
    return directions, weights, state


def _rel(actual, expected) -> float:
    expected = np.asarray(expected)
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def _strategy(key: str) -> ExcessMTL:
    params = dict(p.split("=") for p in key.split("/")[1].split(","))
    return ExcessMTL(
        robust_step_size=float(params["robust_step_size"]), n_warmup_steps=int(params["n_warmup_steps"])
    )


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_matches_torchjd_call_after_call(key: str) -> None:
    directions, _, state = _drive(_strategy(key), SEQUENCES[key.split("/")[0]])
    assert len(directions) == len(GOLDEN[key]["directions"]) >= 3
    for actual, expected in zip(directions, GOLDEN[key]["directions"], strict=True):
        assert _rel(actual, expected) < 1e-10
    assert _rel(state["weights"].numpy(), GOLDEN[key]["weights"]) < 1e-10
    assert _rel(state["sq_grad_sum"].numpy(), GOLDEN[key]["sq_grad_sum"]) < 1e-10


def test_first_two_steps_by_hand() -> None:
    # call 1: S = J^2, e_i = sum_p J_ip^2 / sqrt(J_ip^2 + 1e-7) = [1 + 2, 3] (to 1e-7), used unscaled:
    # w = softmax(log(1/2) + [3, 3]) = [1/2, 1/2], d = [0.5, 1, 1.5]; the baseline is b = [3, 3]
    J1 = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    # call 2: S = J1^2 + J2^2, e = [1/sqrt(2) + 4/sqrt(8), 36/sqrt(45)] = [3/sqrt(2), 36/sqrt(45)],
    # scaled by b: [1/sqrt(2), 12/sqrt(45)]; w = softmax(log([1/2, 1/2]) + that)
    J2 = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 6.0]])
    directions, weights, state = _drive(ExcessMTL(), [J1, J2])
    np.testing.assert_allclose(weights[0], [0.5, 0.5], rtol=1e-7)
    np.testing.assert_allclose(directions[0], [0.5, 1.0, 1.5], rtol=1e-7)
    np.testing.assert_allclose(state["baseline"].numpy(), [3.0, 3.0], rtol=1e-7)
    e = np.array([1 / np.sqrt(2), 12 / np.sqrt(45)])
    expected = np.exp(e) / np.exp(e).sum()
    np.testing.assert_allclose(weights[1], expected, rtol=1e-7)
    np.testing.assert_allclose(directions[1], expected @ J2, rtol=1e-7)


def test_warmup_keeps_uniform_weights_and_averages_the_baseline() -> None:
    steps = SEQUENCES["normal_3x6"]
    _, weights, state = _drive(ExcessMTL(n_warmup_steps=2), steps[:2])
    for w in weights:
        np.testing.assert_array_equal(w, np.full(3, 1 / 3))
    S = np.cumsum(np.square(steps[:2]), axis=0)
    excess = [np.sum(np.square(J) / np.sqrt(s + 1e-7), axis=1) for J, s in zip(steps[:2], S, strict=True)]
    np.testing.assert_allclose(state["baseline"].numpy(), excess[0] + excess[1], rtol=1e-13)
    _, _, state = _drive(ExcessMTL(n_warmup_steps=2), steps[2:], state=state)
    np.testing.assert_allclose(state["baseline"].numpy(), (excess[0] + excess[1]) / 2, rtol=1e-13)


def test_weights_on_the_simplex_and_a_zero_baseline_saturates_without_nan() -> None:
    # zero_first: task 1's first gradients are zero, so its baseline is 0 and its later scaled excess is
    # ~1e7: the weight saturates to 1 (log-space update), nothing overflows
    _, weights, _ = _drive(ExcessMTL(), SEQUENCES["zero_first_3x5"])
    for w in weights:
        assert np.all(np.isfinite(w)) and np.all(w >= 0) and abs(w.sum() - 1) < 1e-12
    assert weights[-1][1] > 1 - 1e-12


def test_invariant_to_scaling_one_task_after_a_warmup() -> None:
    # e_i and its baseline b_i both scale by c, so with a warm-up (whose weights are uniform) every
    # update is unchanged; without one the first, unscaled call is not (it moves w by c e_i)
    steps = [np.asarray(J) for J in SEQUENCES["normal_3x6"]]
    scaled = [J * np.array([[1.0], [30.0], [1.0]]) for J in steps]
    _, w_ref, _ = _drive(ExcessMTL(n_warmup_steps=1), steps)
    _, w_scaled, _ = _drive(ExcessMTL(n_warmup_steps=1), scaled)
    for a, b in zip(w_ref, w_scaled, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6)
    assert np.max(np.abs(w_ref[-1] - 1 / 3)) > 0.02  # the weights did move (measured 0.029)
    _, w_plain, _ = _drive(ExcessMTL(), steps)
    _, w_plain_scaled, _ = _drive(ExcessMTL(), scaled)
    assert np.max(np.abs(w_plain[0] - w_plain_scaled[0])) > 0.1


def test_permutation_equivariant() -> None:
    steps = [np.asarray(J) for J in SEQUENCES["mixed_norms_4x5"]]
    perm = np.array([2, 0, 3, 1])
    d_ref, w_ref, s_ref = _drive(ExcessMTL(robust_step_size=0.5), steps)
    d_perm, w_perm, s_perm = _drive(ExcessMTL(robust_step_size=0.5), [J[perm] for J in steps])
    for a, b in zip(d_ref, d_perm, strict=True):
        assert _rel(b, a) < 1e-12
    for a, b in zip(w_ref, w_perm, strict=True):
        np.testing.assert_allclose(b, a[perm], rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(s_perm["sq_grad_sum"].numpy(), s_ref["sq_grad_sum"].numpy()[perm], rtol=1e-15)


def test_resumed_state_continues_exactly() -> None:
    steps = SEQUENCES["two_tasks_2x4"]
    straight, _, _ = _drive(ExcessMTL(n_warmup_steps=1), steps)
    _, _, saved = _drive(ExcessMTL(n_warmup_steps=1), steps[:2])
    resumed, _, _ = _drive(
        ExcessMTL(n_warmup_steps=1), steps[2:], state={k: tf.identity(v) for k, v in saved.items()}
    )
    for a, b in zip(straight[2:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_float32_in_tf_function_matches_float64() -> None:
    steps = SEQUENCES["normal_3x6"]
    strategy = ExcessMTL(n_warmup_steps=1)
    expected, _, _ = _drive(strategy, steps)
    state = eager.initial_state(strategy, 3, tf.float32, num_params=6)

    @tf.function(autograph=False)
    def step(J, state, ctx):
        return strategy.update(tf.ones([3]), J, {}, state, ctx)

    for k, J in enumerate(steps):
        result = step(tf.constant(J, tf.float32), state, eager.make_context(3, step=k, dtype=tf.float32))
        assert result.direction.dtype == tf.float32
        assert _rel(result.direction.numpy(), expected[k]) < 1e-5
        state = result.state


def test_declarations_and_recipe_checks() -> None:
    assert ExcessMTL.needs == "gradients" and ExcessMTL.weighting and ExcessMTL.paper and ExcessMTL.summary
    assert REGISTRY["excess_mtl"] is ExcessMTL
    assert ExcessMTL().state_spec(4) == {"step": ((), 0.0), "weights": ((4,), 0.25), "baseline": ((4,), 0.0)}
    assert ExcessMTL().sized_state_spec(3, 7) == {"sq_grad_sum": ((3, 7), 0.0)}
    assert check({"excess_mtl": {"robust_step_size": 0.5, "n_warmup_steps": 10, "every": 4}}) == []
    [problem] = check({"excess_mtl": {"robust_step_size": 0}})
    assert problem.message == "`robust_step_size` must be > 0, received 0"
    [problem] = check({"excess_mtl": {"n_warmup_steps": 1.5}})
    assert problem.path == ("excess_mtl", "n_warmup_steps") and "expected an integer" in problem.message
    [problem] = check({"excess_mtl": {"on": "representation"}})
    assert "unknown parameter 'on'" in problem.message


def test_public_aggregate_carries_the_sized_state() -> None:
    steps = SEQUENCES["mixed_norms_4x5"]
    expected, _, _ = _drive(ExcessMTL(), steps)
    state = None
    for k, J in enumerate(steps):
        d, state = aggregate("excess_mtl", J, step=k, state=state, return_state=True)
        np.testing.assert_array_equal(d, expected[k])
    assert state["step"] == len(steps) and state["sq_grad_sum"].shape == (4, 5)
