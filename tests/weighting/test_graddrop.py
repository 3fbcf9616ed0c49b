"""GradDrop (TorchJD convention: sum of sign-masked rows, one uniform draw per column)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import aggregate, check, eager, get
from mtlcli.weighting.graddrop import graddrop_direction

from . import _inputs
from ._asserts import assert_expected_structure, assert_graph_matches_eager


def _drop(J, u, leak=0.0):
    return graddrop_direction(tf.constant(J), tf.constant(u, tf.float64), leak).numpy()


def test_declarations() -> None:
    strategy = get("graddrop")
    assert strategy.needs == "gradients" and not strategy.weighting and strategy.leak == 0.0
    assert check({"graddrop": {"leak": 1.5}})[0].message == "`leak` must be in [0, 1], received 1.5"


@pytest.mark.parametrize("J", _inputs.matrices(_inputs.ALL), ids=_inputs.ids(_inputs.ALL))
def test_structure(J: np.ndarray) -> None:
    assert_expected_structure(aggregate("graddrop", J, seed=4, step=1), J)


def test_hand_values() -> None:
    # column 0: [1, 1] all positive, purity 1 > U: both kept -> 2.
    # column 1: [-1, 1], purity 0.5: U = 0.7 > 0.5 keeps the negative entry (-1), U = 0.2 keeps the positive (+1)
    J = np.array([[1.0, -1.0], [1.0, 1.0]])
    np.testing.assert_allclose(_drop(J, [0.3, 0.7]), [2.0, -1.0])
    np.testing.assert_allclose(_drop(J, [0.3, 0.2]), [2.0, 1.0])
    # leak 0.5: the dropped +1 still passes at half strength: -1 + 0.5 = -0.5
    np.testing.assert_allclose(_drop(J, [0.3, 0.7], leak=0.5), [2.0, -0.5])
    # leak 1: nothing is dropped
    np.testing.assert_allclose(_drop(J, [0.3, 0.7], leak=1.0), J.sum(axis=0))


def test_sign_consistent_columns_are_summed() -> None:
    J = np.abs(_inputs.TYPICAL[3][1]) * np.array([1, -1] * 5)  # every column has one sign
    np.testing.assert_allclose(aggregate("graddrop", J, seed=1), J.sum(axis=0), rtol=1e-12)


def test_each_coordinate_keeps_one_sign() -> None:
    J = _inputs.TYPICAL[4][1]
    d = aggregate("graddrop", J, seed=2, step=3)
    positive = np.where(J > 0, J, 0).sum(axis=0)
    negative = np.where(J < 0, J, 0).sum(axis=0)
    assert np.all(np.isclose(d, positive) | np.isclose(d, negative))


def test_keep_probability_is_the_purity() -> None:
    # column [3, -1]: purity (1 + 2/4)/2 = 0.75 -> positive part kept with probability 0.75
    J = np.array([[3.0], [-1.0]])
    kept_positive = [aggregate("graddrop", J, seed=0, step=k)[0] == 3.0 for k in range(400)]
    assert 0.68 < np.mean(kept_positive) < 0.82


def test_seeded() -> None:
    J = _inputs.TYPICAL[4][1]
    np.testing.assert_array_equal(
        aggregate("graddrop", J, seed=3, step=5), aggregate("graddrop", J, seed=3, step=5)
    )
    outs = {tuple(aggregate("graddrop", J, seed=3, step=k)) for k in range(10)}
    assert len(outs) > 1


def test_zero_columns_give_zero() -> None:
    J = np.array([[1.0, 0.0, -2.0], [3.0, 0.0, 1.0]])
    d = aggregate("graddrop", J, seed=0)
    assert d[1] == 0.0 and np.all(np.isfinite(d))


def test_weights_are_projection_coefficients() -> None:
    J = _inputs.TYPICAL[3][1]
    result = get("graddrop").aggregate(tf.constant(J), None, {}, {}, eager.make_context(3, seed=1))
    d = result.direction.numpy()
    np.testing.assert_allclose(result.weights.numpy(), J @ d / (J * J).sum(axis=1), rtol=1e-12)


def test_graph_mode() -> None:
    assert_graph_matches_eager("graddrop", _inputs.TYPICAL[4][1], seed=2, step=1)
