"""From per-task losses to gradients, for each kind of input a weighting strategy declares it needs.

One of the four classes here is chosen when the model is built (:func:`for_strategy`), and the train
step calls it the same way whatever the kind: :meth:`Backward.jacobian` before the strategy's
``update``, :meth:`Backward.gradients` after it.

* :class:`LossBackward` (``needs: losses``): no Jacobian; the strategy's ``loss_grads``
  ``dC/dL_i`` are back-propagated through the losses to every variable, so the heads are weighted too
  (LibMTL's convention for loss-weighting methods).
* :class:`ParameterBackward` (``needs: gradients``): ``J`` holds the per-task gradients of the shared
  variables (a loop of ``tape.gradient``, measured faster than ``tape.jacobian`` here); the strategy's
  direction replaces the shared gradient and each head gets the plain gradient of its own loss
  (TorchJD's ``mtl_backward`` convention).
* :class:`TwoBatchBackward` (``batches == 2``: MoDo, SDMGrad): as :class:`ParameterBackward`, with
  ``J`` ``(2, T, P)`` from the task losses of the batch's two halves.
* :class:`RepresentationBackward` (``on: representation``): ``J`` holds the gradients w.r.t. the shared
  representation ``z`` (MGDA-UB style); ``sum_i w_i L_i`` is back-propagated once through the shared
  part, and heads get their plain gradients as above.

Several replicas (tf.distribute, decided at trace time): each replica holds its share of the global
batch's losses (:func:`mtlcli.model.losses.task_losses`) and the strategy sees global values. Every
gradient handed to the optimizer is this replica's share of the global gradient, because the optimizer
sums the replicas': a back-propagation of this replica's losses already is one; a value every replica
computes identically (a direction, a strategy parameter's gradient) goes through
:func:`mtlcli.distribute.share`. On one replica every distribute helper is the identity.
"""

from __future__ import annotations

import math

import tensorflow as tf

from mtlcli import distribute


def grads_or_zeros(tape, target, variables, output_gradients=None, frozen=frozenset()) -> list:
    """``tape.gradient`` with zeros for unconnected variables (Keras variables report dtype as a string,
    which ``UnconnectedGradients.ZERO`` cannot handle) and for ``frozen`` ones (ids of variables a
    ``freeze_epochs`` schedule holds fixed: not differentiated at all)."""
    live = [v for v in variables if id(v) not in frozen]
    found = dict(
        zip(map(id, live), tape.gradient(target, live, output_gradients=output_gradients), strict=True)
    )
    return [g if (g := found.get(id(v))) is not None else tf.zeros(v.shape, tf.float32) for v in variables]


def _flatten(tensors: list):
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def _head_grads(tape, losses, heads) -> list:
    # each head gets the plain gradient of its own loss: the gradient of the unweighted sum
    return grads_or_zeros(tape, losses, heads)


class Backward:
    """How one kind of strategy turns the recorded losses into gradients (see the module docstring)."""

    #: whether the tape must stay usable for several gradients (one per task row of ``J``)
    persistent = True
    #: ids of shared variables held fixed by a ``freeze_epochs`` schedule (their columns of ``J`` and
    #: their gradients are zeros; :mod:`mtlcli.model.freezing` sets it before each trace)
    frozen: frozenset = frozenset()

    def jacobian(self, tape, rows: list, z, shared: list):
        """The global ``J`` the strategy reads (``rows``: the per-task losses, unstacked inside the
        tape), or None: :meth:`global_jacobian` of :meth:`local_jacobian`."""
        return self.global_jacobian(self.local_jacobian(tape, rows, z, shared))

    def local_jacobian(self, tape, rows: list, z, shared: list):
        """This replica's rows of ``J`` (no cross-replica communication: may run inside ``tf.cond``)."""
        raise NotImplementedError

    def no_jacobian(self, num_tasks: int, z, shared: list):
        """Zeros shaped like :meth:`local_jacobian` (the ``every: K`` steps that skip it)."""
        raise NotImplementedError

    def global_jacobian(self, local):
        """The all-reduced ``J`` (or a factor of its Gramian) from :meth:`local_jacobian`'s rows; the
        identity on one replica. Called on every replica at every step (never inside ``tf.cond``)."""
        return local

    def gradients(self, tape, losses, result, shared: list, heads: list) -> list:
        """Gradients for ``shared + heads`` (None where a variable is unconnected)."""
        raise NotImplementedError


class LossBackward(Backward):
    """Loss-based strategies: ``dC/dL`` back through every variable in one pass."""

    persistent = False

    def jacobian(self, tape, rows, z, shared):
        return None

    def gradients(self, tape, losses, result, shared, heads):
        live = [v for v in shared if id(v) not in self.frozen] + heads
        grads = tape.gradient(losses, live, output_gradients=result.loss_grads)
        found = dict(zip(map(id, live), grads, strict=True))
        return [found.get(id(v)) for v in shared] + [found[id(v)] for v in heads]


class ParameterBackward(Backward):
    """``J`` over the shared variables; the strategy's direction becomes their gradient."""

    def local_jacobian(self, tape, rows, z, shared):
        rows = [_flatten(grads_or_zeros(tape, loss, shared, frozen=self.frozen)) for loss in rows]
        return tf.cast(tf.stack(rows), tf.float32)

    def no_jacobian(self, num_tasks, z, shared):
        return tf.zeros([num_tasks, sum(math.prod(v.shape) for v in shared)], tf.float32)

    def global_jacobian(self, local):
        return distribute.global_sum(local)  # the task gradients of the global batch

    def gradients(self, tape, losses, result, shared, heads):
        direction = distribute.share(result.direction)
        shared_grads, offset = [], 0
        for v in shared:
            size = math.prod(v.shape)
            shared_grads.append(tf.reshape(direction[offset : offset + size], v.shape))
            offset += size
        return shared_grads + _head_grads(tape, losses, heads)


class TwoBatchBackward(ParameterBackward):
    """``J`` ``(2, T, P)`` over the shared variables from the ``2T`` rows ``L¹_1 .. L¹_T, L²_1 .. L²_T``
    (the task losses of two halves of the batch: :mod:`mtlcli.model.train_step`); the strategy's
    direction becomes their gradient, as with :class:`ParameterBackward`."""

    def local_jacobian(self, tape, rows, z, shared):
        J = super().local_jacobian(tape, rows, z, shared)
        return tf.reshape(J, [2, len(rows) // 2, -1])

    def no_jacobian(self, num_tasks, z, shared):
        return tf.zeros([2, num_tasks, sum(math.prod(v.shape) for v in shared)], tf.float32)


class RepresentationBackward(Backward):
    """``J`` over the shared representation ``z``; ``sum_i w_i L_i`` back through the shared part."""

    def local_jacobian(self, tape, rows, z, shared):
        grads = [tape.gradient(loss, z) for loss in rows]
        J = tf.stack([tf.reshape(g if g is not None else tf.zeros_like(z), [-1]) for g in grads])
        return tf.cast(J, tf.float32)

    def no_jacobian(self, num_tasks, z, shared):
        return tf.zeros(tf.stack([num_tasks, tf.size(z)]), tf.float32)

    def global_jacobian(self, local):
        J = local
        if distribute.replicas() == 1:
            return J
        # Rows over the representation hold per-example blocks: the global rows are the replicas' blocks
        # side by side, so only the Gramian adds up; the strategy (``weighting = True``: a function of
        # the Gramian) gets a T x T factor of the global Gramian.
        return distribute.gram_factor(distribute.all_sum(tf.matmul(J, J, transpose_b=True)))

    def gradients(self, tape, losses, result, shared, heads):
        return weighted_gradients(tape, losses, result.weights, shared, heads, self.frozen)


def weighted_gradients(tape, losses, weights, shared: list, heads: list, frozen=frozenset()) -> list:
    """Gradients for ``shared + heads`` from given task weights: ``sum_i w_i dL_i/dtheta`` for the
    shared variables in one backward pass, each head the plain gradient of its own loss (``on:
    representation`` every step; any weighting on the steps between ``every: K`` updates)."""
    # output_gradients weights the loss vector
    w = tf.stop_gradient(tf.cast(weights, losses.dtype))
    shared_grads = grads_or_zeros(tape, losses, shared, output_gradients=w, frozen=frozen)
    return shared_grads + _head_grads(tape, losses, heads)


def for_strategy(needs: str, on: str, batches: int = 1) -> Backward:
    """The :class:`Backward` for a strategy's ``needs`` (and, for gradient-based ones, ``on`` and the
    number of independent ``batches`` it reads)."""
    if needs == "losses":
        return LossBackward()
    if batches == 2:
        return TwoBatchBackward()
    return RepresentationBackward() if on == "representation" else ParameterBackward()
