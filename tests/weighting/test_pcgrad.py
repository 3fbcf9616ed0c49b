"""PCGrad and GradVac (Gramian formulation, orders from the step seed)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import aggregate, check, get
from mtlcli.weighting.pcgrad import gradvac_weights, pcgrad_weights, random_orders

from . import _inputs
from ._asserts import (
    assert_expected_structure,
    assert_graph_matches_eager,
    assert_linear_under_scaling,
    assert_non_conflicting,
    assert_permutation_equivariant,
    assert_state_round_trip,
)

TWO_TASKS = [c for c in _inputs.ALL if c[1].shape[0] == 2]


def test_declarations_and_validation() -> None:
    for name in ("pcgrad", "gradvac"):
        strategy = get(name)
        assert strategy.needs == "gradients" and strategy.weighting
    assert get("gradvac").state_spec(3) == {"phi": ((3, 3), 0.0)}
    assert check({"gradvac": {"beta": 1.5}})[0].message == "`beta` must be in [0, 1], received 1.5"
    assert check({"gradvac": {"eps": -1e-3}})[0].message == "`eps` must be >= 0, received -0.001"


@pytest.mark.parametrize("name", ["pcgrad", "gradvac"])
@pytest.mark.parametrize("J", _inputs.matrices(_inputs.ALL), ids=_inputs.ids(_inputs.ALL))
def test_structure(name: str, J: np.ndarray) -> None:
    assert_expected_structure(aggregate(name, J, seed=5, step=2), J)


def test_random_orders_are_permutations_of_the_other_tasks() -> None:
    counts = np.zeros((4, 4))
    for step in range(300):
        orders = random_orders(4, tf.constant([1, step], tf.int64)).numpy()
        for i, row in enumerate(orders):
            assert sorted(row.tolist()) == [j for j in range(4) if j != i]
        counts[np.arange(4), orders[:, 0]] += 1
    # every other task comes first about 1/3 of the time (300 draws: 100 +- ~25)
    off_diag = counts[~np.eye(4, dtype=bool)]
    assert counts.trace() == 0 and off_diag.min() > 60 and off_diag.max() < 140


def test_pcgrad_hand_values() -> None:
    # g1 = (1, 0), g2 = (-1, 1), g1 . g2 = -1 < 0:
    # g1' = g1 - (-1 / 2) g2 = (0.5, 0.5); g2' = g2 - (-1 / 1) g1 = (0, 1); d = (0.5, 1.5); w = [2, 1.5]
    J = np.array([[1.0, 0.0], [-1.0, 1.0]])
    np.testing.assert_allclose(aggregate("pcgrad", J), [0.5, 1.5])
    w = pcgrad_weights(tf.constant(J @ J.T), tf.constant([[1], [0]])).numpy()
    np.testing.assert_allclose(w, [2.0, 1.5])


def test_pcgrad_no_conflict_is_the_sum() -> None:
    J = np.array([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0], [0.0, 1.0, 1.0]])  # pairwise non-negative products
    np.testing.assert_allclose(aggregate("pcgrad", J, seed=3), J.sum(axis=0))


def test_pcgrad_order_matters_and_comes_from_the_seed() -> None:
    # three tasks where the visiting order changes the result
    J = np.array([[1.0, 0.0], [-1.0, 0.2], [-0.3, -1.0]])
    G = tf.constant(J @ J.T)
    a = pcgrad_weights(G, tf.constant([[1, 2], [0, 2], [0, 1]])).numpy() @ J
    b = pcgrad_weights(G, tf.constant([[2, 1], [2, 0], [1, 0]])).numpy() @ J
    assert not np.allclose(a, b)
    outs = {tuple(np.round(aggregate("pcgrad", J, seed=0, step=k), 12)) for k in range(20)}
    assert outs <= {tuple(np.round(x, 12)) for x in _all_orders_pcgrad(J)} and len(outs) > 1
    np.testing.assert_array_equal(
        aggregate("pcgrad", J, seed=0, step=4), aggregate("pcgrad", J, seed=0, step=4)
    )


def _all_orders_pcgrad(J: np.ndarray) -> list[np.ndarray]:
    import itertools

    G = tf.constant(J @ J.T)
    others = [[j for j in range(3) if j != i] for i in range(3)]
    outs = []
    for flips in itertools.product([False, True], repeat=3):
        orders = [o[::-1] if f else o for o, f in zip(others, flips, strict=True)]
        outs.append(pcgrad_weights(G, tf.constant(orders)).numpy() @ J)
    return outs


@pytest.mark.parametrize("name", ["pcgrad", "gradvac"])
@pytest.mark.parametrize("J", _inputs.matrices(TWO_TASKS), ids=_inputs.ids(TWO_TASKS))
def test_two_tasks_deterministic_and_permutation_invariant(name: str, J: np.ndarray) -> None:
    assert_permutation_equivariant(lambda M: aggregate(name, M, seed=1), J, rtol=1e-12)
    np.testing.assert_array_equal(aggregate(name, J, seed=1), aggregate(name, J, seed=2, step=9))


@pytest.mark.parametrize("J", _inputs.matrices(TWO_TASKS), ids=_inputs.ids(TWO_TASKS))
def test_pcgrad_two_tasks_non_conflicting(J: np.ndarray) -> None:
    # m = 2, conflicting: g_1' is orthogonal to g_2 and g_1 = g_1' + c g_2, so g_1 . g_1' = ||g_1'||^2 >= 0;
    # g_2' is orthogonal to g_1, so g_1 . d = ||g_1'||^2 >= 0 (same for task 2). No conflict: d = g_1 + g_2.
    assert_non_conflicting(aggregate("pcgrad", J), J)


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL), ids=_inputs.ids(_inputs.TYPICAL))
def test_pcgrad_linear_under_scaling(J: np.ndarray) -> None:
    assert_linear_under_scaling(lambda M: aggregate("pcgrad", M, seed=3), J)


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL), ids=_inputs.ids(_inputs.TYPICAL))
def test_gradvac_first_call_equals_pcgrad(J: np.ndarray) -> None:
    # phi = 0 at first: the vaccine step is the PCGrad projection (up to eps = 1e-8 in the denominators)
    d_vac = aggregate({"gradvac": {"eps": 0.0}}, J, seed=7, step=1)
    np.testing.assert_allclose(d_vac, aggregate("pcgrad", J, seed=7, step=1), rtol=1e-9, atol=1e-12)


def test_gradvac_lifts_the_cosine_to_the_target() -> None:
    # g1 = (1, 0), g2 = (-1, 1): cos = -1/sqrt(2). Call 1 (phi = 0) projects; phi <- 0.5 cos = -0.353553.
    # Call 2: cos < phi, so g1 += w g2 with w = ||g1|| (phi sqrt(1-cos^2) - cos sqrt(1-phi^2)) / (||g2|| sqrt(1-phi^2))
    #   = (-0.353553 * 0.707107 + 0.707107 * 0.935414) / (1.414214 * 0.935414) = 0.411438 / 1.322876 = 0.311018,
    # after which cos(g1 + w g2, g2) equals the target phi exactly.
    J = np.array([[1.0, 0.0], [-1.0, 1.0]])
    G = tf.constant(J @ J.T)
    orders = tf.constant([[1], [0]])
    phi = tf.zeros((2, 2), tf.float64)
    _, phi = gradvac_weights(G, phi, orders, 0.5, 0.0)
    target = -0.5 / np.sqrt(2.0)
    np.testing.assert_allclose(phi.numpy(), [[0.0, target], [target, 0.0]], rtol=1e-12)
    w, phi2 = gradvac_weights(G, phi, orders, 0.5, 0.0)
    w01 = (target * np.sqrt(0.5) + np.sqrt(0.5) * np.sqrt(1 - target**2)) / (
        np.sqrt(2.0) * np.sqrt(1 - target**2)
    )
    assert w01 == pytest.approx(0.311018, abs=1e-6)
    g1_new = J[0] + w01 * J[1]
    cos_new = g1_new @ J[1] / np.linalg.norm(g1_new) / np.linalg.norm(J[1])
    assert cos_new == pytest.approx(target, abs=1e-12)
    # both tasks get the symmetric correction: w = [1 + w01, 1 + w10]
    np.testing.assert_allclose(w.numpy()[0], 1.0 + _w_other(J, 1, 0, target), rtol=1e-12)
    np.testing.assert_allclose(w.numpy()[1], 1.0 + w01, rtol=1e-12)
    np.testing.assert_allclose(phi2.numpy()[0, 1], 0.5 * target + 0.5 * (-1 / np.sqrt(2.0)), rtol=1e-12)


def _w_other(J: np.ndarray, i: int, j: int, phi: float) -> float:
    cos = J[i] @ J[j] / np.linalg.norm(J[i]) / np.linalg.norm(J[j])
    s_cos, s_phi = np.sqrt(1 - cos**2), np.sqrt(1 - phi**2)
    return np.linalg.norm(J[i]) * (phi * s_cos - cos * s_phi) / (np.linalg.norm(J[j]) * s_phi)


def test_gradvac_state_round_trip() -> None:
    J = _inputs.TYPICAL[5][1]
    states = assert_state_round_trip("gradvac", J, steps=3, seed=2)
    assert np.all(np.abs(states[-1]["phi"]) <= 1.0) and np.any(states[-1]["phi"] != 0)
    np.testing.assert_array_equal(np.diag(states[-1]["phi"]), 0.0)


@pytest.mark.parametrize("name", ["pcgrad", "gradvac"])
def test_graph_mode(name: str) -> None:
    J = _inputs.TYPICAL[5][1]
    assert_graph_matches_eager(name, J, seed=3, step=2)
