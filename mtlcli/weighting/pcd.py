"""PCD (``weighting: pcd``): Priority-Constrained Descent, one primary task and auxiliaries.

The primary task is named in the recipe (``train.primary: click``); the model build turns the name
into its index in the task order and fills the strategy's ``primary`` field: the model spec's
``weighting`` value gets ``primary: <index>`` (:meth:`mtlcli.recipe.spec.Recipe.model_weighting`,
through :func:`mtlcli.weighting.registry.with_primary`), so the train step builds the strategy from it
as from any other value, and a saved model rebuilds the same strategy.  :meth:`PCD.aggregate` moves that
row of ``J`` first (TorchJD's convention: row 0 is the primary objective) and moves the weights and
the EMA state back, so everything outside this module stays in task order.  No change to
:class:`~mtlcli.weighting.base.Context` is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from mtlcli.weighting import qp
from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.registry import register

#: TorchJD's solver tolerances: a constraint holds when violated by at most ``QP_TOL`` times the
#: largest diagonal entry of the Gramian; a gradient is dependent on the active ones when its
#: orthogonal part's squared norm is at most ``max(QP_DEPENDENCE_TOL, 10·eps(dtype))`` times its own.
QP_TOL = 1e-9
QP_DEPENDENCE_TOL = 1e-9


@register
@dataclass(frozen=True)
class PCD(Strategy):
    """Priority-Constrained Descent: follow the primary gradient, guarantee each auxiliary a share.

    Paper: "Not All Objectives Are Born Equal: Priority-Constrained Descent for Hierarchical
    Multi-Objective Optimization", TMLR 2026 (arXiv 2606.29521), https://openreview.net/forum?id=HT01yGHLEt.

    Math: with the primary gradient first (``g_1``) and ``g̃_i = s_i g_i`` the normalised gradients,
    ``s_i = 1/sqrt(v̂_i + eps)`` where ``v̂_i`` is the bias-corrected EMA (decay ``beta``) of ``||g_i||²``
    over the steps,
    ``d̃ = argmin_d ½||d - g̃_1||²  s.t.  g̃_jᵀd >= tau·||g̃_j||²`` for every auxiliary ``j``;
    ``d̃ = g̃_1 + Σ_j μ_j g̃_j`` with the KKT multipliers ``μ_j >= 0``, solved exactly on the Gramian by
    the dual active-set method of Goldfarb and Idnani (a bounded ``tf.while_loop``, ``10·T``
    iterations at most).  ``d = d̃·||g_1||/||d̃||``: the weights are ``[1, μ]·s·||g_1||/||d̃||``.
    Multiplying an auxiliary's gradient by ``c > 0`` at every step leaves ``d`` unchanged (up to
    ``eps``); ``tau`` is a scale-free fraction.  Special cases (as TorchJD): ``g_1 = 0`` or ``d̃ = 0``
    (to round-off) gives ``d = 0``; infeasible constraints (possible from 3 tasks, e.g. two opposite
    auxiliaries) are dropped (``d = g_1``); a non-finite ``J`` gives NaN and leaves the EMA unchanged.
    Not guaranteed: the primary task's own progress ``g_1ᵀd`` can be negative when an auxiliary
    conflicts strongly with it (the constraint then pulls ``d`` across); only the auxiliaries get a
    guarantee.

    Args:
        tau: ``0.02``. The fraction in ``[0, 1]`` of normalised first-order progress guaranteed to
            each auxiliary task; or a list with one fraction per auxiliary, in task order without
            the primary task (TorchJD's vector ``tau``; the recipe check compares its length).
        beta: ``0.999``. Decay in ``[0, 1)`` of the EMA of the squared gradient norms.
        eps: ``1e-8``. Added to the EMA before its inverse square root (``>= 0``).
        primary: ``0``. Index of the primary task in the task order. Set from ``train.primary`` by
            the model build (the recipe names a task; writing ``primary`` under ``pcd`` is refused);
            through :func:`mtlcli.weighting.aggregate` row 0 is primary unless given.
        on: ``"parameters"`` (default) uses gradients of the shared parameters; ``"representation"``
            uses gradients w.r.t. the shared representation (one backward pass of ``sum_i w_i L_i``
            with these weights, as MGDA-UB; the EMA then tracks those gradients' norms).

    State: ``sq_norm_ema`` ``(T,)`` (the EMA, in task order) and ``n_steps`` (its bias correction),
    saved in checkpoints so a resumed run continues exactly.

    Convention: TorchJD 0.18 ``PCD(tau, beta, eps)`` on the rows with the primary first: same EMA,
    normalisation, solver, tolerances and special cases, in float64 whatever the training dtype
    (the ``10·eps`` precision threshold follows J's dtype, as TorchJD's follows the Gramian's).
    The EMA is not reset when the number of tasks changes (it cannot change within a run).
    """

    tau: float | list[float] = 0.02
    beta: float = 0.999
    eps: float = 1e-8
    primary: int = 0
    on: Literal["parameters", "representation"] = "parameters"

    name: ClassVar[str] = "pcd"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    needs_primary: ClassVar[bool] = True
    paper: ClassVar[str] = "Priority-Constrained Descent, TMLR 2026 (arXiv 2606.29521)"
    summary: ClassVar[str] = (
        "follows the primary task's gradient; each auxiliary keeps a tau share of progress"
    )

    def __post_init__(self) -> None:
        taus = self.tau if isinstance(self.tau, (list, tuple)) else [self.tau]
        if not taus or not all(0.0 <= t <= 1.0 for t in taus):
            raise ValueError(f"`tau` must be in [0, 1] (a number or a non-empty list), received {self.tau!r}")
        if not (0.0 <= self.beta < 1.0):
            raise ValueError(f"`beta` must be in [0, 1), received {self.beta!r}")
        if not (self.eps >= 0.0 and math.isfinite(self.eps)):
            raise ValueError(f"`eps` must be a finite number >= 0, received {self.eps!r}")
        if isinstance(self.primary, bool) or not isinstance(self.primary, int) or self.primary < 0:
            raise ValueError(f"`primary` must be a task index >= 0, received {self.primary!r}")

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"sq_norm_ema": ((num_tasks,), 0.0), "n_steps": ((), 0.0)}

    def task_count_problem(self, num_tasks: int) -> tuple[str, str] | None:
        """A list ``tau`` needs one value per auxiliary task (``num_tasks - 1``)."""
        if isinstance(self.tau, (list, tuple)) and len(self.tau) != num_tasks - 1:
            return (
                "tau",
                f"expected one value per auxiliary task ({num_tasks} tasks, one of them train.primary: "
                f"{num_tasks - 1} values, in task order without the primary), received {len(self.tau)}",
            )
        return None

    def taus(self, num_tasks: int) -> float | list[float]:
        """``tau`` as the solver takes it (checked against the number of auxiliaries when a list)."""
        problem = self.task_count_problem(num_tasks)
        if problem is not None:
            raise ValueError(f"`pcd.tau`: {problem[1]}")
        if isinstance(self.tau, (list, tuple)):
            return [float(t) for t in self.tau]
        return float(self.tau)

    def order(self, num_tasks: int) -> list[int]:
        """The task indices with the primary first, the auxiliaries in task order after it."""
        if self.primary >= num_tasks:
            raise ValueError(f"`pcd.primary` is task {self.primary} but there are {num_tasks} tasks")
        return [self.primary] + [i for i in range(num_tasks) if i != self.primary]

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        import numpy as np
        import tensorflow as tf

        del losses, params, ctx
        order = self.order(int(J.shape[0]))
        back = np.argsort(order).tolist()
        f64 = tf.float64
        G = tf.cast(qp.gramian(tf.gather(J, order)), f64)
        ema = tf.gather(tf.cast(state["sq_norm_ema"], f64), order)
        precision = 10.0 * float(np.finfo(J.dtype.as_numpy_dtype).eps)
        w, ema, n_steps = pcd_weights(
            G, ema, tf.cast(state["n_steps"], f64), self.taus(len(order)), self.beta, self.eps, precision
        )
        w = tf.gather(tf.cast(w, J.dtype), back)
        new_state = {
            "sq_norm_ema": tf.cast(tf.gather(ema, back), state["sq_norm_ema"].dtype),
            "n_steps": tf.cast(n_steps, state["n_steps"].dtype),
        }
        return Result(weights=w, state=new_state, direction=combine_rows(w, J))


def pcd_weights(G, ema, n_steps, tau, beta: float, eps: float, precision: float):
    """TorchJD ``PCDWeighting.forward`` on a float64 Gramian ``G`` (primary first): the weights, the new
    EMA of the squared norms and the new step count (both unchanged when ``G`` is not finite)."""
    import tensorflow as tf

    m = int(G.shape[0])
    f64 = G.dtype
    finite = tf.reduce_all(tf.math.is_finite(G))
    G = tf.where(finite, G, tf.zeros_like(G))
    sq_norms = tf.linalg.diag_part(G)
    steps = n_steps + 1.0
    new_ema = beta * ema + (1.0 - beta) * sq_norms
    denominators = tf.sqrt(new_ema / (1.0 - tf.pow(tf.constant(beta, f64), steps)) + eps)
    positive = denominators > 0.0
    scales = tf.where(positive, 1.0 / tf.where(positive, denominators, 1.0), 0.0)
    normalized = G * scales[:, None] * scales[None, :]
    w = solve_qp(normalized, tau, QP_TOL, max(QP_DEPENDENCE_TOL, precision))
    direction_sq = tf.reduce_sum(w * tf.linalg.matvec(normalized, w))
    magnitude = tf.square(tf.reduce_sum(tf.abs(w) * tf.sqrt(tf.linalg.diag_part(normalized))))
    ok = (sq_norms[0] > 0.0) & (direction_sq > precision * magnitude)
    rescale = tf.sqrt(sq_norms[0] / tf.where(ok, direction_sq, 1.0))
    weights = tf.where(ok, w * scales * rescale, tf.zeros([m], f64))
    weights = tf.where(finite, weights, tf.fill([m], tf.constant(float("nan"), f64)))
    return weights, tf.where(finite, new_ema, ema), tf.where(finite, steps, n_steps)


def solve_qp(G, tau, tol: float = QP_TOL, dependence_tol: float = QP_DEPENDENCE_TOL):
    """``[1, μ]`` for ``min_d ½||d - g_1||² s.t. g_jᵀd >= tau·||g_j||²`` (``d = g_1 + Σ_j μ_j g_j``) from
    the Gramian ``G`` (m, m) of ``g_1, ..., g_m``; ``[1, 0, ..., 0]`` when the constraints are infeasible.

    TorchJD's ``_solve_qp`` step for step (Goldfarb and Idnani's dual active-set method for an identity
    Hessian, every inner product read from ``G``): each iteration adds the most violated constraint or
    drops the active one whose multiplier reaches zero first; at most ``10 m`` iterations.  The active
    set is a 0/1 mask here, and the solve on the active block is a solve of the full system with
    identity rows on the inactive ones.  Ties between equal ratios pick the lowest task index (TorchJD:
    the earliest added).
    """
    import tensorflow as tf

    m = int(G.shape[0])
    dtype = G.dtype
    if m == 1:
        return tf.ones([1], dtype)
    return tf.concat([tf.ones([1], dtype), qp.compiled(_dual_active_set)(G, tau, tol, dependence_tol)], 0)


def _dual_active_set(G, tau, tol: float, dependence_tol: float):
    """The multipliers ``μ`` (m - 1,) of :func:`solve_qp` (one ``tf.while_loop``; see there)."""
    import tensorflow as tf

    dtype = G.dtype
    m = int(G.shape[0])
    n = m - 1
    Gs = G[1:, 1:]
    diag = tf.linalg.diag_part(Gs)
    b = tf.constant(tau, dtype) * diag - G[1:, 0]  # b_j > 0 iff g_1 violates the constraint of objective j
    atol = tol * tf.maximum(
        tf.reduce_max(tf.linalg.diag_part(G)), tf.constant(2.2250738585072014e-308, dtype)
    )
    inf = tf.constant(float("inf"), dtype)
    max_iters = 10 * m

    def body(it, mu, act, busy, p, slack_p, done, infeasible):
        # pick the most violated constraint unless one is being added
        slacks = tf.where(act > 0, tf.zeros_like(mu), tf.linalg.matvec(Gs, mu) - b)
        p_new = tf.argmin(slacks, output_type=tf.int32)
        finish = ~busy & (tf.gather(slacks, p_new) >= -atol)
        p = tf.where(busy, p, p_new)
        slack_p = tf.where(busy, slack_p, tf.gather(slacks, p_new))
        # dual step +1 for mu_p and -r for the active mu_j; z = component of g_p orthogonal to them
        col = tf.gather(Gs, p, axis=1)
        K = act[:, None] * Gs * act[None, :] + tf.linalg.diag(1.0 - act)
        r = tf.linalg.solve(K, (act * col)[:, None])[:, 0] * act
        z_sq = tf.gather(diag, p) - tf.reduce_sum(col * r)
        ratios = tf.where((act > 0) & (r > 0), mu / tf.where(r > 0, r, 1.0), inf)
        k = tf.argmin(ratios, output_type=tf.int32)
        partial = tf.gather(ratios, k)
        non_zero = z_sq > dependence_tol * tf.gather(diag, p)
        full = tf.where(non_zero, -slack_p / tf.where(non_zero, z_sq, 1.0), inf)
        step = tf.minimum(partial, full)
        stop_infeasible = ~finish & tf.math.is_inf(step)
        move = ~finish & ~stop_infeasible
        hot_p, hot_k = tf.one_hot(p, n, dtype=dtype), tf.one_hot(k, n, dtype=dtype)
        accept = full <= partial
        mu_new = mu - step * r + step * hot_p
        mu_new = tf.where(accept, mu_new, mu_new * (1.0 - hot_k))
        act_new = tf.where(accept, tf.maximum(act, hot_p), act * (1.0 - hot_k))
        slack_new = tf.reduce_sum(tf.gather(Gs, p) * mu_new) - tf.gather(b, p)
        return (
            it + tf.cast(~finish, tf.int32),
            tf.where(move, mu_new, mu),
            tf.where(move, act_new, act),
            move & ~accept,
            p,
            tf.where(move, slack_new, slack_p),
            finish | stop_infeasible,
            infeasible | stop_infeasible,
        )

    def cond(it, mu, act, busy, p, slack_p, done, infeasible):
        return ~done & (it < max_iters)

    zeros = tf.zeros([n], dtype)
    false = tf.constant(False)
    init = (tf.constant(0), zeros, zeros, false, tf.constant(0), tf.constant(0.0, dtype), false, false)
    _, mu, _, _, _, _, _, infeasible = tf.while_loop(cond, body, init)
    return tf.where(infeasible, zeros, tf.maximum(mu, 0.0))
