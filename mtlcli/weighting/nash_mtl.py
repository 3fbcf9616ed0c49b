"""Nash-MTL: the Nash bargaining solution of the tasks (Navon et al. 2022), TorchJD 0.18 convention."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mtlcli.weighting import qp
from mtlcli.weighting.base import Result, Strategy, combine_rows
from mtlcli.weighting.registry import register


def solve_nash(G: Any, alpha_prev: Any, max_iter: int) -> tuple[Any, Any]:
    """``alpha > 0`` with ``alpha_i (G alpha)_i = 1``; returns ``(alpha, ok)``.

    The fixed point is the unique minimiser of the self-concordant function
    ``F(b) = ½ bᵀĜb - Σ log b_i`` on ``Ĝ = G/||G||_F`` (then ``alpha = b/sqrt(||G||_F)``), found by damped
    Newton (step ``1/(1 + λ)`` while the Newton decrement ``λ > 1/4``, full steps after), started from the
    previous ``alpha`` rescaled to the best point on its ray.  ``ok`` is False when no fixed point exists
    (a zero task gradient, gradients whose positive combination is zero) or the iterations did not
    converge; the caller then keeps ``alpha_prev``.
    """
    import numpy as np
    import tensorflow as tf

    dtype = G.dtype
    m = G.shape[0]
    eps = float(np.finfo(np.dtype(dtype.as_numpy_dtype)).eps)
    nf = tf.norm(G)
    nf_ok = tf.math.is_finite(nf) & (nf > 0)
    nf_safe = tf.where(nf_ok, nf, tf.ones_like(nf))
    Gn = G / nf_safe
    sq = tf.sqrt(nf_safe)
    b0 = alpha_prev * sq
    b0 = tf.where(tf.reduce_all(b0 > 0) & tf.reduce_all(tf.math.is_finite(b0)), b0, tf.ones_like(b0))
    quad0 = tf.reduce_sum(b0 * tf.linalg.matvec(Gn, b0))
    b0 = b0 * tf.where(quad0 > 0, tf.sqrt(m / tf.where(quad0 > 0, quad0, 1.0)), 1.0)
    eye = tf.eye(m, dtype=dtype)
    reg = qp.jitter(dtype) * eye  # keeps H invertible when alpha diverges on a singular Gramian
    big = tf.constant(1e6 / math.sqrt(eps), dtype)  # far beyond any fixed point of the normalised problem

    def body(i, b, lam2):
        grad = tf.linalg.matvec(Gn, b) - 1.0 / b
        H = Gn + eye / (b * b)[:, None] + reg
        p = -tf.linalg.solve(H, grad[:, None])[:, 0]
        lam2 = tf.maximum(-tf.reduce_sum(grad * p), 0.0)
        lam = tf.sqrt(lam2)
        t = tf.where(lam > 0.25, 1.0 / (1.0 + lam), tf.ones_like(lam))
        b_new = b + t * p
        b_new = tf.where(tf.reduce_all(b_new > 0), b_new, b + p / (1.0 + lam))  # stay in the domain
        b_new = tf.where(tf.reduce_all(tf.math.is_finite(b_new)), b_new, b)
        return i + 1, b_new, lam2

    def cond(i, b, lam2):
        return (i < max_iter) & (lam2 > eps * eps) & (tf.reduce_max(b) < big)

    _, b, _ = tf.while_loop(cond, body, (tf.constant(0), b0, tf.constant(1.0, dtype)))
    residual = tf.reduce_max(tf.abs(b * tf.linalg.matvec(Gn, b) - 1.0))
    ok = (
        nf_ok
        & tf.reduce_all(tf.math.is_finite(b))
        & tf.reduce_all(b > 0)
        & (residual <= 100.0 * math.sqrt(eps))
    )
    alpha = b / sq
    return tf.where(ok, alpha, alpha_prev), ok


@register
@dataclass(frozen=True)
class NashMTL(Strategy):
    """Nash-MTL: task weights from the Nash bargaining solution, ``alpha_i (G alpha)_i = 1``.

    Paper: Aviv Navon, Aviv Shamsian, Idan Achituve, Haggai Maron, Kenji Kawaguchi, Gal Chechik, Ethan
    Fetaya, "Multi-Task Learning as a Bargaining Game", ICML 2022, https://arxiv.org/abs/2202.01017.

    Math: ``alpha > 0`` solves ``alpha ⊙ (G alpha) = 1`` on the raw Gramian ``G = J Jᵀ`` (so every task
    gets ``g_i·d = 1/alpha_i`` and the unclipped ``||d|| = sqrt(m)``); ``d = alphaᵀJ``, then, if
    ``max_norm > 0`` and ``||d|| > max_norm``, ``alpha`` is scaled so that ``||d|| = max_norm``.

    Solver: the official code and TorchJD run up to ``optim_niter`` convex-concave rounds with
    cvxpy/ECOS (stopping when alpha moves < 1e-6); here the same fixed point is the minimiser of
    ``½ αᵀGα - Σ log α_i``, found by damped Newton (at most ``10·optim_niter`` iterations, stopping at
    a Newton decrement of machine precision) — exact to round-off where TorchJD's answer carries the
    CCP's ~1e-6 stopping tolerance.  When no fixed point exists (a zero task gradient, a zero positive
    combination of task gradients, a zero ``J``) or the solve fails, the previous ``alpha`` is reused
    (ones on the first step), like TorchJD.

    State: ``alpha`` (``(T,)``, ones initially), the unclipped weights of the last solve, used as the
    warm start and reused on the steps between updates.  Weights are recomputed when
    ``ctx.step % update_weights_every == 0``; since both ``alpha`` (a strategy state variable) and the
    optimizer step are saved in checkpoints, a resumed run keeps the same cadence and weights as an
    uninterrupted one.  TorchJD counts calls of a fresh aggregator instead (the same on a fresh run).

    Parameters:
        max_norm: ``1.0``. Upper bound on ``||d||`` (``0`` disables the clipping).
        update_weights_every: ``1``. Recompute ``alpha`` every this many steps.
        optim_niter: ``20``. Solver budget (TorchJD: CCP rounds; here ``10·optim_niter`` Newton steps).

    Deliberate deviations from TorchJD, where its CCP does not reach the bargaining solution: more tasks
    than the rank of ``J`` (the first convexified problem is unbounded; TorchJD keeps ones), gradient
    norms spread over orders of magnitude (20 CCP rounds do not converge), tiny scales (ECOS fails near
    ``||J|| ~ 1e-8``; here the clipped direction is scale-free), and a zero ``J`` (TorchJD raises).

    Convention: TorchJD 0.18 ``NashMTL(n_tasks)``: weights applied to the shared gradient only, norm
    clipping by scaling the weights. LibMTL applies ``alpha`` to the losses (heads weighted too) and
    clips the shared gradient norm with ``clip_grad_norm_`` instead.
    """

    name = "nash_mtl"
    needs = "gradients"
    weighting = True
    paper = "Navon et al., ICML 2022"
    summary = "Nash bargaining solution alpha_i (G alpha)_i = 1, norm-clipped"

    max_norm: float = 1.0
    update_weights_every: int = 1
    optim_niter: int = 20

    def __post_init__(self) -> None:
        if not (self.max_norm >= 0 and math.isfinite(self.max_norm)):
            raise ValueError(f"`max_norm` must be a finite number >= 0, received {self.max_norm!r}")
        if self.update_weights_every < 1:
            raise ValueError(f"`update_weights_every` must be >= 1, received {self.update_weights_every!r}")
        if self.optim_niter < 1:
            raise ValueError(f"`optim_niter` must be >= 1, received {self.optim_niter!r}")

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"alpha": ((num_tasks,), 1.0)}

    def aggregate(self, J, losses, params: dict, state: dict, ctx) -> Result:
        import tensorflow as tf

        del losses, params
        alpha_prev = tf.cast(state["alpha"], J.dtype)
        update = tf.equal(tf.math.floormod(tf.cast(ctx.step, tf.int64), self.update_weights_every), 0)

        def solve():
            return qp.compiled(solve_nash)(qp.gramian(J), alpha_prev, 10 * self.optim_niter)[0]

        alpha = tf.cond(update, solve, lambda: alpha_prev)
        w = alpha
        if self.max_norm > 0:
            norm = tf.norm(combine_rows(alpha, J))
            w = tf.where(norm > self.max_norm, alpha * (self.max_norm / tf.where(norm > 0, norm, 1.0)), alpha)
        return Result(weights=w, state={"alpha": alpha}, direction=combine_rows(w, J))
