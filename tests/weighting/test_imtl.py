"""IMTL-G: v = pinv(G) sqrt(diag G), w = v / sum v (TorchJD IMTLG); IMTL: with IMTL-L loss scales (LibMTL)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import aggregate, check, eager, get
from mtlcli.weighting.imtl import pinv

from . import _inputs, _libmtl_values
from ._asserts import (
    assert_expected_structure,
    assert_graph_matches_eager,
    assert_linear_under_scaling,
    assert_non_conflicting,
    assert_permutation_equivariant,
)

# matrices with linearly independent rows (T <= P, full row rank)
INDEPENDENT = [c for c in _inputs.TYPICAL if np.linalg.matrix_rank(c[1]) == c[1].shape[0]]


def _weights(J: np.ndarray) -> np.ndarray:
    strategy = get("imtl_g")
    return strategy.aggregate(tf.constant(J), None, {}, {}, eager.make_context(J.shape[0])).weights.numpy()


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.ALL), ids=_inputs.ids(_inputs.ALL))
def test_structure(J: np.ndarray) -> None:
    assert_expected_structure(aggregate("imtl_g", J), J)


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL), ids=_inputs.ids(_inputs.TYPICAL))
def test_permutation_invariant_and_linear(J: np.ndarray) -> None:
    assert_permutation_equivariant(lambda M: aggregate("imtl_g", M), J, rtol=1e-8)
    assert_linear_under_scaling(lambda M: aggregate("imtl_g", M), J)


@pytest.mark.parametrize("J", _inputs.matrices(INDEPENDENT), ids=_inputs.ids(INDEPENDENT))
def test_equal_projection_on_unit_gradients(J: np.ndarray) -> None:
    # the paper's property: u_i . d is the same for every task, and positive (so d conflicts with none)
    d = aggregate("imtl_g", J)
    projections = (J / np.linalg.norm(J, axis=1, keepdims=True)) @ d
    np.testing.assert_allclose(projections, projections[0], rtol=1e-8)
    assert_non_conflicting(d, J)
    assert _weights(J).sum() == pytest.approx(1.0)


def test_hand_values_dependent_rows() -> None:
    # g2 = -2 g1: G = [[1, -2], [-2, 4]] = 5 v v^T with v = (1, -2)/sqrt 5, pinv(G) = G / 25;
    # pinv(G) [1, 2] = [-3, 6] / 25, sum 3/25 -> w = [-1, 2] (negative weights are allowed); d = -5 g1
    J = np.array([[1.0, 0.0], [-2.0, 0.0]])
    np.testing.assert_allclose(_weights(J), [-1.0, 2.0], rtol=1e-12)
    np.testing.assert_allclose(aggregate("imtl_g", J), [-5.0, 0.0], rtol=1e-12)


def test_hand_values_orthogonal() -> None:
    # G = diag(9, 16): v = [3/9, 4/16] = [1/3, 1/4], w = [4/7, 3/7], d = [12/7, 12/7]
    np.testing.assert_allclose(aggregate("imtl_g", np.diag([3.0, 4.0])), [12 / 7, 12 / 7], rtol=1e-12)


def test_zero_matrix_gives_zero_weights() -> None:
    np.testing.assert_array_equal(_weights(np.zeros((3, 4))), np.zeros(3))


def test_pinv_matches_numpy_on_full_rank_and_cuts_like_torch() -> None:
    A = _inputs.TYPICAL[3][1]
    np.testing.assert_allclose(pinv(tf.constant(A)).numpy(), np.linalg.pinv(A), atol=1e-12)
    B = np.array([[1.0, 1.0], [1.0, 1.0 + 1e-17]])  # numerically rank 1
    np.testing.assert_allclose(pinv(tf.constant(B)).numpy(), B / 4.0, atol=1e-12)


def test_graph_mode() -> None:
    assert_graph_matches_eager("imtl_g", _inputs.TYPICAL[4][1])


# -- imtl: IMTL-L loss scales + IMTL-G (LibMTL ``IMTL``) ------------------------------------------
# Golden values: LibMTL's own class (``_libmtl_values.py``), float64, to 1e-10 relative (closed form;
# the cases have linearly independent gradients, where LibMTL's torch.inverse formula is defined).

LIBMTL_IMTL = _libmtl_values.VALUES["imtl"]


def _imtl(J: np.ndarray, losses, loss_scale):
    strategy = get("imtl")
    params = {"loss_scale": tf.constant(loss_scale, tf.float64)}
    ctx = eager.make_context(J.shape[0])
    return strategy.update(tf.constant(losses, tf.float64), tf.constant(J), params, {}, ctx)


@pytest.mark.parametrize("case", sorted(LIBMTL_IMTL))
def test_imtl_matches_libmtl(case: str) -> None:
    expected = LIBMTL_IMTL[case]
    J = np.asarray(_libmtl_values.VALUES["cases"][case])
    result = _imtl(J, _libmtl_values.VALUES["losses"][case], expected["loss_scale"])
    d = result.direction.numpy()
    assert np.max(np.abs(d - expected["direction"])) / np.max(np.abs(expected["direction"])) < 1e-10
    alpha = result.weights.numpy() / np.exp(expected["loss_scale"])
    # relative to the largest weight: a weight near zero carries the solve's rounding (1.5e-14 absolute)
    scale = np.max(np.abs(expected["alpha"]))
    np.testing.assert_allclose(alpha, expected["alpha"], rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(result.param_grads["loss_scale"].numpy(), expected["scale_grad"], rtol=1e-12)
    np.testing.assert_allclose(result.weights.numpy() @ J, d, rtol=1e-12)  # a weighting: d = w @ J


@pytest.mark.parametrize("J", _inputs.matrices(INDEPENDENT), ids=_inputs.ids(INDEPENDENT))
def test_imtl_equal_projections_and_zero_scales_give_imtl_g(J: np.ndarray) -> None:
    losses = _inputs.losses_for(J)
    scales = np.linspace(-0.5, 0.5, J.shape[0])
    d = _imtl(J, losses, scales).direction.numpy()
    projections = (J / np.linalg.norm(J, axis=1, keepdims=True)) @ d  # unit vectors ignore the scales
    np.testing.assert_allclose(projections, projections[0], rtol=1e-8)
    assert_non_conflicting(d, J)
    np.testing.assert_allclose(
        _imtl(J, losses, np.zeros(J.shape[0])).direction.numpy(), aggregate("imtl_g", J)
    )


def test_imtl_scale_gradient_by_hand_and_permutation() -> None:
    # d(e^s L - s)/ds = e^s L - 1: s = [0, log 2], L = [3, 0.25] -> [2, -0.5]
    J = _inputs.TYPICAL[2][1]
    result = _imtl(J, [3.0, 0.25], [0.0, np.log(2.0)])
    np.testing.assert_allclose(result.param_grads["loss_scale"].numpy(), [2.0, -0.5], rtol=1e-14)
    swapped = _imtl(J[::-1], [0.25, 3.0], [np.log(2.0), 0.0])
    np.testing.assert_allclose(swapped.direction.numpy(), result.direction.numpy(), rtol=1e-10)
    np.testing.assert_allclose(swapped.weights.numpy(), result.weights.numpy()[::-1], rtol=1e-10)


def test_imtl_declarations_and_graph_mode() -> None:
    strategy = get("imtl")
    assert strategy.param_spec(3) == {"loss_scale": ((3,), 0.0)} and strategy.state_spec(3) == {}
    assert check({"imtl": {"on": "representation"}}) == []
    [problem] = check({"imtl": {"init": 0.5}})
    assert "unknown parameter 'init'" in problem.message and "imtl takes on" in problem.message
    assert_graph_matches_eager("imtl", _inputs.TYPICAL[4][1], _inputs.losses_for(_inputs.TYPICAL[4][1]))
