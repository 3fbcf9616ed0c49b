"""ESMM (Ma et al., SIGIR 2018): a task whose probability is the product of other binary tasks'.

A recipe task with ``product_of: [ctr, cvr]`` has no layers of its own: its output is computed from its
factors' logits by :class:`ProductOfProbabilities`. The output is the *logit* of ``prod_i sigmoid(a_i)``
(every binary head outputs logits), computed in log space so that it is finite for any finite inputs:
``log p = sum_i log sigmoid(a_i)`` and ``log(1 - p)`` by the recursion
``1 - P_k = (1 - P_{k-1}) + P_{k-1} (1 - p_k)`` with ``logaddexp``. Binary cross-entropy from that logit
is the cross-entropy of the product probability, with exact gradients into every factor and no clipping.
"""

from __future__ import annotations

import keras
from keras import ops

from mtlcli.model.registration import serializable


def product_logit(logits: list):
    """The logit of ``prod_i sigmoid(logits[i])``, computed in log space (float32)."""
    logits = [ops.cast(a, "float32") for a in logits]
    log_p = ops.log_sigmoid(logits[0])  # log P_1
    log_q = ops.log_sigmoid(-logits[0])  # log (1 - P_1)
    for a in logits[1:]:
        log_q = ops.logaddexp(log_q, log_p + ops.log_sigmoid(-a))
        log_p = log_p + ops.log_sigmoid(a)
    return log_p - log_q


@serializable
class ProductOfProbabilities(keras.layers.Layer):
    """``call([a_1, ..., a_n])`` -> the logit of ``prod sigmoid(a_i)`` (no weights; float32)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def call(self, inputs):
        return product_logit(list(inputs))
