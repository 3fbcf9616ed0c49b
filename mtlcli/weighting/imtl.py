"""IMTL: equal projections on every task's unit gradient (IMTL-G, closed form on the Gramian), alone
(``imtl_g``) or with IMTL-L's learned loss scales (``imtl``, LibMTL's combined method)."""

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


def imtl_g_weights(gramian):
    """IMTL-G's weights from the Gramian: ``v = pinv(G) sqrt(diag(G))``, ``w = v / sum(v)`` (all zeros
    when ``|sum(v)| < 1e-12``); ``w^T J`` has the same projection on every task's unit gradient."""
    import tensorflow as tf

    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gramian), 0))
    v = tf.linalg.matvec(pinv(gramian), norms)
    v_sum = tf.reduce_sum(v)
    return tf.where(
        tf.abs(v_sum) < 1e-12, tf.zeros_like(v), v / tf.where(v_sum == 0, tf.ones_like(v_sum), v_sum)
    )


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
    (undefined for dependent gradients); this is the gradient part only (``imtl`` is the combined method).
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

        weights = imtl_g_weights(tf.matmul(J, J, transpose_b=True))
        return Result(weights=weights, state=state, direction=combine_rows(weights, J))


@register
@dataclass(frozen=True)
class IMTL(Strategy):
    """IMTL: IMTL-L's learned loss scales plus IMTL-G's equal-projection weights (LibMTL ``IMTL``).

    Paper: L. Liu, Y. Li, Z. Kuang, J.-H. Xue, Y. Chen, W. Yang, Q. Liao, W. Zhang, "Towards Impartial
    Multi-task Learning", ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr.

    Math: learnable log-scales ``s`` (param ``loss_scale``, init 0) turn the losses into
    ``e^{s_i} L_i - s_i`` (IMTL-L), whose gradients on the shared variables are the rows
    ``e^{s_i} g_i``; IMTL-G's closed form on those rows (:func:`imtl_g_weights` of the Gramian
    ``diag(e^s) G diag(e^s)``) gives ``alpha`` (sum 1), and ``d = sum_i alpha_i e^{s_i} g_i``, so the
    reported weights are ``alpha_i e^{s_i}`` (``d = weights @ J``).  ``s`` gets the gradient
    ``e^{s_i} L_i - 1`` of the scaled losses, applied by the model's optimizer; at its fixed point
    ``e^{s_i} L_i = 1``: every scaled loss equals 1 (IMTL-L's scale balance).

    Convention: LibMTL ``IMTL`` (``loss_scale`` init 0, IMTL-G on the scaled gradients), with two
    deliberate differences.  The closed form is IMTL-G's pseudo-inverse one (TorchJD ``IMTLG``): equal
    to LibMTL's ``torch.inverse`` formula when the task gradients are linearly independent, and defined
    when they are not (LibMTL's inverse is singular there).  Each task head gets the plain gradient of
    its own loss, as under every gradient-based strategy here, where LibMTL's heads get the gradient of
    the scaled loss ``e^{s_i} L_i`` (a per-task factor that Adam all but removes).  With
    ``on: representation`` the rows are gradients w.r.t. the shared representation, one per example
    flattened (LibMTL's ``rep_grad`` sums them over the batch first).  Use ``imtl_g`` for the gradient
    part alone (no loss scales: the behaviour of ``imtl_g`` is unchanged).
    """

    #: ``parameters`` (per-task gradients of the shared variables) or ``representation`` (gradients of the
    #: shared representation, MGDA-UB style: one backward pass; LibMTL's ``rep_grad``).
    on: Literal["parameters", "representation"] = "parameters"

    name: ClassVar[str] = "imtl"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    paper: ClassVar[str] = "Liu et al., ICLR 2021 (IMTL-L + IMTL-G, LibMTL IMTL)"
    summary: ClassVar[str] = "learned loss scales e^s_i L_i - s_i plus IMTL-G equal projections"

    def param_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"loss_scale": ((num_tasks,), 0.0)}

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        dtype = J.dtype
        scale = tf.exp(tf.cast(params["loss_scale"], dtype))
        gramian = tf.matmul(J, J, transpose_b=True)
        alpha = imtl_g_weights(scale[:, None] * gramian * scale[None, :])
        weights = alpha * scale
        scale_grad = scale * tf.stop_gradient(tf.cast(losses, dtype)) - 1  # d(e^s L - s)/ds
        return Result(
            weights=weights,
            state=state,
            direction=combine_rows(weights, J),
            param_grads={"loss_scale": scale_grad},
        )
