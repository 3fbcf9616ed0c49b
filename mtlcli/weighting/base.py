"""The contract every task-weighting strategy follows.

A strategy is a frozen dataclass: its fields are its hyper-parameters (checked against the recipe
without TensorFlow), and its methods are math over a loss vector and, for gradient-based methods, the
``(T, P)`` matrix ``J`` of per-task gradients (rows ``g_i``).  Nothing here knows about Keras models or
recipes.  TensorFlow is imported *inside* the methods only, so ``mtl validate`` and ``mtl strategies``
stay fast.

State is explicit (optax style): :meth:`Strategy.state_spec` declares it, the train step keeps it in
non-trainable variables (so checkpoints save it), passes the current values in, and assigns the values
the strategy returns.  State whose shape depends on the number ``P`` of columns of ``J`` (an EMA of the
task gradients: DB-MTL, MoCo) is declared by :meth:`Strategy.sized_state_spec` instead; the train step
creates it once the model is built (``P`` = the shared parameters' count), after every other variable.  Learnable strategy parameters (uncertainty log-variances, GradNorm logits, ...)
are declared by :meth:`Strategy.param_spec`; the train step creates them as trainable variables and
updates them with the same Adam optimizer as the model.

The train step makes one call for every kind, :meth:`Strategy.update` (optax's ``update`` with extra
arguments): it hands in what the strategy declared it needs -- the per-task losses always, the task
Jacobian (or a factor of its Gramian) only when ``needs == "gradients"`` -- and gets back a
:class:`Result`: the task weights, the new state, and what to apply (a direction for the shared
variables, or the gradients of an objective).  Subclasses write the math in one of two methods, by the
class attribute ``needs``:

``"losses"``
    :meth:`Strategy.combine` maps the per-task losses to one scalar objective that the train step
    differentiates w.r.t. every trainable variable (shared layers, heads and the strategy's params), so
    the heads are weighted too (LibMTL's convention for loss-weighting methods).

``"gradients"``
    :meth:`Strategy.aggregate` maps ``J`` to one direction ``d`` (shape ``(P,)``) that replaces the
    gradient of the *shared* variables; each task head gets the ordinary, unweighted gradient of its own
    loss (TorchJD's ``mtl_backward`` convention).  Methods whose ``d`` is exactly ``weights @ J``
    declare ``weighting = True``; only those support ``on: representation`` (MGDA-UB style), where ``J``
    holds gradients w.r.t. the shared representation and the train step back-propagates
    ``sum_i w_i L_i`` once.

All tensors handed to a strategy share one float dtype (float32 in training, float64 through
:func:`mtlcli.weighting.aggregate`); strategies must keep that dtype and must run inside
``tf.function`` (no Python control flow on tensor values, no numpy calls on tensors).  Iterative solvers
run a fixed or bounded number of iterations on the small ``T x T`` problem.  Randomness comes only from
``ctx.seed`` (a ``(2,)`` int32/int64 tensor, different every step) through ``tf.random.stateless_*``,
so runs are repeatable and resumable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple


class Context(NamedTuple):
    """Per-step information the train step hands to a strategy (all tensors, graph-safe).

    Attributes:
        step: int64 scalar, the optimizer step about to be taken (0 for the first).
        epoch: int64 scalar, the current epoch (0-based).
        seed: ``(2,)`` integer tensor for ``tf.random.stateless_*``; new for every step.
        task_weights: ``(T,)`` float tensor, the recipe's per-task ``weight`` values (raw, not normalised).
        new_epoch: bool scalar, True on the first step of each epoch after the first (for strategies
            such as DWA that work from epoch-mean losses).
    """

    step: Any
    epoch: Any
    seed: Any
    task_weights: Any
    new_epoch: Any


class Result(NamedTuple):
    """What :meth:`Strategy.combine` and :meth:`Strategy.aggregate` return.

    Attributes:
        weights: ``(T,)`` the effective task weights this step (logged each epoch). For gradient methods
            that are not a weighting, the coefficient ``(d . g_i) / ||g_i||^2`` of each task.
        state: dict with the same keys as :meth:`Strategy.state_spec` and
            :meth:`Strategy.sized_state_spec`, new values.
        loss: scalar objective (``needs == "losses"`` only; ``None`` otherwise).
        direction: ``(P,)`` combined shared gradient (``needs == "gradients"`` only; ``None`` otherwise).
        param_grads: dict ``name -> gradient`` for the strategy's own learnable params: computed by the
            strategy itself (GradNorm), or by :meth:`Strategy.update` from differentiating ``loss``.
        loss_grads: ``(T,)`` ``d loss / d L_i`` (set by :meth:`Strategy.update` for loss-based
            strategies): what the train step back-propagates through the per-task losses.  Not always
            ``weights``: those are the strategy's own report (e.g. GLS's closed form).
    """

    weights: Any
    state: dict
    loss: Any = None
    direction: Any = None
    param_grads: dict | None = None
    loss_grads: Any = None


@dataclass(frozen=True)
class Strategy:
    """Base class; subclasses are frozen dataclasses registered with :func:`register`."""

    #: Registry name used in recipes (``weighting: pcgrad``).
    name: ClassVar[str] = ""
    #: ``"losses"`` or ``"gradients"``.
    needs: ClassVar[str] = "losses"
    #: True when ``direction == weights @ J`` exactly (enables ``on: representation``).
    weighting: ClassVar[bool] = True
    #: Paper reference shown by ``mtl strategies`` (authors, venue year).
    paper: ClassVar[str] = ""
    #: One-line description shown by ``mtl strategies``.
    summary: ClassVar[str] = ""
    #: True when the strategy needs the per-task losses re-evaluated on the same batch after the
    #: optimizer step (FAMO); the train step then calls :meth:`after_step`.
    needs_losses_after_step: ClassVar[bool] = False
    #: How many independent mini-batches' task gradients the strategy reads (``needs == "gradients"``).
    #: 1: ``J`` is ``(T, P)``. 2 (MoDo, SDMGrad): ``J`` is ``(2, T, P)``, the task gradients of two
    #: independent mini-batches (the train step's are the two halves of each batch; see
    #: :mod:`mtlcli.model.train_step`), and ``direction`` is built from both.
    batches: ClassVar[int] = 1
    #: True when every step also reads one batch of the validation split (Auto-Lambda's meta step): the
    #: runner feeds ``((x, y, mask), (x_val, y_val, mask_val))`` and the recipe check refuses a recipe
    #: without a validation split.
    needs_validation: ClassVar[bool] = False

    #: True when the strategy treats one task as the primary objective (PCD): it has an int field
    #: ``primary`` (the task's index), which the model build fills from the recipe's ``train.primary``;
    #: the recipe check refuses the strategy without ``train.primary``.
    needs_primary: ClassVar[bool] = False

    # -- declarations ---------------------------------------------------------------------------
    def state_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        """Non-trainable state: ``name -> (shape, initial fill value)``."""
        del num_tasks
        return {}

    def sized_state_spec(self, num_tasks: int, num_params: int) -> dict[str, tuple[tuple[int, ...], float]]:
        """Non-trainable state sized by ``num_params``, the number of columns ``P`` of ``J``:
        ``name -> (shape, initial fill value)``; its keys must differ from :meth:`state_spec`'s.

        Gradient-based strategies only, over the shared parameters (``P`` is not known in advance under
        ``on: representation``, where it grows with the batch).  The train step creates these variables
        when the model is built; :func:`mtlcli.weighting.eager.initial_state` when given ``num_params``.
        Default: none.
        """
        del num_tasks, num_params
        return {}

    def param_spec(self, num_tasks: int) -> dict[str, tuple[tuple[int, ...], float]]:
        """Learnable parameters trained with the model's optimizer: ``name -> (shape, init value)``."""
        del num_tasks
        return {}

    def task_count_problem(self, num_tasks: int) -> tuple[str, str] | None:
        """Why these parameters cannot run with ``num_tasks`` tasks, or None: ``(parameter, message)``.

        Checked by the recipe (:func:`mtlcli.weighting.registry.check` given the task count) before
        training, the message placed at ``parameter``'s line; for a per-task list (a length) or a
        minimum number of tasks (Krum, TrimmedMean).  Default: none.
        """
        del num_tasks
        return None

    # -- the one call of the train step --------------------------------------------------------
    def update(self, losses, jacobian, params: dict, state: dict, ctx: Context) -> Result:
        """One step of the strategy, called the same way for every kind.

        Args:
            losses: ``(T,)`` per-task losses (global ones under tf.distribute).
            jacobian: ``(T, P)`` task gradients, rows ``g_i``, when ``needs == "gradients"`` (over the
                shared parameters or the shared representation; under tf.distribute with ``on:
                representation`` a ``(T, T)`` factor of the global Gramian, which a ``weighting = True``
                strategy cannot tell from the rows).  Ignored by loss-based strategies (may be None).
            params, state, ctx: the strategy's learnable parameters, its state, the step's context.

        Returns:
            :meth:`aggregate`'s result for gradient-based strategies; for loss-based ones
            :meth:`combine`'s, with ``loss_grads`` and ``param_grads`` filled in by differentiating its
            objective here (so the train step never differentiates strategy code itself).
        """
        if self.needs == "gradients":
            return self.aggregate(jacobian, losses, params, state, ctx)
        import tensorflow as tf

        names = list(params)
        with tf.GradientTape() as tape:
            tape.watch([losses, *params.values()])
            result = self.combine(losses, params, state, ctx)
        slopes, *grads = tape.gradient(result.loss, [losses, *params.values()])
        return result._replace(
            loss_grads=tf.zeros_like(losses) if slopes is None else tf.stop_gradient(slopes),
            param_grads={k: g for k, g in zip(names, grads, strict=True) if g is not None},
        )

    # -- math -----------------------------------------------------------------------------------
    def combine(self, losses, params: dict, state: dict, ctx: Context) -> Result:
        """Loss-based strategies: per-task losses ``(T,)`` -> scalar objective."""
        raise NotImplementedError(f"{self.name} is gradient-based; use aggregate()")

    def aggregate(self, J, losses, params: dict, state: dict, ctx: Context) -> Result:
        """Gradient-based strategies: ``J`` ``(T, P)`` -> direction ``(P,)``."""
        raise NotImplementedError(f"{self.name} is loss-based; use combine()")

    def after_step(self, losses_before, losses_after, params: dict, state: dict, ctx: Context) -> dict:
        """Update state from the losses re-evaluated after the optimizer step (FAMO). Returns state."""
        del losses_before, losses_after, params, ctx
        return state

    # -- configuration --------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def combine_rows(weights, J):
    """``d = weights @ J`` -- the one place where task gradients are summed with weights."""
    import tensorflow as tf

    return tf.linalg.matvec(J, weights, transpose_a=True)
