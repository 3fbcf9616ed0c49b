"""PCD (TorchJD 0.18 ``PCD``): the primary task's gradient, each auxiliary guaranteed a ``tau`` share.

Golden values: TorchJD's own aggregator and weighting over sequences of 3 or 4 calls
(``_torchjd_values_h3.py``), float64, to 1e-10 relative (the QP is solved exactly, by the same
active-set method); the EMA state is compared after the last call.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import REGISTRY, aggregate, check, eager
from mtlcli.weighting.pcd import PCD, solve_qp

from ._torchjd_values_h3 import DEGENERATE, TAU_VECTORS, VALUES


def _drive(strategy, mats, state=None, dtype=tf.float64):
    """``strategy.update`` over the matrices; returns the directions, the weights and the last state."""
    T = np.asarray(mats[0]).shape[0]
    state = eager.initial_state(strategy, T, dtype) if state is None else state
    directions, weights = [], []
    for k, J in enumerate(mats):
        ctx = eager.make_context(T, step=k, dtype=dtype)
        result = strategy.update(tf.ones([T], dtype), tf.constant(J, dtype), {}, state, ctx)
        directions.append(result.direction.numpy())
        weights.append(result.weights.numpy())
        state = result.state
    return directions, weights, state


def _rel(actual, expected) -> float:
    expected = np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    return float(np.max(np.abs(np.asarray(actual) - expected)) / scale)


def _scales(strategy: PCD, state) -> np.ndarray:
    """The normalising scales ``s_i`` the last call used, from the state it returned."""
    ema, n = state["sq_norm_ema"].numpy(), float(state["n_steps"].numpy())
    return 1.0 / np.sqrt(ema / (1.0 - strategy.beta**n) + strategy.eps)


@pytest.mark.parametrize("case", sorted(VALUES))
def test_matches_torchjd_call_after_call(case: str) -> None:
    golden = VALUES[case]
    directions, weights, state = _drive(PCD(**golden["params"]), golden["J"])
    for k in range(len(golden["J"])):
        assert _rel(directions[k], golden["directions"][k]) < 1e-10, (case, k)
        assert _rel(weights[k], golden["weights"][k]) < 1e-10, (case, k)
    assert _rel(state["sq_norm_ema"].numpy(), golden["sq_norm_ema"]) < 1e-10
    assert state["n_steps"].numpy() == golden["n_steps"]


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_matches_torchjd_on_degenerate_rows(case: str) -> None:
    """Duplicate, zero, opposite (d = -g1), parallel and linearly dependent rows, and a 1e-9 scale:
    TorchJD's dependence tolerance and fallbacks, two calls (the second on 1.5 J)."""
    golden = DEGENERATE[case]
    J = np.asarray(golden["J"])
    tau = float(case.split("=")[1])
    directions, _, _ = _drive(PCD(tau=tau), [J, 1.5 * J])
    for actual, expected in zip(directions, golden["directions"], strict=True):
        assert _rel(actual, expected) < 1e-10, case


@pytest.mark.parametrize("case", sorted(TAU_VECTORS))
def test_one_tau_per_auxiliary_matches_torchjd(case: str) -> None:
    golden = TAU_VECTORS[case]
    directions, _, _ = _drive(PCD(tau=golden["tau"], beta=0.9), golden["J"])
    for actual, expected in zip(directions, golden["directions"], strict=True):
        assert _rel(actual, expected) < 1e-10, case


def test_a_tau_list_follows_the_auxiliaries_in_task_order_without_the_primary() -> None:
    # primary 2: the auxiliaries are tasks 0, 1, 3 in that order, so tau [a, b, c] goes to them
    J = np.asarray(TAU_VECTORS["[0.5, 0.02, 0.1]"]["J"][0])
    order = [2, 0, 1, 3]
    direct, _, _ = _drive(PCD(tau=[0.5, 0.02, 0.1], primary=2), [J])
    moved, _, _ = _drive(PCD(tau=[0.5, 0.02, 0.1]), [J[order]])
    np.testing.assert_allclose(direct[0], moved[0], rtol=1e-12, atol=1e-14)
    assert PCD(tau=[0.1, 0.2]).task_count_problem(3) is None
    param, message = PCD(tau=[0.1, 0.2]).task_count_problem(4)
    assert param == "tau" and message == (
        "expected one value per auxiliary task (4 tasks, one of them train.primary: 3 values, in task "
        "order without the primary), received 2"
    )
    with pytest.raises(ValueError, match=r"`pcd.tau`: expected one value per auxiliary task"):
        aggregate({"pcd": {"tau": [0.1]}}, J)


def test_two_tasks_by_hand() -> None:
    # first call: s_i = 1/||g_i|| (eps aside), g~1 = [1, 0], g~2 = [-1, 1]/sqrt(2); the constraint
    # g~2.d >= 0.5 is violated by g~1 (-0.7071), so mu = 0.5 + 0.7071 and d~ = g~1 + mu g~2
    # = [0.146447, 0.853553], ||d~|| = sqrt(0.75); d = d~ * ||g1|| / ||d~|| with ||g1|| = 2
    d = aggregate({"pcd": {"tau": 0.5}}, [[2.0, 0.0], [-3.0, 3.0]])
    np.testing.assert_allclose(d, 2.0 * np.array([0.146447, 0.853553]) / np.sqrt(0.75), rtol=1e-5)


def test_an_auxiliary_already_served_leaves_the_primary_gradient() -> None:
    # g~2.g~1 = 0.707 >= tau: no constraint is active, d = g1 exactly (weights [1, 0])
    directions, weights, _ = _drive(PCD(), [[[1.0, 2.0], [1.0, 3.0]]] * 3)
    np.testing.assert_allclose(weights[-1], [1.0, 0.0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(directions[-1], [1.0, 2.0], rtol=1e-12)


def test_infeasible_constraints_are_dropped() -> None:
    # two opposite auxiliaries cannot both progress: d = g1
    J = [[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]]
    np.testing.assert_allclose(aggregate("pcd", J), J[0], rtol=1e-12)


def test_zero_primary_gradient_gives_a_zero_step() -> None:
    np.testing.assert_array_equal(aggregate("pcd", [[0.0, 0.0], [1.0, -1.0]]), [0.0, 0.0])


MATRICES = [
    np.random.default_rng(s).standard_normal((T, P)) * 1.5
    for s, (T, P) in enumerate([(2, 5), (3, 7), (4, 9), (5, 12), (4, 3)])
]


@pytest.mark.parametrize("tau", [0.02, 0.3, 0.9])
@pytest.mark.parametrize("index", range(len(MATRICES)))
def test_every_auxiliary_gets_its_share_and_d_is_the_closest_such_direction(index: int, tau: float) -> None:
    """KKT of ``min ½||d - g~1||² s.t. g~jᵀd >= tau ||g~j||²`` at a warm EMA (third call, changing
    gradients): feasibility, ``μ >= 0`` and complementary slackness -- for a convex problem, optimality."""
    J0 = MATRICES[index]
    rng = np.random.default_rng(100 + index)
    mats = [J0 + 0.3 * rng.standard_normal(J0.shape) for _ in range(3)]
    strategy = PCD(tau=tau, beta=0.9)
    directions, weights, state = _drive(strategy, mats)
    s, w, J = _scales(strategy, state), weights[-1], mats[-1]
    assert w[0] > 0
    mu = w / s / (w[0] / s[0])  # [1, mu_2, ...]: the weights are [1, mu] * s * ||g1|| / ||d~||
    Jn = J * s[:, None]
    d_tilde = mu @ Jn
    progress = Jn[1:] @ d_tilde
    share = tau * np.sum(Jn[1:] ** 2, axis=1)
    assert np.all(mu[1:] >= 0)
    assert np.all(progress >= share - 1e-9), (progress, share)
    active = mu[1:] > 0  # complementary slackness: a constraint with a multiplier holds with equality
    np.testing.assert_allclose(progress[active], share[active], rtol=1e-9, atol=1e-9)
    # d has the primary gradient's norm, along d~
    np.testing.assert_allclose(np.linalg.norm(directions[-1]), np.linalg.norm(J[0]), rtol=1e-10)
    np.testing.assert_allclose(
        directions[-1], d_tilde * np.linalg.norm(J[0]) / np.linalg.norm(d_tilde), rtol=1e-9
    )


def test_the_primary_task_has_no_guarantee_of_its_own() -> None:
    # an auxiliary almost opposite to the primary: its share pulls d across, g1.d < 0 (only the
    # auxiliaries are constrained). TorchJD 0.18 gives the same: PCD(tau=0.02)(J) printed
    # [-0.8899196825597002, 0.45611726408126474] with /tmp/tjd/bin/python
    J = np.array([[1.0, 0.0], [-1.0, 0.01]])
    d = aggregate({"pcd": {"tau": 0.02}}, J)
    assert _rel(d, [-0.8899196825597002, 0.45611726408126474]) < 1e-10
    assert J[0] @ d < 0 and J[1] @ d > 0


@pytest.mark.parametrize("index", range(len(MATRICES)))
def test_permuting_the_auxiliaries_permutes_the_weights(index: int) -> None:
    J = MATRICES[index]
    T = J.shape[0]
    mats = [J, 0.5 * J[::-1].copy() + J]
    _, reference, ref_state = _drive(PCD(tau=0.3, beta=0.9), mats)
    perm = np.array([0, *np.random.default_rng(index).permutation(np.arange(1, T))])
    _, permuted, state = _drive(PCD(tau=0.3, beta=0.9), [M[perm] for M in mats])
    for a, b in zip(reference, permuted, strict=True):
        np.testing.assert_allclose(b, a[perm], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        state["sq_norm_ema"].numpy(), ref_state["sq_norm_ema"].numpy()[perm], rtol=1e-12
    )


@pytest.mark.parametrize("primary", [1, 2, 3])
def test_primary_moves_its_row_first_and_everything_stays_in_task_order(primary: int) -> None:
    mats = [MATRICES[2], MATRICES[2] * np.array([[1.0], [2.0], [0.5], [3.0]])]
    order = [primary] + [i for i in range(4) if i != primary]
    directions, weights, state = _drive(PCD(tau=0.3, primary=primary), mats)
    ref_dirs, ref_weights, ref_state = _drive(PCD(tau=0.3), [M[order] for M in mats])
    for k in range(2):
        np.testing.assert_allclose(directions[k], ref_dirs[k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(weights[k][order], ref_weights[k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        state["sq_norm_ema"].numpy()[order], ref_state["sq_norm_ema"].numpy(), rtol=1e-12
    )
    # and it changes the answer: another primary is another problem
    assert _rel(directions[-1], _drive(PCD(tau=0.3), mats)[0][-1]) > 1e-3


def test_scaling_an_auxiliary_changes_nothing_scaling_the_primary_scales_d() -> None:
    rng = np.random.default_rng(9)
    mats = [rng.standard_normal((3, 6)) for _ in range(3)]
    reference, _, _ = _drive(PCD(tau=0.4, eps=0.0), mats)
    aux, _, _ = _drive(PCD(tau=0.4, eps=0.0), [M * np.array([[1.0], [1e3], [1e-2]]) for M in mats])
    primary, _, _ = _drive(PCD(tau=0.4, eps=0.0), [M * np.array([[7.0], [1.0], [1.0]]) for M in mats])
    for r, a, p in zip(reference, aux, primary, strict=True):
        assert _rel(a, r) < 1e-12 and _rel(p, 7.0 * r) < 1e-12


def test_non_finite_gradients_give_nan_and_leave_the_ema_unchanged() -> None:
    strategy = PCD()
    _, _, state = _drive(strategy, [MATRICES[1]])
    bad = MATRICES[1].copy()
    bad[1, 2] = np.nan
    directions, weights, after = _drive(strategy, [bad], state=state)
    assert np.all(np.isnan(weights[0])) and np.all(np.isnan(directions[0]))
    np.testing.assert_array_equal(after["sq_norm_ema"].numpy(), state["sq_norm_ema"].numpy())
    assert after["n_steps"].numpy() == 1


def test_resumed_state_continues_exactly() -> None:
    mats = VALUES["conflicting_4x9"]["J"]
    strategy = PCD(tau=0.2, beta=0.9)
    straight, _, _ = _drive(strategy, mats)
    _, _, saved = _drive(strategy, mats[:2])
    resumed, _, _ = _drive(strategy, mats[2:], state={k: tf.identity(v) for k, v in saved.items()})
    for a, b in zip(straight[2:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_float32_in_tf_function_matches_float64() -> None:
    golden = VALUES["strong_tau_5x12"]
    strategy = PCD(**golden["params"])
    state = eager.initial_state(strategy, 5, tf.float32)

    @tf.function(autograph=False)
    def step(J, state, ctx):
        return strategy.update(tf.ones([5], tf.float32), J, {}, state, ctx)

    for k, J in enumerate(golden["J"]):
        result = step(tf.constant(J, tf.float32), state, eager.make_context(5, step=k, dtype=tf.float32))
        assert result.direction.dtype == tf.float32 and state["sq_norm_ema"].dtype == tf.float32
        assert _rel(result.direction.numpy(), golden["directions"][k]) < 1e-5
        state = result.state


def test_solver_on_a_gramian_by_hand() -> None:
    # g1 = [1, 0], g2 = [0, 1], g3 = [-1, 1], tau = 0.5: g2.d >= 0.5 and g3.d >= 0.5 * 2 = 1. g1 violates
    # only g3's (g3.g1 = -1): d = g1 + mu3 g3 = [1 - mu3, mu3], g3.d = 2 mu3 - 1 = 1 -> mu3 = 1, d = [0, 1],
    # and g2.d = 1 >= 0.5 holds without g2 (mu2 = 0); TorchJD's _solve_qp gives [1, 0, 1] too
    J = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])
    w = solve_qp(tf.constant(J @ J.T), 0.5).numpy()
    np.testing.assert_allclose(w, [1.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(w @ J, [0.0, 1.0], atol=1e-12)


def test_declarations_and_recipe_checks() -> None:
    assert PCD.needs == "gradients" and PCD.weighting and PCD.needs_primary and PCD.paper and PCD.summary
    assert REGISTRY["pcd"] is PCD
    assert PCD().state_spec(3) == {"sq_norm_ema": ((3,), 0.0), "n_steps": ((), 0.0)}
    assert PCD().sized_state_spec(3, 9) == {}
    assert check({"pcd": {"tau": 0.1, "beta": 0.9, "eps": 0}}) == []
    [problem] = check({"pcd": {"tau": 1.5}})
    assert problem.message == "`tau` must be in [0, 1] (a number or a non-empty list), received 1.5"
    [problem] = check({"pcd": {"tau": [0.1, -0.1]}})
    assert problem.message == "`tau` must be in [0, 1] (a number or a non-empty list), received [0.1, -0.1]"
    [problem] = check({"pcd": {"tau": [0.1, 0.2, 0.3]}}, 3)
    assert (
        problem.path == ("pcd", "tau") and "3 tasks, one of them train.primary: 2 values" in problem.message
    )
    [problem] = check({"pcd": {"beta": 1}})
    assert problem.message == "`beta` must be in [0, 1), received 1"
    [problem] = check({"pcd": {"eps": -1.0}})
    assert problem.message == "`eps` must be a finite number >= 0, received -1.0"
    [problem] = check({"pcd": {"taus": 0.1}})
    assert "unknown parameter 'taus'" in problem.message and "tau" in problem.message
    with pytest.raises(ValueError, match=r"`pcd.primary` is task 3 but there are 3 tasks"):
        aggregate({"pcd": {"primary": 3}}, MATRICES[1])


def test_public_aggregate_carries_the_state() -> None:
    golden = VALUES["normal_3x6"]
    state = None
    for k, J in enumerate(golden["J"]):
        d, state = aggregate("pcd", J, step=k, state=state, return_state=True)
        assert _rel(d, golden["directions"][k]) < 1e-10
    assert state["n_steps"] == 4
