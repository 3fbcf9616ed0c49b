"""IMTL-G: the update with equal projections on every task's unit gradient (closed form on the Gramian)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.registry import register


def pinv(matrix):
    """Moore-Penrose pseudo-inverse with ``torch.linalg.pinv``'s default cut-off.

    SVD ``A = U S V^T``; singular values ``s <= eps(dtype) * max(rows, cols) * s_max`` are treated as 0.
    """
    import numpy as np
    import tensorflow as tf

    s, u, v = tf.linalg.svd(matrix, full_matrices=False)
    rows, cols = matrix.shape[-2], matrix.shape[-1]
    size = max(rows, cols) if rows is not None and cols is not None else tf.reduce_max(tf.shape(matrix))
    rtol = tf.constant(np.finfo(matrix.dtype.as_numpy_dtype).eps, matrix.dtype) * tf.cast(size, matrix.dtype)
    tol = rtol * tf.reduce_max(s)
    s_inv = tf.where(s > tol, tf.math.divide_no_nan(tf.ones_like(s), s), tf.zeros_like(s))
    return tf.matmul(v * s_inv[None, :], u, transpose_b=True)


@register
@dataclass(frozen=True)
class IMTLG(Strategy):
    """IMTL-G: weights giving an update with the same projection on every task's unit gradient.

    Paper: L. Liu, Y. Li, Z. Kuang, J.-H. Xue, Y. Chen, W. Yang, Q. Liao, W. Zhang, "Towards Impartial
    Multi-task Learning", ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr; generalised to
    linearly dependent rows in P. Quinton, V. Rey, "Jacobian Descent for Multi-Objective Optimization",
    arXiv 2024, https://arxiv.org/abs/2406.16232.

    Math: ``v = pinv(G) sqrt(diag(G))``, ``w = v / sum(v)`` (all zeros when ``|sum(v)| < 1e-12``),
    ``d = w^T J``.  Weights sum to 1 and may be negative.  No parameters.

    Convention: TorchJD 0.18 ``IMTLG`` (pseudo-inverse with torch's default cut-off
    ``eps * T * s_max``).  LibMTL's ``IMTL`` also learns IMTL-L loss scales and uses ``torch.inverse``
    (undefined for dependent gradients); this is the gradient part only.
    """

    #: ``parameters`` (per-task gradients of the shared variables) or ``representation`` (gradients of the
    #: shared representation, MGDA-UB style: one backward pass; LibMTL's ``rep_grad``).
    on: Literal["parameters", "representation"] = "parameters"

    name: ClassVar[str] = "imtl_g"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    paper: ClassVar[str] = "Liu et al., ICLR 2021 (generalised by Quinton & Rey 2024)"
    summary: ClassVar[str] = "closed-form weights with equal projection on all unit gradients"

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        gramian = tf.matmul(J, J, transpose_b=True)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gramian), 0))
        v = tf.linalg.matvec(pinv(gramian), norms)
        v_sum = tf.reduce_sum(v)
        weights = tf.where(
            tf.abs(v_sum) < 1e-12, tf.zeros_like(v), v / tf.where(v_sum == 0, tf.ones_like(v_sum), v_sum)
        )
        return Result(weights=weights, state=state, direction=combine_rows(weights, J))
