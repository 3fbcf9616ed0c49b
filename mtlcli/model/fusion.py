"""``model.fusion: attention``: the inputs, after their encoders, as a short sequence of tokens that
attend to each other before they are pooled into one vector for the trunk.

A registered Keras layer (``mtl>InputAttention``, no Lambda: a saved model loads with
``safe_mode=True``). :class:`mtlcli.model.network.Network` builds it when a recipe asks for attention
fusion and has several inputs; it is a shared layer (every task's loss reaches it).
"""

from __future__ import annotations

import keras
from keras import ops

from mtlcli.model.registration import serializable


@serializable
class InputAttention(keras.layers.Layer):
    """``(batch, inputs, width)`` -> ``(batch, width)``: ``mean_i (x_i + attention(x, x)_i)``.

    One-head dot-product self-attention over the inputs (``keras.layers.MultiHeadAttention`` with
    ``key_dim = value_dim = width``, output width ``width``): each input's vector is mixed with the
    others' by how well they match, kept by a residual connection, and the inputs are averaged. With
    every attention weight at 0 the output is the inputs' mean; the result does not depend on the
    inputs' order. Parameters: ``4 * width * (width + 1)``.
    """

    def build(self, input_shape):
        width = int(input_shape[-1])
        self.attention = keras.layers.MultiHeadAttention(1, width, name="attention", dtype=self.dtype_policy)
        self.attention.build(input_shape, input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def call(self, tokens, training=False):
        mixed = tokens + self.attention(tokens, tokens, training=training)
        return ops.mean(mixed, axis=1)
