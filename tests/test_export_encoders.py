"""``mtl export --format tflite`` of a model with per-input encoders (``model.encoders``): an image
encoder (conv2d, pooling, flatten or global pooling) and a numeric one meeting by concat, sum or
attention; the .tflite's outputs equal the SavedModel's and ``mtl predict``'s within float32 tolerance.
A recurrent encoder that loops over the steps is refused with the reason; unrolled, it converts."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

RECIPE = """\
seed: 0
data:
  train: d.npz
  validation: 0.25
  inputs:
    image: {kind: image, shape: [8, 8, 1]}
    size: numeric
model:
  encoders:
    image: IMAGE
    size: [{dense: {units: 3, activation: relu}}]
  fusion: FUSION
  shared: [{dense: {units: 6, activation: relu}}]
  tasks:
    left: {type: classification}
    right: {type: binary, head: [{dense: {units: 3}}]}
train: {epochs: 1, batch_size: 8}
"""
#: concat flattens and joins any widths; sum and attention need one width (3: the size encoder's)
IMAGE = {
    "concat": "[{conv2d: {filters: 2, kernel_size: 3, activation: relu}}, {max_pooling2d: {}}, flatten]",
    "sum": "[{conv2d: {filters: 3, kernel_size: 3, activation: relu}}, global_average_pooling2d]",
    "attention": "[{conv2d: {filters: 4, kernel_size: 3, activation: relu}}, {average_pooling2d: {pool_size: 2}}, "
    "global_max_pooling2d, {dense: {units: 3}}]",
}
ROWS = 6


def _npz(tmp_path, n: int = 24):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8)
    sizes = rng.normal(size=n)
    left = (images.mean(axis=(1, 2, 3)) > 127).astype(np.int64) + (sizes > 0.5)
    np.savez(tmp_path / "d.npz", image=images, size=sizes, left=left, right=(sizes > 0).astype(np.int64))
    return images, sizes


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
@pytest.mark.parametrize("fusion", ["concat", "sum", "attention"])
def test_tflite_with_encoders_equals_the_saved_model_and_mtl_predict(cli, tmp_path, fusion):
    import tensorflow as tf

    images, sizes = _npz(tmp_path)
    recipe = RECIPE.replace("IMAGE", IMAGE[fusion]).replace("FUSION", fusion)
    (tmp_path / "recipe.yaml").write_text(recipe)
    run = tmp_path / "run"
    assert cli("train", tmp_path / "recipe.yaml", "-o", run).exit_code == 0
    for fmt in ("saved_model", "tflite"):
        result = cli("export", run, "--format", fmt, "-o", tmp_path / fmt)
        assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "tflite" / "export.json").read_text())
    assert manifest["format"] == "tflite" and set(manifest["inputs"]) == {"image", "size"}
    pixels, numbers = images[:ROWS].astype(np.float32), sizes[:ROWS]
    lite = tf.lite.Interpreter(model_path=str(tmp_path / "tflite" / "model.tflite")).get_signature_runner()
    got = lite(image=pixels, size=numbers.astype(np.float32))
    fn = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    served = {k: v.numpy() for k, v in fn(image=tf.constant(pixels), size=tf.constant(numbers)).items()}
    assert set(got) == set(served) and {"left_probabilities", "right_probability", "left_label"} <= set(got)
    for k, v in served.items():
        if v.dtype == object:  # the class labels
            assert got[k].tolist() == v.tolist(), k
        else:  # float32 standardisation in TFLite vs float64 in the SavedModel
            assert np.max(np.abs(got[k] - v)) <= 1e-5, k
    assert not np.allclose(got["left_probabilities"][0], got["left_probabilities"][1])  # rows differ
    out = tmp_path / "p.csv"
    result = cli("predict", run, tmp_path / "d.npz", "-o", out, "--proba")
    assert result.exit_code == 0, result.output
    with out.open() as f:
        predicted = list(csv.DictReader(f))[:ROWS]
    from_predict = np.array([[float(r[f"left:{c}"]) for c in range(3)] for r in predicted])
    assert np.max(np.abs(got["left_probabilities"] - from_predict)) <= 1e-5
    right = np.array([float(r["right:p"]) for r in predicted])
    assert np.max(np.abs(got["right_probability"].reshape(-1) - right)) <= 1e-5
    assert [s.decode() for s in got["left_label"]] == [r["left"] for r in predicted]


SEQUENCE = """\
seed: 0
data:
  train: s.npz
  validation: 0.25
  inputs:
    steps: {kind: array, shape: [5, 2]}
    size: numeric
model:
  encoders:
    steps: [RNN]
    size: [{dense: {units: 3, activation: relu}}]
  tasks:
    left: {type: classification}
    right: {type: binary}
train: {epochs: 1, batch_size: 8}
"""


def _sequence_run(tmp_path, rnn: str):
    from mtlcli import recipe as R
    from mtlcli.run import runner

    rng = np.random.default_rng(2)
    steps, sizes = rng.normal(size=(24, 5, 2)).astype(np.float32), rng.normal(size=24)
    left, right = rng.integers(0, 3, 24), (sizes > 0).astype(np.int64)
    np.savez(tmp_path / "s.npz", steps=steps, size=sizes, left=left, right=right)
    (tmp_path / "recipe.yaml").write_text(SEQUENCE.replace("RNN", rnn))
    return runner.train(R.load(tmp_path / "recipe.yaml"), output=tmp_path / "run").run_dir, steps, sizes


@pytest.mark.slow
def test_a_looping_recurrent_encoder_is_refused_by_tflite_with_the_reason(cli, tmp_path):
    run, _, _ = _sequence_run(tmp_path, "{bidirectional: {layer: {lstm: {units: 3}}}}")
    result = cli("export", run, "--format", "tflite", "-o", tmp_path / "lite")
    assert result.exit_code == 2 and "Traceback" not in result.output and not (tmp_path / "lite").exists()
    assert (
        "error: --format tflite: the recurrent layer(s) steps_encoder_0 (Bidirectional of LSTM) cannot "
        "convert: their loop over the steps keeps a TensorFlow tensor list, which TFLite's builtin ops hold "
        "only at a fixed batch size. Set unroll: true on them" in " ".join(result.output.split())
    )
    assert cli("export", run, "-o", tmp_path / "sm").exit_code == 0  # the SavedModel takes it


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_an_unrolled_recurrent_encoder_converts_and_equals_the_saved_model(tmp_path):
    import tensorflow as tf

    from mtlcli.run import export as E

    run, steps, sizes = _sequence_run(tmp_path, "{gru: {units: 3, unroll: true}}")
    lite_done = E.export(run, fmt="tflite", output=tmp_path / "lite")
    got = tf.lite.Interpreter(model_path=str(lite_done.model_file)).get_signature_runner()(
        steps=steps[:ROWS], size=sizes[:ROWS].astype(np.float32)
    )
    fn = tf.saved_model.load(str(E.export(run, output=tmp_path / "sm").path)).signatures["serving_default"]
    served = fn(steps=tf.constant(steps[:ROWS]), size=tf.constant(sizes[:ROWS]))
    for k in ("left_probabilities", "right_probability"):
        assert np.max(np.abs(got[k] - served[k].numpy())) <= 1e-5, k
