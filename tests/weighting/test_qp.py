"""The small exact solvers in ``mtlcli.weighting.qp``: optimality (KKT), the two methods agree, graph mode."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import qp


def _pd(seed: int, m: int, rank: int | None = None, reg: float = 1e-4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, rank or m + 2))
    G = A @ A.T
    return G / np.trace(G) + reg * np.eye(m)


def _box_kkt(Q: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[float, float, float]:
    """(primal violation, dual violation, complementarity) of min vᵀQv s.t. v >= u."""
    lam = 2 * Q @ v  # multipliers of v >= u
    primal = max(0.0, float(np.max(u - v)))
    dual = max(0.0, float(np.max(-lam)))
    compl = float(np.max(np.abs(lam * (v - u))))
    return primal, dual, compl


def _cagrad_kkt(G: np.ndarray, s: float, w: np.ndarray) -> tuple[float, float]:
    """(stationarity on the support, most negative reduced gradient off it) of the CAGrad inner problem."""
    m = len(G)
    Gw = G @ w
    grad = G.sum(axis=1) / m + s * Gw / np.sqrt(w @ Gw)
    support = w > 1e-12
    mu = grad[support].mean()
    off = grad[~support] - mu
    return float(np.max(np.abs(grad[support] - mu))), float(off.min()) if off.size else 0.0


def _box(Q: np.ndarray, U: np.ndarray, method: str) -> np.ndarray:
    Qt, Ut = tf.constant(Q), tf.constant(U)
    m = len(Q)
    if method == "enumerate":
        return qp._box_qp_enumerate(Qt, Ut, m).numpy()
    return qp._box_qp_active_set(Qt, Ut, m).numpy()


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("rank", [None, 1, 2])
def test_box_qp_kkt_and_methods_agree(m, rank):
    Q = _pd(m * 10 + (rank or 0), m, rank)
    U = np.diag(np.full(m, 1.0 / m))  # UPGrad's right-hand sides
    U = np.vstack([U, np.full((1, m), 1.0 / m), np.random.default_rng(m).standard_normal((2, m))])
    V_enum, V_as = _box(Q, U, "enumerate"), _box(Q, U, "active_set")
    np.testing.assert_allclose(V_enum, V_as, rtol=0, atol=1e-12)
    for u, v in zip(U, V_enum, strict=True):
        primal, dual, compl = _box_kkt(Q, u, v)
        assert primal == 0.0 and dual < 1e-13 and compl < 1e-13


def test_box_qp_hand_checkable():
    # Q = [[1, -1], [-1, 2]], u = (1, 0): free v2 minimises v2^2*2 - 2 v2 -> v2 = 1/2 (active v1 = 1);
    # multiplier of v1: 2 (Q v)_1 = 2 (1 - 1/2) = 1 >= 0.
    Q = np.array([[1.0, -1.0], [-1.0, 2.0]])
    v = qp.box_qp(tf.constant(Q), tf.constant([[1.0, 0.0]], tf.float64)).numpy()[0]
    np.testing.assert_allclose(v, [1.0, 0.5], atol=1e-15)


def test_box_qp_large_m_uses_active_set_and_is_optimal():
    m = qp.ENUM_MAX_TASKS + 4
    Q = _pd(3, m, rank=5)
    U = np.diag(np.full(m, 1.0 / m))
    V = qp.box_qp(tf.constant(Q), tf.constant(U)).numpy()
    for u, v in zip(U, V, strict=True):
        primal, dual, compl = _box_kkt(Q, u, v)
        assert primal == 0.0 and dual < 1e-13 and compl < 1e-13


def test_box_qp_singular_faces_do_not_fail():
    # reg 0 with duplicate rows: the floor jitter keeps every system solvable
    A = np.array([[1.0, 2.0], [1.0, 2.0], [-1.0, 0.5]])
    G = A @ A.T
    Q = G / np.trace(G) + qp.jitter(tf.float64) * np.eye(3)
    for method in ("enumerate", "active_set"):
        V = _box(Q, np.diag(np.full(3, 1 / 3)), method)
        assert np.all(np.isfinite(V))
        d = V.sum(axis=0) @ A
        assert np.all(A @ d >= -1e-9)  # the combined direction does not conflict


@pytest.mark.parametrize("m", [1, 2, 3, 4, 6, 9])
@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("c", [0.0, 0.4, 0.9])
def test_cagrad_kkt_and_methods_agree(m, rank, c):
    G = _pd(100 + m, m, rank, reg=0.0)
    s = c * np.sqrt(G.sum()) / m
    Gt, st = tf.constant(G), tf.constant(s, tf.float64)
    w_enum = qp._cagrad_enumerate(Gt, st, m).numpy()
    w_as = qp._cagrad_active_set(Gt, st, m).numpy()
    assert abs(w_enum.sum() - 1) < 1e-14 and w_enum.min() >= 0
    f = lambda w: G.sum(0) @ w / m + s * np.sqrt(w @ G @ w)  # noqa: E731
    # both optimal: same objective; the directions g_w agree (w itself is not unique when rank < m)
    assert abs(f(w_enum) - f(w_as)) < 1e-13
    np.testing.assert_allclose(G @ w_enum, G @ w_as, atol=1e-9)
    if s > 0:
        stat, off = _cagrad_kkt(G, s, w_enum)
        assert stat < 1e-12 and off > -1e-12


def test_cagrad_large_m_is_optimal():
    m = qp.ENUM_MAX_TASKS + 3
    G = _pd(7, m, reg=0.0)
    s = 0.4 * np.sqrt(G.sum()) / m
    w = qp.cagrad_simplex(tf.constant(G), tf.constant(s, tf.float64)).numpy()
    stat, off = _cagrad_kkt(G, s, w)
    assert stat < 1e-12 and off > -1e-12


def test_project_simplex():
    y = tf.constant([[0.2, 0.3, 0.5], [2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-3.0, -3.0, -1.0]], tf.float64)
    np.testing.assert_allclose(
        qp._project_simplex(y).numpy(),
        [[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0]],
        atol=1e-15,
    )


def test_normalize_gramian_convention():
    G = tf.constant([[4.0, 1.0], [1.0, 1.0]], tf.float64)
    np.testing.assert_allclose(qp.normalize_gramian(G, 1e-4).numpy(), [[0.8, 0.2], [0.2, 0.2]])
    np.testing.assert_array_equal(qp.normalize_gramian(1e-5 * G, 1e-4).numpy(), np.zeros((2, 2)))
    np.testing.assert_array_equal(qp.normalize_gramian(0 * G, 0.0).numpy(), np.zeros((2, 2)))


@pytest.mark.parametrize("m", [4, qp.ENUM_MAX_TASKS + 2])
def test_graph_float32_matches_eager(m):
    Q = tf.constant(_pd(5, m), tf.float32)
    U = tf.constant(np.diag(np.full(m, 1.0 / m)), tf.float32)
    G = tf.constant(_pd(6, m, reg=0.0), tf.float32)
    s = tf.constant(0.1, tf.float32)

    def both(Q, U, G, s):
        return qp.box_qp(Q, U), qp.cagrad_simplex(G, s)

    eager = both(Q, U, G, s)
    graph = tf.function(both)(Q, U, G, s)
    for e, g in zip(eager, graph, strict=True):
        assert g.dtype == tf.float32
        np.testing.assert_allclose(g.numpy(), e.numpy(), atol=1e-5)
