"""UPGrad and DualProj: TorchJD 0.18 values, properties, hand-checkable projections."""

from __future__ import annotations

import numpy as np
import pytest

from mtlcli.weighting import aggregate, get

from . import _asserts, _inputs
from ._reference_b import DUALPROJ, DUALPROJ_LARGE, MATRICES, UPGRAD, UPGRAD_LARGE, large_matrices

CASES = dict(_inputs.ALL)
NAMES = ["upgrad", "dualproj"]


def _matrix(name: str) -> np.ndarray:
    return MATRICES[name] if name in MATRICES else CASES[name]


# --- values ------------------------------------------------------------------------------------------
def test_golden_row():
    # algorithms.md §7 (TorchJD's own table), then TorchJD 0.18.0's float64 output in full.
    J = _inputs.J_GOLDEN
    np.testing.assert_allclose(aggregate("upgrad", J), [0.2929, 1.9004, 1.9004], atol=5e-5)
    np.testing.assert_allclose(aggregate("dualproj", J), [0.5563, 1.1109, 1.1109], atol=5e-5)
    np.testing.assert_allclose(
        aggregate("upgrad", J),
        [0.292902000156936, 1.9003520780018968, 1.9003520780018968],
        rtol=0,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        aggregate("dualproj", J),
        [0.5563158128582222, 1.1109210467854445, 1.1109210467854445],
        rtol=0,
        atol=1e-12,
    )


@pytest.mark.parametrize(("spec", "table"), [("upgrad", UPGRAD), ("dualproj", DUALPROJ)], ids=NAMES)
def test_matches_torchjd(spec, table):
    for name, expected in table.items():
        J = _matrix(name)
        _asserts.assert_close_scaled(aggregate(spec, J), np.array(expected), J, rtol=1e-10)


@pytest.mark.parametrize(
    ("spec", "table"), [("upgrad", UPGRAD_LARGE), ("dualproj", DUALPROJ_LARGE)], ids=NAMES
)
def test_matches_torchjd_large_m(spec, table):
    # m = 11, 12 run the bounded active-set path instead of the enumeration
    for name, J in large_matrices().items():
        _asserts.assert_close_scaled(aggregate(spec, J), np.array(table[name]), J, rtol=1e-10)


def test_hand_checkable_projections():
    # g1 = (1, 0), g2 = (-1, 1), g1.g2 = -1. Near-exact projections (reg_eps = 1e-12):
    #   pi(g1/2) = (0.5, 0) + 0.5 g2/||g2||^2 = (0.25, 0.25)   (g2 . (0.5, 0) = -0.5 < 0)
    #   pi(g2/2) = (-0.5, 0.5) + 0.5 g1/||g1||^2 = (0, 0.5)    (g1 . (-0.5, 0.5) = -0.5 < 0)
    #   UPGrad = sum = (0.25, 0.75); DualProj: mean (0, 0.5) already has g1.x = 0, g2.x = 0.5 >= 0.
    J = np.array([[1.0, 0.0], [-1.0, 1.0]])
    np.testing.assert_allclose(aggregate({"upgrad": {"reg_eps": 1e-12}}, J), [0.25, 0.75], atol=1e-9)
    np.testing.assert_allclose(aggregate({"dualproj": {"reg_eps": 1e-12}}, J), [0.0, 0.5], atol=1e-9)
    # orthogonal rows never conflict: both are the mean exactly, regularisation or not (diagonal Ĝ)
    J = np.array([[3.0, 0.0], [0.0, 1.0]])
    for spec in NAMES:
        np.testing.assert_allclose(aggregate(spec, J), [1.5, 0.5], atol=1e-14)


def test_default_regularisation_is_applied():
    # algorithms.md §7: exactly opposite gradients give ||d|| ~ 1.5e-3 with reg_eps = 1e-4, ~0 near-exact
    J = np.array([[1.0, 0.0], [-1.0, 0.0]])
    d = aggregate("upgrad", J)
    assert 1e-3 < np.linalg.norm(d) < 2e-3 or np.linalg.norm(d) < 1e-12
    assert np.linalg.norm(aggregate({"upgrad": {"reg_eps": 1e-12}}, J)) < 1e-9
    # gradient norms 1e-3 and 1, non-orthogonal: default and near-exact differ by a few percent
    J = np.array([[1e-3, 1e-3], [-1.0, 0.2]])
    a, b = aggregate("upgrad", J), aggregate({"upgrad": {"reg_eps": 1e-10}}, J)
    assert np.linalg.norm(a - b) > 1e-3 * np.linalg.norm(b)


def test_pref_vector():
    J = _matrix("r4x7")
    # weights are positively homogeneous in the preference: p = 1 gives m times the default (p = 1/m)
    for spec in NAMES:
        d = aggregate({spec: {"pref_vector": [1.0, 1.0, 1.0, 1.0]}}, J)
        np.testing.assert_allclose(d, 4 * aggregate(spec, J), atol=1e-12)
    # a one-hot preference on a non-conflicting task gives that task's gradient
    J = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(aggregate({"upgrad": {"pref_vector": [1.0, 0.0]}}, J), [1.0, 0.0], atol=1e-14)
    with pytest.raises(ValueError, match="pref_vector"):
        aggregate({"upgrad": {"pref_vector": [1.0, 2.0, 3.0]}}, J)


@pytest.mark.parametrize("spec", NAMES)
def test_parameter_validation(spec):
    for bad in (
        {"reg_eps": -1.0},
        {"norm_eps": -1e-4},
        {"pref_vector": []},
        {"pref_vector": [1.0, float("nan")]},
    ):
        with pytest.raises(ValueError):
            get({spec: bad})
    assert get(spec).get_config() == {"norm_eps": 1e-4, "reg_eps": 1e-4, "pref_vector": None}


# --- properties ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", NAMES)
@pytest.mark.parametrize("J", _inputs.matrices(_inputs.ALL), ids=_inputs.ids(_inputs.ALL))
def test_expected_structure(spec, J):
    _asserts.assert_finite_on(lambda M: aggregate(spec, M), J)


@pytest.mark.parametrize("spec", NAMES)
@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL), ids=_inputs.ids(_inputs.TYPICAL))
def test_permutation_equivariant(spec, J):
    _asserts.assert_permutation_equivariant(lambda M: aggregate(spec, M), J, rtol=1e-10)


@pytest.mark.parametrize("spec", NAMES)
@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL), ids=_inputs.ids(_inputs.TYPICAL))
def test_non_conflicting(spec, J):
    # exact dual-cone projection with negligible regularisation: J d >= 0
    d = aggregate({spec: {"reg_eps": 1e-12}}, J)
    _asserts.assert_non_conflicting(d, J, tol=1e-7)
    # (with the default reg_eps = 1e-4 small violations remain on rank-deficient J, as in TorchJD)


@pytest.mark.parametrize("spec", NAMES)
@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL[:6]), ids=_inputs.ids(_inputs.TYPICAL[:6]))
def test_linear_under_scaling(spec, J):
    # the Gramian is trace-normalised, so the weights do not depend on the scale of J (as long as
    # tr(G) >= norm_eps: below it the Gramian counts as zero and d is the mean)
    _asserts.assert_linear_under_scaling(lambda M: aggregate(spec, M), J, scales=(0.5, 7.0, 1e3), rtol=1e-9)


@pytest.mark.parametrize("spec", NAMES)
def test_zero_and_tiny_matrices_give_the_mean(spec):
    # tr(G) < norm_eps: the normalised Gramian is 0, Ĝ = reg_eps I, so v_i = p_i e_i and d = mean
    for J in (np.zeros((3, 4)), 1e-8 * _inputs.J_GOLDEN):
        np.testing.assert_allclose(aggregate(spec, J), J.mean(axis=0), rtol=0, atol=1e-22)


@pytest.mark.parametrize("spec", NAMES)
def test_graph_matches_eager(spec):
    for name in ("conflicting_4x9", "rank2_4x8", "duplicate_rows_3x4"):
        _asserts.assert_graph_matches_eager(spec, CASES[name], rtol=1e-4)


def test_graph_matches_eager_large_m():
    J = large_matrices()["conf12x30"]
    _asserts.assert_graph_matches_eager("upgrad", J, rtol=1e-4)


@pytest.mark.parametrize("spec", NAMES)
def test_stateless_round_trip(spec):
    states = _asserts.assert_state_round_trip(spec, CASES["conflicting_4x9"])
    assert states == [{}, {}, {}]
