"""SDMGrad (TorchJD 0.18 ``SDMGradWeighting``) on ``A = J1 J2ᵀ`` of two independent batches.

Golden values: TorchJD's stateful weighting over 3-4 steps (``_torchjd_values_h4.py``), float64, to
1e-10 relative (a fixed number of closed-form iterations; with the default ``lr = 10`` the measured
agreement is 2.7e-12: each iteration multiplies round-off by the step size). Properties: the weights
are on the simplex and at least ``λ w̃ / (1 + λ)``; ``λ = 0`` with one iteration and no momentum is one
projected step, by hand; the direction is ``weights · (J1 + J2) / 2``; scaling ``J`` leaves the weights
unchanged up to the normalisation's 1e-8 offset; permuting the tasks permutes them.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import REGISTRY, aggregate, check
from mtlcli.weighting.sdmgrad import SDMGrad

from ._torchjd_values_h4 import CASES, WEIGHTS
from .test_modo import bisection_projection, drive

SDMGRAD_CASES = sorted(k for k in WEIGHTS if k[1].startswith("sdmgrad"))


@pytest.mark.parametrize("key", SDMGRAD_CASES, ids=["-".join(k) for k in SDMGRAD_CASES])
def test_weights_match_torchjd_over_several_steps(key) -> None:
    params, expected = WEIGHTS[key]
    results = drive(SDMGrad(**params), CASES[key[0]])
    assert len(results) == len(expected) >= 3
    for step, (result, want) in enumerate(zip(results, expected, strict=True)):
        got = result.weights.numpy()
        err = np.max(np.abs(got - want)) / np.max(np.abs(want))
        assert err <= 1e-10, f"step {step}: {got} vs TorchJD {want}"


def test_float32_training_without_a_positive_diagonal_matches_float64() -> None:
    # A = J1 J2ᵀ with a negative diagonal: the normalisation divides by 1e-8, lr·a reaches 1e7; the
    # inner solve runs in float64 (in float32 it produced NaN weights in training)
    params, expected = WEIGHTS[("neg", "sdmgrad")]
    results = drive(SDMGrad(**params), CASES["neg"], dtype=tf.float32)
    for result, want in zip(results, expected, strict=True):
        assert result.weights.dtype == tf.float32 and result.direction.dtype == tf.float32
        np.testing.assert_allclose(result.weights.numpy(), want, atol=1e-6)
    J1 = np.array([[0.2, -0.1, 0.05], [0.01, 0.08, -0.03]])
    tiny = drive(SDMGrad(), [(J1, -J1 * 1e-3)], dtype=tf.float32)[0].weights.numpy()
    assert np.all(np.isfinite(tiny)) and abs(tiny.sum() - 1) < 1e-6


def test_one_plain_iteration_by_hand_and_the_direction() -> None:
    J1, J2 = (np.asarray(J) for J in CASES["t3"][1])
    spec = {"sdmgrad": {"lr": 0.5, "momentum": 0.0, "n_iter": 1, "lambda_": 0.0}}
    d, state = aggregate(spec, np.stack([J1, J2]), return_state=True)
    A = J1 @ J2.T
    a = A / (np.mean(np.sqrt(np.maximum(np.diag(A), 0))) ** 2 + 1e-8)
    w0 = np.full(3, 1 / 3)
    w = bisection_projection(w0 - 0.5 * a @ w0)
    np.testing.assert_allclose(state["w"], w, atol=1e-12)
    np.testing.assert_allclose(d, w @ (J1 + J2) / 2, atol=1e-12)


def test_weights_are_on_the_simplex_above_the_preference_share_and_scale_invariant() -> None:
    pairs = CASES["t3"]
    strategy = SDMGrad(lambda_=0.5)
    plain = [r.weights.numpy() for r in drive(strategy, pairs)]
    scaled = [
        r.weights.numpy()
        for r in drive(strategy, [(1e3 * np.asarray(a), 1e3 * np.asarray(b)) for a, b in pairs])
    ]
    for w, ws in zip(plain, scaled, strict=True):
        assert abs(w.sum() - 1) < 1e-12 and np.all(w >= 0.5 / 3 / 1.5 - 1e-15)
        np.testing.assert_allclose(ws, w, atol=1e-6)  # up to the 1e-8 offset of the normalisation


def test_permuting_the_tasks_permutes_the_weights() -> None:
    perm = np.array([1, 2, 0])
    pairs = CASES["t3"]
    plain = [r.weights.numpy() for r in drive(SDMGrad(lr=0.3), pairs)]
    swapped = [(np.asarray(a)[perm], np.asarray(b)[perm]) for a, b in pairs]
    for w, wp in zip(plain, [r.weights.numpy() for r in drive(SDMGrad(lr=0.3), swapped)], strict=True):
        np.testing.assert_allclose(wp, w[perm], atol=1e-12)


def test_a_pref_vector_of_the_wrong_length_is_refused() -> None:
    J = np.stack([np.asarray(J) for J in CASES["t2"][0]])
    with pytest.raises(ValueError, match="has 3 entries but there are 2 tasks"):
        aggregate({"sdmgrad": {"pref_vector": [0.2, 0.3, 0.5]}}, J)
    with pytest.raises(ValueError, match=r"\(2, tasks, params\)"):
        aggregate("sdmgrad", J[0])
    assert SDMGrad().aggregate(tf.constant(J), None, {}, {"w": tf.constant([0.5, 0.5], tf.float64)}, None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"sdmgrad": {"lr": 0}}, "`lr` must be a finite number > 0"),
        ({"sdmgrad": {"momentum": 1.0}}, "`momentum` must be in [0, 1)"),
        ({"sdmgrad": {"n_iter": 0}}, "`n_iter` must be an integer >= 1"),
        ({"sdmgrad": {"lambda_": -1}}, "`lambda_` must be a finite number >= 0"),
        ({"sdmgrad": {"pref_vector": []}}, "`pref_vector` must be a non-empty list"),
        ({"sdmgrad": {"on": "representation"}}, "unknown parameter 'on'"),
    ],
)
def test_bad_parameters_are_refused(spec, message) -> None:
    problems = check(spec)
    assert problems and message in problems[0].message, problems


def test_registered_as_a_two_batch_weighting() -> None:
    cls = REGISTRY["sdmgrad"]
    assert cls is SDMGrad and cls.batches == 2 and cls.needs == "gradients" and cls.weighting
    assert check({"sdmgrad": {"every": 2}}) == []
