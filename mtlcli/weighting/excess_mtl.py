"""ExcessMTL (``weighting: excess_mtl``): task weights moved by exponentiated gradient on excess risks.

Its running sum of squared task gradients (an AdaGrad-style diagonal Hessian) is a ``(T, P)`` state,
sized by the number ``P`` of columns of ``J`` (the shared parameters), declared by
:meth:`ExcessMTL.sized_state_spec`: the train step creates it when the model is built, so checkpoints
save it and a resumed run continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.registry import register

#: TorchJD's offsets: inside the square root of the squared-gradient sum, and under the baseline.
EXCESS_EPS = 1e-7


@register
@dataclass(frozen=True)
class ExcessMTL(Strategy):
    """ExcessMTL: weights on the simplex, moved towards the tasks with the largest (relative) excess risk.

    Paper: Y. He, S. Zhou, G. Zhang, H. Yun, Y. Xu, B. Zeng, T. Chilimbi, H. Zhao, "Robust Multi-Task
    Learning with Excess Risks", ICML 2024, https://proceedings.mlr.press/v235/he24n.html.

    Math: at every call the squared rows are summed into ``S <- S + J∘J`` (``S = 0`` before the first
    call) and the excess risk of task ``i`` is estimated by a second-order expansion with that diagonal
    Hessian, ``e_i = Σ_p J_ip² / sqrt(S_ip + 1e-7)`` (eqs. 6-7).  The first ``n_warmup_steps`` calls
    keep the weights uniform and add ``e`` up; the baseline ``b`` is then their mean (or, without
    warm-up, the first call's ``e`` itself, used unscaled that call), and afterwards
    ``e_i <- e_i / (b_i + 1e-7)`` (scale processing, section 3.2).  The weights take an exponentiated
    gradient step ``w <- softmax(log w + robust_step_size · e)`` (eq. 9) from ``w = 1/T``, and
    ``d = wᵀJ``.  Multiplying one task's gradients by ``c > 0`` changes nothing after the first call
    (both ``e_i`` and ``b_i`` scale by ``c``, up to the offsets).

    Args:
        robust_step_size: step size ``eta`` of the exponentiated update (default ``1.0``); > 0.
        n_warmup_steps: calls with uniform weights that collect the baseline (default ``0``: the first
            call's excess risks are the baseline, as in the official code and LibMTL); >= 0.  With
            ``every: K`` they count the steps that compute new weights.

    State: ``step`` (calls so far), ``weights`` ``(T,)``, ``baseline`` ``(T,)`` (the warm-up's running
    sum until it ends) and, sized by ``J``, ``sq_grad_sum`` ``(T, P)`` (:meth:`sized_state_spec`;
    absent from ``state``, it is its initial zeros).

    Convention: TorchJD 0.18 ``ExcessMTL`` exactly (weights from ``1/T``, not LibMTL's ``1``, so they
    stay on the simplex; the update in log space, so a huge excess risk saturates instead of
    overflowing).  No ``on: representation``: ``S`` is sized by the shared parameters.
    """

    robust_step_size: float = 1.0
    n_warmup_steps: int = 0

    name: ClassVar[str] = "excess_mtl"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    paper: ClassVar[str] = "He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi, Zhao, ICML 2024"
    summary: ClassVar[str] = "simplex weights by exponentiated gradient on each task's relative excess risk"

    def __post_init__(self) -> None:
        if not self.robust_step_size > 0:
            raise ValueError(f"`robust_step_size` must be > 0, received {self.robust_step_size}")
        if self.n_warmup_steps < 0:
            raise ValueError(f"`n_warmup_steps` must be >= 0, received {self.n_warmup_steps}")

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {
            "step": ((), 0.0),
            "weights": ((num_tasks,), 1.0 / num_tasks),
            "baseline": ((num_tasks,), 0.0),
        }

    def sized_state_spec(self, num_tasks: int, num_params: int) -> dict[str, tuple[tuple[int, ...], float]]:
        """State whose shape depends on the number ``num_params`` of columns of ``J``."""
        return {"sq_grad_sum": ((num_tasks, num_params), 0.0)}

    def aggregate(self, J, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        del losses, params, ctx
        dtype = J.dtype
        eps = tf.constant(EXCESS_EPS, dtype)
        J = tf.stop_gradient(J)
        squares = tf.square(J)
        previous = tf.cast(state["sq_grad_sum"], dtype) if "sq_grad_sum" in state else tf.zeros_like(J)
        sq_grad_sum = previous + squares
        excess = tf.reduce_sum(squares / tf.sqrt(sq_grad_sum + eps), axis=1)
        step = tf.cast(state["step"], dtype)
        weights = tf.cast(state["weights"], dtype)
        baseline = tf.cast(state["baseline"], dtype)
        warmup = float(self.n_warmup_steps)
        in_warmup = step < warmup
        first = tf.equal(step, warmup)
        if self.n_warmup_steps > 0:
            new_baseline = tf.where(first, baseline / warmup, baseline)
            scaled = excess / (new_baseline + eps)
        else:
            new_baseline = tf.where(first, excess, baseline)
            scaled = tf.where(first, excess, excess / (new_baseline + eps))
        moved = tf.nn.softmax(tf.math.log(weights) + tf.constant(self.robust_step_size, dtype) * scaled)
        new_weights = tf.where(in_warmup, weights, moved)
        new_baseline = tf.where(in_warmup, baseline + excess, new_baseline)
        new_state = {
            "step": step + 1,
            "weights": new_weights,
            "baseline": new_baseline,
            "sq_grad_sum": sq_grad_sum,
        }
        return Result(weights=new_weights, state=new_state, direction=combine_rows(new_weights, J))
