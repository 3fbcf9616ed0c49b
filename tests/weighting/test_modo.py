"""MoDo (TorchJD 0.18 ``MoDoWeighting``) on ``G = J1 J2ᵀ`` of two independent batches.

Golden values: TorchJD's stateful weighting over 3-4 steps (``_torchjd_values_h4.py``), float64, to
1e-10 relative (every step is closed form: one projected step). Properties: the weights are on the
simplex; the direction is ``w · (J1 + J2) / 2``; permuting the tasks permutes the weights; the simplex
projection is the Euclidean one (checked against its KKT conditions).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import REGISTRY, aggregate, check, eager
from mtlcli.weighting.modo import MoDo, project_onto_simplex

from ._torchjd_values_h4 import CASES, WEIGHTS


def drive(strategy, pairs, dtype=tf.float64):
    """``strategy.update`` over ``[(J1, J2), ...]`` with its state carried; per-step results."""
    T = np.asarray(pairs[0][0]).shape[0]
    state, out = eager.initial_state(strategy, T, dtype), []
    for k, (J1, J2) in enumerate(pairs):
        J = tf.constant(np.stack([J1, J2]), dtype)
        result = strategy.update(
            tf.ones([T], dtype), J, {}, state, eager.make_context(T, step=k, dtype=dtype)
        )
        out.append(result)
        state = result.state
    return out


MODO_CASES = sorted(k for k in WEIGHTS if k[1].startswith("modo"))


@pytest.mark.parametrize("key", MODO_CASES, ids=["-".join(k) for k in MODO_CASES])
def test_weights_match_torchjd_over_several_steps(key) -> None:
    params, expected = WEIGHTS[key]
    results = drive(MoDo(**params), CASES[key[0]])
    assert len(results) == len(expected) >= 3
    for step, (result, want) in enumerate(zip(results, expected, strict=True)):
        got = result.weights.numpy()
        err = np.max(np.abs(got - want)) / np.max(np.abs(want))
        assert err <= 1e-10, f"step {step}: {got} vs TorchJD {want}"
        np.testing.assert_array_equal(result.state["lambd"].numpy(), got)


def test_direction_is_the_weighted_mean_of_both_batches() -> None:
    J1, J2 = (np.asarray(J) for J in CASES["t3"][0])
    d, state = aggregate("modo", np.stack([J1, J2]), return_state=True)
    w = state["lambd"]
    np.testing.assert_allclose(d, w @ (J1 + J2) / 2, rtol=1e-14, atol=1e-15)
    # by hand: one step from 1/3 with gamma = rho = 0.1, then the projection found by bisection on θ
    G = J1 @ J2.T
    lam = np.full(3, 1 / 3)
    np.testing.assert_allclose(w, bisection_projection(lam - 0.1 * (G @ lam + 0.1 * lam)), atol=1e-12)


def bisection_projection(y: np.ndarray) -> np.ndarray:
    """The simplex projection ``max(y - θ, 0)`` with ``Σ = 1``, θ found by bisection (independent of
    the sort-based closed form)."""
    lo, hi = y.min() - 1, y.max()
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(y - mid, 0).sum() > 1 else (lo, mid)
    return np.maximum(y - (lo + hi) / 2, 0)


def test_weights_stay_on_the_simplex_and_follow_a_permutation_of_the_tasks() -> None:
    pairs = CASES["t3"]
    perm = np.array([2, 0, 1])
    plain = [r.weights.numpy() for r in drive(MoDo(gamma=0.5), pairs)]
    swapped = [(np.asarray(J1)[perm], np.asarray(J2)[perm]) for J1, J2 in pairs]
    permuted = [r.weights.numpy() for r in drive(MoDo(gamma=0.5), swapped)]
    for w, wp in zip(plain, permuted, strict=True):
        assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-12
        np.testing.assert_allclose(wp, w[perm], atol=1e-14)


def test_the_single_batch_gramian_differs_from_the_two_batch_product() -> None:
    # guards against the train step (or a refactor) handing J1 twice: J1 J1ᵀ gives other weights
    J1, J2 = (np.asarray(J) for J in CASES["t3"][0])
    two = aggregate({"modo": {"gamma": 0.5}}, np.stack([J1, J2]))
    same = aggregate({"modo": {"gamma": 0.5}}, np.stack([J1, J1]))
    assert np.max(np.abs(two - same)) > 1e-3


@pytest.mark.parametrize("seed", range(5))
def test_simplex_projection_satisfies_its_kkt_conditions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=6) * 2
    x = project_onto_simplex(tf.constant(y)).numpy()
    assert np.all(x >= 0) and abs(x.sum() - 1) < 1e-14
    # x = max(y - θ, 0): on the support y - x is the constant θ, off it y <= θ
    support = x > 0
    theta = (y - x)[support]
    assert np.ptp(theta) < 1e-14 and np.all(y[~support] <= theta[0] + 1e-14)
    np.testing.assert_allclose(x, bisection_projection(y), atol=1e-12)
    inside = tf.constant([0.2, 0.5, 0.3], tf.float64)  # already on the simplex: unchanged
    np.testing.assert_allclose(project_onto_simplex(inside).numpy(), [0.2, 0.5, 0.3], atol=1e-16)


def test_a_single_jacobian_is_refused_with_the_expected_shape() -> None:
    J = np.array([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match=r"\(2, tasks, params\)"):
        aggregate("modo", J)
    with pytest.raises(ValueError, match="two independent mini-batches"):
        MoDo().aggregate(tf.constant(J), None, {}, {"lambd": tf.constant([0.5, 0.5], tf.float64)}, None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"modo": {"gamma": 0}}, "`gamma` must be a finite number > 0"),
        ({"modo": {"rho": -0.1}}, "`rho` must be a finite number >= 0"),
        ({"modo": {"on": "representation"}}, "unknown parameter 'on'"),
    ],
)
def test_bad_parameters_are_refused(spec, message) -> None:
    problems = check(spec)
    assert problems and message in problems[0].message, problems


def test_registered_as_a_two_batch_weighting() -> None:
    cls = REGISTRY["modo"]
    assert cls is MoDo and cls.batches == 2 and cls.needs == "gradients" and cls.weighting
    assert check({"modo": {"every": 4}}) == []
