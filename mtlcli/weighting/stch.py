"""Log-transformed loss objectives: the scale-invariant ``log_sum`` and smooth Tchebycheff (STCH).

Both are loss-based (one backward pass).  ``log_sum`` is ``sum_i log L_i``; STCH trains with that same
objective during its warm-up epochs, records the mean losses of the last warm-up epoch as the nadir
point, and then minimises a smoothed maximum of the log-losses relative to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mtlcli.weighting.base import Context, Result, Strategy
from mtlcli.weighting.registry import register

#: LibMTL STCH's offset inside every log (``torch.log(losses + 1e-20)``).
STCH_EPS = 1e-20


@register
@dataclass(frozen=True)
class LogSum(Strategy):
    """Scale-invariant loss: the sum of the log task losses.

    Paper: the "scale-invariant" (SI) baseline of A. Navon, A. Shamsian, I. Achituve, H. Maron,
    K. Kawaguchi, G. Chechik, E. Fetaya, "Multi-Task Learning as a Bargaining Game", ICML 2022,
    https://arxiv.org/abs/2202.01017.

    Math: ``L = sum_i log L_i``; effective weights ``dL/dL_i = 1 / L_i``, so the shared gradient
    ``sum_i g_i / L_i`` does not change when one task's loss is multiplied by a constant.  No
    parameters.

    Convention: not a LibMTL weighting; its objective is LibMTL ``STCH``'s warm-up objective
    (``log(L_i + 1e-20)``), with the same ``1e-20`` offset, so a zero loss gives a finite (very large)
    weight instead of ``-inf``.
    """

    name: ClassVar[str] = "log_sum"
    paper: ClassVar[str] = "scale-invariant baseline (Navon et al., ICML 2022)"
    summary: ClassVar[str] = "sum_i log L_i: scale-invariant, weights 1/L_i"

    def combine(self, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        shifted = losses + tf.constant(STCH_EPS, losses.dtype)
        loss = tf.reduce_sum(tf.math.log(shifted))
        return Result(weights=tf.stop_gradient(1 / shifted), state=state, loss=loss)


@register
@dataclass(frozen=True)
class STCH(Strategy):
    """Smooth Tchebycheff scalarisation of the log-losses relative to a nadir point from warm-up.

    Paper: X. Lin, X. Zhang, Z. Yang, F. Liu, Z. Wang, Q. Zhang, "Smooth Tchebycheff Scalarization for
    Multi-Objective Optimization", ICML 2024, https://arxiv.org/abs/2402.19078.

    Math: during epochs ``0 .. warmup_epoch`` (0-based ``ctx.epoch``), ``L = sum_i log(L_i + eps)``
    (``log_sum``), and the losses of epoch ``warmup_epoch`` are averaged into the nadir point ``z``.
    From epoch ``warmup_epoch + 1`` on, with ``l_i = log(L_i / z_i + eps)`` and ``m = max_i l_i``
    (no gradient), ``L = T (m + mu log sum_i exp((l_i - m) / mu))`` = ``T mu log sum_i exp(l_i / mu)``,
    a smooth maximum of the ``l_i`` (``-> T max_i l_i`` as ``mu -> 0``); effective weights
    ``T softmax(l / mu)_i / (L_i + eps z_i)``.  ``eps = 1e-20``.

    Args:
        mu: smoothing ``mu`` (default ``1.0``, LibMTL's ``STCH_mu``); must be > 0.
        warmup_epoch: the epoch whose mean losses become the nadir point (default ``4``, LibMTL's
            ``STCH_warmup_epoch``; ``0`` takes the first epoch's); must be >= 0.

    State: ``warm_sum`` / ``warm_count`` accumulate the losses of epoch ``warmup_epoch``; ``nadir`` and
    ``nadir_set`` (0/1) hold the nadir point, fixed on the first step after the warm-up.  All of it is
    in model variables, so a resumed run continues with the same nadir point.

    Convention: LibMTL ``STCH`` (same phases, ``eps``, ``T`` factor and defaults), with two deliberate
    differences: the objective's value adds back the detached shift ``m`` that LibMTL subtracts before
    the log-sum-exp (LibMTL's logged loss is ``T (STCH - m)``; the gradients are identical), and a run
    that reaches the post-warm-up phase without a recorded warm-up step (resumed from a model trained
    with another strategy) takes the first such step's losses as the nadir point instead of dividing by
    zero.  Nadir entries are clamped below at the dtype's smallest normal number.
    """

    mu: float = 1.0
    warmup_epoch: int = 4

    name: ClassVar[str] = "stch"
    paper: ClassVar[str] = "Lin, Zhang, Yang, Liu, Wang, Zhang, ICML 2024"
    summary: ClassVar[str] = "smooth max of log(L_i/nadir), nadir = mean losses of the warm-up epoch"

    def __post_init__(self) -> None:
        if not self.mu > 0:
            raise ValueError(f"`mu` must be > 0, received {self.mu}")
        if self.warmup_epoch < 0:
            raise ValueError(f"`warmup_epoch` must be >= 0, received {self.warmup_epoch}")

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {
            "warm_sum": ((num_tasks,), 0.0),
            "warm_count": ((), 0.0),
            "nadir": ((num_tasks,), 0.0),
            "nadir_set": ((), 0.0),
        }

    def combine(self, losses, params, state, ctx: Context) -> Result:
        import numpy as np
        import tensorflow as tf

        dtype = losses.dtype
        eps = tf.constant(STCH_EPS, dtype)
        detached = tf.stop_gradient(losses)
        epoch = tf.cast(ctx.epoch, tf.int64)
        warm = epoch <= self.warmup_epoch
        record = tf.equal(epoch, self.warmup_epoch)
        warm_sum = tf.cast(state["warm_sum"], dtype)
        warm_count = tf.cast(state["warm_count"], dtype)
        nadir_set = tf.cast(state["nadir_set"], dtype) > 0

        # the nadir point, fixed on the first step after the warm-up (ones while warming up, so the
        # unused smooth-max branch stays finite and its zero gradient is not 0 * inf)
        recorded = tf.where(warm_count > 0, tf.math.divide_no_nan(warm_sum, warm_count), detached)
        nadir = tf.where(nadir_set, tf.cast(state["nadir"], dtype), recorded)
        nadir = tf.maximum(nadir, tf.constant(np.finfo(dtype.as_numpy_dtype).tiny, dtype))
        z = tf.where(warm, tf.ones_like(nadir), nadir)

        num_tasks = tf.cast(tf.size(losses), dtype)
        mu = tf.constant(self.mu, dtype)
        logs = tf.math.log(losses / z + eps)
        shift = tf.stop_gradient(tf.reduce_max(logs))
        smooth = num_tasks * (shift + mu * tf.reduce_logsumexp((logs - shift) / mu))
        log_sum = tf.reduce_sum(tf.math.log(losses + eps))
        loss = tf.where(warm, log_sum, smooth)

        soft = tf.nn.softmax(tf.stop_gradient(logs) / mu)
        weights = tf.where(warm, 1 / (detached + eps), num_tasks * soft / (detached + eps * z))
        new_state = {
            "warm_sum": tf.where(record, warm_sum + detached, warm_sum),
            "warm_count": tf.where(record, warm_count + 1, warm_count),
            "nadir": tf.where(warm, tf.cast(state["nadir"], dtype), nadir),
            "nadir_set": tf.where(warm, tf.cast(nadir_set, dtype), tf.ones_like(warm_count)),
        }
        return Result(weights=tf.stop_gradient(weights), state=new_state, loss=loss)
