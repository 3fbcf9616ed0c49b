"""Learned embeddings of categorical inputs (``encoding: embedding``).

The data side (:func:`mtlcli.data.preprocess.transform`) turns such an input into one int32 id per row, shape
``(batch, 1)``: 0 is the unknown bucket (a value not seen in training, or missing), ``1..V`` the
training vocabulary in sorted order. :class:`CategoryEmbedding` maps each id to a learned vector of
``dim`` values before the model joins its inputs; it is part of the shared network (every task reads it).
"""

from __future__ import annotations

import keras
from keras import ops

from mtlcli.model.registration import serializable


@serializable
class CategoryEmbedding(keras.layers.Layer):
    """``(batch, 1)`` integer ids -> ``(batch, dim)`` vectors, one learned row per id.

    Args:
        rows: table size: the training vocabulary plus the unknown bucket (id 0).
        dim: the vector size.
    """

    def __init__(self, rows: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.rows = int(rows)
        self.dim = int(dim)

    def build(self, input_shape=None):
        # Keras' Embedding initialiser (uniform in [-0.05, 0.05]).
        self.embeddings = self.add_weight(
            shape=(self.rows, self.dim),
            initializer=keras.initializers.RandomUniform(-0.05, 0.05),
            name="embeddings",
            trainable=True,
        )

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], self.dim)

    def call(self, ids):
        ids = ops.reshape(ops.cast(ids, "int32"), (-1,))
        return ops.cast(ops.take(self.embeddings, ids, axis=0), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "dim": self.dim}


def embedded_inputs(spec: dict) -> dict[str, tuple[int, int]]:
    """``input -> (rows, dim)`` for every categorical input of a model spec encoded as an embedding
    (specs written before embeddings existed have none)."""
    from mtlcli import data

    embedded = data.Preprocessing.from_dict(spec["preprocessing"]).embeddings()
    return {name: rows_dim for name, rows_dim in embedded.items() if name in spec["inputs"]}
