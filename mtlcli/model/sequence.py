"""Layers for sequences of token vectors (text inputs with ``output: int`` after an ``embedding``):
self-attention, a Transformer encoder block and learned position embeddings.

Each is a registered Keras layer (``mtl>SelfAttention``, ``mtl>TransformerEncoder``,
``mtl>PositionEmbedding``) with one input, so it fits in a recipe's stack of layers and a saved model loads
with ``safe_mode=True`` (no Lambda). A recipe names them ``multi_head_attention``, ``transformer_encoder``
and ``positional_embedding`` (:mod:`mtlcli.recipe.layer_table`). Shapes are ``(batch, steps, features)``
in and out. They keep Keras's padding mask (``embedding: {mask_zero: true}``): attention then ignores
the padding positions, and the mask goes on to the next layer (an ``lstm``, a pooling layer).
"""

from __future__ import annotations

import keras
from keras import ops

from mtlcli.model.registration import serializable


@serializable
class SelfAttention(keras.layers.Layer):
    """Multi-head self-attention over a sequence: ``keras.layers.MultiHeadAttention(x, x)``.

    Args:
        num_heads: attention heads.
        key_dim: size of each head's query and key (default: features / num_heads).
        value_dim: size of each head's value (default: key_dim).
        dropout: dropout of the attention weights.
        use_bias: whether the projections have biases.
    """

    def __init__(self, num_heads: int, key_dim: int | None = None, value_dim: int | None = None,
                 dropout: float = 0.0, use_bias: bool = True, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.num_heads, self.key_dim, self.value_dim = int(num_heads), key_dim, value_dim
        self.dropout, self.use_bias = float(dropout), bool(use_bias)
        self.attention = None
        self.supports_masking = True

    def build(self, input_shape):
        features = int(input_shape[-1])
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads,
            self.key_dim or max(features // self.num_heads, 1),
            value_dim=self.value_dim,
            dropout=self.dropout,
            use_bias=self.use_bias,
            output_shape=features,
            name="attention",
            dtype=self.dtype_policy,
        )
        self.attention.build(input_shape, input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def call(self, x, training=False, mask=None):
        return self.attention(x, x, query_mask=mask, value_mask=mask, training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
        }


@serializable
class TransformerEncoder(keras.layers.Layer):
    """One Transformer encoder block (Vaswani et al., 2017; post-norm): ``h = norm(x + attention(x))``,
    then ``norm(h + W2 act(W1 h))``, with dropout after the attention and the feed-forward part.

    Args:
        num_heads: attention heads.
        intermediate_dim: width of the feed-forward part.
        key_dim: size of each head (default: features / num_heads).
        dropout: dropout rate (attention weights, and after each residual branch).
        activation: the feed-forward activation.
        layer_norm_epsilon: epsilon of both layer normalisations.
    """

    def __init__(self, num_heads: int, intermediate_dim: int, key_dim: int | None = None,
                 dropout: float = 0.0, activation: str = "relu", layer_norm_epsilon: float = 1e-5,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.num_heads, self.intermediate_dim, self.key_dim = int(num_heads), int(intermediate_dim), key_dim
        self.dropout, self.activation = float(dropout), activation
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.supports_masking = True

    def build(self, input_shape):
        features = int(input_shape[-1])
        policy = self.dtype_policy
        self.attention = SelfAttention(self.num_heads, self.key_dim, dropout=self.dropout, name="attention",
                                       dtype=policy)  # fmt: skip
        self.attention_norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name="attention_norm",
                                                              dtype=policy)  # fmt: skip
        self.inner = keras.layers.Dense(
            self.intermediate_dim, activation=self.activation, name="inner", dtype=policy
        )
        self.outer = keras.layers.Dense(features, name="outer", dtype=policy)
        self.output_norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name="output_norm",
                                                           dtype=policy)  # fmt: skip
        self.drop = keras.layers.Dropout(self.dropout, dtype=policy)
        self.attention.build(input_shape)
        self.attention_norm.build(input_shape)
        self.inner.build(input_shape)
        self.outer.build((*input_shape[:-1], self.intermediate_dim))
        self.output_norm.build(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def call(self, x, training=False, mask=None):
        attended = self.attention(x, training=training, mask=mask)
        h = self.attention_norm(x + self.drop(attended, training=training))
        return self.output_norm(h + self.drop(self.outer(self.inner(h)), training=training))

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "key_dim": self.key_dim,
            "dropout": self.dropout,
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


@serializable
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per position to a sequence: ``x[:, i] + P[i]`` (the sequence length and
    the width come from the input; ``P`` starts uniform in [-0.05, 0.05], as Keras's Embedding)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape):
        self.positions = self.add_weight(
            shape=(int(input_shape[-2]), int(input_shape[-1])),
            initializer=keras.initializers.RandomUniform(-0.05, 0.05),
            name="positions",
            trainable=True,
        )
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def call(self, x):
        return x + ops.cast(self.positions, x.dtype)
