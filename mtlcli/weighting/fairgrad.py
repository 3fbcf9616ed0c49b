"""FairGrad: task weights from the alpha-fair resource-allocation system ``G w = w^(-1/alpha)``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from mtlcli.weighting import qp
from mtlcli.weighting.base import Result, Strategy, combine_rows
from mtlcli.weighting.registry import register

#: Newton steps on the ``T x T`` system (fixed: graph-safe). Measured on tests/weighting/_inputs.py's
#: full-rank matrices, alpha 0.1 .. 10, float64: a relative residual <= 1e-13 within 10 steps, except
#: mixed_norms_3x5 (row norms 1e-3, 1, 1e3) at alpha 0.1 and 10, which needs 34.
_ITERATIONS = 40
#: Largest change of ``log w_i`` in one step (a damped Newton step in log space: weights stay > 0).
_LOG_STEP = 4.0


@register
@dataclass(frozen=True)
class FairGrad(Strategy):
    """FairGrad: the update that allocates first-order progress to the tasks alpha-fairly.

    Paper: Hao Ban and Kaiyi Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024 (eq. 4,
    Algorithm 1), https://arxiv.org/abs/2402.15638.

    Math: with ``G = J Jᵀ`` the weights ``w > 0`` solve ``G w = w^(-1/alpha)`` (element-wise power): the
    progress ``g_i · d`` of task ``i`` along ``d = wᵀJ`` is ``w_i^(-1/alpha)``, the optimality condition
    of ``max_d Σ_i u(g_i · d)`` with the alpha-fair utility ``u`` under ``||d||² <= 1``.  ``alpha = 0`` is
    linear scalarisation (``w = 1/T``); ``alpha = 1`` proportional fairness; ``alpha -> inf`` approaches
    max-min fairness (MGDA-like).  A weighting: ``d = wᵀJ``.

    Parameters:
        alpha: ``1.0`` (proportional fairness). Must be finite and ``>= 0``.
        on: ``"parameters"`` (default) uses gradients of the shared parameters; ``"representation"``
            gradients w.r.t. the shared representation (MGDA-UB style: one backward pass of
            ``Σ_i w_i L_i`` with these weights; the weights read only the Gramian).

    Convention: TorchJD 0.18 ``FairGrad(alpha)`` — the same system on the raw Gramian (no
    normalisation of ``J``), ``alpha = 0`` giving ``1/T``.  TorchJD solves it with
    ``scipy.optimize.least_squares`` from ``w = 1/T`` (tolerance ``1e-8`` on the cost, so it agrees with
    the exact root to ~1e-9 relative on ordinary matrices and stops far from it when ``G``'s entries are
    small, e.g. ``1e-8 J``).  Here the *exact* root is computed: the system is solved on the
    trace-normalised Gramian ``Ĝ = G / (tr G / T)`` (whose root rescales to ``G``'s by
    ``(tr G / T)^(-alpha/(alpha+1))``, so any scale of ``J`` is as accurate as ``J``'s of order 1), from
    ``w_i = Ĝ_ii^(-alpha/(alpha+1))`` (the exact root for orthogonal gradients), by 40 Newton steps in
    ``log w`` (each change of ``log w_i`` clipped to ±4, so the weights stay positive).  Each diagonal
    entry ``Ĝ_ii`` is multiplied by ``1 + 64·eps(dtype)`` (1.4e-14 in float64, 7.6e-6 in float32) so
    every system has a root.  Deliberate differences: a task whose gradient is zero (norm at most
    ``64·eps`` of the RMS norm; e.g. no labelled row in the batch) gets weight 0 and the others solve
    their own system (its exact weight is unbounded, TorchJD returns a large one; ``d`` is the same).
    Where no positive root exists (0 in the convex hull of the task gradients, a Pareto-stationary
    point: e.g. two opposite gradients) the weights of the exact system grow without bound; both
    libraries then return a finite, unconverged iterate (TorchJD the last least-squares one, here the
    40th Newton step of the regularised system, with ``d`` near 0).  An all-zero ``J`` gives ``w = 1/T``
    and ``d = 0`` (TorchJD: unbounded weights, ``d = 0``).
    """

    name = "fairgrad"
    needs = "gradients"
    weighting = True
    paper = "Ban & Ji, ICML 2024 (FairGrad)"
    summary = "alpha-fair allocation of progress to the tasks: weights solve G w = w^(-1/alpha)"

    alpha: float = 1.0
    on: Literal["parameters", "representation"] = "parameters"

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, int | float) and math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"`alpha` must be a finite number >= 0, received {self.alpha!r}")

    def aggregate(self, J, losses, params: dict, state: dict, ctx) -> Result:
        del losses, params, ctx
        w = fairgrad_weights(qp.gramian(J), float(self.alpha))
        return Result(weights=w, state=state, direction=combine_rows(w, J))


def fairgrad_weights(G, alpha: float):
    """The positive root ``w`` of ``G w = w^(-1/alpha)`` (``1/T`` when ``alpha == 0``), see :class:`FairGrad`."""
    import numpy as np
    import tensorflow as tf

    dtype = G.dtype
    m = G.shape[0]
    uniform = tf.fill([m], tf.constant(1.0 / m, dtype))
    if alpha == 0:  # a hyper-parameter, not a tensor: linear scalarisation
        return uniform
    tiny = float(np.finfo(dtype.as_numpy_dtype).tiny)
    eps = qp.jitter(dtype)
    scale = tf.linalg.trace(G) / m
    safe = tf.maximum(scale, tiny)
    G_hat = G / safe
    # rows of norm <= eps x the RMS norm are zero rows: decoupled (identity row and column), weight 0
    live = tf.linalg.diag_part(G_hat) > eps * eps
    both = tf.logical_and(live[:, None], live[None, :])
    G_hat = tf.where(both, G_hat, tf.zeros_like(G_hat))
    G_hat = G_hat + tf.linalg.diag(tf.where(live, eps * tf.linalg.diag_part(G_hat), tf.ones([m], dtype)))
    power = alpha / (alpha + 1.0)
    x = tf.linalg.diag_part(G_hat) ** -power
    for _ in range(_ITERATIONS):
        r = x ** (-1.0 / alpha)
        residual = tf.linalg.matvec(G_hat, x) - r
        jacobian = G_hat + tf.linalg.diag(r / (alpha * x))
        step = tf.linalg.solve(jacobian, residual[:, None])[:, 0]
        x = x * tf.exp(tf.clip_by_value(-step / x, -_LOG_STEP, _LOG_STEP))
    return tf.where(scale > tiny, tf.where(live, x * safe**-power, tf.zeros_like(x)), uniform)
