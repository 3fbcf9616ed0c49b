"""MoCo (``weighting: moco``): a tracked (EMA) estimate of the task gradients and softmax-projected
MGDA-style weights.

The tracked gradients are a ``(T, P)`` state, sized by the number ``P`` of columns of ``J`` (the shared
parameters), declared by :meth:`MoCo.sized_state_spec`: the train step creates it when the model is
built, so checkpoints save it and a resumed run continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.graddrop import projection_coefficients
from mtlcli.weighting.registry import register

#: LibMTL MoCo's offset in the gradient normalisation ``g_i / (||g_i|| + 1e-8)``.
MOCO_EPS = 1e-8


@register
@dataclass(frozen=True)
class MoCo(Strategy):
    """MoCo: MGDA-like weights on a bias-corrected, tracked estimate of the task gradients.

    Paper: H. D. Fernando, H. Shen, M. Liu, S. Chaudhury, K. Murugesan, T. Chen, "Mitigating Gradient
    Bias in Multi-objective Learning: A Provably Convergent Approach", ICLR 2023,
    https://openreview.net/forum?id=dLAYGdKTi2.

    Math: at step ``k`` (1 for the first), ``h_i = L_i g_i / (||g_i|| + eps)``,
    ``Y <- Y - (beta / k^beta_sigma) (Y - h)`` (``Y = 0`` before the first step),
    ``lambda <- softmax(lambda - (gamma / k^gamma_sigma) (Y Y^T + rho I) lambda)`` (``1/T`` before the
    first step) and ``d = Y^T lambda``.  ``eps = 1e-8``.  Not a weighting (``d`` is built from ``Y``,
    not from this step's ``J``); ``weights`` reports ``(d . g_i) / ||g_i||^2`` (``lambda`` is in the
    state).

    Args:
        beta: step size of the tracked gradients (default ``0.5``, LibMTL's ``MoCo_beta``).
        beta_sigma: its decay exponent over steps (default ``0.5``, ``MoCo_beta_sigma``).
        gamma: step size of ``lambda`` (default ``0.1``, ``MoCo_gamma``).
        gamma_sigma: its decay exponent (default ``0.5``, ``MoCo_gamma_sigma``).
        rho: L2 regularisation of ``lambda``'s update (default ``0.0``, ``MoCo_rho``).
        All must be >= 0.

    State: ``step`` (updates so far), ``lambd`` ``(T,)`` and, sized by ``J``, ``y`` ``(T, P)``
    (:meth:`sized_state_spec`; absent from ``state``, it is its initial zeros); a resumed run continues
    the same decays.

    Convention: LibMTL ``MoCo`` (the authors' code: same update order, offsets and defaults; no
    ``on: representation``, which LibMTL refuses too); each head gets the plain gradient of its own
    loss (as in LibMTL).
    """

    beta: float = 0.5
    beta_sigma: float = 0.5
    gamma: float = 0.1
    gamma_sigma: float = 0.5
    rho: float = 0.0

    name: ClassVar[str] = "moco"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = False
    paper: ClassVar[str] = "Fernando, Shen, Liu, Chaudhury, Murugesan, Chen, ICLR 2023"
    summary: ClassVar[str] = "EMA-tracked loss-scaled unit gradients, softmax-projected MGDA weights"

    def __post_init__(self) -> None:
        for field in ("beta", "beta_sigma", "gamma", "gamma_sigma", "rho"):
            if getattr(self, field) < 0:
                raise ValueError(f"`{field}` must be >= 0, received {getattr(self, field)}")

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"step": ((), 0.0), "lambd": ((num_tasks,), 1.0 / num_tasks)}

    def sized_state_spec(self, num_tasks: int, num_params: int) -> dict[str, tuple[tuple[int, ...], float]]:
        """State whose shape depends on the number ``num_params`` of columns of ``J``."""
        return {"y": ((num_tasks, num_params), 0.0)}

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        dtype = J.dtype
        losses = tf.stop_gradient(tf.cast(losses, dtype))
        norms = tf.norm(J, axis=1)
        scaled = J / (norms + tf.constant(MOCO_EPS, dtype))[:, None] * losses[:, None]
        step = tf.cast(state["step"], dtype) + 1
        beta = tf.constant(self.beta, dtype) / tf.pow(step, tf.constant(self.beta_sigma, dtype))
        gamma = tf.constant(self.gamma, dtype) / tf.pow(step, tf.constant(self.gamma_sigma, dtype))
        y = tf.cast(state["y"], dtype) if "y" in state else tf.zeros_like(J)
        y = y - beta * (y - scaled)
        lambd = tf.cast(state["lambd"], dtype)
        num_tasks = tf.shape(J)[0]
        regularised = tf.matmul(y, y, transpose_b=True) + self.rho * tf.eye(num_tasks, dtype=dtype)
        lambd = tf.nn.softmax(lambd - gamma * tf.linalg.matvec(regularised, lambd))
        direction = combine_rows(lambd, y)
        new_state = {"step": step, "lambd": lambd, "y": y}
        return Result(weights=projection_coefficients(direction, J), state=new_state, direction=direction)
