"""Constant: fixed, raw task weights on the task gradients (TorchJD's ``Constant`` aggregator)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mtlcli.weighting.base import Result, Strategy, combine_rows
from mtlcli.weighting.registry import register


@register
@dataclass(frozen=True)
class Constant(Strategy):
    """A fixed linear combination ``d = wᵀJ`` of the task gradients, with the weights as given.

    Paper: none (TorchJD's ``Constant`` aggregator, Quinton & Rey, arXiv 2406.16232).

    Math: ``d = Σ_i w_i g_i`` with ``w = weights`` (or the recipe's per-task ``weight`` values when
    ``weights`` is not given), every step.  ``d`` is linear in ``J``.

    Parameters:
        weights: ``null`` (= each task's ``weight`` from the recipe, raw). A list of one number per task,
            in the order of ``model.tasks``; its length must equal the number of tasks.

    How it differs from ``static``: ``static`` is loss-based — it differentiates
    ``Σ_i w_i L_i`` with the recipe's weights *normalised to sum 1*, so the task heads are weighted too.
    ``constant`` is gradient-based (TorchJD's ``mtl_backward`` convention): the shared layers get
    ``Σ_i w_i g_i`` with the weights *as written* (not normalised), and each task head gets the
    ordinary, unweighted gradient of its own loss.  It costs a per-task Jacobian each step (use
    ``static`` when the heads may be weighted).

    Convention: TorchJD 0.18 ``Constant(weights)`` exactly (weights neither normalised nor clipped;
    negative weights are accepted, as there).
    """

    name = "constant"
    needs = "gradients"
    weighting = True
    paper = "TorchJD Constant aggregator (Quinton & Rey, arXiv 2406.16232)"
    summary = "fixed raw weights on the task gradients, heads unweighted (TorchJD mtl_backward)"

    weights: list[float] | None = None

    def __post_init__(self) -> None:
        if self.weights is None:
            return
        if (
            not isinstance(self.weights, list | tuple)
            or len(self.weights) == 0
            or not all(
                isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w)
                for w in self.weights
            )
        ):
            raise ValueError(
                f"`weights` must be a non-empty list of finite numbers (one per task), "
                f"received {self.weights!r}"
            )

    def task_count_problem(self, num_tasks: int) -> tuple[str, str] | None:
        if self.weights is not None and len(self.weights) != num_tasks:
            return (
                "weights",
                f"constant.weights needs one weight per task: expected {num_tasks} weights, "
                f"received {len(self.weights)} ({list(self.weights)!r})",
            )
        return None

    def aggregate(self, J, losses, params: dict, state: dict, ctx) -> Result:
        import tensorflow as tf

        del losses, params
        problem = self.task_count_problem(J.shape[0])
        if problem is not None:
            raise ValueError(problem[1])
        if self.weights is None:
            w = tf.cast(ctx.task_weights, J.dtype)
        else:
            w = tf.constant([float(v) for v in self.weights], J.dtype)
        return Result(weights=w, state=state, direction=combine_rows(w, J))
