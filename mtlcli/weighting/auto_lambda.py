"""Auto-Lambda (``weighting: auto_lambda``): task weights learned by a bilevel meta step on a validation
batch, with a finite-difference hypergradient.

The strategy here owns the math over small vectors (the weighted objective, the hypergradient from the
finite differences, the Adam update of the weights); the train step owns what needs the model (the
virtual step of the parameters, the validation gradient, the two perturbed forward passes:
:meth:`mtlcli.model.train_step.MultiTaskModel.train_step`, "Auto-Lambda") and the runner feeds it one
validation batch per training step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from mtlcli.weighting.base import Context, Result, Strategy
from mtlcli.weighting.registry import register

#: The finite-difference step is ``FD_SCALE / ||d||`` along the validation gradient ``d`` (official code).
FD_SCALE = 0.01
#: Adam's constants for the weights (PyTorch's defaults, as the official code's ``optim.Adam``).
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


@register
@dataclass(frozen=True)
class AutoLambda(Strategy):
    """Auto-Lambda: the task weights ``λ`` follow the gradient of the validation loss after a virtual step.

    Paper: Shikun Liu, Stephen James, Andrew J. Davison, Edward Johns, "Auto-Lambda: Disentangling
    Dynamic Task Relationships", TMLR 2022, https://arxiv.org/abs/2202.03091 (official code:
    https://github.com/lorenmt/auto-lambda).

    Math, each step, before the ordinary update (``θ`` every shared and head variable, ``α`` the
    optimizer's current learning rate, ``wd`` its weight decay or 0):
    the virtual step ``θ' = θ - α (∇_θ Σ_i λ_i L_i(θ) + wd θ)`` on the training batch; ``d = ∇_θ'
    Σ_{i primary} L^val_i(θ')`` on a validation batch (the primary task is ``train.primary``, the
    others auxiliary, when the recipe names one; every task otherwise); ``ε = 0.01 / ||d||``,
    ``θ± = θ ± ε d``; the hypergradient ``h = -α (L(θ+) - L(θ-)) / (2ε)`` (the per-task training
    losses: the finite-difference second-order term; the first-order term is 0 as ``L^val`` does not
    depend on ``λ`` directly); one Adam step on ``λ`` with ``h`` (learning rate ``lr``, PyTorch's
    betas and epsilon); then the ordinary step trains on ``Σ_i λ_i L_i`` with the new ``λ`` (the heads
    weighted too, like every loss-based strategy).

    Parameters:
        weight_init: ``0.1``. Every ``λ_i`` at the start (the official ``--autol_init``).
        lr: ``1e-4``. Adam's learning rate for ``λ`` (the official ``--autol_lr``).

    State: ``lambd`` ``(T,)`` and its Adam moments ``meta_m``, ``meta_v`` and step count ``meta_step``
    (checkpointed: a resumed run continues them).

    Cost: the virtual step's backward pass, the validation batch's forward and backward passes and two
    more forward passes of the training batch, on top of the ordinary step: about 4x ``static``.

    Convention: the official ``AutoLambda`` class (``unrolled_backward``, ``compute_hessian``): its
    multi-task setting (every task primary) or, with ``train.primary``, its auxiliary-learning setting
    (binary primary weights in the validation objective; one primary task). Differences: the validation batches come from the recipe's
    validation split (the official trainers draw them from a reshuffled copy of the training set); a
    zero validation gradient gives a zero hypergradient (the official ``0.01 / ||d||`` divides by zero);
    the virtual step is the plain gradient step whatever the optimizer (the official one adds SGD's
    momentum buffer when there is one; with Adam it is this one). Needs a validation split and one
    device (the virtual step assigns the model's variables inside the step); refused otherwise.
    Agreement: two steps of the official class and trainer loop on a PyTorch copy of a small model
    give the same weights to 2e-7 and the same parameter changes to 3e-7 relative (mtl in float32).
    """

    weight_init: float = 0.1
    lr: float = 1e-4

    name: ClassVar[str] = "auto_lambda"
    needs: ClassVar[str] = "losses"
    needs_validation: ClassVar[bool] = True
    paper: ClassVar[str] = "Liu, James, Davison, Johns, TMLR 2022"
    summary: ClassVar[str] = (
        "weights learned by a meta step on a validation batch (finite-difference hypergradient)"
    )

    def __post_init__(self) -> None:
        if not math.isfinite(self.weight_init):
            raise ValueError(f"`weight_init` must be a finite number, received {self.weight_init!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"`lr` must be a finite number > 0, received {self.lr!r}")

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        vector = (num_tasks,)
        return {
            "lambd": (vector, float(self.weight_init)),
            "meta_m": (vector, 0.0),
            "meta_v": (vector, 0.0),
            "meta_step": ((), 0.0),
        }

    def combine(self, losses, params: dict, state: dict, ctx: Context) -> Result:
        import tensorflow as tf

        del params, ctx
        lambd = tf.cast(state["lambd"], losses.dtype)
        return Result(weights=lambd, state=state, loss=tf.reduce_sum(lambd * losses))

    @staticmethod
    def fd_epsilon(norm: Any) -> Any:
        """The finite-difference step ``0.01 / ||d||`` (``||d|| = 0`` gives a finite step: ``h = 0``)."""
        import tensorflow as tf

        return FD_SCALE / tf.maximum(norm, tf.constant(1e-30, norm.dtype))

    @staticmethod
    def hypergradient(alpha: Any, losses_plus: Any, losses_minus: Any, eps: Any) -> Any:
        """``-α (L(θ+) - L(θ-)) / (2ε)``: ``d(validation loss after the virtual step)/dλ``, per task."""
        return -alpha * (losses_plus - losses_minus) / (2.0 * eps)

    def meta_update(self, state: dict, hypergrad: Any) -> dict:
        """One Adam step on ``lambd`` with ``hypergrad`` (PyTorch's ``Adam`` formulas); the new state."""
        import tensorflow as tf

        g = tf.cast(hypergrad, state["lambd"].dtype)
        (b1, b2), step = ADAM_BETAS, state["meta_step"] + 1
        m = b1 * state["meta_m"] + (1 - b1) * g
        v = b2 * state["meta_v"] + (1 - b2) * tf.square(g)
        m_hat = m / (1 - tf.pow(tf.constant(b1, g.dtype), step))
        v_hat = v / (1 - tf.pow(tf.constant(b2, g.dtype), step))
        lambd = state["lambd"] - self.lr * m_hat / (tf.sqrt(v_hat) + ADAM_EPS)
        return {**state, "lambd": lambd, "meta_m": m, "meta_v": v, "meta_step": step}
