"""Aligned-MTL and ConFIG: directions built from a spectral / pseudo-inverse view of the task gradients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.registry import register


def aligned_mtl_weights(gramian, pref, scale_mode: str = "min"):
    """``w = B p`` with Aligned-MTL's balance matrix ``B = sqrt(s) V_r Lambda_r^(-1/2) V_r^T``.

    ``G = V Lambda V^T`` (eigh); the kept eigenvalues are ``lambda > lambda_max * m * eps(dtype)``;
    ``s`` is the smallest kept eigenvalue (``"min"``), the lower median of the kept ones (``"median"``,
    as ``torch.median``) or their mean (``"rmse"``).  No eigenvalue kept: ``B = I``.
    """
    import numpy as np
    import tensorflow as tf

    dtype = gramian.dtype
    m = tf.shape(gramian)[0]
    lam, vecs = tf.linalg.eigh(gramian)  # ascending eigenvalues
    tol = tf.reduce_max(lam) * tf.cast(m, dtype) * tf.constant(np.finfo(dtype.as_numpy_dtype).eps, dtype)
    kept = lam > tol
    rank = tf.reduce_sum(tf.cast(kept, tf.int32))
    safe = tf.where(kept, lam, tf.ones_like(lam))
    inv_sqrt = tf.where(kept, 1 / tf.sqrt(safe), tf.zeros_like(lam))
    if scale_mode == "min":
        scale = tf.reduce_min(tf.where(kept, lam, tf.fill(tf.shape(lam), tf.constant(float("inf"), dtype))))
    elif scale_mode == "median":
        # kept eigenvalues are the last `rank` entries of the ascending list; lower median of those
        scale = tf.gather(lam, tf.maximum(m - rank + (rank - 1) // 2, 0))
    elif scale_mode == "rmse":
        scale = tf.reduce_sum(tf.where(kept, lam, tf.zeros_like(lam))) / tf.cast(tf.maximum(rank, 1), dtype)
    else:
        raise ValueError(f"`scale_mode` must be one of 'min', 'median', 'rmse', received {scale_mode!r}")
    balance = tf.sqrt(tf.maximum(scale, 0)) * tf.matmul(vecs * inv_sqrt[None, :], vecs, transpose_b=True)
    weights = tf.linalg.matvec(balance, pref)
    return tf.where(rank > 0, weights, pref)


@register
@dataclass(frozen=True)
class AlignedMTL(Strategy):
    """Aligned-MTL: align the task gradients' principal components and rescale them to equal strength.

    Paper: D. Senushkin, N. Patakin, A. Kuznetsov, A. Konushin, "Independent Component Alignment for
    Multi-Task Learning", CVPR 2023, https://arxiv.org/abs/2305.19000.

    Math: ``G = V Lambda V^T``; keep ``lambda > lambda_max * T * eps``; ``B = sqrt(s) V Lambda^(-1/2) V^T``
    (the balance transform making the aligned gradients' Gramian ``s I``); ``w = B p`` with
    ``p = 1/T``; ``d = w^T J``.  See :func:`aligned_mtl_weights`.

    Args:
        scale_mode: the eigenvalue ``s`` that sets the output scale (default ``"min"``): ``"min"`` the
            smallest kept, ``"median"`` the lower median, ``"rmse"`` the mean of the kept eigenvalues.

    Convention: TorchJD 0.18 ``AlignedMTL`` (``p = 1/T``, eigenvalue cut-off ``lambda_max * T * eps(dtype)``,
    ``torch.median``'s lower median).  LibMTL's ``Aligned_MTL`` uses ``p = 1`` (row sums of ``B``), so its
    output is ``T`` times this one, and cuts at ``lambda_max * max(T, P) * eps(float32)``.
    """

    scale_mode: Literal["min", "median", "rmse"] = "min"
    #: ``parameters`` (per-task gradients of the shared variables) or ``representation`` (gradients of the
    #: shared representation, MGDA-UB style: one backward pass; LibMTL's ``rep_grad``).
    on: Literal["parameters", "representation"] = "parameters"

    name: ClassVar[str] = "aligned_mtl"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    paper: ClassVar[str] = "Senushkin, Patakin, Kuznetsov, Konushin, CVPR 2023"
    summary: ClassVar[str] = "eigen-rescaled Gramian: gradients aligned to equal principal strengths"

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        gramian = tf.matmul(J, J, transpose_b=True)
        num_tasks = tf.shape(J)[0]
        pref = tf.ones([num_tasks], J.dtype) / tf.cast(num_tasks, J.dtype)
        weights = aligned_mtl_weights(gramian, pref, self.scale_mode)
        return Result(weights=weights, state=state, direction=combine_rows(weights, J))


def config_weights(J):
    """ConFIG as exact weights on the rows of ``J`` (so ``d = w^T J``).

    With unit rows ``U = diag(1/||g_i||) J`` (zero rows stay 0) and ``p = 1``, ConFIG's direction is
    ``b = pinv(U) p``.  Writing ``U^T = Q R`` (thin QR, ``Q`` orthonormal columns) and
    ``R^T = X S Y^T`` (small SVD): ``pinv(U) = Q Y S^+ X^T`` and ``b = U^T c'`` with
    ``c' = X (S^+)^2 X^T p``, i.e. ``b = J^T c`` with ``c = c' / ||g||``.  Then
    ``u = b / max(||b||, 1e-12)`` and ``d = (1^T J u) u = w^T J`` with ``w = c (1^T G c) / (||b|| max(||b||, 1e-12))``.
    Singular values below ``eps * max(T, P) * s_max`` are dropped, as ``torch.linalg.pinv`` does.  When
    ``p`` has (numerically) no component in the row space of ``U`` (``||X_r^T p|| <= eps max(T, P) ||p||``,
    e.g. two opposite gradients) ``pinv(U) p`` is pure round-off and the weights are 0.
    """
    import numpy as np
    import tensorflow as tf

    dtype = J.dtype
    norms = tf.norm(J, axis=1)
    units = tf.math.divide_no_nan(J, norms[:, None])
    _, r = tf.linalg.qr(tf.transpose(units))  # units^T = Q R, R is (k, T), k = min(P, T)
    s, x, y = tf.linalg.svd(tf.transpose(r), full_matrices=False)  # R^T = X S Y^T
    size = tf.cast(tf.maximum(tf.shape(J)[0], tf.shape(J)[1]), dtype)
    tol = tf.constant(np.finfo(dtype.as_numpy_dtype).eps, dtype) * size * tf.reduce_max(s)
    s_inv = tf.where(s > tol, tf.math.divide_no_nan(tf.ones_like(s), s), tf.zeros_like(s))
    pref = tf.ones([tf.shape(J)[0]], dtype)
    xtp = tf.linalg.matvec(x, pref, transpose_a=True)
    # p (numerically) orthogonal to the row space of U (e.g. g2 = -c g1): pinv(U) p is round-off only,
    # whose normalisation would be an arbitrary direction; such b is set to 0 (so is d).
    in_range = tf.norm(tf.where(s > tol, xtp, tf.zeros_like(xtp)))
    floor = tf.constant(np.finfo(dtype.as_numpy_dtype).eps, dtype) * size * tf.norm(pref)
    s_inv = tf.where(in_range > floor, s_inv, tf.zeros_like(s_inv))
    b_norm = tf.norm(s_inv * xtp)  # ||Q Y S^+ X^T p|| = ||S^+ X^T p||
    coeffs = tf.math.divide_no_nan(tf.linalg.matvec(x, s_inv * s_inv * xtp), norms)
    gramian = tf.matmul(J, J, transpose_b=True)
    length_times_bnorm = tf.reduce_sum(tf.linalg.matvec(gramian, coeffs))  # 1^T G c = (sum_i g_i . b)
    denom = b_norm * tf.maximum(b_norm, tf.constant(1e-12, dtype))
    return coeffs * tf.math.divide_no_nan(length_times_bnorm, denom)


@register
@dataclass(frozen=True)
class ConFIG(Strategy):
    """ConFIG: the direction with equal cosine to every task gradient, with length the sum of projections.

    Paper: Q. Liu, M. Chu, N. Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed Neural
    Networks", ICLR 2025, https://arxiv.org/abs/2408.11104.

    Math: unit rows ``u_i = g_i / ||g_i||`` (zero rows stay 0), ``u = normalize(pinv(U) 1)`` (equal,
    positive cosine with every ``g_i`` when the rows are independent), ``d = (sum_i g_i . u) u``.
    Computed as exact row weights (see :func:`config_weights`), so ``d = w^T J``.  No parameters.

    Convention: TorchJD 0.18 ``ConFIG`` with its default preference ``p = 1`` (the length is the *sum* of
    the projections, as in the official code), ``torch.linalg.pinv``'s cut-off and ``F.normalize``'s
    ``1e-12`` floor.  One deliberate difference: when ``1`` is numerically orthogonal to the row space of
    ``U`` (e.g. ``g2 = -c g1``), ``pinv(U) 1`` is round-off whose normalisation is an arbitrary unit
    vector; TorchJD then returns that noise times a non-zero length, we return ``d = 0``.
    """

    name: ClassVar[str] = "config"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    paper: ClassVar[str] = "Liu, Chu, Thuerey, ICLR 2025"
    summary: ClassVar[str] = "equal-cosine direction (pinv of unit gradients), length = sum of projections"

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        weights = config_weights(J)
        return Result(weights=weights, state=state, direction=combine_rows(weights, J))
