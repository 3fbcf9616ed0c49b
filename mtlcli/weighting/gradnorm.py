"""GradNorm: learn task weights that equalise the weighted gradient norms' training rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.registry import register


@register
@dataclass(frozen=True)
class GradNorm(Strategy):
    """GradNorm: weights whose gradient norms grow with each task's relative inverse training rate.

    Paper: Z. Chen, V. Badrinarayanan, C.-Y. Lee, A. Rabinovich, "GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018, https://arxiv.org/abs/1711.02257.

    Math: learnable logits ``s`` (param ``logits``, init 1), weights ``lambda = T softmax(s)`` (so they
    always sum to ``T``, the paper's renormalisation).  With ``n_i = ||g_i|| = sqrt(G_ii)``,
    ``N_i = lambda_i n_i``, ``r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))``, the auxiliary loss is
    ``sum_i |N_i - stop_grad(mean(N) r_i^alpha)|``; its exact gradient w.r.t. ``s`` is returned in
    ``param_grads["logits"]`` (``T z_k (a_k - sum_i z_i a_i)`` with ``z = softmax(s)`` and
    ``a_i = sign(N_i - target_i) n_i``) and applied by the model's optimizer.  The update direction is
    ``d = lambda^T J`` with the current (pre-update) ``lambda``.

    Args:
        alpha: restoring-force strength (default ``1.5``, LibMTL's default; the paper tunes it per task).

    State: ``initial_losses`` = ``L(0)`` and ``recorded`` (0/1).  ``L(0)`` is the first step's losses
    (the paper's definition of the initial loss); LibMTL instead uses the epoch-0 mean loss and trains
    with a plain sum during epoch 0.  Zero initial losses give ratio 0 for that task (no division by 0).

    Convention: LibMTL ``GradNorm`` (``lambda = T softmax(s)``, init 1, detached target including
    ``mean(N)``, L1 auxiliary loss), with the step-0 reference above.  Gradient norms are those of
    whatever ``J`` holds (shared parameters, or the representation with ``on: representation`` where the
    train step supports it).  Not in TorchJD 0.18.
    """

    alpha: float = 1.5
    #: ``parameters`` (per-task gradients of the shared variables) or ``representation`` (gradients of the
    #: shared representation, MGDA-UB style: one backward pass; LibMTL's ``rep_grad``).
    on: Literal["parameters", "representation"] = "parameters"

    name: ClassVar[str] = "gradnorm"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    paper: ClassVar[str] = "Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018"
    summary: ClassVar[str] = "learned weights T*softmax(s) balancing gradient norms by training rate"

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"`alpha` must be >= 0, received {self.alpha}")

    def param_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"logits": ((num_tasks,), 1.0)}

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"initial_losses": ((num_tasks,), 0.0), "recorded": ((), 0.0)}

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        dtype = J.dtype
        losses = tf.stop_gradient(tf.cast(losses, dtype))
        recorded = tf.cast(state["recorded"], dtype) > 0
        initial = tf.where(recorded, tf.cast(state["initial_losses"], dtype), losses)

        s = tf.cast(params["logits"], dtype)
        z = tf.nn.softmax(s)
        num_tasks = tf.cast(tf.shape(J)[0], dtype)
        lam = num_tasks * z

        gramian = tf.matmul(J, J, transpose_b=True)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gramian), 0))
        weighted_norms = lam * norms
        ratios = tf.math.divide_no_nan(losses, initial)
        rel = tf.math.divide_no_nan(ratios, tf.reduce_mean(ratios))
        target = tf.reduce_mean(weighted_norms) * tf.pow(rel, tf.constant(self.alpha, dtype))
        a = tf.sign(weighted_norms - target) * norms  # d aux / d lambda_i
        grad_s = num_tasks * z * (a - tf.reduce_sum(z * a))  # softmax VJP, times T

        d = combine_rows(lam, J)
        new_state = {"initial_losses": initial, "recorded": tf.ones_like(tf.cast(state["recorded"], dtype))}
        return Result(weights=lam, state=new_state, direction=d, param_grads={"logits": grad_s})
