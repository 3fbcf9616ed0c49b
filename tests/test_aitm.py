"""AITM building blocks: the calibrator penalty on hand-computed values, the information-transfer
layer's attention (weights sum to 1, output a convex mix of h3), a safe_mode round trip, finite
gradients."""

from __future__ import annotations

import numpy as np


def test_calibrator_penalty_hand_computed():
    from mtlcli.model.aitm import calibrator_penalty

    click = np.array([0.5, 0.2, 0.9, 0.1], np.float32)
    buy = np.array([0.6, 0.1, 0.95, 0.1], np.float32)  # gaps 0.1, -0.1, 0.05, 0 -> mean(max) = 0.0375
    assert abs(float(calibrator_penalty([click, buy])) - 0.0375) < 1e-7
    repurchase = np.array([0.0, 0.3, 0.0, 0.5], np.float32)  # vs buy: 0, 0.2, 0, 0.4 -> 0.15
    assert abs(float(calibrator_penalty([click, buy, repurchase])) - 0.1875) < 1e-6
    assert float(calibrator_penalty([buy, buy * 0.5])) == 0.0


def test_information_transfer_attention_and_round_trip(tmp_path):
    import keras
    import tensorflow as tf

    from mtlcli.model.aitm import InformationTransfer

    prev, own = keras.Input((5,)), keras.Input((4,))
    layer = InformationTransfer(4, name="ait")
    model = keras.Model([prev, own], layer([prev, own]))
    rng = np.random.default_rng(0)
    args = [rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=(8, 4)).astype(np.float32)]
    w = np.asarray(layer.attention(args))
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    u = np.stack([np.asarray(layer.transfer(args[0])), args[1]], axis=1)
    expected = np.sum(w[:, :, None] * np.asarray(layer.h3(u)), axis=1)
    np.testing.assert_allclose(np.asarray(model(args)), expected, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(args)), np.asarray(model(args)), atol=1e-6)
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(model(args))
    grads = tape.gradient(out, model.trainable_variables)
    assert all(np.isfinite(g.numpy()).all() for g in grads)
