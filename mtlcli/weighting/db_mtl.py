"""DB-MTL (``weighting: db_mtl``): balancing of the log-losses' gradients, smoothed by an EMA over steps.

Its EMA of the task gradients is a ``(T, P)`` state, sized by the number ``P`` of columns of ``J``
(the shared parameters), declared by :meth:`DBMTL.sized_state_spec`: the train step creates it when
the model is built, so checkpoints save it and a resumed run continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.graddrop import projection_coefficients
from mtlcli.weighting.registry import register

#: LibMTL DB-MTL's offsets: inside the log (``log(L_i + 1e-8)``) and in the norm ratio.
DB_EPS = 1e-8


@register
@dataclass(frozen=True)
class DBMTL(Strategy):
    """Dual-Balancing MTL: log-losses (loss scale) and gradients rescaled to the largest norm.

    Paper: B. Lin, W. Jiang, F. Ye, Y. Zhang, P. Chen, Y.-C. Chen, S. Liu, J. T. Kwok, "Dual-Balancing
    for Multi-Task Learning", arXiv 2023, https://arxiv.org/abs/2308.12029.

    Math: the rows of ``J`` become the gradients of ``log(L_i + eps)``, ``h_i = g_i / (L_i + eps)``;
    at step ``k`` (1 for the first) the buffer ``B <- h + (beta / k^beta_sigma) (B - h)`` (an EMA,
    ``B = 0`` before the first step); with ``u_i = ||B_i||``, ``alpha_i = max_j u_j / (u_i + eps)``
    and ``d = sum_i alpha_i B_i``: every task contributes with the largest buffered norm.
    ``eps = 1e-8``.  Multiplying one task's loss by ``c > 0`` leaves ``h`` (up to ``eps``) and so
    ``d`` unchanged.  Not a weighting (``d`` mixes past gradients); ``weights`` reports
    ``(d . g_i) / ||g_i||^2``.

    Args:
        beta: EMA factor (default ``0.9``, LibMTL's ``DB_beta``); in ``[0, 1]``.
        beta_sigma: decay exponent of the factor over steps (default ``0.0``, LibMTL's
            ``DB_beta_sigma``: a constant factor); must be >= 0.

    State: ``step`` (the number of updates so far, so a resumed run continues the decay) and, sized by
    ``J``, ``grad_buffer`` ``(T, P)`` (:meth:`sized_state_spec`; absent from ``state``, it is its
    initial zeros: callers that know only ``T`` may leave it out).

    Convention: LibMTL ``DB_MTL`` (same EMA, offsets and defaults; no ``on: representation``, which
    LibMTL refuses too).  Each task head gets the plain gradient of its own loss, as under every
    gradient-based strategy here, where LibMTL's heads get the gradient of ``log(L_i + eps)`` (that
    gradient divided by ``L_i + eps``).
    """

    beta: float = 0.9
    beta_sigma: float = 0.0

    name: ClassVar[str] = "db_mtl"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = False
    paper: ClassVar[str] = "Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Kwok, arXiv 2023"
    summary: ClassVar[str] = "log-losses, EMA of their gradients, each rescaled to the largest norm"

    def __post_init__(self) -> None:
        if not 0 <= self.beta <= 1:
            raise ValueError(f"`beta` must be in [0, 1], received {self.beta}")
        if self.beta_sigma < 0:
            raise ValueError(f"`beta_sigma` must be >= 0, received {self.beta_sigma}")

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"step": ((), 0.0)}

    def sized_state_spec(self, num_tasks: int, num_params: int) -> dict[str, tuple[tuple[int, ...], float]]:
        """State whose shape depends on the number ``num_params`` of columns of ``J``."""
        return {"grad_buffer": ((num_tasks, num_params), 0.0)}

    @staticmethod
    def _buffer(state, J):
        import tensorflow as tf

        return tf.cast(state["grad_buffer"], J.dtype) if "grad_buffer" in state else tf.zeros_like(J)

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        dtype = J.dtype
        eps = tf.constant(DB_EPS, dtype)
        losses = tf.stop_gradient(tf.cast(losses, dtype))
        log_grads = J / (losses + eps)[:, None]
        step = tf.cast(state["step"], dtype) + 1
        rate = tf.constant(self.beta, dtype) / tf.pow(step, tf.constant(self.beta_sigma, dtype))
        buffer = log_grads + rate * (self._buffer(state, J) - log_grads)
        norms = tf.norm(buffer, axis=1)
        alpha = tf.reduce_max(norms) / (norms + eps)
        direction = combine_rows(alpha, buffer)
        new_state = {"step": step, "grad_buffer": buffer}
        return Result(weights=projection_coefficients(direction, J), state=new_state, direction=direction)
