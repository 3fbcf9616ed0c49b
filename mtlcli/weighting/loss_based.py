"""Loss-based strategies: one scalar objective from the per-task losses (one backward pass).

The train step differentiates the returned ``loss`` w.r.t. every trainable variable, so the task heads
are weighted too (LibMTL's convention for loss-weighting methods).  ``weights`` is the effective weight
``d loss / d L_i`` of each task this step; :func:`mtlcli.weighting.aggregate` returns ``weights @ J``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mtlcli.weighting.base import Context, Result, Strategy
from mtlcli.weighting.registry import register


def _weighted_sum(weights, losses):
    import tensorflow as tf

    return tf.reduce_sum(tf.stop_gradient(weights) * losses)


@register
@dataclass(frozen=True)
class Static(Strategy):
    """Fixed per-task weights from the recipe (each task's ``weight``), normalised to sum to 1.

    Paper: none (linear scalarisation, the seed's objective).  Math: ``L = sum_i w_i L_i`` with
    ``w = task_weights / sum(task_weights)``.  No parameters.

    Convention: the recipe's raw ``weight`` values are divided by their sum, so ``weight: 2`` on one of two
    tasks gives ``[2/3, 1/3]`` (TorchJD ``Constant`` would use the raw values; LibMTL has no equivalent).
    """

    name: ClassVar[str] = "static"
    paper: ClassVar[str] = "linear scalarisation (recipe task weights)"
    summary: ClassVar[str] = "sum_i w_i L_i with the recipe's task weights normalised to sum 1"

    def combine(self, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        tw = tf.cast(ctx.task_weights, losses.dtype)
        w = tf.math.divide_no_nan(tw, tf.reduce_sum(tw))
        return Result(weights=w, state=state, loss=_weighted_sum(w, losses))


@register
@dataclass(frozen=True)
class Mean(Strategy):
    """Equal weights ``1/T``: the average of the task losses.

    Paper: none (equal weighting).  Math: ``L = (1/T) sum_i L_i``.  No parameters.

    Convention: TorchJD ``Mean`` (``w = 1/T``).  LibMTL's ``EW`` is a *sum* (weights 1): use ``sum``.
    """

    name: ClassVar[str] = "mean"
    paper: ClassVar[str] = "equal weighting (TorchJD Mean)"
    summary: ClassVar[str] = "average of the task losses, w_i = 1/T"

    def combine(self, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        w = tf.ones_like(losses) / tf.cast(tf.size(losses), losses.dtype)
        return Result(weights=w, state=state, loss=_weighted_sum(w, losses))


@register
@dataclass(frozen=True)
class Equal(Mean):
    """Equal weights ``1/T`` (same as ``mean``; the name used in the issue's strategy list).

    Paper: none.  Math: ``L = (1/T) sum_i L_i``.  No parameters.  Convention: TorchJD ``Mean``.
    """

    name: ClassVar[str] = "equal"
    summary: ClassVar[str] = "alias of mean: w_i = 1/T"


@register
@dataclass(frozen=True)
class Sum(Strategy):
    """Unit weights: the sum of the task losses.

    Paper: none.  Math: ``L = sum_i L_i``.  No parameters.

    Convention: TorchJD ``Sum`` = LibMTL ``EW`` (which sums despite its docstring saying 1/T).
    """

    name: ClassVar[str] = "sum"
    paper: ClassVar[str] = "equal weighting (TorchJD Sum, LibMTL EW)"
    summary: ClassVar[str] = "sum of the task losses, w_i = 1"

    def combine(self, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        w = tf.ones_like(losses)
        return Result(weights=w, state=state, loss=_weighted_sum(w, losses))


@register
@dataclass(frozen=True)
class Uncertainty(Strategy):
    """Homoscedastic-uncertainty weighting with learnable per-task log-variances.

    Paper: A. Kendall, Y. Gal, R. Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for
    Scene Geometry and Semantics", CVPR 2018, https://arxiv.org/abs/1705.07115.

    Math: with learnable ``s_i = log sigma_i^2`` (a trainable parameter ``log_var`` updated by the model's
    optimizer), ``L = sum_i (1/2) exp(-s_i) L_i + (1/2) s_i``; effective weights ``(1/2) exp(-s_i)``.
    At the optimum over ``s``, ``exp(s_i) = L_i``.

    Args:
        init: initial log-variance (default ``0.0``, i.e. ``sigma^2 = 1``, TorchJD's ``UW``; LibMTL uses
            ``-0.5``).

    Convention: TorchJD ``UW`` (``0.5 exp(-s) L + 0.5 s``, init 0).  LibMTL's ``UW`` computes the same
    expression ``L / (2 exp(s)) + s / 2`` but initialises ``s`` to -0.5 (set ``init: -0.5`` to match it).
    The 1/2 factors are the paper's regression form; they halve every gradient compared with ``sum``
    at initialisation (irrelevant to Adam up to its epsilon).
    """

    init: float = 0.0

    name: ClassVar[str] = "uncertainty"
    paper: ClassVar[str] = "Kendall, Gal, Cipolla, CVPR 2018"
    summary: ClassVar[str] = "learned log-variances s: sum 0.5 exp(-s_i) L_i + 0.5 s_i"

    def param_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"log_var": ((num_tasks,), float(self.init))}

    def combine(self, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        s = tf.cast(params["log_var"], losses.dtype)
        scale = 0.5 * tf.exp(-s)
        loss = tf.reduce_sum(scale * losses + 0.5 * s)
        return Result(weights=tf.stop_gradient(scale), state=state, loss=loss)


@register
@dataclass(frozen=True)
class DWA(Strategy):
    """Dynamic Weight Average: weight tasks by how slowly their epoch-mean loss is falling.

    Paper: S. Liu, E. Johns, A. J. Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019,
    https://arxiv.org/abs/1803.10704.

    Math: with epoch-mean losses ``Lbar_i(e)``, from the third epoch on (two finished epochs)
    ``r_i = Lbar_i(e-1) / Lbar_i(e-2)`` and ``w = T softmax(r / temperature)``; before that ``w = 1``.
    ``L = sum_i w_i L_i``.

    Args:
        temperature: softmax temperature (default ``2.0``, the paper's and LibMTL's ``T``); must be > 0.

    State: ``epoch_sum`` / ``epoch_count`` accumulate the current epoch's losses; on ``ctx.new_epoch``
    their mean becomes ``prev1`` and the old ``prev1`` becomes ``prev2``; ``epochs_done`` counts finished
    epochs.  The epoch count comes from the state (not ``ctx.epoch``), so resumed runs continue exactly.

    Convention: LibMTL ``DWA`` and TorchJD ``DWA`` (weights sum to ``T``, not 1: the first two epochs
    equal ``sum``, and the scale never jumps when the weights switch on).  A zero previous mean gives
    rate 0 for that task instead of a division by zero.
    """

    temperature: float = 2.0

    name: ClassVar[str] = "dwa"
    paper: ClassVar[str] = "Liu, Johns, Davison, CVPR 2019"
    summary: ClassVar[str] = "T*softmax of epoch-mean loss ratios / temperature (ones for 2 epochs)"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"`temperature` must be > 0, received {self.temperature}")

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {
            "epoch_sum": ((num_tasks,), 0.0),
            "epoch_count": ((), 0.0),
            "prev1": ((num_tasks,), 0.0),
            "prev2": ((num_tasks,), 0.0),
            "epochs_done": ((), 0.0),
        }

    def combine(self, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        dtype = losses.dtype
        detached = tf.stop_gradient(losses)
        epoch_sum = tf.cast(state["epoch_sum"], dtype)
        epoch_count = tf.cast(state["epoch_count"], dtype)
        prev1 = tf.cast(state["prev1"], dtype)
        prev2 = tf.cast(state["prev2"], dtype)
        done = tf.cast(state["epochs_done"], dtype)

        # Roll the history on the first step of a new epoch (only if the last epoch saw any step).
        roll = tf.logical_and(tf.cast(ctx.new_epoch, tf.bool), epoch_count > 0)
        mean = tf.math.divide_no_nan(epoch_sum, epoch_count)
        prev2 = tf.where(roll, prev1, prev2)
        prev1 = tf.where(roll, mean, prev1)
        done = tf.where(roll, done + 1, done)
        epoch_sum = tf.where(roll, tf.zeros_like(epoch_sum), epoch_sum)
        epoch_count = tf.where(roll, tf.zeros_like(epoch_count), epoch_count)

        num_tasks = tf.cast(tf.size(losses), dtype)
        rates = tf.math.divide_no_nan(prev1, prev2)
        dwa = num_tasks * tf.nn.softmax(rates / tf.constant(self.temperature, dtype))
        w = tf.where(done >= 2, dwa, tf.ones_like(dwa))

        new_state = {
            "epoch_sum": epoch_sum + detached,
            "epoch_count": epoch_count + 1,
            "prev1": prev1,
            "prev2": prev2,
            "epochs_done": done,
        }
        return Result(weights=w, state=new_state, loss=_weighted_sum(w, losses))


@register
@dataclass(frozen=True)
class RLW(Strategy):
    """Random Loss Weighting: fresh random weights ``softmax(N(0, I))`` every step.

    Paper: B. Lin, F. Ye, Y. Zhang, I. W. Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus
    Test for Multi-Task Learning", TMLR 2022, https://arxiv.org/abs/2111.10603.

    Math: ``z ~ N(0, I_T)``, ``w = softmax(z)``, ``L = sum_i w_i L_i``.  No parameters.

    Convention: LibMTL ``RLW`` / TorchJD ``Random`` (normal draws, weights sum to 1).  The draw comes from
    ``tf.random.stateless_normal`` seeded with ``ctx.seed``, so runs are repeatable; values differ from
    ``torch.randn``.
    """

    name: ClassVar[str] = "rlw"
    paper: ClassVar[str] = "Lin, Ye, Zhang, Tsang, TMLR 2022"
    summary: ClassVar[str] = "random weights softmax(N(0,I)) drawn every step"

    def combine(self, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        z = tf.random.stateless_normal(tf.shape(losses), seed=ctx.seed, dtype=losses.dtype)
        w = tf.nn.softmax(z)
        return Result(weights=w, state=state, loss=_weighted_sum(w, losses))


@register
@dataclass(frozen=True)
class GLS(Strategy):
    """Geometric Loss Strategy: minimise the geometric mean of the task losses.

    Paper: S. Chennupati, G. Sistu, S. Yogamani, S. A. Rawashdeh, "MultiNet++: Multi-Stream Feature
    Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019,
    https://arxiv.org/abs/1904.08492.

    Math: ``L = (prod_i L_i)^(1/T)``, computed as ``exp(mean_i log L_i)``; effective weights
    ``dL/dL_i = L / (T L_i)``.  No parameters.

    Convention: LibMTL ``GLS`` (``pow(prod, 1/T)``).  Losses are clamped below at the smallest normal
    number of the dtype before the log, so a zero loss gives a finite (very large) weight instead of NaN.
    """

    name: ClassVar[str] = "gls"
    paper: ClassVar[str] = "Chennupati, Sistu, Yogamani, Rawashdeh, CVPR-W 2019"
    summary: ClassVar[str] = "geometric mean of the losses (prod L_i)^(1/T)"

    def combine(self, losses, params, state, ctx: Context) -> Result:
        import numpy as np
        import tensorflow as tf

        tiny = tf.constant(np.finfo(losses.dtype.as_numpy_dtype).tiny, losses.dtype)
        clamped = tf.maximum(losses, tiny)
        loss = tf.exp(tf.reduce_mean(tf.math.log(clamped)))
        num_tasks = tf.cast(tf.size(losses), losses.dtype)
        weights = tf.stop_gradient(loss / (num_tasks * clamped))
        return Result(weights=weights, state=state, loss=loss)


@register
@dataclass(frozen=True)
class FAMO(Strategy):
    """Fast Adaptive Multitask Optimization: balance the rates at which the losses fall, from losses only.

    Paper: B. Liu, Y. Feng, P. Stone, Q. Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023,
    https://arxiv.org/abs/2306.03792.

    Math: logits ``w`` (state), ``z = softmax(w)``, ``D_i = L_i - b + eps``,
    ``c = 1 / sum_i (z_i / D_i)`` (no gradient), ``L = c sum_i z_i log D_i``; effective weights
    ``c z_i / D_i`` (sum to 1).  After the optimizer step the losses are re-evaluated on the same batch
    and :meth:`after_step` takes one Adam step on ``w`` with gradient
    ``softmax_jacobian(w)^T delta``, ``delta_i = log D_i(before) - log D_i(after)``, plus the L2 term
    ``gamma * w`` (torch ``Adam(weight_decay=gamma)``, betas 0.9/0.999, Adam epsilon 1e-8).

    Args:
        w_lr: learning rate of the logits' Adam (default ``0.025``).
        gamma: weight decay of the logits (default ``1e-3``).
        min_loss: lower bound ``b`` subtracted from every loss (default ``0.0``).
        eps: ``epsilon`` added inside the log (default ``1e-8``).

    State: ``logits`` (init 0), Adam moments ``adam_m``/``adam_v`` and the step count ``adam_t``: the
    logits are not trained by the model's optimizer but by this hand-written Adam in :meth:`after_step`.

    Convention: the official code (also LibMTL ``FAMO`` and TorchJD's ``FAMO`` scalarizer plus Adam):
    one scalar lower bound ``b`` for all tasks (the official default 0).
    """

    w_lr: float = 0.025
    gamma: float = 1e-3
    min_loss: float = 0.0
    eps: float = 1e-8

    name: ClassVar[str] = "famo"
    paper: ClassVar[str] = "Liu, Feng, Stone, Liu, NeurIPS 2023"
    summary: ClassVar[str] = "balances loss decrease rates with logits updated after each step"
    needs_losses_after_step: ClassVar[bool] = True

    ADAM_BETA1: ClassVar[float] = 0.9
    ADAM_BETA2: ClassVar[float] = 0.999
    ADAM_EPS: ClassVar[float] = 1e-8

    def __post_init__(self) -> None:
        if not self.w_lr > 0:
            raise ValueError(f"`w_lr` must be > 0, received {self.w_lr}")
        if self.gamma < 0:
            raise ValueError(f"`gamma` must be >= 0, received {self.gamma}")
        if self.eps < 0:
            raise ValueError(f"`eps` must be >= 0, received {self.eps}")

    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        return {
            "logits": ((num_tasks,), 0.0),
            "adam_m": ((num_tasks,), 0.0),
            "adam_v": ((num_tasks,), 0.0),
            "adam_t": ((), 0.0),
        }

    def _shifted(self, losses):
        return losses - self.min_loss + self.eps

    def combine(self, losses, params, state, ctx: Context) -> Result:
        import tensorflow as tf

        z = tf.nn.softmax(tf.cast(state["logits"], losses.dtype))
        shifted = self._shifted(losses)
        c = tf.stop_gradient(1.0 / tf.reduce_sum(z / shifted))
        loss = c * tf.reduce_sum(z * tf.math.log(shifted))
        weights = tf.stop_gradient(c * z / shifted)
        return Result(weights=weights, state=state, loss=loss)

    def after_step(self, losses_before, losses_after, params, state, ctx: Context) -> dict:
        import tensorflow as tf

        dtype = losses_before.dtype
        w = tf.cast(state["logits"], dtype)
        delta = tf.math.log(self._shifted(tf.stop_gradient(losses_before))) - tf.math.log(
            self._shifted(tf.stop_gradient(losses_after))
        )
        z = tf.nn.softmax(w)
        grad = z * (delta - tf.reduce_sum(z * delta)) + self.gamma * w  # softmax VJP + L2 (weight_decay)
        b1, b2 = tf.constant(self.ADAM_BETA1, dtype), tf.constant(self.ADAM_BETA2, dtype)
        t = tf.cast(state["adam_t"], dtype) + 1
        m = b1 * tf.cast(state["adam_m"], dtype) + (1 - b1) * grad
        v = b2 * tf.cast(state["adam_v"], dtype) + (1 - b2) * tf.square(grad)
        m_hat = m / (1 - tf.pow(b1, t))
        v_hat = v / (1 - tf.pow(b2, t))
        new_w = w - self.w_lr * m_hat / (tf.sqrt(v_hat) + self.ADAM_EPS)
        return {"logits": new_w, "adam_m": m, "adam_v": v, "adam_t": t}
