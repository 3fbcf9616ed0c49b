"""Gradient surgery on the Gramian: PCGrad (projection of conflicts) and GradVac (gradient vaccine).

Both keep, for every task ``i``, coefficients ``C[i]`` such that the modified gradient is
``g_i^PC = sum_k C[i, k] g_k``; every quantity they need (``g_i^PC . g_j``, ``||g_i^PC||``) is read from
``G = J J^T``, so the ``(P,)``-sized work is one Gramian and one weighted sum ``d = (sum_i C[i])^T J``.
All tasks ``i`` are processed at once (vectorised over ``i``; each task's loop is independent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.registry import register


def random_orders(num_tasks: int, seed):
    """``(T, T-1)`` int32: row ``i`` is a uniformly random order of the other tasks ``j != i``.

    Drawn with ``tf.random.stateless_uniform`` from ``seed`` (sort keys; task ``i`` itself gets the
    largest key and is cut off).  With two tasks the order is deterministic.
    """
    import tensorflow as tf

    keys = tf.random.stateless_uniform((num_tasks, num_tasks), seed=seed, dtype=tf.float32)
    keys = tf.where(tf.eye(num_tasks, dtype=tf.bool), tf.constant(2.0, tf.float32), keys)
    return tf.argsort(keys, axis=1, stable=True)[:, : num_tasks - 1]


def _static_num_tasks(gramian) -> int:
    num_tasks = gramian.shape[0]
    if num_tasks is None:
        raise ValueError("the number of tasks must be known when tracing (static first dimension of J)")
    return int(num_tasks)


def pcgrad_weights(gramian, orders):
    """PCGrad weights ``w = sum_i C[i]`` for explicit visiting orders ``orders`` ``(T, T-1)``.

    For each ``i`` and each ``j`` in ``orders[i]``: if ``g_i^PC . g_j < 0`` then
    ``g_i^PC -= (g_i^PC . g_j / ||g_j||^2) g_j`` (projection on the *original* ``g_j``, no epsilon).
    """
    import tensorflow as tf

    num_tasks = _static_num_tasks(gramian)
    dtype = gramian.dtype
    coeffs = tf.eye(num_tasks, dtype=dtype)
    orders = tf.cast(orders, tf.int32)
    for k in range(num_tasks - 1):
        j = orders[:, k]
        onehot = tf.one_hot(j, num_tasks, dtype=dtype)
        inner = tf.reduce_sum(tf.gather(gramian, j) * coeffs, axis=1)  # g_j . g_i^PC
        g_jj = tf.reduce_sum(tf.gather(gramian, j) * onehot, axis=1)
        step = tf.where(inner < 0, -tf.math.divide_no_nan(inner, g_jj), tf.zeros_like(inner))
        coeffs = coeffs + onehot * step[:, None]
    return tf.reduce_sum(coeffs, axis=0)


def gradvac_weights(gramian, phi, orders, beta: float, eps: float):
    """GradVac weights and the updated EMA targets ``phi`` for explicit orders (TorchJD 0.18 algebra).

    For each ``i`` and ``j`` in ``orders[i]``: ``cos = g_i^PC . g_j / (||g_i^PC|| ||g_j|| + eps)``; if
    ``cos < phi[i, j]`` add ``w g_j`` with
    ``w = ||g_i^PC|| (phi sqrt(1 - cos^2) - cos sqrt(1 - phi^2)) / (||g_j|| sqrt(1 - phi^2) + eps)``;
    then ``phi[i, j] <- (1 - beta) phi[i, j] + beta cos``.  Returns ``(sum_i C[i], phi)``.
    """
    import tensorflow as tf

    num_tasks = _static_num_tasks(gramian)
    dtype = gramian.dtype
    eps_t = tf.constant(eps, dtype)
    coeffs = tf.eye(num_tasks, dtype=dtype)
    c_gram = gramian  # row i: g_i^PC . g_k for every k
    orders = tf.cast(orders, tf.int32)
    rows = tf.range(num_tasks, dtype=tf.int32)
    for k in range(num_tasks - 1):
        j = orders[:, k]
        onehot = tf.one_hot(j, num_tasks, dtype=dtype)
        dot_ij = tf.reduce_sum(c_gram * onehot, axis=1)
        norm_i = tf.sqrt(tf.maximum(tf.reduce_sum(c_gram * coeffs, axis=1), 0))
        g_j = tf.gather(gramian, j)
        norm_j = tf.sqrt(tf.maximum(tf.reduce_sum(g_j * onehot, axis=1), 0))
        cos = tf.math.divide_no_nan(dot_ij, norm_i * norm_j + eps_t)
        index = tf.stack([rows, j], axis=1)
        phi_hat = tf.gather_nd(phi, index)
        sqrt_1_cos2 = tf.sqrt(tf.maximum(1 - cos * cos, 0))
        sqrt_1_hat2 = tf.sqrt(tf.maximum(1 - phi_hat * phi_hat, 0))
        w = norm_i * tf.math.divide_no_nan(
            phi_hat * sqrt_1_cos2 - cos * sqrt_1_hat2, norm_j * sqrt_1_hat2 + eps_t
        )
        w = tf.where(cos < phi_hat, w, tf.zeros_like(w))
        coeffs = coeffs + onehot * w[:, None]
        c_gram = c_gram + w[:, None] * g_j
        phi = tf.tensor_scatter_nd_update(phi, index, (1 - beta) * phi_hat + beta * cos)
    return tf.reduce_sum(coeffs, axis=0), phi


@register
@dataclass(frozen=True)
class PCGrad(Strategy):
    """PCGrad: project each task gradient off the gradients it conflicts with, then sum.

    Paper: T. Yu, S. Kumar, A. Gupta, S. Levine, K. Hausman, C. Finn, "Gradient Surgery for Multi-Task
    Learning", NeurIPS 2020, https://arxiv.org/abs/2001.06782.

    Math: for each task ``i``, visit the other tasks ``j`` in a random order; whenever
    ``g_i^PC . g_j < 0``, ``g_i^PC -= (g_i^PC . g_j) / ||g_j||^2 g_j`` (always against the original
    ``g_j``).  ``d = sum_i g_i^PC`` (a weighting: ``d = w^T J``).  No parameters.

    Convention: TorchJD 0.18 ``PCGrad``: computed on the Gramian, ``j = i`` skipped, no epsilon, **sum**
    of the projected rows.  Orders: one independent uniformly random order per task drawn from
    ``ctx.seed`` (TorchJD uses ``torch.randperm`` per task; same distribution, different numbers, so
    bit-equality holds for two tasks or for explicit orders, see :func:`pcgrad_weights`).  LibMTL adds
    1e-8 to ``||g_j||^2`` and does not skip ``j = i``.
    """

    name: ClassVar[str] = "pcgrad"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    paper: ClassVar[str] = "Yu, Kumar, Gupta, Levine, Hausman, Finn, NeurIPS 2020"
    summary: ClassVar[str] = "projects away conflicting components (random order), sums the rows"

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        gramian = tf.matmul(J, J, transpose_b=True)
        weights = pcgrad_weights(gramian, random_orders(_static_num_tasks(gramian), ctx.seed))
        return Result(weights=weights, state=state, direction=combine_rows(weights, J))


@register
@dataclass(frozen=True)
class GradVac(Strategy):
    """GradVac: raise each pairwise cosine to an EMA target instead of only removing conflicts.

    Paper: Z. Wang, Y. Tsvetkov, O. Firat, Y. Cao, "Gradient Vaccine: Investigating and Improving
    Multi-task Optimization in Massively Multilingual Models", ICLR 2021,
    https://arxiv.org/abs/2010.05874.

    Math: see :func:`gradvac_weights`: for each task ``i`` and each other task ``j`` (random order), if
    ``cos(g_i^PC, g_j) < phi_ij`` add the multiple of ``g_j`` that lifts the cosine exactly to
    ``phi_ij``; update ``phi_ij`` by an EMA of the observed cosine.  ``d = sum_i g_i^PC``.

    Args:
        beta: EMA rate of the target cosines (default ``0.5``), in [0, 1].
        eps: added to the denominators (default ``1e-8``), >= 0.

    State: ``phi`` ``(T, T)``, the EMA target cosines, initially 0 (so the first call equals PCGrad for
    the same visiting order, up to ``eps``).

    Convention: TorchJD 0.18 ``GradVac`` (whole model, on the Gramian, per-task random order of the other
    tasks, sum); the order is drawn from ``ctx.seed`` as for ``pcgrad``.  LibMTL's ``group_type`` 1/2
    (per layer / per tensor) are not offered.
    """

    beta: float = 0.5
    eps: float = 1e-8

    name: ClassVar[str] = "gradvac"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    paper: ClassVar[str] = "Wang, Tsvetkov, Firat, Cao, ICLR 2021"
    summary: ClassVar[str] = "lifts pairwise gradient cosines to EMA targets (PCGrad generalisation)"

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"`beta` must be in [0, 1], received {self.beta}")
        if self.eps < 0:
            raise ValueError(f"`eps` must be >= 0, received {self.eps}")

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"phi": ((num_tasks, num_tasks), 0.0)}

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        gramian = tf.matmul(J, J, transpose_b=True)
        orders = random_orders(_static_num_tasks(gramian), ctx.seed)
        phi = tf.cast(state["phi"], J.dtype)
        weights, phi = gradvac_weights(gramian, phi, orders, self.beta, self.eps)
        return Result(weights=weights, state={"phi": phi}, direction=combine_rows(weights, J))
