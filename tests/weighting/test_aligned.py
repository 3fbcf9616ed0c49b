"""Aligned-MTL (TorchJD AlignedMTL) and ConFIG."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import aggregate, check, eager, get
from mtlcli.weighting.aligned import aligned_mtl_weights, config_weights

from . import _inputs
from ._asserts import (
    assert_expected_structure,
    assert_graph_matches_eager,
    assert_linear_under_scaling,
    assert_non_conflicting,
    assert_permutation_equivariant,
)

MODES = ["min", "median", "rmse"]
INDEPENDENT = [c for c in _inputs.TYPICAL if np.linalg.matrix_rank(c[1]) == c[1].shape[0]]
WELL_CONDITIONED = [c for c in _inputs.TYPICAL if c[0] != "mixed_norms_3x5"]


def _aligned(J: np.ndarray, mode: str = "min") -> np.ndarray:
    return aggregate({"aligned_mtl": {"scale_mode": mode}}, J)


def test_declarations() -> None:
    assert get("aligned_mtl").scale_mode == "min"
    assert check({"aligned_mtl": {"scale_mode": "max"}})[0].message.startswith("expected one of 'min'")
    assert get("config").weighting and get("aligned_mtl").weighting


@pytest.mark.parametrize(
    "spec", [*[{"aligned_mtl": {"scale_mode": m}} for m in MODES], "config"], ids=[*MODES, "config"]
)
@pytest.mark.parametrize("J", _inputs.matrices(_inputs.ALL), ids=_inputs.ids(_inputs.ALL))
def test_structure(spec, J: np.ndarray) -> None:
    assert_expected_structure(aggregate(spec, J), J)


@pytest.mark.parametrize("mode", MODES)
def test_aligned_hand_values(mode: str) -> None:
    # J = diag(1, 2, 3, 4): G = diag(1, 4, 9, 16), B = sqrt(s) diag(1, 1/2, 1/3, 1/4), w = B 1/4
    # d = w^T J = sqrt(s)/4 (1, 1, 1, 1); s = 1 (min), 4 (lower median of 1, 4, 9, 16), 7.5 (mean)
    s = {"min": 1.0, "median": 4.0, "rmse": 7.5}[mode]
    np.testing.assert_allclose(
        _aligned(np.diag([1.0, 2.0, 3.0, 4.0]), mode), np.full(4, np.sqrt(s) / 4), rtol=1e-12
    )


@pytest.mark.parametrize("J", _inputs.matrices(INDEPENDENT), ids=_inputs.ids(INDEPENDENT))
def test_balance_transform_whitens_the_gramian(J: np.ndarray) -> None:
    # B G B = s I with s the smallest eigenvalue: the aligned gradients are orthogonal with equal norms
    G = J @ J.T
    m = G.shape[0]
    B = np.stack(
        [aligned_mtl_weights(tf.constant(G), tf.constant(np.eye(m)[k]), "min").numpy() for k in range(m)],
        axis=1,
    )
    np.testing.assert_allclose(B @ G @ B, np.linalg.eigvalsh(G)[0] * np.eye(m), atol=1e-8 * np.abs(G).max())


def test_aligned_zero_matrix_falls_back_to_mean() -> None:
    # no eigenvalue above the cut-off: B = I, w = 1/m
    w = aligned_mtl_weights(tf.zeros((3, 3), tf.float64), tf.constant([1 / 3] * 3, tf.float64), "min")
    np.testing.assert_allclose(w.numpy(), [1 / 3] * 3)


def test_aligned_rank_deficient_uses_kept_eigenvalues() -> None:
    # duplicate rows: G has one zero eigenvalue that is cut; d stays finite and in the row space
    J = dict(_inputs.TYPICAL)["duplicate_rows_3x4"]
    d = _aligned(J)
    residual = d - J.T @ np.linalg.lstsq(J.T, d, rcond=None)[0]
    assert np.all(np.isfinite(d)) and np.linalg.norm(residual) < 1e-10


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("J", _inputs.matrices(WELL_CONDITIONED), ids=_inputs.ids(WELL_CONDITIONED))
def test_aligned_permutation_invariant_and_linear(J: np.ndarray, mode: str) -> None:
    assert_permutation_equivariant(lambda M: _aligned(M, mode), J, rtol=1e-8)
    assert_linear_under_scaling(lambda M: _aligned(M, mode), J, rtol=1e-8)


def test_config_hand_values() -> None:
    # orthogonal g1 = (3, 0), g2 = (0, 4): U = I, pinv(U) 1 = (1, 1), u = (1, 1)/sqrt 2,
    # length = (3 + 4)/sqrt 2, d = 7/2 (1, 1)
    np.testing.assert_allclose(
        aggregate("config", np.array([[3.0, 0.0], [0.0, 4.0]])), [3.5, 3.5], rtol=1e-12
    )
    # one task: d = g
    np.testing.assert_allclose(
        aggregate("config", np.array([[1.0, -2.0, 2.0]])), [1.0, -2.0, 2.0], rtol=1e-12
    )


@pytest.mark.parametrize("J", _inputs.matrices(INDEPENDENT), ids=_inputs.ids(INDEPENDENT))
def test_config_equal_cosines_and_non_conflicting(J: np.ndarray) -> None:
    d = aggregate("config", J)
    cosines = (J / np.linalg.norm(J, axis=1, keepdims=True)) @ d / np.linalg.norm(d)
    np.testing.assert_allclose(cosines, cosines[0], rtol=1e-8)
    assert_non_conflicting(d, J)
    # length = sum of the projections on d's direction
    u = d / np.linalg.norm(d)
    assert np.linalg.norm(d) == pytest.approx((J @ u).sum(), rel=1e-10)


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL), ids=_inputs.ids(_inputs.TYPICAL))
def test_config_permutation_invariant_linear_and_exact_weights(J: np.ndarray) -> None:
    assert_permutation_equivariant(lambda M: aggregate("config", M), J, rtol=1e-8)
    assert_linear_under_scaling(lambda M: aggregate("config", M), J, rtol=1e-8)
    if (
        np.linalg.norm(np.linalg.pinv(J / np.linalg.norm(J, axis=1, keepdims=True)) @ np.ones(J.shape[0]))
        < 1e-12
    ):
        return  # opposite rows: numpy's pinv(U) 1 is round-off (see test_config_opposite_gradients)
    # ConFIG as exact row weights: d = w^T J reproduces the pinv-of-unit-rows construction
    U = J / np.linalg.norm(J, axis=1, keepdims=True)
    b = np.linalg.pinv(U) @ np.ones(J.shape[0])
    u = b / np.linalg.norm(b)
    np.testing.assert_allclose(
        config_weights(tf.constant(J)).numpy() @ J, (J @ u).sum() * u, atol=1e-9 * np.abs(J).max()
    )


def test_config_opposite_gradients() -> None:
    # g2 = -2 g1: U = [u; -u], pinv(U) 1 = 0 exactly; the round-off is not normalised into a direction
    J = dict(_inputs.TYPICAL)["opposite_2x4"]
    for perm in ([0, 1], [1, 0]):
        np.testing.assert_array_equal(aggregate("config", J[perm]), np.zeros(4))


def test_config_zero_rows() -> None:
    J = dict(_inputs.ZEROS)["zero_row_3x5"]
    d = aggregate("config", J)
    # the zero row is ignored: same as ConFIG on the two non-zero rows
    np.testing.assert_allclose(d, aggregate("config", J[:2]), rtol=1e-10)
    np.testing.assert_array_equal(aggregate("config", np.zeros((2, 3))), np.zeros(3))


@pytest.mark.parametrize("spec", ["aligned_mtl", {"aligned_mtl": {"scale_mode": "median"}}, "config"])
def test_graph_mode(spec) -> None:
    assert_graph_matches_eager(spec, _inputs.TYPICAL[4][1])


def test_graph_mode_rank_deficient() -> None:
    assert_graph_matches_eager("config", dict(_inputs.TYPICAL)["rank2_4x8"], rtol=1e-3)
    strategy = get("aligned_mtl")
    assert strategy.aggregate(
        tf.constant(np.zeros((2, 3))), None, {}, {}, eager.make_context(2)
    ).direction.shape == (3,)
