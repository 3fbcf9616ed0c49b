"""Small exact solvers for the ``T x T`` problems of UPGrad, DualProj and CAGrad, in TensorFlow ops.

Everything here runs inside ``tf.function`` on tensors of any float dtype, with loop counts fixed at trace
time (the number of tasks ``m`` must be static).  TensorFlow is imported inside the functions.

Two problems:

``box_qp(Q, U)``
    For each row ``u`` of ``U``: ``argmin_v vᵀQv  s.t.  v >= u`` with ``Q`` symmetric positive definite
    (UPGrad / DualProj's dual-cone projection weights; TorchJD solves it with quadprog).

``cagrad_simplex(G, s)``
    ``argmin_{w in simplex} bᵀw + s·sqrt(wᵀGw)`` with ``b = G·1/m`` (CAGrad's inner problem on the
    trace-normalised Gramian; TorchJD solves it with cvxpy + CLARABEL).

Method for ``m <= ENUM_MAX_TASKS`` (every benchmarked configuration): **active-set enumeration**.  The
optimum of a strictly convex problem with bound constraints is the unconstrained optimum on one face of the
feasible set, so the solver builds the KKT system of every face (``2^m`` subsets of active bounds), solves
them all in one batched ``tf.linalg.solve``, projects each candidate back onto the feasible set (which can
only raise its objective) and returns the candidate with the smallest objective.  No tolerance and no
iteration count are involved: the answer is exact to round-off and identical in eager and graph mode.

For ``m > ENUM_MAX_TASKS`` (``2^m`` systems get too large): both problems run a primal active-set
method (Nocedal & Wright, Algorithm 16.3) in a ``tf.while_loop`` bounded by ``4m + 20`` iterations: it
stays feasible, changes one bound per iteration, solves the current face's KKT system exactly (a linear
system for the QP, a closed form for CAGrad) and stops on the KKT conditions (to ``1e3·eps`` relative),
so it is exact to round-off as well on non-degenerate problems; if the budget runs out it returns its
(feasible, improved) iterate.  Known limit of the CAGrad active set: when ``c >= 1`` and the convex hull
of the task gradients contains 0, the optimum is the non-smooth point ``g_w = 0`` and the method can stop
near it (``||g_w||`` ~ 1e-3 in normalised units) instead of on it, so CAGrad's zero fallback may not
trigger for more than ``ENUM_MAX_TASKS`` tasks in that case (the enumeration handles it exactly).
"""

from __future__ import annotations

import itertools
from typing import Any

#: Largest number of tasks solved by exhaustive active-set enumeration (2**10 = 1024 small systems).
ENUM_MAX_TASKS = 10

#: Jitter (in units of the dtype's machine epsilon, relative to a trace-normalised matrix) added to the
#: diagonal of every linear system so that a singular face (duplicate or dependent task gradients) never
#: makes ``tf.linalg.solve`` fail; its effect on the solution is far below the solvers' tolerance.
JITTER_EPS = 64.0


_COMPILED: dict[Any, Any] = {}


def compiled(fn: Any) -> Any:
    """``fn`` wrapped once in ``tf.function``, so its ``tf.while_loop`` also runs as a graph when called
    eagerly (``aggregate``, tests); inside the traced train step the call is simply inlined."""
    import tensorflow as tf

    if fn not in _COMPILED:
        _COMPILED[fn] = tf.function(fn, autograph=False)
    return _COMPILED[fn]


def _static_m(Q: Any) -> int:
    m = Q.shape[-1]
    if m is None:
        raise ValueError("the number of tasks must be known when the step is traced (static shape)")
    return int(m)


def _subset_masks(m: int, dtype: Any, *, include_empty: bool = True) -> Any:
    """All 0/1 vectors of length ``m`` (``2^m`` rows, the all-ones row first), as a constant tensor."""
    import numpy as np
    import tensorflow as tf

    rows = [bits for bits in itertools.product((1.0, 0.0), repeat=m) if include_empty or any(bits)]
    return tf.constant(np.asarray(rows, dtype=np.float64), dtype=dtype)


def jitter(dtype: Any) -> float:
    import numpy as np

    return JITTER_EPS * float(np.finfo(np.dtype(dtype.as_numpy_dtype)).eps)


# ------------------------------------------------------------------------------------------------------
# min vᵀQv  s.t.  v >= u
# ------------------------------------------------------------------------------------------------------
def box_qp(Q: Any, U: Any) -> Any:
    """``V[j] = argmin_v vᵀQv s.t. v >= U[j]`` for a symmetric positive definite ``Q`` (m, m); ``U`` (k, m)."""
    m = _static_m(Q)
    if m <= ENUM_MAX_TASKS:
        return _box_qp_enumerate(Q, U, m)
    return compiled(_box_qp_active_set)(Q, U, m)


def _box_qp_enumerate(Q: Any, U: Any, m: int) -> Any:
    import tensorflow as tf

    dtype = Q.dtype
    active = _subset_masks(m, dtype)  # (S, m): 1 = bound active (v_i = u_i), 0 = free
    free = 1.0 - active
    eye = tf.eye(m, dtype=dtype)
    # Face system, symmetric: identity rows on the active set, Q_FF on the free set:
    #   K_S = diag(a) + diag(f) Q diag(f),   rhs = a*u - f*(Q (a*u))   =>  v_A = u_A, Q_FF v_F = -Q_FA u_A.
    K = active[:, :, None] * eye + free[:, :, None] * Q[None] * free[:, None, :]  # (S, m, m)
    Ut = tf.transpose(U)  # (m, k)
    aU = active[:, :, None] * Ut[None]  # (S, m, k)
    rhs = aU - free[:, :, None] * tf.einsum("ij,sjk->sik", Q, aU)
    V = tf.linalg.solve(K, rhs)  # (S, m, k)
    V = tf.maximum(V, Ut[None])  # project onto the feasible set: never below the optimum's objective
    obj = tf.reduce_sum(V * tf.einsum("ij,sjk->sik", Q, V), axis=1)  # (S, k)
    obj = tf.where(tf.math.is_finite(obj), obj, tf.constant(float("inf"), dtype))
    best = tf.argmin(obj, axis=0, output_type=tf.int32)  # (k,)
    k_idx = tf.range(tf.shape(best)[0], dtype=tf.int32)
    # V[best[j], :, j] for every j
    Vt = tf.transpose(V, [2, 0, 1])  # (k, S, m)
    return tf.gather_nd(Vt, tf.stack([k_idx, best], axis=1))  # (k, m)


def _box_qp_active_set(Q: Any, U: Any, m: int) -> Any:
    """Primal active-set method, all right-hand sides in lockstep; starts at ``v = u`` (all bounds active)."""
    import numpy as np
    import tensorflow as tf

    dtype = Q.dtype
    eps = float(np.finfo(np.dtype(dtype.as_numpy_dtype)).eps)
    tol = 1e3 * eps
    eye = tf.eye(m, dtype=dtype)
    qscale = tf.reduce_max(tf.abs(Q)) + tf.constant(1e-300 if dtype == tf.float64 else 1e-30, dtype)
    inf = tf.constant(float("inf"), dtype)
    max_iter = 4 * m + 20

    def body(i, v, W, done):
        f = 1.0 - W
        K = W[:, :, None] * eye + f[:, :, None] * Q[None] * f[:, None, :]
        g = tf.linalg.matvec(Q, v)  # half the gradient of vᵀQv
        p = tf.linalg.solve(K, (-f * g)[:, :, None])[:, :, 0]
        vscale = tf.reduce_max(tf.abs(v), axis=1) + tf.reduce_max(tf.abs(U), axis=1) + 1e-30
        at_face_min = tf.reduce_max(tf.abs(p), axis=1) <= tol * vscale
        lam = tf.where(W > 0, g, inf)
        j_drop = tf.argmin(lam, axis=1, output_type=tf.int32)
        lam_min = tf.reduce_min(lam, axis=1)
        optimal = at_face_min & (lam_min >= -tol * qscale * vscale)
        drop = at_face_min & ~optimal & ~done
        # step towards the face minimum, blocked by the first free bound reached
        ratio = tf.where((f > 0) & (p < 0), (U - v) / tf.where(p < 0, p, -1.0), inf)
        ratio = tf.maximum(ratio, 0.0)
        j_block = tf.argmin(ratio, axis=1, output_type=tf.int32)
        r_min = tf.reduce_min(ratio, axis=1)
        step = ~at_face_min & ~done
        alpha = tf.minimum(r_min, 1.0)
        v_new = tf.where(step[:, None], v + alpha[:, None] * p, v)
        block = step & (r_min < 1.0)
        block_hot = tf.one_hot(j_block, m, dtype=dtype) * tf.cast(block, dtype)[:, None]
        v_new = tf.where(block_hot > 0, U, v_new)  # land exactly on the bound
        drop_hot = tf.one_hot(j_drop, m, dtype=dtype) * tf.cast(drop, dtype)[:, None]
        W_new = tf.clip_by_value(W + block_hot - drop_hot, 0.0, 1.0)
        return i + 1, v_new, W_new, done | optimal

    def cond(i, v, W, done):
        return (i < max_iter) & ~tf.reduce_all(done)

    W0 = tf.ones_like(U)
    done0 = tf.zeros(tf.shape(U)[:1], tf.bool)
    _, v, _, _ = tf.while_loop(cond, body, (tf.constant(0), U, W0, done0))
    return v


# ------------------------------------------------------------------------------------------------------
# min_{w in simplex} bᵀw + s sqrt(wᵀGw),  b = G 1/m
# ------------------------------------------------------------------------------------------------------
def cagrad_objective(G: Any, w: Any, s: Any) -> Any:
    """``bᵀw + s·sqrt(wᵀGw)`` with ``b = G·1/m`` for a batch of ``w`` (..., m)."""
    import tensorflow as tf

    m = _static_m(G)
    Gw = tf.linalg.matvec(G, w)
    lin = tf.reduce_sum(Gw, axis=-1) / m  # bᵀw = 1ᵀGw / m
    quad = tf.maximum(tf.reduce_sum(w * Gw, axis=-1), 0.0)
    return lin + s * tf.sqrt(quad)


def cagrad_simplex(G: Any, s: Any) -> Any:
    """Minimiser ``w`` (m,) of ``bᵀw + s·sqrt(wᵀGw)`` over the probability simplex (``G`` PSD, ``s >= 0``)."""
    m = _static_m(G)
    if m <= ENUM_MAX_TASKS:
        return _cagrad_enumerate(G, s, m)
    return compiled(_cagrad_active_set)(G, s, m)


def _project_simplex(y: Any) -> Any:
    """Euclidean projection of each row of ``y`` (..., m) onto the probability simplex (sort-based)."""
    import tensorflow as tf

    m = y.shape[-1]
    u = tf.sort(y, axis=-1, direction="DESCENDING")
    css = tf.cumsum(u, axis=-1) - 1.0
    ind = tf.range(1, m + 1, dtype=y.dtype)
    cond = u - css / ind > 0
    rho = tf.reduce_sum(tf.cast(cond, tf.int32), axis=-1, keepdims=True)  # >= 1 always
    theta = tf.gather(css, rho - 1, batch_dims=len(y.shape) - 1) / tf.cast(rho, y.dtype)
    return tf.maximum(y - theta, 0.0)


def _cagrad_enumerate(G: Any, s: Any, m: int) -> Any:
    """Every support ``F``: the face's KKT point (closed form) and the face's min-norm point; best wins.

    On a support ``F`` with ``y = k·w_F`` and ``k = s/||g_w||`` the KKT conditions
    ``b_F + k G_FF w_F = mu 1`` become linear: ``y = y0 + k y1`` where ``(y0, y1)`` solve the bordered
    systems ``[[G_FF, -1], [1ᵀ, 0]] [y; mu] = [-b_F; 0]`` and ``[0; 1]``; ``||g_w|| = s/k`` then gives
    ``(y0 + k y1)ᵀ G (y0 + k y1) = s²``, a quadratic in ``k`` (``y1ᵀGy0 = 0``), so ``k = sqrt((s² - y0ᵀGy0)
    / y1ᵀGy1)``.  The face's min-norm point ``y1`` covers optima with ``g_w = 0`` (then the objective is 0).
    """
    import tensorflow as tf

    dtype = G.dtype
    supp = _subset_masks(m, dtype, include_empty=False)  # (S, m): 1 = in the support
    w_kkt, valid, _, y1 = _cagrad_face(G, s, supp, m)
    # y1, the face's min-norm point, covers optima with g_w = 0 (objective 0 there)
    cands = tf.concat([w_kkt, y1], axis=0)  # (2S, m)
    ok = tf.concat([valid, tf.ones_like(valid)], axis=0)
    cands = tf.where(tf.math.is_finite(cands), cands, tf.zeros_like(cands))
    cands = _project_simplex(cands)  # feasible: objective can only be >= the optimum
    obj = cagrad_objective(G, cands, s)
    obj = tf.where(ok & tf.math.is_finite(obj), obj, tf.constant(float("inf"), dtype))
    return tf.gather(cands, tf.argmin(obj, output_type=tf.int32))


def _cagrad_face(G: Any, s: Any, F: Any, m: int) -> tuple[Any, Any, Any, Any]:
    """KKT point of the CAGrad objective on the affine hull of the support ``F`` (see ``_cagrad_enumerate``).

    Works on a batch of supports ``F`` (..., m).  Returns ``(w_kkt, valid, y0, y1)``: ``valid`` is False
    when the objective is unbounded below on that affine hull (then ``y0``, which sums to 0, is a
    direction along which it does not increase) or when the hull contains ``g_w = 0``; ``y1`` is the
    face's min-norm point.
    """
    import tensorflow as tf

    dtype = G.dtype
    out = 1.0 - F
    eye = tf.eye(m, dtype=dtype)
    b = tf.reduce_sum(G, axis=1) / m
    Gj = G + jitter(dtype) * eye
    top = F[..., :, None] * Gj * F[..., None, :] + out[..., :, None] * eye
    top = tf.concat([top, -F[..., :, None]], axis=-1)  # (..., m, m+1)
    bottom = tf.concat([F, tf.zeros_like(F[..., :1])], axis=-1)[..., None, :]  # (..., 1, m+1)
    K = tf.concat([top, bottom], axis=-2)
    zero1 = tf.zeros_like(F[..., :1])
    rhs0 = tf.concat([-F * b, zero1], axis=-1)
    rhs1 = tf.concat([tf.zeros_like(F), zero1 + 1.0], axis=-1)
    sol = tf.linalg.solve(K, tf.stack([rhs0, rhs1], axis=-1))  # (..., m+1, 2)
    y0 = sol[..., :m, 0] * F
    y1 = sol[..., :m, 1] * F
    a = tf.reduce_sum(y1 * tf.linalg.matvec(G, y1), axis=-1)
    gam = tf.reduce_sum(y0 * tf.linalg.matvec(G, y0), axis=-1)
    k2 = (s * s - gam) / tf.where(a > 0, a, tf.ones_like(a))
    valid = (a > 0) & (k2 > 0)
    k = tf.sqrt(tf.where(valid, k2, tf.ones_like(k2)))
    return y0 / k[..., None] + y1, valid, y0, y1


def _cagrad_active_set(G: Any, s: Any, m: int) -> Any:
    """Primal active-set method on the simplex for ``m > ENUM_MAX_TASKS`` (at most ``4m + 20`` iterations).

    Keeps a feasible ``w`` and its support ``F``; each iteration moves towards the KKT point of the
    current face (dropping the first coordinate that reaches 0), or along a non-increasing direction
    when the objective is unbounded on the face, or, at the face's optimum, frees the coordinate with the
    most negative multiplier; it stops on the KKT conditions (to ``1e3·eps`` relative).
    """
    import numpy as np
    import tensorflow as tf

    dtype = G.dtype
    eps = float(np.finfo(np.dtype(dtype.as_numpy_dtype)).eps)
    tol = 1e3 * eps
    b = tf.reduce_sum(G, axis=1) / m
    tiny = tf.constant(1e-300 if dtype == tf.float64 else 1e-30, dtype)
    inf = tf.constant(float("inf"), dtype)
    diag = tf.linalg.diag_part(G)
    # start at the best vertex that has a non-zero gradient (the objective is smooth away from g_w = 0)
    vert = tf.where(diag > 0, b + s * tf.sqrt(tf.maximum(diag, 0.0)), inf)
    j0 = tf.argmin(vert, output_type=tf.int32)
    w0 = tf.one_hot(j0, m, dtype=dtype)

    def body(i, w, F, done):
        z, valid, y0, _ = _cagrad_face(G, s, F, m)
        p = tf.where(valid, z - w, y0)
        at_min = tf.where(valid, tf.reduce_max(tf.abs(p)) <= tol, tf.reduce_max(tf.abs(y0)) <= tol)
        # multipliers at the face optimum: grad_i - mu >= 0 for coordinates outside the support
        Gw = tf.linalg.matvec(G, w)
        rho = tf.sqrt(tf.maximum(tf.reduce_sum(w * Gw), 0.0))
        grad = b + s * Gw / tf.maximum(rho, tiny)
        mu = tf.reduce_sum(F * grad) / tf.maximum(tf.reduce_sum(F), 1.0)
        viol = tf.where(F > 0, inf, grad - mu)
        j_add = tf.argmin(viol, output_type=tf.int32)
        optimal = at_min & (tf.reduce_min(viol) >= -tol * (tf.reduce_max(tf.abs(grad)) + tiny))
        add = at_min & ~optimal
        # move: blocked by the first support coordinate reaching zero
        ratio = tf.where((F > 0) & (p < 0), -w / tf.where(p < 0, p, -tf.ones_like(p)), inf)
        j_block = tf.argmin(ratio, output_type=tf.int32)
        r_min = tf.reduce_min(ratio)
        alpha = tf.where(valid, tf.minimum(r_min, 1.0), r_min)
        alpha = tf.where(tf.math.is_finite(alpha), alpha, tf.zeros_like(alpha))
        move = ~at_min
        block = move & (r_min <= tf.where(valid, tf.ones_like(r_min), inf))
        w_new = tf.where(move, w + alpha * p, w)
        block_hot = tf.one_hot(j_block, m, dtype=dtype) * tf.cast(block, dtype)
        w_new = tf.where(block_hot > 0, tf.zeros_like(w_new), tf.maximum(w_new, 0.0))
        w_new = w_new / tf.reduce_sum(w_new)
        add_hot = tf.one_hot(j_add, m, dtype=dtype) * tf.cast(add, dtype)
        F_new = tf.clip_by_value(F - block_hot + add_hot, 0.0, 1.0)
        keep = done | optimal
        return i + 1, tf.where(keep, w, w_new), tf.where(keep, F, F_new), keep

    def cond(i, w, F, done):
        return (i < 4 * m + 20) & ~done

    _, w, _, _ = tf.while_loop(cond, body, (tf.constant(0), w0, w0, tf.constant(False)))
    return w


# ------------------------------------------------------------------------------------------------------
# Gramian conventions shared with TorchJD (torchjd._linalg._gramian)
# ------------------------------------------------------------------------------------------------------
def gramian(J: Any) -> Any:
    """``G = J Jᵀ`` (T, T)."""
    import tensorflow as tf

    return tf.linalg.matmul(J, J, transpose_b=True)


def normalize_gramian(G: Any, norm_eps: float) -> Any:
    """``G / tr(G)``, or the zero matrix when ``tr(G) < norm_eps`` (TorchJD ``normalize``)."""
    import tensorflow as tf

    tr = tf.linalg.trace(G)
    small = (tr < norm_eps) | ~(tr > 0)
    return tf.where(small, tf.zeros_like(G), G / tf.where(small, tf.ones_like(tr), tr))
