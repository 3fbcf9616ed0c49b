"""The multi-task train and test steps: ``MultiTaskModel``, the registered class every run saves.

This is the only module of :mod:`mtlcli.model` that imports :mod:`mtlcli.weighting`. It registers
``mtl>MultiTaskModel``, so importing it (or :mod:`mtlcli.model.build`) is what makes ``model.keras``
files load with ``safe_mode=True``.

The train step
--------------
1. Forward pass: inputs -> shared trunk (representation ``z``) -> each head.
2. Per-task losses ``L_i``: the mean of the task's per-example loss over the rows that carry its label
   (missing labels are masked, the row still trains the other tasks).
3. The weighting strategy (``mtlcli.weighting``):

   * loss-based: ``objective = strategy.combine(L)``; one gradient of it w.r.t. every variable (heads are
     weighted too);
   * gradient-based: per-task gradients of the shared variables (a loop of ``tape.gradient``, which was
     measured faster than ``tape.jacobian`` here) form ``J`` (T x P); the strategy turns ``J`` into one
     direction for the shared variables, and each head gets the plain gradient of its own loss
     (TorchJD's convention). With ``on: representation`` ``J`` holds gradients w.r.t. ``z`` instead
     (MGDA-UB style, one extra backward pass in all) and ``sum_i w_i L_i`` is back-propagated once.
4. One Adam update of everything.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtlcli import distribute, weighting
from mtlcli.model import losses as task_loss
from mtlcli.model.metrics import VectorMean, make_metric
from mtlcli.model.network import Network
from mtlcli.model.registration import serializable


def _grads(tape, target, variables, output_gradients=None) -> list:
    """``tape.gradient`` with zeros for unconnected variables (Keras variables report dtype as a string,
    which ``UnconnectedGradients.ZERO`` cannot handle)."""
    grads = tape.gradient(target, variables, output_gradients=output_gradients)
    return [
        g if g is not None else tf.zeros(v.shape, tf.float32) for g, v in zip(grads, variables, strict=True)
    ]


def _flatten(tensors: list) -> tf.Tensor:
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


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
        self.losses_fn = {t: task_loss.make_loss(spec["tasks"][t]["loss"]) for t in self.task_names}
        self.task_weights = np.array([spec["tasks"][t]["weight"] for t in self.task_names], np.float32)
        total = float(self.task_weights.sum())
        # Validation/evaluation loss: the recipe's static weights normalised to sum 1, whatever the
        # strategy, so it is comparable across epochs and strategies (used for early stopping).
        self.eval_weights = (
            self.task_weights / total
            if total > 0
            else np.full_like(self.task_weights, 1 / len(self.task_weights))
        )
        # Trackers (reset by Keras each epoch through the ``metrics`` property).
        self.loss_tracker = keras.metrics.Mean(name="loss")
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
        self.gradient_based = self.strategy.needs == "gradients"
        self.on_representation = getattr(self.strategy, "on", "parameters") == "representation"
        self.pairs = [(i, j) for i in range(n) for j in range(i + 1, n)] if self.gradient_based else []
        # pairwise cosines of the task gradients on the shared layers (gradient-based strategies only)
        self.cos_tracker = (
            VectorMean(
                [f"cos_{self.task_names[i]}_{self.task_names[j]}" for i, j in self.pairs], name="cosines"
            )
            if self.pairs
            else None
        )
        # Strategy parameters (trained by Adam) and state (saved in checkpoints), plus step bookkeeping.
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
        self.seed = int(spec.get("seed", 0))
        # The last train step's raw per-task losses and whether its update was applied, read by the
        # runner's non-finite check (plain tf.Variables: not model weights, not saved). With
        # ``skip_nonfinite`` (``train.on_nan: skip_batch``, set by the runner) a batch whose losses or
        # gradients are not all finite changes nothing: no update, no strategy state, no metrics.
        self.skip_nonfinite = False
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA  # replica-identical values (tf.distribute)
        self.batch_losses = tf.Variable(
            tf.zeros([n]), trainable=False, name="batch_losses", aggregation=first
        )
        self.batch_applied = tf.Variable(True, trainable=False, name="batch_applied", aggregation=first)

    @property
    def metrics(self):
        out = [self.loss_tracker, self.task_loss_tracker, self.weight_tracker]
        for ms in self.task_metrics.values():
            out.extend(ms)
        return out + ([self.cos_tracker] if self.cos_tracker is not None else [])

    def _results(self, cosines: bool = True) -> dict:
        """The logs of a step: every metric's result, dict results flattened."""
        logs = {}
        for m in self.metrics:
            if m is self.cos_tracker and not cosines:
                continue
            result = m.result()
            if isinstance(result, dict):
                logs.update(result)
            else:
                logs[m.name] = result
        return logs

    # -- losses ---------------------------------------------------------------------------------
    def task_losses(self, y, preds, mask):
        """Per-task masked mean losses ``(T,)`` and label counts (:func:`mtlcli.model.losses.task_losses`)."""
        return task_loss.task_losses(self.losses_fn, y, preds, mask)

    def _combine_global(self, losses, reported, ctx, replicas):
        """A loss-based strategy under tf.distribute: ``combine`` sees the global losses ``reported`` and
        each replica back-propagates ``sum_i dC/dL_i * L_r,i + C / replicas``; summed over the replicas
        (as the optimizer does) its gradient is the single-device gradient of ``C(L)`` for the model and
        for the strategy's own parameters. Returns (result, per-replica surrogate)."""
        with tf.GradientTape() as inner:
            inner.watch(reported)
            result = self.strategy.combine(reported, self._params(), self._state(), ctx)
        slopes = inner.gradient(result.loss, reported)
        slopes = tf.zeros_like(reported) if slopes is None else tf.stop_gradient(slopes)
        return result, tf.reduce_sum(slopes * losses) + result.loss / replicas

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

    def _params(self):
        return {k: tf.convert_to_tensor(v) for k, v in self.strategy_params.items()}

    def _state(self):
        return {k: tf.convert_to_tensor(v) for k, v in self.strategy_state.items()}

    def _assign_state(self, state):
        for k, v in state.items():
            self.strategy_state[k].assign(tf.cast(v, self.strategy_state[k].dtype))

    # -- steps ----------------------------------------------------------------------------------
    def train_step(self, data):
        x, y, mask = data
        ctx = self._context()
        shared = self.shared_variables
        heads = self.head_variables
        params = list(self.strategy_params.values())
        # Several replicas (tf.distribute, decided at trace time): ``losses`` is this replica's share of
        # the global batch's losses (see task_losses), ``reported`` their sum over the replicas (the
        # global losses every strategy sees, tracked and checked), ``counts`` the global label counts
        # split evenly (so per-task loss means read the same on every replica). The optimizer sums the
        # replicas' gradients. One replica: ``reported is losses`` and nothing else changes.
        replicas = distribute.replicas()
        with tf.GradientTape(persistent=self.gradient_based) as tape:
            z = self.represent(x, training=True)
            preds = self.heads_from(z, training=True)
            losses, counts = self.task_losses(y, preds, mask)
            reported = losses
            if replicas > 1:
                reported = distribute.all_sum(tf.stop_gradient(losses))
                counts = distribute.all_sum(counts) / replicas
            if self.gradient_based:
                task_losses = tf.unstack(losses)  # inside the tape: each row is differentiated below
            elif replicas > 1:
                result, surrogate = self._combine_global(losses, reported, ctx, replicas)
                objective = result.loss
            else:
                result = self.strategy.combine(losses, self._params(), self._state(), ctx)
                objective = result.loss
        if not self.gradient_based:
            variables = shared + heads + params
            grads = tape.gradient(objective if replicas == 1 else surrogate, variables)
        else:
            if self.on_representation:
                rows = [tape.gradient(loss, z) for loss in task_losses]
                J = tf.stack([tf.reshape(r if r is not None else tf.zeros_like(z), [-1]) for r in rows])
            else:
                J = tf.stack([_flatten(_grads(tape, loss, shared)) for loss in task_losses])
            J = tf.cast(J, tf.float32)
            if replicas > 1 and self.on_representation:
                # Rows over the representation hold per-example blocks: the global rows are the
                # replicas' blocks side by side, so only the Gramian adds up. The strategy (weighting =
                # True: a function of the Gramian) gets a T x T factor of the global Gramian.
                J = distribute.gram_factor(distribute.all_sum(tf.matmul(J, J, transpose_b=True)))
            elif replicas > 1:
                J = distribute.all_sum(J)  # the task gradients of the global batch
            result = self.strategy.aggregate(J, reported, self._params(), self._state(), ctx)
            if self.on_representation:
                # sum_i w_i dL_i/dtheta in one backward pass (output_gradients weights the loss vector)
                w = tf.stop_gradient(tf.cast(result.weights, losses.dtype))
                shared_grads = _grads(tape, losses, shared, output_gradients=w)
            else:
                # replicas > 1: every replica holds the global direction; the optimizer's sum restores it
                direction = result.direction if replicas == 1 else result.direction / replicas
                shared_grads, offset = [], 0
                for v in shared:
                    size = int(np.prod(v.shape))
                    shared_grads.append(tf.reshape(direction[offset : offset + size], v.shape))
                    offset += size
            # Each head gets the plain gradient of its own loss (gradient of the unweighted sum).
            head_grads = _grads(tape, losses, heads)
            param_grads = [
                (result.param_grads or {}).get(k, tf.zeros_like(v)) for k, v in self.strategy_params.items()
            ]
            if replicas > 1:
                param_grads = [g / replicas for g in param_grads]
            variables = shared + heads + params
            grads = list(shared_grads) + list(head_grads) + param_grads
            gram = tf.matmul(J, J, transpose_b=True)
            norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
            if self.cos_tracker is not None:
                i, j = (list(t) for t in zip(*self.pairs, strict=True))
                cosines = tf.math.divide_no_nan(
                    tf.gather_nd(gram, list(zip(i, j, strict=True))),
                    tf.gather(norms, i) * tf.gather(norms, j),
                )
                self.cos_tracker.update_state(cosines)
            objective = tf.reduce_sum(tf.stop_gradient(tf.cast(result.weights, losses.dtype)) * reported)
            del tape
        # Apply in Keras's own variable order: a reloaded model builds its optimizer in that order, so
        # the saved Adam slots line up whichever path (fit or a direct train_step) built it first.
        order = {id(v): i for i, v in enumerate(self.trainable_variables)}
        pairs = sorted(
            ((g, v) for g, v in zip(grads, variables, strict=True) if g is not None),
            key=lambda p: order[id(p[1])],
        )
        self.batch_losses.assign(tf.cast(reported, tf.float32))

        def update():
            self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            new_state = result.state
            if self.strategy.needs_losses_after_step:
                after, _ = self.task_losses(y, self(x, training=False), mask)
                if replicas > 1:
                    after = distribute.all_sum(after)
                new_state = self.strategy.after_step(reported, after, self._params(), new_state, ctx)
            self._assign_state(new_state)
            self._track(reported, counts, y, preds, mask, objective, result.weights)
            return tf.constant(True)

        if self.skip_nonfinite:
            checks = [tf.reduce_all(tf.math.is_finite(t)) for t in [losses, *(g for g, _ in pairs)]]
            # (not under tf.distribute: an all-reduce inside tf.cond is refused; the recipe check says so)
            applied = tf.cond(tf.reduce_all(tf.stack(checks)), update, lambda: tf.constant(False))
        else:
            applied = update()
        self.batch_applied.assign(applied)
        return self._step_logs(self._results())

    def test_step(self, data):
        x, y, mask = data
        preds = self(x, training=False)
        losses, counts = self.task_losses(y, preds, mask)
        replicas = distribute.replicas()
        if replicas > 1:  # global losses and evenly split global counts, as in train_step
            losses, counts = distribute.all_sum(losses), distribute.all_sum(counts) / replicas
        objective = tf.reduce_sum(tf.constant(self.eval_weights) * losses)
        self._track(losses, counts, y, preds, mask, objective, tf.constant(self.eval_weights))
        return self._step_logs(self._results(cosines=False))

    @staticmethod
    def _step_logs(logs):
        # tensorflow/tensorflow#72388 (Keras 3.15): under MultiWorkerMirroredStrategy step outputs are
        # reduced along axis 0, which scalars lack. (Per-batch logs under tf.distribute are the replicas'
        # mean of their running results: exact for the loss, weight and per-task loss means, which every
        # replica tracks with global values; per-example metrics are exact in the epoch's logs.)
        if distribute.multi_worker():
            return {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def _track(self, losses, counts, y, preds, mask, objective, weights):
        self.loss_tracker.update_state(objective)
        weights = tf.cast(weights, tf.float32)
        self.task_loss_tracker.update_state(losses, sample_weight=counts)
        self.weight_tracker.update_state(weights)
        for task in self.task_names:
            for metric in self.task_metrics[task]:
                metric.update_state(y[task], tf.cast(preds[task], tf.float32), sample_weight=mask[task])
