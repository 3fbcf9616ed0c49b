"""UPGrad and DualProj: projections onto the dual cone of the task gradients (TorchJD's QP weightings)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mtlcli.weighting import qp
from mtlcli.weighting.base import Result, Strategy, combine_rows
from mtlcli.weighting.registry import register


def _check_eps(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"`{name}` must be a finite number >= 0, received {value!r}")


def _check_pref(pref_vector: list[float] | None) -> None:
    if pref_vector is None:
        return
    if len(pref_vector) == 0 or not all(math.isfinite(float(p)) for p in pref_vector):
        raise ValueError(
            f"`pref_vector` must be a non-empty list of finite numbers, received {pref_vector!r}"
        )


@dataclass(frozen=True)
class _DualCone(Strategy):
    """What UPGrad and DualProj share: their parameters (documented on each), the preference vector and
    the normalised, regularised Gramian of the QP."""

    needs = "gradients"
    weighting = True

    norm_eps: float = 1e-4
    reg_eps: float = 1e-4
    pref_vector: list[float] | None = None

    def __post_init__(self) -> None:
        _check_eps("norm_eps", self.norm_eps)
        _check_eps("reg_eps", self.reg_eps)
        _check_pref(self.pref_vector)

    def task_count_problem(self, num_tasks: int) -> tuple[str, str] | None:
        if self.pref_vector is not None and len(self.pref_vector) != num_tasks:
            return (
                "pref_vector",
                f"{self.name}.pref_vector needs one preference per task: expected {num_tasks} entries, "
                f"received {len(self.pref_vector)} ({list(self.pref_vector)!r})",
            )
        return None

    def _pref(self, m: int, dtype: Any) -> Any:
        import tensorflow as tf

        if self.pref_vector is None:
            return tf.fill([m], tf.constant(1.0 / m, dtype))
        problem = self.task_count_problem(m)
        if problem is not None:
            raise ValueError(problem[1])
        return tf.constant([float(p) for p in self.pref_vector], dtype)

    def _quadratic(self, J: Any) -> Any:
        """``G/tr(G) + reg_eps·I`` (zero before regularisation when ``tr(G) < norm_eps``)."""
        import tensorflow as tf

        G = qp.normalize_gramian(qp.gramian(J), self.norm_eps)
        # A floor of 64 machine epsilons keeps the systems solvable when reg_eps = 0 (TorchJD's quadprog
        # would refuse a singular Gramian); it is 1e-12 of the default regularisation in float64.
        reg = max(float(self.reg_eps), qp.jitter(J.dtype))
        return G + reg * tf.eye(J.shape[0], dtype=J.dtype)


@register
@dataclass(frozen=True)
class UPGrad(_DualCone):
    """Unconflicting Projection of Gradients: mean of each task gradient projected onto the dual cone.

    Paper: Pierre Quinton and Valentin Rey, "Jacobian Descent for Multi-Objective Optimization",
    arXiv 2024, https://arxiv.org/abs/2406.16232.

    Math: with ``Ĝ = G/tr(G) + reg_eps·I`` (``G = J Jᵀ``; the normalised Gramian is the zero matrix when
    ``tr(G) < norm_eps``) and preference ``p`` (default ``1/m``), for every task ``i``
    ``v_i = argmin_v vᵀĜv  s.t.  v >= p_i e_i`` (the weights of the projection of ``p_i g_i`` onto the
    dual cone ``{x : J x >= 0}``), ``w = Σ_i v_i`` and ``d = wᵀJ``.  Without regularisation ``J d >= 0``
    (no task's loss increases to first order); weights are not on the simplex.

    Parameters:
        norm_eps: ``1e-4``. Below this trace the Gramian is treated as zero (then ``d`` = the mean row).
        reg_eps: ``1e-4``. Added to the diagonal of the trace-normalised Gramian. Not negligible: it is
            what TorchJD does, and ``reg_eps = 1e-10`` is the near-exact projection (a floor of
            ``64·eps(dtype)`` keeps the systems solvable when ``reg_eps = 0``).
        pref_vector: ``None`` (= ``1/m`` for every task). Scales the rows before projecting.

    Convention: TorchJD 0.18 ``UPGrad()`` exactly — sum of the projections of ``p_i g_i`` (with
    ``p = 1/m`` the mean of the projected rows), same normalisation and regularisation.  The QP is solved
    exactly (active-set enumeration, see ``qp.py``) instead of with quadprog; both are exact to
    round-off.  LibMTL's ``UPGrad`` copies TorchJD.
    """

    name = "upgrad"
    paper = "Quinton & Rey, arXiv 2406.16232 (2024)"
    summary = "mean of the task gradients projected onto the dual cone (no task gets worse)"

    def aggregate(self, J, losses, params: dict, state: dict, ctx) -> Result:
        import tensorflow as tf

        del losses, params, ctx
        m = J.shape[0]
        V = qp.box_qp(self._quadratic(J), tf.linalg.diag(self._pref(m, J.dtype)))  # row i: v_i
        w = tf.reduce_sum(V, axis=0)
        return Result(weights=w, state=state, direction=combine_rows(w, J))


@register
@dataclass(frozen=True)
class DualProj(_DualCone):
    """Projection of the mean gradient onto the dual cone of the task gradients (GEM's projection).

    Paper: David Lopez-Paz and Marc'Aurelio Ranzato, "Gradient Episodic Memory for Continual Learning",
    NeurIPS 2017 (eq. 11), https://arxiv.org/abs/1706.08840; as packaged by TorchJD (Quinton & Rey,
    arXiv 2406.16232).

    Math: ``w = argmin_v vᵀĜv  s.t.  v >= p`` with ``Ĝ = G/tr(G) + reg_eps·I`` (zero normalised Gramian
    when ``tr(G) < norm_eps``) and ``p`` the preference (default ``1/m``); ``d = wᵀJ`` is the projection
    of ``pᵀJ`` onto ``{x : J x >= 0}``, so ``J d >= 0`` up to the regularisation.

    Parameters:
        norm_eps: ``1e-4``. Below this trace the Gramian is treated as zero (then ``d`` = the mean row).
        reg_eps: ``1e-4``. Added to the diagonal of the trace-normalised Gramian (floor ``64·eps(dtype)``).
        pref_vector: ``None`` (= ``1/m``). The vector ``p`` of weights of the projected combination.

    Convention: TorchJD 0.18 ``DualProj()`` exactly (projection of the *mean*, same normalisation and
    regularisation); the QP is solved exactly by active-set enumeration instead of quadprog.
    """

    name = "dualproj"
    paper = "Lopez-Paz & Ranzato, NeurIPS 2017 (GEM)"
    summary = "mean gradient projected onto the dual cone of the task gradients"

    def aggregate(self, J, losses, params: dict, state: dict, ctx) -> Result:
        del losses, params, ctx
        m = J.shape[0]
        w = qp.box_qp(self._quadratic(J), self._pref(m, J.dtype)[None, :])[0]
        return Result(weights=w, state=state, direction=combine_rows(w, J))
