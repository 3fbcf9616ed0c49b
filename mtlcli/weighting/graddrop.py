"""GradDrop: randomly keep, per coordinate, only the positive or only the negative task gradients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mtlcli.weighting.base import Context, Result, Strategy
from mtlcli.weighting.registry import register


def projection_coefficients(direction, J):
    """``(d . g_i) / ||g_i||^2`` per task (0 for a zero row): the weights reported by non-weightings."""
    import tensorflow as tf

    return tf.math.divide_no_nan(tf.linalg.matvec(J, direction), tf.reduce_sum(J * J, axis=1))


def graddrop_direction(J, uniform, leak: float):
    """GradDrop's ``d`` for explicit uniform draws ``uniform`` ``(P,)`` (see :class:`GradDrop`)."""
    import tensorflow as tf

    dtype = J.dtype
    purity = 0.5 * (1 + tf.math.divide_no_nan(tf.reduce_sum(J, axis=0), tf.reduce_sum(tf.abs(J), axis=0)))
    u = tf.cast(uniform, dtype)
    keep = tf.logical_or(
        tf.logical_and((purity > u)[None, :], J > 0), tf.logical_and((purity < u)[None, :], J < 0)
    )
    mask = leak + (1 - leak) * tf.cast(keep, dtype)
    return tf.reduce_sum(mask * J, axis=0)


@register
@dataclass(frozen=True)
class GradDrop(Strategy):
    """GradDrop: per coordinate, keep one sign of the task gradients with probability set by their purity.

    Paper: Z. Chen, J. Ngiam, Y. Huang, T. Luong, H. Kretzschmar, Y. Chai, D. Anguelov, "Just Pick a
    Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020,
    https://arxiv.org/abs/2010.06808.

    Math: per column ``k``: purity ``P_k = (1 + sum_i J_ik / sum_i |J_ik|) / 2``, one draw
    ``U_k ~ Uniform[0, 1)`` shared by all tasks; task ``i`` keeps ``J_ik`` if (``P_k > U_k`` and
    ``J_ik > 0``) or (``P_k < U_k`` and ``J_ik < 0``); ``d = sum_i (leak + (1 - leak) M_i) * g_i`` (sum).
    Not a weighting (the mask is per coordinate); ``weights`` reports ``(d . g_i) / ||g_i||^2``.

    Args:
        leak: fraction of every gradient that always passes (default ``0.0``), in [0, 1].

    Convention: TorchJD 0.18 ``GradDrop`` with the identity purity function, one scalar leak for all
    tasks, applied to the given ``J`` (the shared parameters' gradients).  The uniform draws come from
    ``tf.random.stateless_uniform(ctx.seed)``.  All-zero columns (purity 0/0) contribute 0, as in TorchJD
    where the NaN purity drops them.  LibMTL applies GradDrop only to representation gradients multiplied
    by ``sign(input)`` and summed over the batch (with ``+1e-7`` in the denominator).
    """

    leak: float = 0.0

    name: ClassVar[str] = "graddrop"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = False
    paper: ClassVar[str] = "Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov, NeurIPS 2020"
    summary: ClassVar[str] = "random sign-consistent masking of gradient coordinates, then sum"

    def __post_init__(self) -> None:
        if not 0.0 <= self.leak <= 1.0:
            raise ValueError(f"`leak` must be in [0, 1], received {self.leak}")

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        u = tf.random.stateless_uniform(tf.shape(J)[1:], seed=ctx.seed, dtype=J.dtype)
        direction = graddrop_direction(J, u, self.leak)
        return Result(weights=projection_coefficients(direction, J), state=state, direction=direction)
