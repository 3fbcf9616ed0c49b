"""SDMGrad (``weighting: sdmgrad``): direction-oriented task weights from the product ``J1 J2ᵀ`` of two
independent mini-batches' Jacobians, by a fixed number of projected momentum-SGD steps per training step.

A two-batch strategy like MoDo (:mod:`mtlcli.weighting.modo`, whose simplex projection it uses): ``J``
is ``(2, T, P)``, the task gradients of the two halves of the training batch (see
:mod:`mtlcli.model.train_step`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.modo import check_positive, project_onto_simplex, two_batches
from mtlcli.weighting.registry import register

#: The offset in SDMGrad's scale normalisation ``A / (s² + 1e-8)`` (TorchJD, LibMTL, the authors' code).
SDMGRAD_EPS = 1e-8


@register
@dataclass(frozen=True)
class SDMGrad(Strategy):
    """SDMGrad: weights whose direction stays near a preferred one (the mean), from two independent batches.

    Paper: Peiyao Xiao, Hao Ban, Kaiyi Ji, "Direction-oriented Multi-objective Learning: Simple and
    Provable Stochastic Algorithms", NeurIPS 2023, https://arxiv.org/abs/2305.18409.

    Math: with ``A = J1 J2ᵀ`` (``J1``, ``J2`` the ``(T, P)`` task gradients of two independent
    mini-batches; not symmetric in general), ``s`` the mean of ``sqrt(max(A_ii, 0))`` and
    ``a = A / (s² + 1e-8)``, ``n_iter`` steps of momentum SGD projected on the simplex from the last
    step's ``w`` (``1/T`` before the first step): ``g = a (w + λ w̃)``, ``v = g`` on the first iteration
    and ``v = momentum·v + g`` after, ``w <- Π_Δ(w - lr·v)``; then the weights are
    ``(w + λ w̃) / (1 + λ)`` (on the simplex) and ``d = weightsᵀ (J1 + J2) / 2``.

    Parameters:
        lr: ``10.0``. Step size of the inner SGD (> 0).
        momentum: ``0.5``. Its momentum (in ``[0, 1)``); the velocity starts afresh every training step.
        n_iter: ``20``. Inner iterations per training step (>= 1).
        lambda_: ``0.3``. How strongly the direction is pulled toward the preferred one ``w̃ᵀJ`` (>= 0);
            the authors' experiments' value (their class default is 0.6), as TorchJD and LibMTL.
        pref_vector: ``None`` (= ``1/T`` for every task, the mean gradient). The preference ``w̃``.

    State: ``w`` ``(T,)``, the inner solver's iterate (checkpointed: a resumed run continues it).

    Convention: TorchJD 0.18 ``SDMGradWeighting`` exactly on ``A`` (same normalisation, inner solver and
    defaults; parameter names as TorchJD's).  TorchJD's example (like the paper's algorithm, with its
    batches ξ, ξ', ζ) updates the parameters with a third batch; mtl uses the two halves of the training
    batch for ``A`` and their mean loss for the update, as for MoDo (:mod:`mtlcli.weighting.modo` says
    why).  No ``on: representation`` (``J1 J2ᵀ`` over the representation is zero: the halves' rows
    live on different examples' coordinates).  ``every: K`` is accepted.
    """

    lr: float = 10.0
    momentum: float = 0.5
    n_iter: int = 20
    lambda_: float = 0.3
    pref_vector: list[float] | None = None

    name: ClassVar[str] = "sdmgrad"
    needs: ClassVar[str] = "gradients"
    weighting: ClassVar[bool] = True
    batches: ClassVar[int] = 2
    paper: ClassVar[str] = "Xiao, Ban, Ji, NeurIPS 2023"
    summary: ClassVar[str] = (
        "simplex weights near the mean direction, from J1 J2ᵀ of two independent half-batches"
    )

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)
        if not (0.0 <= self.momentum < 1.0):
            raise ValueError(f"`momentum` must be in [0, 1), received {self.momentum!r}")
        if self.n_iter < 1:
            raise ValueError(f"`n_iter` must be an integer >= 1, received {self.n_iter!r}")
        check_positive("lambda_", self.lambda_, allow_zero=True)
        if self.pref_vector is not None and (
            len(self.pref_vector) == 0 or not all(math.isfinite(float(p)) for p in self.pref_vector)
        ):
            raise ValueError(
                f"`pref_vector` must be a non-empty list of finite numbers, received {self.pref_vector!r}"
            )

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"w": ((num_tasks,), 1.0 / num_tasks)}

    def _preference(self, m: int, dtype: Any) -> Any:
        import tensorflow as tf

        if self.pref_vector is None:
            return tf.fill([m], tf.constant(1.0 / m, dtype))
        if len(self.pref_vector) != m:
            raise ValueError(
                f"`sdmgrad.pref_vector` has {len(self.pref_vector)} entries but there are {m} tasks"
            )
        return tf.constant([float(p) for p in self.pref_vector], dtype)

    def aggregate(self, J, losses, params: dict, state: dict, ctx: Context) -> Result:
        import tensorflow as tf

        del losses, params, ctx
        J1, J2 = two_batches(J, self.name)
        # The inner solve runs in float64 whatever J's dtype: when no diagonal entry of A is positive
        # the normalisation divides by 1e-8 (as the reference does), and lr · a then reaches 1e7 and
        # more, beyond what a float32 simplex projection resolves (measured: NaN weights in training).
        A = tf.cast(tf.matmul(J1, J2, transpose_b=True), tf.float64)
        pref = self._preference(J.shape[1], tf.float64)
        scale = tf.reduce_mean(tf.sqrt(tf.maximum(tf.linalg.diag_part(A), 0.0)))
        a = A / (tf.square(scale) + SDMGRAD_EPS)
        w = tf.cast(state["w"], tf.float64)
        velocity = None
        for _ in range(self.n_iter):  # a few (T, T) products: unrolled in the graph
            grad = tf.linalg.matvec(a, w + self.lambda_ * pref)
            velocity = grad if velocity is None else self.momentum * velocity + grad
            w = project_onto_simplex(w - self.lr * velocity)
        weights = tf.cast((w + self.lambda_ * pref) / (1.0 + self.lambda_), J.dtype)
        w = tf.cast(w, J.dtype)
        return Result(weights=weights, state={"w": w}, direction=combine_rows(weights, (J1 + J2) / 2))
