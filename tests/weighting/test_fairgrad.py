"""FairGrad: TorchJD 0.18 values, the exact root of ``G w = w^(-1/alpha)``, hand-checkable cases and
the properties the paper states (every task progresses; weights follow their task; scale covariance)."""

from __future__ import annotations

import numpy as np
import pytest

from mtlcli.weighting import aggregate, eager, get, registry

from . import _asserts, _inputs
from ._torchjd_values_h1 import FAIRGRAD, FAIRGRAD_TIGHT

CASES = dict(_inputs.ALL)
#: full-rank Gramians (a positive root exists) of ordinary scale
FULL_RANK = [
    "golden_2x3",
    "single_task_1x5",
    "normal_2x7",
    "normal_3x10",
    "normal_5x12",
    "conflicting_4x9",
    "tall_6x3",
    "duplicate_rows_3x4",
    "mixed_norms_3x5",
]


def _spec(alpha: float) -> dict:
    return {"fairgrad": {"alpha": alpha}}


def _weights(spec, J: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    strategy = get(spec)
    T = J.shape[0]
    ctx = eager.make_context(T)
    _, result = eager.run(strategy, tf.constant(J), tf.ones([T], tf.float64), {}, {}, ctx)
    return result.weights.numpy()


def _key(key: str) -> tuple[np.ndarray, float]:
    name, alpha = key.split("@")
    return CASES[name], float(alpha)


# --- values ------------------------------------------------------------------------------------------
def test_matches_torchjd():
    # TorchJD's least_squares stops at its default tolerances: measured max 1.9e-9 relative to this solve
    for key, expected in FAIRGRAD.items():
        J, alpha = _key(key)
        _asserts.assert_close_scaled(aggregate(_spec(alpha), J), np.array(expected), J, rtol=5e-9)


def test_matches_the_exact_root():
    # the same least-squares solve at tolerances 1e-15: measured max 2.1e-14 relative
    for key, expected in FAIRGRAD_TIGHT.items():
        J, alpha = _key(key)
        _asserts.assert_close_scaled(aggregate(_spec(alpha), J), np.array(expected), J, rtol=1e-12)


@pytest.mark.parametrize("name", FULL_RANK)
@pytest.mark.parametrize("alpha", [0.1, 0.5, 1.0, 2.0, 10.0])
def test_weights_solve_the_fairness_system(name, alpha):
    # G w = w^(-1/alpha): each task's progress g_i . d is w_i^(-1/alpha), w > 0
    J = CASES[name]
    w = _weights(_spec(alpha), J)
    assert np.all(w > 0)
    progress = J @ (w @ J)
    # to round-off relative to the largest progress (mixed_norms_3x5's rows span 1e-3 .. 1e3)
    np.testing.assert_allclose(progress, w ** (-1 / alpha), rtol=1e-10, atol=1e-12 * np.max(progress))


def test_hand_checkable_orthogonal_rows():
    # orthogonal rows: G = diag(||g_i||^2), so ||g_i||^2 w_i = w_i^(-1/alpha), w_i = ||g_i||^(-2alpha/(alpha+1))
    J = np.array([[3.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(_weights(_spec(1.0), J), [1 / 3, 1 / 4], rtol=1e-13)
    np.testing.assert_allclose(aggregate(_spec(1.0), J), [1.0, 1.0], rtol=1e-13)  # sum of unit rows
    np.testing.assert_allclose(_weights(_spec(3.0), J), [3.0**-1.5, 4.0**-1.5], rtol=1e-13)
    # alpha = 0 is linear scalarisation: the mean row
    np.testing.assert_allclose(aggregate(_spec(0.0), J), [1.5, 2.0], rtol=1e-15)
    np.testing.assert_allclose(_weights(_spec(0.0), J), [0.5, 0.5], rtol=1e-15)


def test_hand_checkable_two_tasks():
    # g1 = (1, 0), g2 = (1, 1): G = [[1, 1], [1, 2]]; alpha = 1 solves w1 + w2 = 1/w1, w1 + 2 w2 = 1/w2.
    # Subtracting: w2 = 1/w2 - 1/w1 ... the root is w1 = sqrt(2 + sqrt(2))^-1 * (1 + sqrt(2))^(1/2) / ...;
    # checked here by substitution instead: both equations hold and w matches a 1-D bisection on w1.
    J = np.array([[1.0, 0.0], [1.0, 1.0]])
    w = _weights(_spec(1.0), J)
    np.testing.assert_allclose([w[0] + w[1], w[0] + 2 * w[1]], [1 / w[0], 1 / w[1]], rtol=1e-13)
    # eliminating w2 = 1/w1 - w1: w1 + 2/w1 - 2 w1 = w1 / (1 - w1^2)  ->  bisection on (0, 1)
    lo, hi = 1e-9, 1 - 1e-9
    f = lambda a: a + 2 / a - 2 * a - a / (1 - a * a)  # noqa: E731 (decreasing on (0, 1))
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    np.testing.assert_allclose(w, [lo, 1 / lo - lo], rtol=1e-12)


def test_all_zero_and_zero_rows():
    for name in ["zeros_1x3", "zeros_2x3", "zeros_4x6"]:
        J = CASES[name]
        np.testing.assert_array_equal(aggregate("fairgrad", J), np.zeros(J.shape[1]))
        np.testing.assert_allclose(_weights("fairgrad", J), np.full(J.shape[0], 1 / J.shape[0]))
    # a zero row gets weight 0 and the others solve their own system (d: TorchJD agrees, FAIRGRAD)
    J = CASES["zero_row_3x5"]
    np.testing.assert_allclose(aggregate("fairgrad", J), aggregate("fairgrad", J[:2]), rtol=1e-12, atol=1e-14)
    w = _weights("fairgrad", J)
    assert w[2] == 0
    np.testing.assert_allclose(w[:2], _weights("fairgrad", J[:2]), rtol=1e-12)


@pytest.mark.parametrize("name", ["rank2_4x8", "opposite_2x4"])
def test_no_positive_root_still_gives_a_finite_direction(name):
    # 0 in the convex hull of the rows: the exact weights are unbounded (see the docstring); d stays finite
    J = CASES[name]
    _asserts.assert_finite_on(lambda M: aggregate("fairgrad", M), J)
    assert np.all(np.isfinite(_weights("fairgrad", J)))


# --- properties --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FULL_RANK)
def test_every_task_progresses(name):
    # g_i . d = w_i^(-1/alpha) > 0: FairGrad never conflicts with a task where the root exists
    J = CASES[name]
    _asserts.assert_non_conflicting(aggregate("fairgrad", J), J)


@pytest.mark.parametrize("name", FULL_RANK)
def test_permutation_equivariant(name):
    J = CASES[name]
    _asserts.assert_permutation_equivariant(lambda M: aggregate("fairgrad", M), J, rtol=1e-12)
    _asserts.assert_weights_permutation_equivariant(lambda M: _weights("fairgrad", M), J, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("scale", [1e-8, 1e-4, 1e4, 1e8])
def test_scale_covariance(alpha, scale):
    # J -> cJ: w -> c^(-2alpha/(alpha+1)) w and d -> c^((1-alpha)/(1+alpha)) d, to round-off at any scale
    J = CASES["normal_3x10"]
    w, d = _weights(_spec(alpha), J), aggregate(_spec(alpha), J)
    np.testing.assert_allclose(
        _weights(_spec(alpha), scale * J), scale ** (-2 * alpha / (alpha + 1)) * w, rtol=1e-12
    )
    np.testing.assert_allclose(
        aggregate(_spec(alpha), scale * J), scale ** ((1 - alpha) / (1 + alpha)) * d, rtol=1e-12, atol=0
    )


def test_graph_float32_matches_eager():
    for name in ["normal_3x10", "conflicting_4x9", "zero_row_3x5"]:
        _asserts.assert_graph_matches_eager("fairgrad", CASES[name])
        _asserts.assert_graph_matches_eager(_spec(0.5), CASES[name])


def test_float32_is_close_to_float64():
    import tensorflow as tf

    J = CASES["normal_5x12"]
    strategy = get("fairgrad")
    ctx = eager.make_context(5, dtype=tf.float32)
    d32, _ = eager.run(strategy, tf.constant(J, tf.float32), tf.ones([5]), {}, {}, ctx)
    _asserts.assert_close_scaled(d32.numpy(), aggregate("fairgrad", J), J, rtol=1e-4)


# --- parameters --------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [-1.0, float("inf"), float("nan")])
def test_bad_alpha_is_refused_with_the_value(alpha):
    with pytest.raises(ValueError, match="`alpha` must be a finite number >= 0"):
        get(_spec(alpha))
    (problem,) = registry.check(_spec(alpha))
    assert problem.path == ("fairgrad",)
    assert "received" in problem.message
