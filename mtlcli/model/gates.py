"""DSelect-k gates (Hazimeh et al., NeurIPS 2021) for mmoe / cgc / ple: ``gate: {dselect_k: {k, gamma}}``.

A DSelect-k gate mixes ``n`` experts with ``k`` differentiable selectors. Selector ``c`` reads
``m = ceil(log2 n)`` per-example values ``z_c = W_c x + b_c`` through the smooth step

    S(t) = 0 (t <= -gamma/2),  1 (t >= gamma/2),  -2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2 otherwise,

and puts weight ``r_c[j] = prod_i S(z_ci)^{bit_i(j)} (1 - S(z_ci))^{1 - bit_i(j)}`` on expert ``j``
(the binary encoding of ``j``): once every ``S`` has saturated at 0 or 1, each selector picks exactly one
expert, so at most ``k`` experts get a nonzero weight. The selectors are mixed by
``softmax(W_a x + b_a)``, so each example's weights sum to 1. When ``n`` is not a power of two, code
``c >= n`` also selects expert ``c - n`` (the paper assumes ``n = 2^m``): every code still selects one
expert, so the weights sum to 1 and a saturated selector still picks one expert; those first
``2^m - n`` experts start with twice the prior weight. The paper's optional entropy regulariser is not
implemented.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from mtlcli.model.registration import serializable


def smooth_step(t, gamma: float):
    """The cubic smooth step of DSelect-k: 0 below ``-gamma/2``, 1 above ``gamma/2``, C1 in between."""
    cubic = -2.0 / gamma**3 * t**3 + 3.0 / (2.0 * gamma) * t + 0.5
    return ops.where(t <= -gamma / 2, ops.zeros_like(t), ops.where(t >= gamma / 2, ops.ones_like(t), cubic))


def code_bits(n: int) -> np.ndarray:
    """``(2^m, m)`` 0/1: bit ``i`` of code ``c``, ``m = ceil(log2 n)`` (``(1, 0)`` for one expert)."""
    m = math.ceil(math.log2(n)) if n > 1 else 0
    return np.array([[(c >> i) & 1 for i in range(m)] for c in range(2**m)], np.float32).reshape(2**m, m)


def code_experts(n: int) -> np.ndarray:
    """``(2^m, n)`` one-hot: code ``c`` selects expert ``c mod n``."""
    codes = code_bits(n).shape[0]
    return np.eye(n, dtype=np.float32)[np.arange(codes) % n]


@serializable
class DSelectGate(keras.layers.Layer):
    """A DSelect-k gate with the interface of :class:`mtlcli.model.architectures.Gate`:
    ``call([selector, stacked])`` mixes ``stacked`` ``(batch, experts, *d)``; :meth:`weights_for` returns
    the ``(batch, experts)`` weights (rows sum to 1, at most ``k`` nonzero once saturated)."""

    def __init__(self, experts: int, k: int = 2, gamma: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.experts, self.k, self.gamma = int(experts), int(k), float(gamma)
        self.bits = code_bits(self.experts)
        self.m = self.bits.shape[1]
        self.codes = keras.layers.Dense(self.k * self.m, name="codes") if self.m else None
        self.mixing = keras.layers.Dense(self.k, name="mixing")

    def build(self, input_shape):
        selector_shape = tuple(input_shape[0])
        flat = (selector_shape[0], int(math.prod(int(d) for d in selector_shape[1:])))
        if self.codes is not None:
            self.codes.build(flat)
        self.mixing.build(flat)

    def compute_output_shape(self, input_shape):
        stacked = tuple(input_shape[1])
        return (stacked[0], *stacked[2:])

    def weights_for(self, selector):
        x = ops.reshape(selector, (ops.shape(selector)[0], -1))
        alpha = ops.softmax(self.mixing(x), axis=-1)  # (batch, k)
        if self.codes is None:  # one expert
            return ops.ones((ops.shape(x)[0], 1), dtype=alpha.dtype)
        s = smooth_step(ops.reshape(self.codes(x), (-1, self.k, 1, self.m)), self.gamma)
        bits = ops.cast(self.bits, s.dtype)  # (2^m, m)
        r = ops.prod(bits * s + (1.0 - bits) * (1.0 - s), axis=-1)  # (batch, k, 2^m), sums to 1
        r = ops.einsum("bkc,cn->bkn", r, ops.cast(code_experts(self.experts), r.dtype))
        return ops.sum(alpha[:, :, None] * r, axis=1)

    def call(self, inputs):
        selector, stacked = inputs
        w = ops.cast(self.weights_for(selector), stacked.dtype)
        w = ops.reshape(w, (-1, self.experts) + (1,) * (len(stacked.shape) - 2))
        return ops.sum(w * stacked, axis=1)

    def get_config(self):
        return {**super().get_config(), "experts": self.experts, "k": self.k, "gamma": self.gamma}
