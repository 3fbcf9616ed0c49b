"""IMTL-G: v = pinv(G) sqrt(diag G), w = v / sum v (TorchJD IMTLG)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import aggregate, eager, get
from mtlcli.weighting.imtl import pinv

from . import _inputs
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
