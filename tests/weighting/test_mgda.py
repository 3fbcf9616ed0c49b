"""MGDA: Frank-Wolfe min-norm point (TorchJD defaults) and LibMTL's gradient normalisations."""

from __future__ import annotations

import numpy as np
import pytest

from mtlcli.weighting import aggregate, check, get

from . import _inputs
from ._asserts import (
    assert_expected_structure,
    assert_graph_matches_eager,
    assert_linear_under_scaling,
    assert_non_conflicting,
    assert_permutation_equivariant,
)

NORMALIZATIONS = ["none", "l2", "loss", "loss+"]
TIGHT = {"epsilon": 1e-12, "max_iters": 5000}


def _mgda(J, normalization="none", losses=None, **kw):
    return aggregate({"mgda": {"normalization": normalization, **kw}}, J, losses=losses)


def test_declarations_and_validation() -> None:
    strategy = get("mgda")
    assert strategy.needs == "gradients" and strategy.weighting
    assert (strategy.normalization, strategy.epsilon, strategy.max_iters, strategy.on) == (
        "none",
        1e-3,
        100,
        "parameters",
    )
    assert check({"mgda": {"on": "representation"}}) == []
    assert check({"mgda": {"on": "features"}})[0].message.startswith("expected one of 'parameters'")
    assert check({"mgda": {"epsilon": 0}})[0].message == "`epsilon` must be > 0, received 0"
    assert check({"mgda": {"max_iters": 0}})[0].message == "`max_iters` must be >= 1, received 0"


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("J", _inputs.matrices(_inputs.ALL), ids=_inputs.ids(_inputs.ALL))
def test_structure(J: np.ndarray, normalization: str) -> None:
    assert_expected_structure(_mgda(J, normalization, _inputs.losses_for(J)), J)


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL), ids=_inputs.ids(_inputs.TYPICAL))
def test_weights_on_simplex(J: np.ndarray) -> None:
    import tensorflow as tf

    from mtlcli.weighting.mgda import frank_wolfe_min_norm

    w = frank_wolfe_min_norm(tf.constant(J @ J.T), 1e-3, 100).numpy()
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)


PERM_CASES = [c for c in _inputs.TYPICAL if c[0] not in ("duplicate_rows_3x4",)]  # ties in argmin


@pytest.mark.parametrize("J", _inputs.matrices(PERM_CASES), ids=_inputs.ids(PERM_CASES))
def test_permutation_invariant(J: np.ndarray) -> None:
    assert_permutation_equivariant(lambda M: _mgda(M), J, rtol=1e-9)


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL), ids=_inputs.ids(_inputs.TYPICAL))
def test_linear_under_scaling(J: np.ndarray) -> None:
    assert_linear_under_scaling(lambda M: _mgda(M), J)


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL), ids=_inputs.ids(_inputs.TYPICAL))
def test_non_conflicting_at_convergence(J: np.ndarray) -> None:
    # the exact min-norm point d satisfies g_i . d >= ||d||^2 >= 0; Frank-Wolfe gets there with a tight stop
    d = _mgda(J, **TIGHT)
    assert_non_conflicting(d, J, tol=1e-6)


def test_hand_values_two_orthogonal_tasks() -> None:
    # g1 = (1, 0), g2 = (0, 2): min over a of a^2 + 4 (1-a)^2 -> a = 4/5, d = (0.8, 0.4).
    # With two tasks the first exact line search reaches the optimum, the second step has gamma = 0.
    np.testing.assert_allclose(_mgda(np.array([[1.0, 0.0], [0.0, 2.0]])), [0.8, 0.4], rtol=1e-12)


def test_hand_values_loss_plus_normalization() -> None:
    # J = diag(2, 4), L = [1, 0.5]: n = L ||g|| = [2, 2]; rescaled rows (1, 0), (0, 2) -> alpha = [0.8, 0.2]
    # LibMTL applies alpha to the rescaled rows: d = 0.8 (1, 0) + 0.2 (0, 2) = (0.8, 0.4)
    d = _mgda(np.diag([2.0, 4.0]), "loss+", losses=[1.0, 0.5])
    np.testing.assert_allclose(d, [0.8, 0.4], rtol=1e-12)


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL[2:6]), ids=_inputs.ids(_inputs.TYPICAL[2:6]))
def test_l2_normalization_ignores_row_scales(J: np.ndarray) -> None:
    # d = sum_i alpha_i g_i / ||g_i||: rescaling any row by c > 0 changes nothing
    scales = np.linspace(0.01, 100.0, J.shape[0])[:, None]
    np.testing.assert_allclose(_mgda(J * scales, "l2"), _mgda(J, "l2"), atol=1e-10)


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.TYPICAL[2:6]), ids=_inputs.ids(_inputs.TYPICAL[2:6]))
def test_loss_normalization_is_invariant_to_joint_scaling(J: np.ndarray) -> None:
    # n_i = L_i: scaling row i and loss i by the same c leaves g_i / L_i, hence d, unchanged
    losses = _inputs.losses_for(J)
    scales = np.linspace(0.1, 10.0, J.shape[0])
    np.testing.assert_allclose(
        _mgda(J * scales[:, None], "loss", losses * scales), _mgda(J, "loss", losses), atol=1e-10
    )


def test_zero_row_gives_zero_direction() -> None:
    # 0 is in the convex hull: the min-norm point is 0 (and the l2 normaliser drops the zero row)
    J = dict(_inputs.ZEROS)["zero_row_3x5"]
    for normalization in NORMALIZATIONS:
        np.testing.assert_allclose(_mgda(J, normalization, np.ones(3)), np.zeros(5), atol=1e-12)


def test_max_iters_bounds_the_solver() -> None:
    # with 3 conflicting tasks one Frank-Wolfe step is not the optimum: more steps move the result
    J = _inputs.TYPICAL[4][1]
    assert not np.allclose(_mgda(J, max_iters=1), _mgda(J, max_iters=50))


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_graph_mode(normalization: str) -> None:
    J = _inputs.TYPICAL[4][1]
    assert_graph_matches_eager({"mgda": {"normalization": normalization}}, J, _inputs.losses_for(J))
