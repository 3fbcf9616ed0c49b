"""MoDo (``weighting: modo``): task weights from the product ``J1 J2ᵀ`` of two independent mini-batches'
Jacobians, updated by one projected gradient step per training step; and the Euclidean projection onto
the probability simplex it shares with SDMGrad (:func:`project_onto_simplex`).

MoDo and SDMGrad are the two-batch strategies (``batches = 2``, :class:`mtlcli.weighting.Strategy`):
their ``J`` is ``(2, T, P)``, the task gradients of two independent halves of the training batch. How
the train step draws them, and what it costs, is in :mod:`mtlcli.model.train_step` ("Two-batch
strategies"); in short, each batch is split into its first and second half of rows, each half has its
own forward pass and ``T`` gradients (so about the cost of one full-batch Jacobian), and the shared
variables get ``w · (J1 + J2) / 2`` (the gradient of the halves' mean loss, TorchJD's example).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.registry import register


def project_onto_simplex(y: Any) -> Any:
    """Euclidean projection of the vector ``y`` ``(m,)`` onto the probability simplex.

    The sort-based closed form (Held, Wolfe and Crowder 1974; Chen and Ye 2011): with ``u`` the entries
    sorted in decreasing order and ``k`` the largest index with ``u_k > (Σ_{j<=k} u_j - 1) / k``, the
    projection is ``max(y - θ, 0)`` with ``θ = (Σ_{j<=k} u_j - 1) / k``.  TorchJD's
    ``project_onto_simplex`` (Chen and Ye's loop) finds the same ``θ``.
    """
    import tensorflow as tf

    m = y.shape[-1]
    u = tf.sort(y, direction="DESCENDING")
    css = tf.cumsum(u) - 1.0
    ks = tf.range(1, m + 1, dtype=y.dtype)
    # >= 1 in exact arithmetic (u_1 - (u_1 - 1) = 1 > 0); not always in floating point for huge u_1
    count = tf.maximum(tf.reduce_sum(tf.cast(u - css / ks > 0, tf.int32)), 1)
    theta = css[count - 1] / tf.cast(count, y.dtype)
    return tf.maximum(y - theta, 0.0)


def two_batches(J: Any, name: str) -> tuple[Any, Any]:
    """``(J1, J2)`` from the ``(2, T, P)`` input of a two-batch strategy (a clear error otherwise)."""
    if J.shape.rank != 3 or J.shape[0] != 2:
        raise ValueError(
            f"{name} reads the task gradients of two independent mini-batches: `J` must have shape "
            f"(2, tasks, params), received {tuple(J.shape)}"
        )
    return J[0], J[1]


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """A finite number > 0 (or >= 0 with ``allow_zero``), else a ValueError naming the parameter."""
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be a finite number {bound}, received {value!r}")


@register
@dataclass(frozen=True)
class MoDo(Strategy):
    """MoDo: stochastic MGDA-style weights from two independent batches, one projected step per step.

    Paper: Lisha Chen, Heshan Fernando, Yiming Ying, Tianyi Chen, "Three-Way Trade-Off in
    Multi-Objective Learning: Optimization, Generalization and Conflict-Avoidance", JMLR 25 (2024),
    https://www.jmlr.org/papers/volume25/23-1287/23-1287.pdf.

    Math: with ``G = J1 J2ᵀ`` (``J1``, ``J2`` the ``(T, P)`` task gradients of two independent
    mini-batches: an unbiased estimate of the Gramian ``J Jᵀ``, where ``J1 J1ᵀ`` would be biased),
    ``λ <- Π_Δ(λ - γ (G λ + ρ λ))`` (``λ = 1/T`` before the first step, ``Π_Δ`` the Euclidean
    projection onto the simplex), ``w = λ`` and ``d = wᵀ (J1 + J2) / 2`` (eq. 2.9b: the parameter
    update uses both batches).  ``weights`` are on the simplex.

    Parameters:
        gamma: ``0.1``. Step size of the update of ``λ`` (> 0).
        rho: ``0.1``. L2 regularisation of ``λ`` (>= 0).

    State: ``lambd`` ``(T,)``, the weights (checkpointed: a resumed run continues them).

    Convention: TorchJD 0.18 ``MoDoWeighting(gamma, rho)`` exactly on ``G`` (same update, same
    defaults), with its two-batch example for the update: the train step's two batches are the halves of
    each training batch (:mod:`mtlcli.model.train_step`).  Its three-batch example (and LibMTL's, and the
    authors' ``three_grads``) updates the parameters with a third batch independent of ``λ``; mtl does
    not offer it: at the same cost it updates from a third of the batch instead of all of it (more
    variance), and the dependence it removes is O(1/batch).  No ``on: representation``: the two halves'
    gradients w.r.t. the representation live on different examples' coordinates, so ``J1 J2ᵀ = 0``.
    ``every: K`` is accepted (``λ`` then takes one step per K training steps).
    """

    gamma: float = 0.1
    rho: float = 0.1

    name: ClassVar[str] = "modo"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    batches: ClassVar[int] = 2
    paper: ClassVar[str] = "Chen, Fernando, Ying, Chen, JMLR 2024"
    summary: ClassVar[str] = "simplex weights by a projected step on J1 J2ᵀ of two independent half-batches"

    def __post_init__(self) -> None:
        check_positive("gamma", self.gamma)
        check_positive("rho", self.rho, allow_zero=True)

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"lambd": ((num_tasks,), 1.0 / num_tasks)}

    def aggregate(self, J, losses, params: dict, state: dict, ctx: Context) -> Result:
        import tensorflow as tf

        del losses, params, ctx
        J1, J2 = two_batches(J, self.name)
        G = tf.matmul(J1, J2, transpose_b=True)
        lambd = tf.cast(state["lambd"], J.dtype)
        step = tf.linalg.matvec(G, lambd) + self.rho * lambd
        lambd = project_onto_simplex(lambd - self.gamma * step)
        return Result(weights=lambd, state={"lambd": lambd}, direction=combine_rows(lambd, (J1 + J2) / 2))
