"""AITM building blocks (Xi et al., KDD 2021), used by ``model.architecture: aitm``: the adaptive information
transfer layer and the behavioural-expectation calibrator penalty.

For sequentially dependent tasks (impression -> click -> purchase), task ``t`` mixes its own tower
representation ``q_t`` with the information ``p_{t-1} = transfer(q_{t-1})`` sent by the previous task,
by self-attention over the two (:class:`InformationTransfer`):

    w_u = softmax_u(<h2(u), h1(u)> / sqrt(d)),   z_t = sum_u w_u h3(u),   u in {p_{t-1}, q_t}

and the calibrator penalises a later task predicted more probable than its predecessor
(:func:`calibrator_penalty`): ``sum_t mean(max(p_t - p_{t-1}, 0))`` over consecutive tasks.
``model.architecture: aitm`` wires them in (:class:`mtlcli.model.network.Network`, the train step).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from mtlcli.model.registration import serializable


def calibrator_penalty(probabilities: list):
    """``sum_t mean_batch(max(p_t - p_{t-1}, 0))`` for the tasks' probabilities in their order."""
    total = ops.zeros((), "float32")
    for prev, nxt in zip(probabilities, probabilities[1:], strict=False):
        gap = ops.cast(nxt, "float32") - ops.cast(prev, "float32")
        total = total + ops.mean(ops.maximum(gap, 0.0))
    return total


@serializable
class InformationTransfer(keras.layers.Layer):
    """AITM's AIT module: ``call([q_prev, q])`` -> ``(batch, units)``, attention over the transferred
    ``p = relu(W q_prev)`` and the task's own ``q``; :meth:`attention` returns the ``(batch, 2)`` weights."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.transfer = keras.layers.Dense(self.units, activation="relu", name="transfer")
        self.h1 = keras.layers.Dense(self.units, name="h1")
        self.h2 = keras.layers.Dense(self.units, name="h2")
        self.h3 = keras.layers.Dense(self.units, name="h3")

    def build(self, input_shape):
        prev_shape, own_shape = tuple(input_shape[0]), tuple(input_shape[1])
        self.transfer.build(prev_shape)
        if int(own_shape[-1]) != self.units:
            raise ValueError(f"the task's representation has {own_shape[-1]} features, expected {self.units}")
        for h in (self.h1, self.h2, self.h3):
            h.build((None, self.units))

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape[1])[0], self.units)

    def _stack(self, inputs):
        prev, own = inputs
        return ops.stack([self.transfer(prev), own], axis=1)  # (batch, 2, units)

    def attention(self, inputs):
        u = self._stack(inputs)
        scores = ops.sum(self.h2(u) * self.h1(u), axis=-1) / math.sqrt(self.units)
        return ops.softmax(scores, axis=-1)

    def call(self, inputs):
        return ops.sum(self.attention(inputs)[:, :, None] * self.h3(self._stack(inputs)), axis=1)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
