"""Golden values: TorchJD's own table on J = [[-4, 1, 1], [6, 1, 1]] and real TorchJD 0.18 outputs.

Helper B's strategies (upgrad, dualproj, cagrad, nash_mtl) keep their golden rows in their own test files.
"""

from __future__ import annotations

import numpy as np
import pytest

from mtlcli.weighting import aggregate
from mtlcli.weighting.graddrop import graddrop_direction
from mtlcli.weighting.pcgrad import gradvac_weights, pcgrad_weights

from . import _inputs
from ._torchjd_values import REFERENCE

J = _inputs.J_GOLDEN

# algorithms.md §7 (TorchJD's tests/unit/aggregation/test_values.py), 4 decimals.
GOLDEN_4DP = [
    ("mean", [1.0, 1.0, 1.0]),
    ("mgda", [0.0, 1.0, 1.0]),
    ("pcgrad", [0.5848, 3.8012, 3.8012]),
    ("imtl_g", [0.0767, 1.0, 1.0]),
    ("aligned_mtl", [0.2133, 0.9673, 0.9673]),
    ("config", [0.1588, 2.0706, 2.0706]),
]

# The same row to full precision: TorchJD 0.18.0 output in float64 (printed with repr).
GOLDEN_FULL = [
    ("mean", [1.0, 1.0, 1.0]),
    ("sum", [2.0, 2.0, 2.0]),
    ("mgda", [1.1102230246251565e-16, 1.0000000000000002, 1.0000000000000002]),
    ("pcgrad", [0.5847953216374266, 3.801169590643275, 3.801169590643275]),
    ("imtl_g", [0.0766968306220216, 1.0, 1.0]),
    ("aligned_mtl", [0.2132787459686688, 0.9673329837557125, 0.9673329837557125]),
    ("config", [0.15880897580793973, 2.070606758062621, 2.0706067580626217]),
]


@pytest.mark.parametrize(("name", "expected"), GOLDEN_4DP, ids=[n for n, _ in GOLDEN_4DP])
def test_golden_table(name: str, expected: list[float]) -> None:
    np.testing.assert_allclose(aggregate(name, J), expected, atol=5e-5)


@pytest.mark.parametrize(("name", "expected"), GOLDEN_FULL, ids=[n for n, _ in GOLDEN_FULL])
def test_golden_full_precision(name: str, expected: list[float]) -> None:
    np.testing.assert_allclose(aggregate(name, J), expected, rtol=1e-12, atol=1e-12)


def test_golden_matrix_has_no_gradient_pcgrad_randomness() -> None:
    # two tasks: PCGrad / GradVac are deterministic whatever the seed
    outs = {tuple(np.round(aggregate("pcgrad", J, seed=s, step=k), 12)) for s in range(3) for k in range(3)}
    assert len(outs) == 1


# ---- cross-check against the real TorchJD 0.18 on seeded matrices -----------------------------------

CASES = dict(_inputs.ALL)
NAMES = [name for name in REFERENCE if not name.startswith("_")]
# rtol relative to max|J|; Aligned-MTL on `mixed_norms_3x5` (row norms 1e-3..1e3, cond(G) ~ 1e12) gets
# eigenvectors from a different LAPACK routine: agreement is limited by conditioning, not by the method.
LOOSE = {("mixed_norms_3x5", "aligned_mtl_median"): 1e-6, ("mixed_norms_3x5", "aligned_mtl_rmse"): 1e-4}

SPECS = {
    "mean": "mean",
    "sum": "sum",
    "mgda": "mgda",
    "mgda_tight": {"mgda": {"epsilon": 1e-7, "max_iters": 1000}},
    "imtl_g": "imtl_g",
    "config": "config",
    "aligned_mtl_min": "aligned_mtl",
    "aligned_mtl_median": {"aligned_mtl": {"scale_mode": "median"}},
    "aligned_mtl_rmse": {"aligned_mtl": {"scale_mode": "rmse"}},
}


def _rel_err(actual: np.ndarray, expected: list[float], J: np.ndarray) -> float:
    return float(np.max(np.abs(actual - np.asarray(expected)), initial=0.0) / max(np.max(np.abs(J)), 1e-300))


@pytest.mark.parametrize("matrix", NAMES)
@pytest.mark.parametrize("method", list(SPECS))
def test_matches_torchjd(matrix: str, method: str) -> None:
    J = CASES[matrix]
    tol = LOOSE.get((matrix, method), 1e-10)
    assert _rel_err(aggregate(SPECS[method], J), REFERENCE[matrix][method], J) <= tol


def _orders(rows: list[list[int]], m: int):
    import tensorflow as tf

    return tf.constant(rows, tf.int32) if m > 1 else tf.zeros((1, 0), tf.int32)


@pytest.mark.parametrize("matrix", NAMES)
def test_pcgrad_matches_torchjd_for_the_same_orders(matrix: str) -> None:
    import tensorflow as tf

    J = CASES[matrix]
    ref = REFERENCE[matrix]
    w = pcgrad_weights(tf.constant(J @ J.T), _orders(ref["pcgrad_orders"], J.shape[0]))
    assert _rel_err(w.numpy() @ J, ref["pcgrad"], J) <= 1e-10


@pytest.mark.parametrize("matrix", NAMES)
def test_gradvac_two_calls_match_torchjd_for_the_same_orders(matrix: str) -> None:
    import tensorflow as tf

    J = CASES[matrix]
    ref = REFERENCE[matrix]
    m = J.shape[0]
    phi = tf.zeros((m, m), tf.float64)
    G = tf.constant(J @ J.T)
    for call in (1, 2):
        w, phi = gradvac_weights(G, phi, _orders(ref["gradvac_orders"][call - 1], m), 0.5, 1e-8)
        assert _rel_err(w.numpy() @ J, ref[f"gradvac_{call}"], J) <= 1e-10
    if ref["gradvac_phi"] is not None:
        np.testing.assert_allclose(phi.numpy(), ref["gradvac_phi"], atol=1e-10)


@pytest.mark.parametrize("matrix", NAMES)
@pytest.mark.parametrize("leak", [0.0, 0.3])
def test_graddrop_matches_torchjd_for_the_same_draws(matrix: str, leak: float) -> None:
    import tensorflow as tf

    J = CASES[matrix]
    ref = REFERENCE[matrix]
    d = graddrop_direction(tf.constant(J), tf.constant(ref["graddrop_u"]), leak).numpy()
    key = "graddrop" if leak == 0.0 else "graddrop_leak0.3"
    assert _rel_err(d, ref[key], J) <= 1e-12


def test_famo_sequence_matches_torchjd() -> None:
    # four steps of FAMO (T = 3): weights = d loss / d L_i, then the logits after TorchJD's internal Adam
    from mtlcli.weighting import eager, get

    strategy = get("famo")
    ref = REFERENCE["_famo"]
    state = eager.initial_state(strategy, 3)
    ctx = eager.make_context(3)
    import tensorflow as tf

    for before, after, step in zip(ref["before"], ref["after"], ref["steps"], strict=True):
        result = strategy.combine(tf.constant(before, tf.float64), {}, state, ctx)
        np.testing.assert_allclose(result.loss.numpy(), step["loss"], rtol=1e-12)
        np.testing.assert_allclose(result.weights.numpy(), step["weights"], rtol=1e-12)
        state = strategy.after_step(
            tf.constant(before, tf.float64), tf.constant(after, tf.float64), {}, state, ctx
        )
        np.testing.assert_allclose(state["logits"].numpy(), step["logits_after"], rtol=1e-9, atol=1e-14)


def test_dwa_sequence_matches_torchjd() -> None:
    # 3.5 epochs of DWA (T = 2): TorchJD's `step()` at an epoch end == our `new_epoch` on the next step
    state = None
    previous_epoch = 0
    for k, entry in enumerate(REFERENCE["_dwa"]):
        new_epoch = entry["epoch"] != previous_epoch
        previous_epoch = entry["epoch"]
        weights = aggregate(
            "dwa",
            np.eye(2),
            losses=entry["losses"],
            state=state,
            step=k,
            epoch=entry["epoch"],
            new_epoch=new_epoch,
        )
        _, state = aggregate(
            "dwa",
            np.eye(2),
            losses=entry["losses"],
            state=state,
            step=k,
            new_epoch=new_epoch,
            return_state=True,
        )
        np.testing.assert_allclose(weights, entry["weights"], rtol=1e-12)  # d = w @ I = w


def test_gls_matches_torchjd_geometric_mean() -> None:
    ref = REFERENCE["_gls"]
    np.testing.assert_allclose(aggregate("gls", np.eye(3), losses=ref["losses"]), ref["weights"], rtol=1e-12)
