"""The raw-features -> model-inputs transform in TensorFlow (mtlcli.data.layers): it gives the numbers the
numpy definitions give, runs on stacks of batches, and saves / loads with safe_mode=True in front of a
model for serving raw rows."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.data import layers  # noqa: E402 - imports Keras
from mtlcli.data.inputs import InputStats


def test_each_kind_equals_its_numpy_definition():
    stats = {
        "a": InputStats("numeric", "a", mean=3.0, std=2.0, missing="zero", flag=True),
        "m": InputStats("numeric", "m", mean=3.0, std=2.0),
        "c": InputStats("categorical", "c", vocabulary=["x", "y"]),
        "e": InputStats("categorical", "e", vocabulary=["1", "2"], encoding="embedding", dim=3),
        "n": InputStats("categorical", "n"),  # no training vocabulary: everything is unknown
        "img": InputStats("image", "img", shape=[2, 2, 1], scale=0.5),
    }
    v = np.array([1.0, np.nan, 5.0])
    raw = {
        "a": v,
        "m": v,
        "c": np.array(["x", "", "zz"], dtype=object),
        "e": np.array(["2", "1", ""], dtype=object),
        "n": np.array(["q", "", "r"], dtype=object),
        "img": np.arange(12, dtype=np.float32).reshape(3, 2, 2, 1),
    }
    out = layers.transform_features(stats, raw)
    zero = (0.0 - 3.0) / 2.0
    np.testing.assert_array_equal(out["a"], np.array([[-1.0, 0], [zero, 1], [1.0, 0]], np.float32))
    np.testing.assert_array_equal(out["m"], np.array([[-1.0], [0.0], [1.0]], np.float32))
    np.testing.assert_array_equal(out["c"], np.eye(3, dtype=np.float32)[[1, 0, 0]])
    assert out["e"].dtype == np.int32 and out["e"][:, 0].tolist() == [2, 1, 0]
    np.testing.assert_array_equal(out["n"], np.ones((3, 1), np.float32))
    np.testing.assert_array_equal(out["img"], raw["img"] * np.float32(0.5))
    two = {"m": stats["m"], "c": stats["c"]}  # a stack of 2 batches of 3 rows, as tf.data hands it over
    stacked = layers.layer(two)({"m": tf.constant(np.stack([v, v])), "c": tf.constant([["x", "", "y"]] * 2)})
    assert tuple(stacked["m"].shape) == (2, 3, 1) and tuple(stacked["c"].shape) == (2, 3, 3)


def test_serving_inputs_save_load_safely_and_equal_the_training_inputs(tiny_project, tmp_path):
    prepared = data.prepare(R.load(tiny_project))
    train = prepared.splits["train"]
    serving = layers.serving_inputs(prepared.prep.inputs)
    path = tmp_path / "serving.keras"
    serving.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    raw = {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in train.raw.items()}
    out = loaded(raw)
    assert set(out) == set(train.x)
    for k, v in train.x.items():
        np.testing.assert_array_equal(np.asarray(out[k]), v)
    assert any(isinstance(layer, layers.InputTransform) for layer in loaded.layers)
