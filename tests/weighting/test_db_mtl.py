"""DB-MTL (LibMTL ``DB_MTL``): log-loss gradients, EMA buffer, each rescaled to the largest norm.

Golden values: LibMTL's own class over 4 steps (``_libmtl_values.py``), float64, to 1e-10 relative
(the method is closed form per step; the EMA is compared step by step and in its final buffer).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import REGISTRY, aggregate, check, eager
from mtlcli.weighting.db_mtl import DBMTL

from ._libmtl_values import VALUES

SEQUENCES = VALUES["sequences"]
GOLDEN = VALUES["db_mtl"]


def _state(strategy, T: int, P: int, dtype=tf.float64) -> dict:
    return eager.initial_state(strategy, T, dtype, num_params=P)


def _drive(strategy, steps, state=None, dtype=tf.float64):
    """Run ``strategy.update`` over ``[(J, losses), ...]``; returns the directions and the last state."""
    T, P = np.asarray(steps[0][0]).shape
    state = _state(strategy, T, P, dtype) if state is None else state
    out = []
    for k, (J, losses) in enumerate(steps):
        ctx = eager.make_context(T, step=k, dtype=dtype)
        result = strategy.update(tf.constant(losses, dtype), tf.constant(J, dtype), {}, state, ctx)
        out.append(result.direction.numpy())
        state = result.state
    return out, state


def _rel(actual, expected) -> float:
    expected = np.asarray(expected)
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_matches_libmtl_over_four_steps(key: str) -> None:
    case, params = key.split("/")
    beta, sigma = (float(p.split("=")[1]) for p in params.split(","))
    directions, state = _drive(DBMTL(beta=beta, beta_sigma=sigma), SEQUENCES[case])
    for actual, expected in zip(directions, GOLDEN[key]["directions"], strict=True):
        assert _rel(actual, expected) < 1e-10
    assert _rel(state["grad_buffer"].numpy(), GOLDEN[key]["grad_buffer"]) < 1e-10
    assert state["step"].numpy() == 4


def test_first_step_by_hand() -> None:
    # B = (1 - beta) J / L: rows [1, 0] / 2 * 0.1 and [0, 3] / 1 * 0.1 -> norms 0.05, 0.3;
    # alpha = 0.3 / (norm + 1e-8) -> d = 0.3 * [1, 1] (up to the 1e-8 offsets)
    directions, _ = _drive(DBMTL(), [([[1.0, 0.0], [0.0, 3.0]], [2.0, 1.0])])
    np.testing.assert_allclose(directions[0], [0.3, 0.3], rtol=1e-6)


def test_invariant_to_scaling_one_task_loss() -> None:
    # L_k -> c L_k scales g_k by c too, so g_k / L_k and the whole update are unchanged (up to eps=1e-8)
    steps = [(np.asarray(J), np.asarray(c)) for J, c in SEQUENCES["normal_3x6"]]
    scaled = [(J * np.array([[1.0], [50.0], [1.0]]), c * np.array([1.0, 50.0, 1.0])) for J, c in steps]
    for a, b in zip(_drive(DBMTL(), steps)[0], _drive(DBMTL(), scaled)[0], strict=True):
        assert _rel(b, a) < 1e-7


def test_permutation_equivariant() -> None:
    steps = [(np.asarray(J), np.asarray(c)) for J, c in SEQUENCES["conflicting_4x9"]]
    perm = np.array([2, 0, 3, 1])
    reference, state = _drive(DBMTL(beta_sigma=0.5), steps)
    permuted, pstate = _drive(DBMTL(beta_sigma=0.5), [(J[perm], c[perm]) for J, c in steps])
    for a, b in zip(reference, permuted, strict=True):
        assert _rel(b, a) < 1e-12
    np.testing.assert_allclose(pstate["grad_buffer"].numpy(), state["grad_buffer"].numpy()[perm], rtol=1e-12)


def test_resumed_state_continues_exactly() -> None:
    steps = SEQUENCES["mixed_norms_3x5"]
    straight, _ = _drive(DBMTL(beta_sigma=0.5), steps)
    _, saved = _drive(DBMTL(beta_sigma=0.5), steps[:2])
    resumed, _ = _drive(DBMTL(beta_sigma=0.5), steps[2:], state={k: tf.identity(v) for k, v in saved.items()})
    for a, b in zip(straight[2:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_float32_in_tf_function_matches_float64() -> None:
    steps = SEQUENCES["normal_3x6"]
    strategy = DBMTL(beta_sigma=0.5)
    expected, _ = _drive(strategy, steps)
    state = _state(strategy, 3, 6, tf.float32)

    @tf.function(autograph=False)
    def step(J, losses, state, ctx):
        return strategy.update(losses, J, {}, state, ctx)

    for k, (J, losses) in enumerate(steps):
        ctx = eager.make_context(3, step=k, dtype=tf.float32)
        result = step(tf.constant(J, tf.float32), tf.constant(losses, tf.float32), state, ctx)
        assert result.direction.dtype == tf.float32 and result.weights.shape == (3,)
        assert _rel(result.direction.numpy(), expected[k]) < 1e-5
        state = result.state


def test_declarations_and_recipe_checks() -> None:
    assert DBMTL.needs == "gradients" and not DBMTL.weighting and DBMTL.paper and DBMTL.summary
    assert DBMTL().state_spec(3) == {"step": ((), 0.0)}
    assert DBMTL().sized_state_spec(3, 7) == {"grad_buffer": ((3, 7), 0.0)}
    assert REGISTRY["db_mtl"] is DBMTL
    assert check({"db_mtl": {"beta": 0.5, "beta_sigma": 1}}) == []
    [problem] = check({"db_mtl": {"beta": 1.5}})
    assert problem.message == "`beta` must be in [0, 1], received 1.5"
    [problem] = check({"db_mtl": {"beta_sigma": "fast"}})
    assert (
        problem.path == ("db_mtl", "beta_sigma") and problem.message == "expected a number, received 'fast'"
    )
    [problem] = check({"db_mtl": {"betta": 0.5}})
    assert "unknown parameter 'betta'" in problem.message and "beta" in problem.message
    [problem] = check({"db_mtl": {"on": "representation"}})
    assert "unknown parameter 'on'" in problem.message


def test_public_aggregate_carries_the_sized_state() -> None:
    # weighting.aggregate creates the (T, P) state from J's shape and hands it back for the next call
    steps = SEQUENCES["mixed_norms_3x5"]
    expected, _ = _drive(DBMTL(), steps)
    state = None
    for k, (J, losses) in enumerate(steps):
        d, state = aggregate("db_mtl", J, losses=losses, step=k, state=state, return_state=True)
        np.testing.assert_array_equal(d, expected[k])
    assert state["step"] == len(steps)
