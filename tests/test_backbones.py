"""Keras Applications backbones as recipe layers (``mobilenet_v3_small``, ``mobilenet_v3_large``,
``mobilenet_v2``, ``efficientnet_b0``, ``resnet50``): the table's counts and sizes against the installed Keras, the recipe mistakes at file:line
(``weights: imagenet`` refused, an image below the minimum size), the size estimate against Keras's
count as a trunk and as an encoder, a local weights file loaded once and never read again by the saved
model (safe mode), and train -> predict -> export on 32x32 images."""

from __future__ import annotations

import inspect
import math
import textwrap
import warnings

import numpy as np
import pytest

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.errors import RecipeError
from mtlcli.model import size
from mtlcli.recipe import layer_table

RECIPE = """\
seed: 0
data:
  train: d.npz
  validation: 0.25
  inputs:
    image: {kind: image, shape: [SIDE, SIDE, 3]}
model:
  shared:
    - mobilenet_v3_small: BACKBONE
    - dense: {units: 4, activation: relu}
  tasks:
    bright: {type: binary}
    level: {type: regression}
train: {epochs: 1, batch_size: 4}
"""


def _npz(tmp_path, side: int = 32, n: int = 8, channels: int = 3):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, side, side, channels), dtype=np.uint8)
    mean = images.mean(axis=(1, 2, 3))
    sizes = rng.normal(size=n)
    np.savez(
        tmp_path / "d.npz", image=images, size=sizes, bright=(mean > 127).astype(np.int64), level=mean / 255
    )
    return images


def _recipe(tmp_path, backbone: str = "{weights: null, include_top: false, pooling: avg}", side: int = 32,
            text: str = RECIPE):  # fmt: skip
    _npz(tmp_path, side)
    path = tmp_path / "recipe.yaml"
    path.write_text(text.replace("BACKBONE", backbone).replace("SIDE", str(side)))
    return R.load(path)


def _counts(layer) -> tuple[int, int]:
    trainable = sum(math.prod(v.shape) for v in layer.trainable_weights)
    return trainable, sum(math.prod(v.shape) for v in layer.non_trainable_weights)


def _build(loaded):
    from mtlcli.model.build import build_model

    prepared = data.prepare(loaded)
    return build_model(loaded, prepared, 0), prepared


# ------------------------------------------------------------------------------------------------
# The table against Keras


@pytest.mark.parametrize("name", sorted(layer_table.BACKBONES))
def test_table_counts_sizes_and_arguments_are_kerass(name):
    import keras

    from mtlcli.model.architectures import make_layer

    entry = layer_table.BACKBONES[name]
    assert layer_table.table()[name] == entry
    cls = keras.saving.get_registered_object(f"mtl>{entry['class']}")
    sig = inspect.signature(cls.__init__).parameters
    assert set(entry["params"]) - set(layer_table.BASE_KWARGS) <= set(sig)
    (t0, t1), (f0, f1) = entry["trainable"], entry["fixed"]
    for channels in (1, 3):
        layer = make_layer(name, "bb")
        layer.build((None, 32, 32, channels))
        assert _counts(layer) == (t0 + t1 * channels, f0 + f1 * channels), channels
        assert layer.compute_output_shape((None, 32, 32, channels)) == (None, entry["features"])
        # the size estimate's own formula agrees (pooled, and the feature map when pooling is null)
        assert size.layer_size(entry["class"], {}, (32, 32, channels))[:2] == _counts(layer)
    flat = make_layer({name: {"pooling": None}}, "bb")
    flat.build((None, 40, 70, 3))
    assert flat.compute_output_shape((None, 40, 70, 3))[1:] == size.layer_size(
        entry["class"], {"pooling": None}, (40, 70, 3)
    )[2] == (2, 3, entry["features"])  # fmt: skip
    small = entry["min_size"] - 1
    with pytest.raises(ValueError, match=f"at least {entry['min_size']}"):
        make_layer(name, "bb").build((None, small, 64, 3))
    assert size.layer_size(entry["class"], {}, (small, 64, 3)) is None


def test_pixels_are_what_the_imagenet_weights_expect():
    """[0, 1] pixels in; EfficientNet and MobileNetV3 (which rescale inside) get 255 x; MobileNetV2 gets
    [-1, 1] and ResNet50 Caffe's BGR, mean-subtracted pixels, as their preprocess_input makes them."""
    import keras

    from mtlcli.model.architectures import make_layer

    x = np.random.default_rng(0).random((2, 4, 4, 3)).astype("float32")
    mobile, resnet = make_layer("mobilenet_v3_small"), make_layer("resnet50")
    np.testing.assert_allclose(np.asarray(mobile.pixels(x)), 255 * x, rtol=1e-6)
    v2 = keras.applications.mobilenet_v2.preprocess_input(255 * x.copy())
    np.testing.assert_allclose(np.asarray(make_layer("mobilenet_v2").pixels(x)), v2, rtol=1e-5, atol=1e-6)
    expected = keras.applications.resnet50.preprocess_input(255 * x.copy())
    np.testing.assert_allclose(np.asarray(resnet.pixels(x)), expected, rtol=1e-5, atol=1e-4)
    # by hand for one pixel: BGR order, minus the ImageNet mean
    got = np.asarray(resnet.pixels(np.array([[[[0.0, 0.5, 1.0]]]], dtype="float32")))[0, 0, 0]
    np.testing.assert_allclose(got, [255 - 103.939, 127.5 - 116.779, 0 - 123.68], rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Recipe mistakes (no TensorFlow)


def _problems(text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        R.loads(textwrap.dedent(text), file="r.yaml")
    return [p.render() for p in info.value.problems]


def test_imagenet_downloads_so_it_is_refused_with_the_way_to_a_local_file():
    text = RECIPE.replace("SIDE", "32").replace("BACKBONE", "{weights: imagenet}")
    (got,) = _problems(text)
    assert got.startswith(
        "r.yaml:9 model.shared[0].mobilenet_v3_small.weights: MobileNetV3Small weights: imagenet "
        "downloads the ImageNet weights from the internet when the model is built"
    )
    assert "keras.applications.MobileNetV3Small(include_top=False, weights='imagenet')" in got
    assert "weights: mobilenet_v3_small.weights.h5 (relative to the recipe)" in got


def test_backbone_argument_mistakes_are_named_at_their_lines():
    text = RECIPE.replace("SIDE", "32").replace(
        "BACKBONE",
        "{weights: w.npz, include_top: true, pooling: average, alpha: 0, minimalist: true}",
    )
    assert _problems(text) == [
        "r.yaml:9 model.shared[0].mobilenet_v3_small.alpha: MobileNetV3Small alpha: expected a width "
        "multiplier > 0 (e.g. 0.75 or 1.0), received a number (0)",
        "r.yaml:9 model.shared[0].mobilenet_v3_small.include_top: MobileNetV3Small include_top: a backbone "
        "is used without its ImageNet classifier (the tasks' towers are the top): expected false, received "
        "a boolean (true)",
        "r.yaml:9 model.shared[0].mobilenet_v3_small.minimalist: MobileNetV3Small has no argument "
        "'minimalist'; did you mean 'minimalistic'?",
        "r.yaml:9 model.shared[0].mobilenet_v3_small.pooling: MobileNetV3Small pooling: expected avg, max or "
        "null (the last feature map); received text ('average'); did you mean 'avg'?",
        "r.yaml:9 model.shared[0].mobilenet_v3_small.weights: MobileNetV3Small weights: expected null "
        "(random initial values) or the path of a local weights file ending in .weights.h5 or .h5, "
        "received text ('w.npz')",
    ]
    ok = RECIPE.replace("SIDE", "32").replace("BACKBONE", "{}")
    assert R.loads(ok, file="r.yaml").recipe.model.shared[0] == {"mobilenet_v3_small": {}}


# ------------------------------------------------------------------------------------------------
# Checks with the data: image size, rank, the weights file


def test_an_image_below_the_minimum_size_is_refused_with_the_size_it_needs(tmp_path):
    loaded = _recipe(tmp_path, side=28)
    with pytest.raises(RecipeError) as info:
        size.check(loaded, data.prepare(loaded).prep)
    assert [p.render() for p in info.value.problems] == [
        f"{tmp_path / 'recipe.yaml'}:9 model.shared[0].mobilenet_v3_small: MobileNetV3Small needs images "
        "of at least 32x32 pixels, received 28x28; give the image input a shape of at least [32, 32, 3] "
        "(image files are resized to it) or use convolution layers of your own"
    ]


def test_a_backbone_after_flatten_and_a_missing_weights_file_are_refused(tmp_path):
    text = RECIPE.replace(
        "    - mobilenet_v3_small: BACKBONE\n", "    - flatten\n    - efficientnet_b0: BACKBONE\n"
    )
    loaded = _recipe(tmp_path, "{weights: gone/b0.weights.h5}", text=text)
    with pytest.raises(RecipeError) as info:
        size.check(loaded, data.prepare(loaded).prep)
    assert [p.render() for p in info.value.problems] == [
        f"{tmp_path / 'recipe.yaml'}:10 model.shared[1].efficientnet_b0: EfficientNetB0 reads images "
        "(height, width, channels), received one example of shape [3072]; put it first in "
        "model.shared or in an image input's encoder",
        f"{tmp_path / 'recipe.yaml'}:10 model.shared[1].efficientnet_b0.weights: no weights file "
        f"'{tmp_path / 'gone' / 'b0.weights.h5'}' (weights is read relative to the recipe's folder); give "
        "an existing .weights.h5 or .h5 file, or null",
    ]


# ------------------------------------------------------------------------------------------------
# Built models


def test_estimate_equals_kerass_count_as_a_trunk_and_as_an_encoder(tmp_path):
    from mtlcli.run.plan import plan

    loaded = _recipe(tmp_path)
    model, prepared = _build(loaded)
    est = size.estimate(loaded.recipe, prepared.prep)
    learned = sum(math.prod(v.shape) for v in model.strategy_params.values())
    assert est.complete and est.params == model.count_params() - learned
    assert est.layers[("model", "shared", 0)].params == 927_008 + 12_112
    assert model.fused_shape == (None, 32, 32, 3)
    p = plan(loaded)
    (block,) = [b for b in p.blocks if b.name == "shared_0"]
    assert (block.part, block.what, block.params) == ("shared", "MobileNetV3Small", 927_008)
    # in an image input's encoder, next to a number: shared too, and the estimate still exact
    text = RECIPE.replace("    image: {kind", "    size: numeric\n    image: {kind")
    text = text.replace(
        "  shared:\n    - mobilenet_v3_small: BACKBONE\n", "  encoders:\n    image: [resnet50]\n  shared:\n"
    )
    loaded = _recipe(tmp_path, text=text)
    model, prepared = _build(loaded)
    est = size.estimate(loaded.recipe, prepared.prep)
    assert est.complete and est.params == model.count_params() - learned
    shared = {id(v) for v in model.shared_variables}
    assert all(id(v) in shared for v in model.encoders["image"].trainable_variables)
    assert model.fused_shape == (None, 2048 + 1)


def test_a_local_weights_file_is_loaded_once_and_the_saved_model_never_reads_it(tmp_path):
    import keras

    from mtlcli.run.evaluate import load_model

    keras.utils.set_random_seed(7)
    source = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    (tmp_path / "w").mkdir()
    source.save_weights(tmp_path / "w" / "m.weights.h5")
    loaded = _recipe(tmp_path, "{weights: w/m.weights.h5}")
    model, prepared = _build(loaded)
    backbone = model.trunk[0]
    assert backbone.weights_from == str(tmp_path / "w" / "m.weights.h5")
    for a, b in zip(source.get_weights(), backbone.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    got, want = np.asarray(backbone(x)), np.asarray(source(255 * x))
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    model.save(tmp_path / "model.keras")
    (tmp_path / "w" / "m.weights.h5").unlink()  # loading must not need it
    back = load_model(tmp_path / "model.keras")  # safe_mode=True
    assert len(back.weights) == len(model.weights) > 200
    for a, b in zip(model.weights, back.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    inputs = {"image": x}
    for k, v in model(inputs).items():
        np.testing.assert_allclose(np.asarray(back(inputs)[k]), np.asarray(v), rtol=1e-5, atol=1e-6)
    # a file of another application, or of another channel count, does not fit: refused, naming the file
    for other, misfit in (
        (keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3)), ""),
        (
            keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 1)),
            r".*layer conv: the file's weight has shape \(3, 3, 1, 16\), the model's \(3, 3, 3, 16\)$",
        ),
    ):
        other.save_weights(tmp_path / "w" / "m.weights.h5")
        with (
            warnings.catch_warnings(),  # Keras warns of each layer it cannot match before it fails
            pytest.raises(
                RecipeError, match="the weights file .*m.weights.h5 does not fit MobileNetV3Small" + misfit
            ),
        ):
            warnings.simplefilter("ignore")
            _build(loaded)


@pytest.mark.slow
def test_train_predict_and_export_with_a_backbone(cli, tmp_path):
    import tensorflow as tf

    from mtlcli.run import export as E

    from .test_export import _in_process

    loaded = _recipe(tmp_path)
    assert loaded.recipe.model.shared[0] == {
        "mobilenet_v3_small": {"weights": None, "include_top": False, "pooling": "avg"}
    }
    images = np.load(tmp_path / "d.npz")["image"]
    assert cli("train", tmp_path / "recipe.yaml", "-o", tmp_path / "run").exit_code == 0
    out = tmp_path / "p.csv"
    result = cli("predict", tmp_path / "run", tmp_path / "d.npz", "-o", out, "--proba")
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + len(images)
    done = E.export(tmp_path / "run", output=tmp_path / "sm")
    fn = tf.saved_model.load(str(done.path)).signatures["serving_default"]
    served = fn(image=tf.constant(images[:3].astype(np.float32)))
    here = _in_process(tmp_path / "run", [{"image": i} for i in images[:3]])
    assert set(here) == set(served)
    for k, v in here.items():
        if v.dtype != object:
            np.testing.assert_allclose(served[k].numpy(), v, rtol=1e-5, atol=1e-6, err_msg=k)
    row = dict(zip(lines[0].split(","), lines[1].split(","), strict=True))
    assert float(row["level"]) == pytest.approx(float(here["level_value"][0]), abs=1e-5)
    assert float(row["bright:p"]) == pytest.approx(float(here["bright_probability"][0]), abs=1e-5)


def test_upgrad_trains_the_backbone_and_trainable_false_keeps_it_all_fixed(tmp_path):
    """A gradient-based strategy's step moves the backbone's weights (they are shared parameters);
    ``trainable: false`` keeps every one fixed, the batch normalizations' moving statistics included,
    while the tasks' layers train, and the estimate counts them as fixed."""
    import tensorflow as tf

    from mtlcli.data import pipeline

    text = RECIPE.replace("train: {epochs: 1", "train: {weighting: upgrad, epochs: 1")
    for trainable in (True, False):
        loaded = _recipe(tmp_path, "{trainable: false}" if not trainable else "{}", text=text)
        model, prepared = _build(loaded)
        backbone, dense = model.trunk
        batch = next(iter(pipeline.dataset(tf, prepared.splits["train"], 4)))
        before = [v.numpy().copy() for v in backbone.weights]
        dense_before = dense.kernel.numpy().copy()
        model.train_step(batch)
        moved = [not np.array_equal(b, v.numpy()) for b, v in zip(before, backbone.weights, strict=True)]
        assert not np.array_equal(dense_before, dense.kernel.numpy())
        est = size.estimate(loaded.recipe, prepared.prep).layers[("model", "shared", 0)]
        if trainable:
            assert sum(moved) > len(moved) // 2
            assert {id(v) for v in backbone.trainable_variables} <= {id(v) for v in model.shared_variables}
            assert (est.trainable, est.fixed) == (927_008, 12_112)
        else:
            assert not any(moved) and backbone.trainable_variables == []
            assert (est.trainable, est.fixed) == (0, 927_008 + 12_112)


def test_a_legacy_h5_file_like_kerass_cached_imagenet_files_loads(tmp_path):
    """Keras's downloaded no-top ImageNet files are legacy HDF5 (weights by layer name): such a file,
    written here from a random EfficientNet-B0, loads through ``weights: b0.h5``."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(3)
    source = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    with h5py.File(tmp_path / "b0.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    text = RECIPE.replace("mobilenet_v3_small: BACKBONE", "efficientnet_b0: {weights: b0.h5}")
    model, _ = _build(_recipe(tmp_path, text=text))
    got = model.trunk[0].model.get_weights()
    assert len(got) == len(source.get_weights()) > 300
    for a, b in zip(source.get_weights(), got, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("arch", ["mmoe", "cross_stitch", "ple"])
def test_the_estimate_is_exact_with_a_backbone_below_every_architecture(tmp_path, arch):
    """The backbone as the shared bottom of MMoE and PLE, and copied into each task's column by
    cross-stitch (one backbone per task, the estimate's copies)."""
    import tensorflow as tf

    from mtlcli.data import pipeline

    extra = {
        "mmoe": "  architecture: mmoe\n  experts: {count: 2, layers: [{dense: {units: 3}}]}\n",
        "cross_stitch": "  architecture: cross_stitch\n",
        "ple": "  architecture: ple\n  levels: 2\n  experts: {count: 2, layers: [{dense: {units: 3}}]}\n",
    }[arch]
    loaded = _recipe(tmp_path, text=RECIPE.replace("model:\n", "model:\n" + extra))
    model, prepared = _build(loaded)
    est = size.estimate(loaded.recipe, prepared.prep)
    learned = sum(math.prod(v.shape) for v in model.strategy_params.values())
    assert est.complete and est.params == model.count_params() - learned
    copies = 2 if arch == "cross_stitch" else 1
    assert est.layers[("model", "shared", 0)].params == copies * (927_008 + 12_112)
    model.train_step(next(iter(pipeline.dataset(tf, prepared.splits["train"], 4))))


def test_another_width_is_a_lower_bound_that_never_refuses_what_fits(tmp_path):
    """``alpha: 0.75`` is not tabulated: the estimate says it is incomplete, counts the layers after
    the backbone as unknown, and stays below Keras's count."""
    loaded = _recipe(tmp_path, "{alpha: 0.75}")
    model, prepared = _build(loaded)
    est = size.estimate(loaded.recipe, prepared.prep)
    assert not est.complete and ("model", "shared", 0) not in est.layers
    assert 0 < est.params < model.count_params()
    assert size.check(loaded, prepared.prep, memory=4 * 3 * model.count_params()) is not None
