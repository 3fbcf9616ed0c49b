"""MGDA: the minimum-norm point of the convex hull of the task gradients (Frank-Wolfe on the Gramian)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.registry import register

_COMPILED: dict = {}


def frank_wolfe_min_norm(gramian, epsilon: float, max_iters: int):
    """Simplex weights ``alpha`` approximately minimising ``alpha^T G alpha`` (TorchJD ``MGDAWeighting``).

    Frank-Wolfe from ``alpha = 1/m``: pick ``t = argmin (G alpha)``, exact line search towards ``e_t``,
    ``gamma = 1`` if ``G_tt <= a``, ``0`` if ``b <= a``, else ``(b - a) / (b + G_tt - 2a)`` with
    ``a = alpha^T G e_t`` and ``b = alpha^T G alpha``; stop after the first step with ``gamma < epsilon``
    (that step is still applied) or after ``max_iters`` steps.

    The loop runs as a (cached) ``tf.function`` also when called eagerly: an eager ``tf.while_loop``
    would dispatch every iteration from Python.
    """
    import tensorflow as tf

    if "fw" not in _COMPILED:
        _COMPILED["fw"] = tf.function(_frank_wolfe, reduce_retracing=True)
    dtype = gramian.dtype
    return _COMPILED["fw"](gramian, tf.constant(epsilon, dtype), tf.constant(max_iters, tf.int32))


def _frank_wolfe(gramian, eps, max_iters):
    import tensorflow as tf

    dtype = gramian.dtype
    m = tf.shape(gramian)[0]
    alpha0 = tf.ones([m], dtype) / tf.cast(m, dtype)
    one = tf.constant(1.0, dtype)
    zero = tf.constant(0.0, dtype)

    def cond(i, alpha, done):
        return tf.logical_and(i < max_iters, tf.logical_not(done))

    def body(i, alpha, done):
        g_alpha = tf.linalg.matvec(gramian, alpha)
        t = tf.argmin(g_alpha, output_type=tf.int32)
        e_t = tf.one_hot(t, m, dtype=dtype)
        a = tf.reduce_sum(alpha * tf.gather(gramian, t, axis=1))
        b = tf.reduce_sum(alpha * g_alpha)
        c = gramian[t, t]
        gamma = tf.where(c <= a, one, tf.where(b <= a, zero, tf.math.divide_no_nan(b - a, b + c - 2 * a)))
        alpha = (1 - gamma) * alpha + gamma * e_t
        return i + 1, alpha, gamma < eps

    _, alpha, _ = tf.while_loop(cond, body, (tf.constant(0), alpha0, tf.constant(False)))
    return alpha


@register
@dataclass(frozen=True)
class MGDA(Strategy):
    """Multiple-gradient descent: the minimum-norm convex combination of the task gradients.

    Papers: J.-A. Desideri, "Multiple-gradient descent algorithm (MGDA) for multiobjective
    optimization", Comptes Rendus Mathematique 2012, https://doi.org/10.1016/j.crma.2012.03.014;
    O. Sener, V. Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018,
    https://arxiv.org/abs/1810.04650 (Frank-Wolfe solver, Algorithm 2, and MGDA-UB).

    Math: ``alpha = argmin_{alpha in simplex} ||sum_i alpha_i g_i / n_i||^2`` solved by Frank-Wolfe on the
    ``T x T`` Gramian; ``d = sum_i (alpha_i / n_i) g_i``.  With ``normalization: none`` (``n_i = 1``) the
    weights sum to 1 and ``d`` is the (approximate) min-norm point itself, not ``T`` times it.

    Args:
        normalization: gradient rescaling ``n_i`` before solving (default ``"none"``): ``"l2"``
            ``||g_i||``, ``"loss"`` ``L_i``, ``"loss+"`` ``L_i ||g_i||`` (LibMTL's ``mgda_gn``).  A zero
            ``n_i`` drops that task's row (LibMTL would divide by zero).
        epsilon: Frank-Wolfe stops after a step ``gamma < epsilon`` (default ``1e-3``).
        max_iters: maximum Frank-Wolfe steps (default ``100``).
        on: ``"parameters"`` (default) uses gradients of the shared parameters; ``"representation"``
            uses gradients w.r.t. the shared representation (MGDA-UB: one backward pass of
            ``sum_i w_i L_i`` with these weights).

    Convention: TorchJD 0.18 ``MGDA`` exactly for ``normalization: none`` (start ``1/m``, exact line
    search, ``epsilon=1e-3``, ``max_iters=100``; ties in ``argmin`` go to the first task).  With another
    normalization we follow LibMTL: the weights are applied to the *rescaled* gradients, i.e. the
    effective weights on ``J`` are ``alpha_i / n_i``; the solver stays TorchJD's Frank-Wolfe (LibMTL uses
    a best-pair start and projected-gradient steps, 250 iterations, tolerance 1e-5).
    """

    normalization: Literal["none", "l2", "loss", "loss+"] = "none"
    epsilon: float = 1e-3
    max_iters: int = 100
    on: Literal["parameters", "representation"] = "parameters"

    name: ClassVar[str] = "mgda"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    paper: ClassVar[str] = "Desideri 2012; Sener & Koltun, NeurIPS 2018"
    summary: ClassVar[str] = "min-norm point of the convex hull of task gradients (Frank-Wolfe)"

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"`epsilon` must be > 0, received {self.epsilon}")
        if self.max_iters < 1:
            raise ValueError(f"`max_iters` must be >= 1, received {self.max_iters}")

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        dtype = J.dtype
        gramian = tf.matmul(J, J, transpose_b=True)
        if self.normalization == "none":
            weights = frank_wolfe_min_norm(gramian, self.epsilon, self.max_iters)
        else:
            norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gramian), 0))
            loss_values = tf.stop_gradient(tf.cast(losses, dtype))
            scale = {"l2": norms, "loss": loss_values, "loss+": loss_values * norms}[self.normalization]
            inv = tf.math.divide_no_nan(tf.ones_like(scale), scale)
            scaled = gramian * inv[:, None] * inv[None, :]
            alpha = frank_wolfe_min_norm(scaled, self.epsilon, self.max_iters)
            weights = alpha * inv
        return Result(weights=weights, state=state, direction=combine_rows(weights, J))
