"""CR-MOGM (``weighting: {cr_mogm: {base: upgrad, alpha: 0.9}}``): a wrapper that smooths the task
weights of any gradient-based weighting by an exponential moving average over steps.

The wrapped strategy (``base``) keeps its own state and learnable parameters: they are declared here
under the prefix ``base_`` (:data:`PREFIX`), so the train step creates, saves and restores them as the
wrapper's, and handed back to the base without it each step.  The recipe's ``base`` is checked by
:func:`mtlcli.weighting.registry.check` as a ``weighting:`` value of its own (:attr:`CRMOGM.wraps`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.registry import get, register, wrap_refusal

#: The prefix of the base strategy's state and parameter names inside the wrapper's.
PREFIX = "base_"


def _prefixed(spec: dict) -> dict:
    return {PREFIX + k: v for k, v in spec.items()}


def _unprefixed(values: dict) -> dict:
    return {k[len(PREFIX) :]: v for k, v in values.items() if k.startswith(PREFIX)}


@register
@dataclass(frozen=True)
class CRMOGM(Strategy):
    """CR-MOGM: the base weighting's task weights, smoothed by an EMA across steps.

    Paper: S. Zhou, W. Zhang, J. Jiang, W. Zhong, J. Gu, W. Zhu, "On the Convergence of Stochastic
    Multi-Objective Gradient Manipulation and Beyond", NeurIPS 2022,
    https://proceedings.neurips.cc/paper_files/paper/2022/hash/f91bd64a3620aad8e70a27ad9cb3ca57-Abstract-Conference.html.

    Math: with ``λ̂_k`` the weights the base computes at step ``k`` (1 for the first) from that step's
    ``J``, ``λ_k = alpha · λ_{k-1} + (1 - alpha) · λ̂_k`` and ``d = λ_kᵀJ``.  ``λ_0`` is
    ``initial_weights`` when given, else ``λ̂_1`` (so the first step is the base's own).  ``alpha = 0``
    is the base itself; ``alpha = 1`` freezes the weights at ``λ_0``; constant base weights stay
    constant.  A weighting (``d`` is a weighted sum of this step's rows), so ``every: K`` and the base's
    ``on: representation`` apply.

    Args:
        base: the smoothed strategy, as a ``weighting:`` value (default ``upgrad``; ``mgda``,
            ``{mgda: {normalization: l2}}``, ...): a gradient-based weighting (``weighting = True``).
        alpha: EMA coefficient of the previous weights (default ``0.9``); in ``[0, 1]``.
        initial_weights: ``λ_0`` (default ``null``: the base's first weights), one number per task.

    State: ``step`` (updates so far), ``weights`` ``(T,)`` (``λ_k``), and the base's state and
    parameters prefixed with ``base_`` (its ``(T, P)`` state too, :meth:`sized_state_spec`).

    Convention: TorchJD 0.18 ``CRMOGMWeighting`` exactly (same EMA, ``λ_0`` and ``initial_weights``),
    with a fixed ``alpha``: the paper's Corollary 1 lets ``alpha_k`` grow towards 1 as the learning
    rate decays, TorchJD leaves that schedule to its user's code, which a recipe has not.
    """

    base: Any = "upgrad"
    alpha: float = 0.9
    initial_weights: list[float] | None = None

    name: ClassVar[str] = "cr_mogm"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    paper: ClassVar[str] = "Zhou, Zhang, Jiang, Zhong, Gu, Zhu, NeurIPS 2022"
    summary: ClassVar[str] = "any gradient-based weighting's task weights, smoothed by an EMA over steps"
    #: The field holding the wrapped strategy's spec (:func:`mtlcli.weighting.registry.wrapped_field`).
    wraps: ClassVar[str] = "base"

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"`alpha` must be in [0, 1], received {self.alpha}")
        if self.initial_weights is not None and (
            len(self.initial_weights) == 0 or not all(math.isfinite(float(w)) for w in self.initial_weights)
        ):
            raise ValueError(
                f"`initial_weights` must be a non-empty list of finite numbers, received {self.initial_weights!r}"
            )
        inner = get(self.base)
        reason = wrap_refusal(self.name, type(inner))
        if reason is not None:
            raise ValueError(f"{inner.name} cannot be the base: {reason}")
        object.__setattr__(self, "inner", inner)

    def task_count_problem(self, num_tasks: int) -> tuple[str, str] | None:
        """``initial_weights`` needs one entry per task; then the base's own problem, at ``base``."""
        if self.initial_weights is not None and len(self.initial_weights) != num_tasks:
            return (
                "initial_weights",
                f"expected {num_tasks} weights (one per task), received {len(self.initial_weights)}",
            )
        inner = getattr(self.inner, "task_count_problem", None)
        problem = None if inner is None else inner(num_tasks)
        return None if problem is None else ("base", f"{problem[0]}: {problem[1]}")

    @property
    def on(self) -> str:
        """The base's ``on`` (``parameters`` or ``representation``): what the rows of ``J`` are."""
        return getattr(self.inner, "on", "parameters")

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        own = {"step": ((), 0.0), "weights": ((num_tasks,), 0.0)}
        return {**own, **_prefixed(self.inner.state_spec(num_tasks))}

    def sized_state_spec(self, num_tasks: int, num_params: int) -> dict[str, tuple[tuple[int, ...], float]]:
        """The base's state sized by the number ``num_params`` of columns of ``J``, prefixed."""
        return _prefixed(self.inner.sized_state_spec(num_tasks, num_params))

    def param_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return _prefixed(self.inner.param_spec(num_tasks))

    def get_config(self) -> dict[str, Any]:
        base = self.base if not isinstance(self.base, Strategy) else {self.base.name: self.base.get_config()}
        return {"base": base, "alpha": self.alpha, "initial_weights": self.initial_weights}

    def aggregate(self, J, losses, params: dict, state: dict, ctx: Context) -> Result:
        import tensorflow as tf

        inner = self.inner.update(losses, J, _unprefixed(params), _unprefixed(state), ctx)
        dtype = J.dtype
        current = tf.cast(inner.weights, dtype)
        step = tf.cast(state["step"], dtype)
        if self.initial_weights is None:
            start = current
        else:
            if len(self.initial_weights) != current.shape[0]:
                raise ValueError(
                    f"`cr_mogm.initial_weights` has {len(self.initial_weights)} entries but there are "
                    f"{current.shape[0]} tasks"
                )
            start = tf.constant([float(w) for w in self.initial_weights], dtype)
        previous = tf.where(tf.equal(step, 0), start, tf.cast(state["weights"], dtype))
        alpha = tf.constant(self.alpha, dtype)
        weights = alpha * previous + (1 - alpha) * current
        new_state = {"step": step + 1, "weights": weights, **_prefixed(inner.state)}
        return Result(
            weights=weights,
            state=new_state,
            direction=combine_rows(weights, J),
            param_grads=_prefixed(inner.param_grads or {}),
        )
