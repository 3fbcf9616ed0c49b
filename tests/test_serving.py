"""OutputDecoder: logits -> probabilities, class indices, labels and values, on hand-computable numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest


def decode(targets: dict, logits: dict, tasks=None, thresholds=None) -> dict:
    import tensorflow as tf

    from mtlcli.model.serving import OutputDecoder

    layer = OutputDecoder(targets, tasks, thresholds)
    out = layer({k: tf.constant(v, tf.float32) for k, v in logits.items()})
    return {k: v.numpy() for k, v in out.items()}


def stats(**kw) -> dict:
    from dataclasses import asdict

    from mtlcli.data.targets import TargetStats

    return asdict(TargetStats(**kw))


def test_classification_softmax_argmax_and_label():
    t = {"kind": stats(type="classification", column="kind", classes=["a", "b", "c"])}
    out = decode(t, {"kind": [[0.0, math.log(2.0), 0.0], [math.log(3.0), 0.0, 0.0]]})
    assert sorted(out) == ["kind_class_index", "kind_label", "kind_probabilities"]
    np.testing.assert_allclose(out["kind_probabilities"], [[0.25, 0.5, 0.25], [0.6, 0.2, 0.2]], rtol=1e-6)
    assert out["kind_class_index"].tolist() == [1, 0] and out["kind_class_index"].dtype == np.int64
    assert out["kind_label"].tolist() == [b"b", b"a"]


def test_binary_probability_and_threshold():
    t = {"sex": stats(type="binary", column="sex", classes=["female", "male"])}
    logits = {"sex": [[0.0], [math.log(3.0)], [-math.log(4.0)]]}  # p = 0.5, 0.75, 0.2
    out = decode(t, logits)
    np.testing.assert_allclose(out["sex_probability"], [0.5, 0.75, 0.2], rtol=1e-6)
    assert out["sex_class_index"].tolist() == [1, 1, 0]  # p >= 0.5 is the second class
    assert out["sex_label"].tolist() == [b"male", b"male", b"female"]
    strict = decode(t, logits, thresholds={"sex": 0.8})
    assert strict["sex_class_index"].tolist() == [0, 0, 0]
    loose = decode(t, logits, thresholds={"sex": 0.1})
    assert loose["sex_label"].tolist() == [b"male"] * 3
    ints = decode({"c": stats(type="binary", column="c", classes=[0, 1])}, {"c": [[2.0]]})
    assert ints["c_label"].tolist() == [b"1"]


def test_multilabel_join_with_the_separator_and_threshold():
    t = {"tags": stats(type="multilabel", column="tags", classes=["p", "q", "r"], separator=";")}
    logits = {"tags": [[2.0, -2.0, math.log(1.5)], [-1.0, -1.0, -1.0]]}  # p, q, r = .88, .12, .6
    out = decode(t, logits)
    sig = 1 / (1 + np.exp(-np.array(logits["tags"])))
    np.testing.assert_allclose(out["tags_probabilities"], sig, rtol=1e-6)
    assert out["tags_labels"].tolist() == [[1, 0, 1], [0, 0, 0]]
    assert out["tags_label"].tolist() == [b"p;r", b""]
    assert decode(t, logits, thresholds={"tags": 0.7})["tags_label"].tolist() == [b"p", b""]
    columns = {"tags": stats(type="multilabel", column=["p", "q", "r"], classes=["p", "q", "r"])}
    assert decode(columns, logits)["tags_label"].tolist() == [b"p|r", b""]  # 0/1 columns: '|'


def test_regression_in_original_units():
    one = {"mass": stats(type="regression", column="mass", mean=4000.0, std=800.0)}
    out = decode(one, {"mass": [[0.5], [-1.25]]})
    assert list(out) == ["mass_value"]
    np.testing.assert_allclose(out["mass_value"], [4400.0, 3000.0])
    assert out["mass_value"].shape == (2,)
    two = {"pos": stats(type="regression", column=["x", "y"], mean=[1.0, -2.0], std=[2.0, 0.5])}
    out = decode(two, {"pos": [[1.0, 2.0], [0.0, -4.0]]})
    np.testing.assert_allclose(out["pos_value"], [[3.0, -1.0], [1.0, -4.0]])


def test_only_the_chosen_tasks_and_the_config_round_trip():
    import tensorflow as tf

    from mtlcli.model.serving import OutputDecoder

    t = {
        "mass": stats(type="regression", column="mass", mean=10.0, std=2.0),
        "sex": stats(type="binary", column="sex", classes=["f", "m"]),
    }
    logits = {"mass": [[1.0]], "sex": [[0.0]]}
    assert sorted(decode(t, logits, tasks=["sex"])) == ["sex_class_index", "sex_label", "sex_probability"]
    layer = OutputDecoder(t, ["mass", "sex"], {"sex": 0.7})
    again = OutputDecoder.from_config(layer.get_config())
    out = again({k: tf.constant(v) for k, v in logits.items()})
    assert out["sex_class_index"].numpy().tolist() == [0]  # the threshold 0.7 survived
    assert out["mass_value"].numpy().tolist() == pytest.approx([12.0])
