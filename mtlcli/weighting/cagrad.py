"""CAGrad: conflict-averse gradient descent (Liu et al. 2021), TorchJD 0.18 convention."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from mtlcli.weighting import qp
from mtlcli.weighting.base import Result, Strategy, combine_rows
from mtlcli.weighting.registry import register


@register
@dataclass(frozen=True)
class CAGrad(Strategy):
    """Conflict-Averse Gradient descent: the mean gradient, bent towards the worst-served task.

    Paper: Bo Liu, Xingchao Liu, Xiaojie Jin, Peter Stone, Qiang Liu, "Conflict-Averse Gradient Descent
    for Multi-task Learning", NeurIPS 2021, https://arxiv.org/abs/2110.14048.

    Math (on the trace-normalised Gramian ``Ĝ = G/tr(G)``, zero when ``tr(G) < norm_eps``): with
    ``g0`` the mean gradient and ``g_w = wᵀJ``, solve ``w* = argmin_{w in simplex} g0ᵀg_w + c·||g0||·||g_w||``
    (exactly, see ``qp.py``); then ``d = g0 + (c·||g0|| / ||g_w*||)·g_w*``, i.e. the weights
    ``1/m + (c·||g0||/||g_w*||)·w*``, divided by ``1``, ``1 + c²`` or ``1 + c`` for ``rescale`` 0, 1, 2.
    All norms are in trace-normalised units, so the weights do not depend on the scale of ``J``.

    Fallback (TorchJD): when ``||g_w*|| < norm_eps`` (normalised units; the mean gradient lies in the
    task gradients' convex hull within ``norm_eps``, e.g. a zero task gradient or ``c >= 1`` with
    conflicting tasks, or ``tr(G) < norm_eps``) the weights and ``d`` are **zero**. The official code
    and LibMTL have no such fallback (they divide by ``||g_w|| + 1e-8``).

    Parameters:
        c: ``0.4``. Radius of the ball around ``g0`` (TorchJD requires it explicitly; LibMTL defaults to
            0.5, and TorchJD's golden table uses 0.5: ``{cagrad: {c: 0.5}}`` reproduces it).
        norm_eps: ``1e-4``. Trace below which the Gramian counts as zero, and ``||g_w*||`` below which
            the direction is zero.
        rescale: ``0``. ``0``: TorchJD (and LibMTL ``rescale=0``), no rescaling. ``1``: divide by
            ``1 + c²`` (LibMTL's default). ``2``: divide by ``1 + c``.

    Convention: TorchJD 0.18 ``CAGrad(c)`` with ``rescale=0`` (no ``1/(1+c²)``, zero fallback), solved
    exactly instead of with CLARABEL (whose default tolerances leave TorchJD's ``d`` up to ~1e-4
    relative off the optimum).  Exact for up to ``qp.ENUM_MAX_TASKS`` (10) tasks; beyond that an
    active-set method, exact except when ``c >= 1`` and 0 is in the tasks' convex hull (see ``qp``).
    """

    name = "cagrad"
    needs = "gradients"
    weighting = True
    paper = "Liu, Liu, Jin, Stone & Liu, NeurIPS 2021"
    summary = "mean gradient moved within a ball to improve the worst task"

    c: float = 0.4
    norm_eps: float = 1e-4
    rescale: Literal[0, 1, 2] = 0

    def __post_init__(self) -> None:
        if not (self.c >= 0 and math.isfinite(self.c)):
            raise ValueError(f"`c` must be a finite number >= 0, received {self.c!r}")
        if not (self.norm_eps >= 0 and math.isfinite(self.norm_eps)):
            raise ValueError(f"`norm_eps` must be a finite number >= 0, received {self.norm_eps!r}")
        if self.rescale not in (0, 1, 2) or isinstance(self.rescale, bool):
            raise ValueError(f"`rescale` must be 0, 1 or 2, received {self.rescale!r}")

    def aggregate(self, J, losses, params: dict, state: dict, ctx) -> Result:
        import tensorflow as tf

        del losses, params, ctx
        m = J.shape[0]
        dtype = J.dtype
        G = qp.normalize_gramian(qp.gramian(J), self.norm_eps)
        g0_norm = tf.sqrt(tf.maximum(tf.reduce_sum(G), 0.0)) / m  # ||J^T 1/m|| in normalised units
        s = self.c * g0_norm
        w_star = qp.cagrad_simplex(G, s)
        gw_norm = tf.sqrt(tf.maximum(tf.reduce_sum(w_star * tf.linalg.matvec(G, w_star)), 0.0))
        ok = gw_norm >= self.norm_eps
        coef = s / tf.where(ok, gw_norm, tf.ones_like(gw_norm))
        w = tf.where(ok, 1.0 / m + coef * w_star, tf.zeros_like(w_star))
        divisor = {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        w = w / tf.constant(divisor, dtype)
        return Result(weights=w, state=state, direction=combine_rows(w, J))
