"""The multi-task train and test steps: ``MultiTaskModel``, the registered class every run saves.

This is the only module of :mod:`mtlcli.model` that imports :mod:`mtlcli.weighting`. It registers
``mtl>MultiTaskModel``, so importing it (or :mod:`mtlcli.model.build`) is what makes ``model.keras``
files load with ``safe_mode=True``.

The train step, top to bottom (:meth:`MultiTaskModel.train_step`):

1. Forward pass: inputs -> shared part (representation ``z``) -> each head, under a gradient tape.
2. Per-task losses ``L_i``: the mean of the task's per-example loss over the rows that carry its label
   (missing labels are masked, the row still trains the other tasks); under tf.distribute this
   replica's share of the global losses, which every strategy sees summed (:mod:`mtlcli.distribute`).
3. What the strategy declared it needs (:mod:`mtlcli.model.backward`): nothing more for loss-based
   strategies, the task Jacobian ``J`` (over the shared variables or ``z``) for gradient-based ones.
4. ``strategy.update(L, J, params, state, ctx)``: weights, new state, and a direction or the
   gradients of an objective (:meth:`mtlcli.weighting.Strategy.update`).
5. Gradients for every variable from that result; one Adam update of everything, the strategy's state
   assigned and the metrics tracked -- or, with ``skip_nonfinite``, nothing at all for a batch whose
   losses or gradients are not all finite (:func:`apply_if_finite`).

Two-batch strategies (``strategy.batches == 2``: MoDo, SDMGrad) read ``G = J1 J2ᵀ`` from the task
gradients of two independent mini-batches (:meth:`MultiTaskModel._forward_halves`). The two batches are
the halves of the training batch: its first ``n // 2`` rows and the rest (an odd batch's second half
has the extra row). Each half has its own forward pass, masked per-task losses ``L¹``, ``L²`` (missing
labels masked within the half) and task gradients of the shared variables; ``J`` is ``(2, T, P)``.
The step trains on the halves' mean loss ``(L¹ + L²) / 2`` (TorchJD's two-batch example, MoDo's eq.
2.9b): the shared variables get ``w · (J1 + J2) / 2``, each head the plain gradient of its own
``(L¹_i + L²_i) / 2``. This equals the batch's masked mean loss when both halves carry as many labels
of each task (an even batch without missing labels); otherwise each half weighs 1/2. The logged and
checked losses (and those the strategy sees) are the whole batch's masked means. Cost: two half-batch
forward passes and ``2T`` half-batch gradients, about one full-batch Jacobian (what a one-batch strategy
pays), plus a ``T x T`` product. A batch of one row cannot be split: both halves are that row (the
single-batch ``J1 J1ᵀ``, which TorchJD warns is biased) for that step. BatchNorm layers see the halves
separately (their statistics are the halves'). Under tf.distribute each replica splits its own share of
the batch: the global halves are the replicas' first halves and their second halves (each half's loss
divides by its global label count, and ``J`` is all-reduced like a one-batch ``J``).

Auto-Lambda (``strategy.needs_validation``): the runner feeds ``((x, y, mask), validation batch)``;
before step 1, :meth:`MultiTaskModel._meta_state` takes the strategy's meta step (a virtual step of
the shared and head variables, the validation gradient there, two forward passes at ``θ ± ε d``, all
with the variables assigned in place and restored) and the ordinary step then reads the new weights.
The new state is assigned with the update (so ``skip_nonfinite`` skips it too). One device only.

AITM's calibrator penalty (:meth:`mtlcli.model.network.Network.calibrator_term`) is not a task loss:
the strategy never sees it. Its plain gradient is added to the shared and head gradients the strategy
gave (step 5), with every strategy, static or gradient-based, and the logged ``objective`` includes it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtlcli import distribute, weighting
from mtlcli.model import backward, freezing
from mtlcli.model import losses as task_loss
from mtlcli.model.metrics import VectorMean, make_metric
from mtlcli.model.network import Network
from mtlcli.model.registration import serializable


def _pick(refresh, yes, no):
    """``yes()`` or ``no()``: in Python for a bool (one traced branch), else ``tf.cond``."""
    if isinstance(refresh, bool):
        return yes() if refresh else no()
    return tf.cond(refresh, yes, no)


def apply_if_finite(apply, tensors: list):
    """``apply()`` (which returns True) when every tensor is finite; otherwise change nothing and
    return False. Not under tf.distribute: an all-reduce inside ``tf.cond`` is refused (the recipe check
    says so)."""
    checks = [tf.reduce_all(tf.math.is_finite(t)) for t in tensors]
    return tf.cond(tf.reduce_all(tf.stack(checks)), apply, lambda: tf.constant(False))


@serializable
class MultiTaskModel(Network):
    """The network of :class:`~mtlcli.model.network.Network` plus its training: the weighting strategy,
    per-task losses and metrics, and the multi-task ``train_step`` / ``test_step``.

    The strategy's learnable parameters (``strategy_<name>``) and state (``state_<name>``) are model
    variables, so checkpoints save them; ``mtlcli.run.checkpoint.restore`` relies on those prefixes.
    """

    def __init__(self, spec: dict[str, Any], **kwargs):
        super().__init__(spec, **kwargs)
        self.strategy = weighting.get(spec["weighting"])
        # ``every: K``: the task gradients and new weights on every K-th step only (see _every_update)
        self.every = weighting.registry.every(spec["weighting"])
        self.backward = backward.for_strategy(
            self.strategy.needs, getattr(self.strategy, "on", "parameters"), self.strategy.batches
        )
        self.losses_fn = {t: task_loss.make_loss(spec["tasks"][t]["loss"]) for t in self.task_names}
        self.task_weights = np.array([spec["tasks"][t]["weight"] for t in self.task_names], np.float32)
        total = float(self.task_weights.sum())
        # The logged loss of every split: the recipe's static weights normalised to sum 1, whatever the
        # strategy, so it is comparable across splits, epochs and strategies (used for early stopping).
        self.eval_weights = (
            self.task_weights / total
            if total > 0
            else np.full_like(self.task_weights, 1 / len(self.task_weights))
        )
        self._make_trackers(spec)
        schedule = spec.get(freezing.SPEC_KEY)
        #: ``model.init_from.freeze_epochs`` (:mod:`mtlcli.model.freezing`), or None
        self.freeze_schedule = None if schedule is None else freezing.FreezeSchedule(**schedule)
        self._make_variables(len(self.task_names))
        self.seed = int(spec.get("seed", 0))
        # The last train step's raw per-task losses and whether its update was applied, read by the
        # runner's non-finite check (plain tf.Variables: not model weights, not saved). With
        # ``skip_nonfinite`` (``train.on_nan: skip_batch``, set by the runner) a batch whose losses or
        # gradients are not all finite changes nothing: no update, no strategy state, no metrics.
        self.skip_nonfinite = False
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA  # replica-identical values (tf.distribute)
        self.batch_losses = tf.Variable(
            tf.zeros([len(self.task_names)]), trainable=False, name="batch_losses", aggregation=first
        )
        self.batch_applied = tf.Variable(True, trainable=False, name="batch_applied", aggregation=first)

    def _make_trackers(self, spec: dict[str, Any]) -> None:
        """Loss, weight and metric trackers (reset by Keras each epoch through :attr:`metrics`)."""
        self.loss_tracker = keras.metrics.Mean(name="loss")
        # ``loss`` is the recipe's static weighted sum on every split (what val_loss always was), so the
        # train and validation columns compare; a strategy whose own objective differs from it (every
        # strategy but ``static``) logs that objective as ``objective``, on the training split only.
        self.objective_tracker = (
            keras.metrics.Mean(name="objective") if self.strategy.name != "static" else None
        )
        self.task_loss_tracker = VectorMean([f"{t}_loss" for t in self.task_names], name="task_losses")
        self.weight_tracker = VectorMean([f"{t}_weight" for t in self.task_names], name="task_weights")
        self.task_metrics = {
            t: [
                make_metric(m, spec["tasks"][t]["type"], t, spec["preprocessing"]["targets"][t])
                for m in spec["tasks"][t]["metrics"]
            ]
            for t in self.task_names
        }
        n = len(self.task_names)
        gradient_based = self.strategy.needs == "gradients"
        self.pairs = [(i, j) for i in range(n) for j in range(i + 1, n)] if gradient_based else []
        # pairwise cosines of the task gradients on the shared layers (gradient-based strategies only)
        self.cos_tracker = (
            VectorMean(
                [f"cos_{self.task_names[i]}_{self.task_names[j]}" for i, j in self.pairs], name="cosines"
            )
            if self.pairs
            else None
        )

    def _make_variables(self, n: int) -> None:
        """The strategy's parameters (trained by Adam) and state (saved in checkpoints), and the epoch
        bookkeeping. Names and order are part of every saved model and checkpoint: do not change them."""
        self.strategy_params = {
            k: self.add_weight(
                shape=shape, initializer=keras.initializers.Constant(v), name=f"strategy_{k}", trainable=True
            )
            for k, (shape, v) in self.strategy.param_spec(n).items()
        }
        # State is assigned inside the train step: under tf.distribute every replica computes the same
        # value, and "only_first_replica" makes that assignment legal on mirrored variables.
        self.strategy_state = {
            k: self.add_weight(
                shape=shape,
                initializer=keras.initializers.Constant(v),
                name=f"state_{k}",
                trainable=False,
                aggregation="only_first_replica",
            )
            for k, (shape, v) in self.strategy.state_spec(n).items()
        }
        self.epoch_var = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", name="epoch", trainable=False
        )
        self.seen_epoch = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int64",
            name="seen_epoch",
            trainable=False,
            aggregation="only_first_replica",
        )
        if self.every > 1:  # after the others, so models without ``every`` keep their variables
            self.every_weights = self.add_weight(
                shape=(n,),
                initializer=keras.initializers.Constant(1.0 / n),
                name="state_every_weights",
                trainable=False,
                aggregation="only_first_replica",
            )
        if self.freeze_schedule is not None:  # whether its layers were unfrozen (and Adam restarted)
            self.state_unfrozen = self.add_weight(
                shape=(),
                initializer="zeros",
                dtype="int64",
                name="state_unfrozen",
                trainable=False,
                aggregation="only_first_replica",
            )

    @property
    def metrics(self):
        out = [self.loss_tracker, self.task_loss_tracker, self.weight_tracker]
        for ms in self.task_metrics.values():
            out.extend(ms)
        train_only = [m for m in (self.objective_tracker, self.cos_tracker) if m is not None]
        return out + train_only

    def _results(self, training: bool = True) -> dict:
        """The logs of a step: every metric's result, dict results flattened (the objective and the
        gradient cosines only in training)."""
        logs = {}
        for m in self.metrics:
            if not training and (m is self.objective_tracker or m is self.cos_tracker):
                continue
            result = m.result()
            if isinstance(result, dict):
                logs.update(result)
            else:
                logs[m.name] = result
        return logs

    def build(self, input_shape=None):
        super().build(input_shape)
        self._make_sized_state()

    def _make_sized_state(self) -> None:
        """The strategy's state sized by ``P``, the shared parameters' count (the columns of ``J``,
        :meth:`mtlcli.weighting.Strategy.sized_state_spec`), known once the layers are built. Created
        last, into :attr:`strategy_state`, so strategies without it keep their variables unchanged."""
        if self.strategy.needs != "gradients" or getattr(self, "sized_state_made", False):
            return
        self.sized_state_made = True
        num_params = sum(math.prod(v.shape) for v in self.shared_variables)
        spec = self.strategy.sized_state_spec(len(self.task_names), num_params)
        clash = sorted(set(spec) & set(self.strategy_state))
        if clash:
            raise ValueError(f"{self.strategy.name}: sized state {clash} repeats state_spec's keys")
        for k, (shape, v) in spec.items():
            self.strategy_state[k] = self.add_weight(
                shape=shape,
                initializer=keras.initializers.Constant(v),
                name=f"state_{k}",
                trainable=False,
                aggregation="only_first_replica",
            )

    # -- losses and strategy inputs ------------------------------------------------------------
    def task_losses(self, y, preds, mask):
        """Per-task masked mean losses ``(T,)`` and label counts (:func:`mtlcli.model.losses.task_losses`)."""
        return task_loss.task_losses(self.losses_fn, y, preds, mask)

    def _get_metrics_result_or_logs(self, logs):
        # Under tf.distribute the epoch's logs are the metrics read across replicas (global values);
        # Keras only does that when the step's keys equal ``metrics`` (not for test_step, which leaves
        # out the cosines), else it returns the last step's per-replica mean.
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is None or strategy.num_replicas_in_sync == 1 or not isinstance(logs, dict):
            return super()._get_metrics_result_or_logs(logs)
        results = self.get_metrics_result()
        return {k: results.get(k, v) for k, v in logs.items()}

    def _context(self):
        step = tf.cast(self.optimizer.iterations, tf.int64)
        epoch = tf.cast(self.epoch_var, tf.int64)
        new_epoch = tf.logical_and(tf.not_equal(epoch, self.seen_epoch), epoch > 0)
        self.seen_epoch.assign(epoch)
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        return weighting.Context(
            step=step,
            epoch=epoch,
            seed=seed,
            task_weights=tf.constant(self.task_weights),
            new_epoch=new_epoch,
        )

    @property
    def train_shared_variables(self) -> list:
        """The shared variables the train step differentiates (the columns of ``J``): with a
        ``freeze_epochs`` schedule, also those it holds fixed for now (their columns are zeros)."""
        if self.freeze_schedule is not None and self.freeze_schedule.shared:
            return self.freeze_schedule.shared
        return self.shared_variables

    def strategy_values(self) -> tuple[dict, dict]:
        """The current values of the strategy's parameters and state, as tensors."""
        params = {k: tf.convert_to_tensor(v) for k, v in self.strategy_params.items()}
        state = {k: tf.convert_to_tensor(v) for k, v in self.strategy_state.items()}
        return params, state

    def _assign_state(self, state):
        for k, v in state.items():
            self.strategy_state[k].assign(tf.cast(v, self.strategy_state[k].dtype))

    # -- steps ----------------------------------------------------------------------------------
    def train_step(self, data, refresh: bool | None = None):
        """One multi-task step: steps 1-5 of the module docstring, in that order. ``refresh`` (``every:
        K`` only): True or False traces only the update step or only the steps between
        (:meth:`make_train_function`); None decides in the graph (``tf.cond``)."""
        meta = None
        if self.strategy.needs_validation:  # Auto-Lambda: its meta step on a validation batch first
            data, validation = data
            meta = self._meta_state(data, validation)
        x, y, mask = data
        ctx = self._context()
        shared, heads = self.train_shared_variables, self.head_variables
        with tf.GradientTape(persistent=self.backward.persistent or bool(self.calibrator_weight)) as tape:
            if self.strategy.batches == 2:
                preds, losses, rows, tracked, counts = self._forward_halves(x, y, mask)
                z = None  # no representation rows (``on: representation`` is not offered)
            else:
                z = self.represent(x, training=True)
                preds = self.heads_from(z, training=True)
                losses, counts = self.task_losses(y, preds, mask)  # this replica's share (tf.distribute)
                rows = tf.unstack(losses)  # inside the tape: gradient-based strategies differentiate rows
                tracked = losses
            extra = self.calibrator_term(preds)  # AITM only (None elsewhere): outside the strategy
            # this replica's share (replicas' gradients are summed), inside the tape
            extra_share = None if extra is None else extra / distribute.replicas()
        totals, counts = distribute.global_losses(tracked, counts)  # what the strategy sees and we track
        if self.every > 1 and refresh is not True:  # an update step traced alone is an ordinary step
            result, grads = self._every_update(tape, rows, z, losses, totals, ctx, refresh)
        else:
            jacobian = self.backward.jacobian(tape, rows, z, shared)
            params, state = self.strategy_values()
            result = self.strategy.update(totals, jacobian, params, meta or state, ctx)
            grads = self.backward.gradients(tape, losses, result, shared, heads) + self._param_grads(result)
            if jacobian is not None and self.cos_tracker is not None:
                self.cos_tracker.update_state(self._cosines(jacobian))
        if extra is not None:
            grads = self._plus_extra(tape, extra_share, grads, shared + heads)
        del tape
        pairs = self._in_keras_order_pairs(grads, shared + heads + list(self.strategy_params.values()))
        self.batch_losses.assign(tf.cast(totals, tf.float32))

        def apply():
            self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            self._assign_state(self._state_after(result, totals, x, y, mask, ctx))
            if self.every > 1:
                self.every_weights.assign(tf.cast(result.weights, tf.float32))
            self._track(totals, counts, y, preds, mask, result.weights)
            if self.objective_tracker is not None:
                objective = self._objective(result, totals)
                self.objective_tracker.update_state(objective if extra is None else objective + extra)
            return tf.constant(True)

        checks = [losses, *(g for g, _ in pairs)]
        applied = apply_if_finite(apply, checks) if self.skip_nonfinite else apply()
        self.batch_applied.assign(applied)
        return self._step_logs(self._results())

    def test_step(self, data):
        x, y, mask = data
        preds = self(x, training=False)
        losses, counts = distribute.global_losses(*self.task_losses(y, preds, mask))
        self._track(losses, counts, y, preds, mask, tf.constant(self.eval_weights))
        return self._step_logs(self._results(training=False))

    # -- the train step's helpers ---------------------------------------------------------------
    def _meta_state(self, data, validation) -> dict:
        """Auto-Lambda's meta step (:class:`mtlcli.weighting.auto_lambda.AutoLambda`): the strategy's new
        state from the training batch ``data`` and a ``validation`` batch. The shared and head variables
        are assigned the virtual step and the two finite-difference points in turn, then restored."""
        if distribute.replicas() > 1:
            raise ValueError(f"{self.strategy.name} runs on one device only (the recipe check says so)")
        (x, y, mask), (x_val, y_val, mask_val) = data, validation
        variables = self.shared_variables + self.head_variables
        _, state = self.strategy_values()
        lambd = tf.cast(state["lambd"], tf.float32)
        alpha = tf.cast(self.optimizer.learning_rate, tf.float32)
        decay = float(getattr(self.optimizer, "weight_decay", None) or 0.0)

        def losses_at(x_, y_, mask_):
            preds = self.heads_from(self.represent(x_, training=True), training=True)
            return self.task_losses(y_, preds, mask_)[0]

        theta = [tf.identity(v) for v in variables]
        with tf.GradientTape() as tape:
            weighted = tf.reduce_sum(lambd * losses_at(x, y, mask))
        grads = backward.grads_or_zeros(tape, weighted, variables)
        for v, t, g in zip(variables, theta, grads, strict=True):  # the virtual step
            v.assign(t - alpha * (g + decay * t))
        # the validation objective: the primary task's loss (``train.primary``), else every task's
        primary = self.spec.get("primary")
        primaries = tf.constant([1.0 if primary in (None, t) else 0.0 for t in self.task_names])
        with tf.GradientTape() as tape:
            objective = tf.reduce_sum(primaries * losses_at(x_val, y_val, mask_val))
        direction = backward.grads_or_zeros(tape, objective, variables)
        eps = self.strategy.fd_epsilon(tf.linalg.global_norm(direction))
        at = {}
        for sign in (1.0, -1.0):
            for v, t, d in zip(variables, theta, direction, strict=True):
                v.assign(t + sign * eps * d)
            at[sign] = losses_at(x, y, mask)
        for v, t in zip(variables, theta, strict=True):
            v.assign(t)
        return self.strategy.meta_update(state, self.strategy.hypergradient(alpha, at[1.0], at[-1.0], eps))

    def _forward_halves(self, x, y, mask):
        """The forward pass of a two-batch strategy (module docstring, "Two-batch strategies"), under
        the train step's tape: ``(preds, losses, rows, tracked, counts)`` with ``preds`` and the label
        ``counts`` of the whole batch, ``losses = (L¹ + L²) / 2`` (what is trained), ``rows`` the ``2T``
        half losses ``L¹_1 .. L¹_T, L²_1 .. L²_T`` (the rows of ``J``) and ``tracked`` the whole batch's
        masked mean losses (logged, checked, handed to the strategy)."""
        n = tf.shape(next(iter(mask.values())))[0]
        first_end = tf.maximum(n // 2, 1)
        second_start = tf.minimum(n // 2, n - 1)  # a batch of one row: both halves are that row

        def rows_of(tree, start, end=None):
            return tf.nest.map_structure(lambda t: t[start:end], tree)

        halves = []
        for start, end in ((0, first_end), (second_start, None)):
            preds = self.heads_from(self.represent(rows_of(x, start, end), training=True), training=True)
            half_losses, _ = self.task_losses(rows_of(y, start, end), preds, rows_of(mask, start, end))
            halves.append((preds, half_losses))
        (preds_1, losses_1), (preds_2, losses_2) = halves
        preds = tf.nest.map_structure(lambda a, b: tf.concat([a[:second_start], b], 0), preds_1, preds_2)
        tracked, counts = self.task_losses(y, preds, mask)
        rows = tf.unstack(losses_1) + tf.unstack(losses_2)
        return preds, (losses_1 + losses_2) / 2, rows, tf.stop_gradient(tracked), counts

    def make_train_function(self, force=False):
        """Keras's train function; with ``every: K > 1`` two compiled steps, chosen in Python from the
        step counter: the update step (task Jacobian, new weights) on steps ``0, K, 2K, ...``, the cheap
        step between.  The same step with both inside ``tf.cond`` (:meth:`train_step` with ``refresh=None``,
        equal numbers) ran its update steps 1.7x slower than the plain strategy's step here (upgrad, 2
        tasks, measured: 100 ms against 57 ms; 31 ms between): TensorFlow runs gradients inside a cond
        branch more slowly.  One step per call (Keras's ``steps_per_execution`` of 1, which mtl uses)."""
        if self.every == 1 or self.run_eagerly:
            return super().make_train_function(force)
        if self.train_function is not None and not force:
            return self.train_function
        steps = {}
        for refresh in (True, False):
            self.train_step = functools.partial(type(self).train_step, self, refresh=refresh)
            try:
                super().make_train_function(force=True)
                steps[refresh] = self.train_function
            finally:
                del self.train_step  # the class's method again
        iterations = self.optimizer.iterations

        def function(iterator):
            return steps[int(iterations.numpy()) % self.every == 0](iterator)

        self.train_function = function
        return function

    def _every_update(self, tape, rows, z, losses, totals, ctx, refresh: bool | None = None):
        """``(result, gradients)`` with ``every: K > 1``: on ``step % K == 0`` or not, as ``refresh``
        says or, when it is None, ``tf.cond`` decides in the graph.

        On steps ``0, K, 2K, ...`` the strategy's ordinary update (task Jacobian, new weights and
        state); on the steps between, the weights of the last such step (the ``state_every_weights``
        variable, so a checkpoint taken mid-cycle resumes exactly), the strategy's state left as it is
        and no gradient cosines tracked.  On every step the shared variables then get the gradient of
        ``sum_i w_i L_i`` in one backward pass (on update steps equal to the strategy's direction
        ``w @ J``: ``every`` only applies to weightings) and each head the plain gradient of its own
        loss.  The gradients stay outside the conds: gradients taken inside a ``tf.cond`` branch made
        the steps between cost 2.9x the cheap branch's own gradients here (measured).  Two conds,
        because tf.distribute refuses an all-reduce inside one: this replica's Jacobian (zeros on the
        steps between), its all-reduce on every step (on one replica the identity), then the update."""
        shared, heads = self.train_shared_variables, self.head_variables
        params, state = self.strategy_values()
        n_pairs, n = len(self.pairs), len(self.task_names)
        if refresh is None:
            refresh = tf.equal(tf.math.floormod(ctx.step, self.every), 0)
        local = _pick(
            refresh,
            lambda: self.backward.local_jacobian(tape, rows, z, shared),
            lambda: self.backward.no_jacobian(n, z, shared),
        )
        jacobian = local if refresh is False else self.backward.global_jacobian(local)
        names = list(self.strategy_params)

        def full():
            result = self.strategy.update(totals, jacobian, params, state, ctx)
            given = result.param_grads or {}
            param_grads = [tf.cast(given.get(k, tf.zeros_like(params[k])), params[k].dtype) for k in names]
            cos = self._cosines(jacobian) if n_pairs else tf.zeros([0])
            weights = tf.cast(result.weights, tf.float32)
            return weights, {k: tf.cast(v, state[k].dtype) for k, v in result.state.items()}, param_grads, cos

        def reuse():
            zeros = [tf.zeros_like(params[k]) for k in names]
            return tf.convert_to_tensor(self.every_weights), dict(state), zeros, tf.zeros([n_pairs])

        weights, new_state, param_grads, cos = _pick(refresh, full, reuse)
        if n_pairs and self.cos_tracker is not None:
            self.cos_tracker.update_state(cos, sample_weight=tf.fill([n_pairs], tf.cast(refresh, tf.float32)))
        result = weighting.Result(
            weights=weights, state=new_state, param_grads=dict(zip(names, param_grads, strict=True))
        )
        grads = backward.weighted_gradients(tape, losses, weights, shared, heads, self.backward.frozen)
        return result, grads + self._param_grads(result)

    @staticmethod
    def _plus_extra(tape, extra, grads: list, variables: list) -> list:
        """``grads`` (for ``variables`` first, then the strategy's parameters) plus the plain gradient of
        the extra objective term ``extra`` (computed under ``tape``)."""
        out = list(grads)
        for i, g in enumerate(tape.gradient(extra, variables)):
            if g is not None:
                out[i] = g if out[i] is None else out[i] + tf.cast(g, out[i].dtype)
        return out

    def _param_grads(self, result) -> list:
        """Gradients of the strategy's own parameters (zeros when it gives none for one)."""
        given = result.param_grads or {}
        return [distribute.share(given.get(k, tf.zeros_like(v))) for k, v in self.strategy_params.items()]

    def _in_keras_order_pairs(self, grads: list, variables: list) -> list:
        # Apply in Keras's own variable order: a reloaded model builds its optimizer in that order, so
        # the saved Adam slots line up whichever path (fit or a direct train_step) built it first.
        # (Variables a ``freeze_epochs`` schedule holds fixed are left out: no update, no weight decay.)
        order = {id(v): i for i, v in enumerate(self.trainable_variables)}
        frozen = self.backward.frozen
        return sorted(
            ((g, v) for g, v in zip(grads, variables, strict=True) if g is not None and id(v) not in frozen),
            key=lambda p: order[id(p[1])],
        )

    def _cosines(self, jacobian):
        """Pairwise cosines of the task gradients (rows of ``J``; of ``(J1 + J2) / 2`` for a two-batch
        strategy), in :attr:`pairs` order."""
        if jacobian.shape.rank == 3:
            jacobian = tf.reduce_mean(jacobian, axis=0)
        gram = tf.matmul(jacobian, jacobian, transpose_b=True)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        i, j = (list(t) for t in zip(*self.pairs, strict=True))
        return tf.math.divide_no_nan(
            tf.gather_nd(gram, list(zip(i, j, strict=True))), tf.gather(norms, i) * tf.gather(norms, j)
        )

    @staticmethod
    def _objective(result, totals):
        """The logged ``objective``: the strategy's own, or ``sum_i w_i L_i`` with the strategy's weights
        for gradient-based ones."""
        if result.loss is not None:
            return result.loss
        return tf.reduce_sum(tf.stop_gradient(tf.cast(result.weights, totals.dtype)) * totals)

    def _state_after(self, result, totals, x, y, mask, ctx) -> dict:
        """The strategy's new state; FAMO-like strategies also read the losses of the same batch after
        the optimizer step (with the parameters as updated)."""
        if not self.strategy.needs_losses_after_step:
            return result.state
        after, _ = self.task_losses(y, self(x, training=False), mask)
        params, _ = self.strategy_values()
        return self.strategy.after_step(totals, distribute.global_sum(after), params, result.state, ctx)

    @staticmethod
    def _step_logs(logs):
        # tensorflow/tensorflow#72388 (Keras 3.15): under MultiWorkerMirroredStrategy step outputs are
        # reduced along axis 0, which scalars lack. (Per-batch logs under tf.distribute are the replicas'
        # mean of their running results: exact for the loss, weight and per-task loss means, which every
        # replica tracks with global values; per-example metrics are exact in the epoch's logs.)
        if distribute.multi_worker():
            return {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def _track(self, losses, counts, y, preds, mask, weights):
        """``loss`` (the static weighted sum, :attr:`eval_weights`), per-task losses, weights, metrics."""
        self.loss_tracker.update_state(tf.reduce_sum(tf.constant(self.eval_weights) * losses))
        weights = tf.cast(weights, tf.float32)
        self.task_loss_tracker.update_state(losses, sample_weight=counts)
        self.weight_tracker.update_state(weights)
        for task in self.task_names:
            for metric in self.task_metrics[task]:
                metric.update_state(y[task], tf.cast(preds[task], tf.float32), sample_weight=mask[task])
