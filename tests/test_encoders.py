"""Per-input encoders (``model.encoders``) and fusion (``model.fusion``): recipe mistakes at file:line,
the parameter estimate against Keras's count on every architecture, encoders as shared variables that
every task's loss reaches, ``mtl plan``'s blocks, ``sum`` by hand, a text input meeting a numeric one,
the safe-mode round trip, and train -> predict -> export on a tiny image + numeric NPZ."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.errors import RecipeError
from mtlcli.model import size

from .test_architectures import ARCHS, MODELS

MULTI = """\
seed: 0
data:
  train: d.npz
  validation: 0.25
  inputs:
    image: {kind: image, shape: [8, 8, 1]}
    size: numeric
model:
ARCH  encoders:
    image: [{conv2d: {filters: 3, kernel_size: 3, activation: relu}}, global_average_pooling2d]
    size: [{dense: {units: 4, activation: relu}}]
  fusion: FUSION
  shared: [{dense: {units: 6, activation: relu}}]
  tasks:
    left: {type: classification}
    right: {type: binary, head: [{dense: {units: 3}}]}
train: {epochs: 1, batch_size: 8}
"""


def _npz(tmp_path, n: int = 40):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8)
    sizes = rng.normal(size=n)
    left = (images.mean(axis=(1, 2, 3)) > 127).astype(np.int64) + (sizes > 0.5)
    np.savez(tmp_path / "d.npz", image=images, size=sizes, left=left, right=(sizes > 0).astype(np.int64))
    return images, sizes


def _recipe(tmp_path, arch: str = "hard_sharing", fusion: str = "concat", text: str = MULTI):
    _npz(tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(text.replace("ARCH", MODELS[arch]).replace("FUSION", fusion))
    return R.load(path)


def _problems(text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        R.loads(textwrap.dedent(text), file="r.yaml")
    return [p.render() for p in info.value.problems]


def _keras_counts(model) -> tuple[int, int]:
    learned = sum(math.prod(v.shape) for v in model.strategy_params.values())
    state = sum(math.prod(v.shape) for v in model.strategy_state.values())
    trainable = sum(math.prod(v.shape) for v in model.trainable_variables)
    return model.count_params() - learned - state, trainable - learned


def _build(loaded):
    from mtlcli.model.build import build_model

    prepared = data.prepare(loaded)
    return build_model(loaded, prepared, 0), prepared


def _batch(prepared, n: int) -> dict:
    """The model inputs of the first ``n`` training rows (as training feeds them)."""
    import tensorflow as tf

    from mtlcli.data import pipeline

    x, *_ = next(iter(pipeline.dataset(tf, prepared.splits["train"], n)))
    return x


# ------------------------------------------------------------------------------------------------
# Recipe (no TensorFlow)

TWO = """\
data:
  train: d.npz
  inputs:
    photo: {kind: image, shape: [8, 8, 3]}
    price: numeric
model:
ENCODERS  tasks: {t: {type: binary}}
"""


def test_an_image_with_tabular_inputs_needs_an_encoder():
    assert _problems(TWO.replace("ENCODERS", "")) == [
        "r.yaml:4 data.inputs.photo: image input 'photo' would be flattened pixel by pixel and joined with "
        "the other inputs (price) before the first layer, without a convolution; give it an encoder, e.g. "
        "model.encoders: {photo: [{conv2d: {filters: 16, kernel_size: 3, activation: relu}}, "
        "{max_pooling2d: {}}, {conv2d: {filters: 32, kernel_size: 3, activation: relu}}, "
        "global_average_pooling2d]}"
    ]
    ok = TWO.replace("ENCODERS", "  encoders: {photo: [{conv2d: {filters: 2, kernel_size: 3}}, flatten]}\n")
    assert R.loads(ok, file="r.yaml").recipe.model.encoders == {
        "photo": [{"conv2d": {"filters": 2, "kernel_size": 3}}, "flatten"]
    }
    # A single image keeps working without one (the trunk is its encoder); the default fusion is concat.
    alone = R.loads(TWO.replace("    price: numeric\n", "").replace("ENCODERS", ""), file="r.yaml")
    assert alone.recipe.model.encoders == {} and alone.recipe.model.fusion == "concat"


def test_encoder_mistakes_are_named_at_their_lines():
    text = TWO.replace(
        "ENCODERS",
        "  encoders:\n    phot: [flatten]\n    price: []\n    photo: [{conv2D: {filters: 2}}]\n  fusion: mean\n",
    )
    assert _problems(text) == [
        "r.yaml:8 model.encoders.phot: unknown input 'phot'; did you mean 'photo'?; an encoder is keyed by "
        "an input of data.inputs (photo, price)",
        "r.yaml:9 model.encoders.price: expected at least one layer (leave the input out of model.encoders "
        "to feed it as it is)",
        "r.yaml:10 model.encoders.photo[0].conv2D: unknown layer 'conv2D'; did you mean 'conv2d'?",
        "r.yaml:11 model.fusion: expected one of concat, sum, attention; received text ('mean')",
    ]


def test_token_ids_meet_other_inputs_through_an_encoder_that_starts_with_an_embedding():
    text = "data:\n  train: d.csv\n  inputs: {review: text, price: numeric}\nmodel:\nENCODERS  tasks: {t: {type: binary}}\n"
    (got,) = _problems(text.replace("ENCODERS", ""))
    assert got == (
        "r.yaml:3 data.inputs.review: text input 'review' gives token ids (output: int), a sequence that "
        "cannot be flattened and joined with the other inputs (price) unless the input has an encoder: add "
        "model.encoders: {review: [{embedding: {output_dim: 32}}, global_average_pooling1d]}, make it the "
        "only input, or use output: multi_hot or tf_idf (one column per token)"
    )
    (got,) = _problems(text.replace("ENCODERS", "  encoders: {review: [{dense: {units: 2}}]}\n"))
    assert got.startswith(
        "r.yaml:5 model.encoders.review[0]: text input 'review' gives token ids (output: int): its encoder "
        "must start with an embedding layer"
    )
    good = text.replace("ENCODERS", "  encoders: {review: [{embedding: {output_dim: 2}}, flatten]}\n")
    assert R.loads(good, file="r.yaml").recipe.model.encoders["review"][1] == "flatten"


# ------------------------------------------------------------------------------------------------
# The model


@pytest.mark.parametrize(
    ("arch", "fusion"),
    [(a, "concat") for a in ARCHS]
    + [("hard_sharing", "sum"), ("mmoe", "sum"), ("cross_stitch", "attention")],
)
def test_estimate_equals_keras_count_and_encoders_are_shared(tmp_path, arch, fusion):
    text = MULTI if fusion == "concat" else MULTI.replace("units: 4, activation", "units: 3, activation")
    loaded = _recipe(tmp_path, arch, fusion, text)
    model, prepared = _build(loaded)
    est = size.estimate(loaded.recipe, prepared.prep)
    assert est.complete
    assert (est.params, est.trainable) == _keras_counts(model)
    conv = est.layers[("model", "encoders", "image", 0, "conv2d", "filters")]
    assert conv.params == 3 * 3 * 1 * 3 + 3 and conv.copies == 1  # one encoder, whatever the architecture
    encoder_vars = [v for name in ("image", "size") for v in model.encoders[name].trainable_variables]
    assert len(encoder_vars) == 4
    shared = {id(v) for v in model.shared_variables}
    assert all(id(v) in shared for v in encoder_vars)
    assert not any(id(v) in {id(w) for w in model.head_variables} for v in encoder_vars)
    width = 3 + 4 if fusion == "concat" else 3
    assert model.fused_shape == (None, width)
    if fusion == "attention":
        assert est.layers[("model", "fusion")].params == 4 * 3 * (3 + 1)
        assert all(id(v) in shared for v in model.input_attention.trainable_variables)


def test_every_tasks_loss_reaches_the_encoders(tmp_path):
    import tensorflow as tf

    model, prepared = _build(_recipe(tmp_path, "cgc"))
    x = _batch(prepared, 8)
    kernels = [model.encoders["image"].stack[0].kernel, model.encoders["size"].stack[0].kernel]

    for task in model.task_names:
        with tf.GradientTape() as tape:
            out = tf.reduce_sum(model(x, training=False)[task][:, 0])  # (probabilities sum to 1)
        grads = tape.gradient(out, kernels)
        assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads), task


@pytest.mark.parametrize("weighting", ["upgrad", "pcgrad", "{mgda: {on: representation}}"])
def test_a_gradient_based_strategy_moves_the_encoders(tmp_path, weighting):
    import tensorflow as tf

    from mtlcli.data import pipeline

    text = MULTI.replace("train: {epochs: 1", f"train: {{weighting: {weighting}, epochs: 1")
    model, prepared = _build(_recipe(tmp_path, "mmoe", text=text))
    assert model.strategy.needs == "gradients"
    batch = next(iter(pipeline.dataset(tf, prepared.splits["train"], 16)))
    encoders = [v for name in ("image", "size") for v in model.encoders[name].trainable_variables]
    before = [v.numpy().copy() for v in encoders]
    model.train_step(batch)
    assert all(not np.allclose(b, v.numpy()) for b, v in zip(before, encoders, strict=True))


def test_fusion_sum_adds_the_encoded_inputs_and_refuses_unequal_widths(tmp_path):
    loaded = _recipe(
        tmp_path, fusion="sum", text=MULTI.replace("units: 4, activation", "units: 3, activation")
    )
    model, prepared = _build(loaded)
    x = _batch(prepared, 5)
    by_hand = model.encoders["image"](x["image"]) + model.encoders["size"](x["size"])
    np.testing.assert_allclose(model._joined(x).numpy(), by_hand.numpy(), rtol=1e-6)

    loaded = _recipe(tmp_path, fusion="sum")  # image -> 3 features, size -> 4
    with pytest.raises(RecipeError) as info:
        size.check(loaded, data.prepare(loaded).prep)
    assert [p.render() for p in info.value.problems] == [
        f"{tmp_path / 'recipe.yaml'}:12 model.fusion: fusion: sum adds the inputs' features after their "
        "encoders, which needs one width, received image 3, size 4; end every encoder with the same width "
        "(e.g. a dense layer of 4 units) or use fusion: concat"
    ]


def test_attention_fusion_is_the_mean_at_zero_weights_and_ignores_the_inputs_order(tmp_path):
    import tensorflow as tf

    text = MULTI.replace("units: 4, activation", "units: 3, activation")
    model, prepared = _build(_recipe(tmp_path, fusion="attention", text=text))
    x = _batch(prepared, 5)
    encoded = [model.encoders[k](x[k]) for k in ("image", "size")]
    tokens = tf.stack(encoded, axis=1)
    fuse = model.input_attention
    swapped = fuse(tf.reverse(tokens, axis=[1]))
    np.testing.assert_allclose(fuse(tokens).numpy(), swapped.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model._joined(x).numpy(), fuse(tokens).numpy(), rtol=1e-6)
    for v in fuse.trainable_variables:
        v.assign(tf.zeros(v.shape))
    mean = (encoded[0] + encoded[1]) / 2  # uniform attention on zero values: x_i + 0, averaged
    np.testing.assert_allclose(model._joined(x).numpy(), mean.numpy(), rtol=1e-6)
    loaded = _recipe(tmp_path, fusion="attention")  # image -> 3 features, size -> 4
    with pytest.raises(RecipeError) as info:
        size.check(loaded, data.prepare(loaded).prep)
    assert (
        info.value.problems[0]
        .render()
        .startswith(
            f"{tmp_path / 'recipe.yaml'}:12 model.fusion: fusion: attention lets the inputs' features attend to "
            "each other after their encoders, which needs one width, received image 3, size 4"
        )
    )


def test_plan_lists_the_encoders_as_shared_blocks(tmp_path):
    from mtlcli.run.plan import plan

    p = plan(_recipe(tmp_path, "mmoe"))
    blocks = {b.name: b for b in p.blocks}
    assert (blocks["image_encoder"].part, blocks["image_encoder"].params) == ("shared", 30)
    assert (blocks["size_encoder"].part, blocks["size_encoder"].params) == ("shared", 8)
    assert blocks["image_encoder"].what == "Conv2D 3 (3,3) relu -> GlobalAveragePooling2D"
    assert p.params["shared"] == sum(b.params for b in p.blocks if b.part == "shared")
    assert (p.inputs, p.fused) == ({"image": 64, "size": 1}, 7)


def test_a_text_input_with_an_encoder_meets_a_numeric_one(tmp_path):
    words = ["good", "bad", "fine", "awful", "great"]
    rows = ["review,price,t"] + [f"{words[i % 5]} {words[(i * 3) % 5]},{i / 10},{i % 2}" for i in range(30)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "recipe.yaml").write_text(
        "data:\n  train: d.csv\n  inputs: {review: {kind: text, sequence_length: 4}, price: numeric}\n"
        "model:\n  encoders: {review: [{embedding: {output_dim: 2}}, global_average_pooling1d]}\n"
        "  shared: [{dense: {units: 3}}]\n  tasks: {t: {type: binary}}\n"
    )
    loaded = R.load(tmp_path / "recipe.yaml")
    model, prepared = _build(loaded)
    rows = prepared.prep.inputs["review"].token_ids  # the vocabulary, padding and unknown
    assert model.encoders["review"].stack[0].input_dim == rows == 5 + 2
    est = size.estimate(loaded.recipe, prepared.prep)
    assert est.complete and (est.params, est.trainable) == _keras_counts(model)
    assert model.fused_shape == (None, 2 + 1)
    (tmp_path / "recipe.yaml").write_text(
        (tmp_path / "recipe.yaml").read_text().replace("output_dim: 2", "output_dim: 2, input_dim: 3")
    )
    loaded = R.load(tmp_path / "recipe.yaml")
    with pytest.raises(RecipeError) as info:
        size.check(loaded, data.prepare(loaded).prep)
    assert [p.render() for p in info.value.problems] == [
        f"{tmp_path / 'recipe.yaml'}:5 model.encoders.review[0].embedding.input_dim: the embedding reads "
        "the text input's 7 token ids (the vocabulary, padding and unknown), received input_dim: 3; leave "
        "input_dim out to use the vocabulary size"
    ]


@pytest.mark.parametrize("fusion", ["concat", "attention"])
def test_a_saved_model_with_encoders_loads_in_safe_mode(tmp_path, fusion):
    import keras

    text = MULTI.replace("units: 4, activation", "units: 3, activation")
    model, prepared = _build(_recipe(tmp_path, "ple", fusion, text))
    x = _batch(prepared, 6)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    assert sorted(again.encoders) == ["image", "size"]
    assert [v.name for v in again.shared_variables] == [v.name for v in model.shared_variables]
    before, after = model(x), again(x)
    for task in model.task_names:
        np.testing.assert_array_equal(before[task].numpy(), after[task].numpy())


@pytest.mark.slow
def test_train_predict_and_export_an_image_and_a_number(cli, tmp_path):
    import tensorflow as tf

    from mtlcli.run import export as E

    from .test_export import _in_process

    images, sizes = _npz(tmp_path)
    (tmp_path / "recipe.yaml").write_text(MULTI.replace("ARCH", "").replace("FUSION", "concat"))
    assert cli("train", tmp_path / "recipe.yaml", "-o", tmp_path / "run").exit_code == 0
    out = tmp_path / "p.csv"
    result = cli("predict", tmp_path / "run", tmp_path / "d.npz", "-o", out, "--proba")
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + len(sizes) and "left:0" in lines[0] and "right:p" in lines[0]
    done = E.export(tmp_path / "run", output=tmp_path / "sm")
    assert set(done.manifest["inputs"]) == {"image", "size"}
    fn = tf.saved_model.load(str(done.path)).signatures["serving_default"]
    served = fn(image=tf.constant(images[:5].astype(np.float32)), size=tf.constant(sizes[:5]))
    here = _in_process(
        tmp_path / "run", [{"image": i, "size": s} for i, s in zip(images[:5], sizes[:5], strict=True)]
    )
    row = dict(zip(lines[0].split(","), lines[1].split(","), strict=True))  # the first row's predictions
    first = [float(row[k]) for k in ("left:0", "left:1", "left:2", "right:p")]
    assert set(here) == {k for k, _ in served.items()}
    for k, v in here.items():
        if v.dtype != object:
            assert np.max(np.abs(served[k].numpy() - v)) <= 1e-6, k
    assert first == pytest.approx([*here["left_probabilities"][0], here["right_probability"][0]], abs=1e-5)


# ------------------------------------------------------------------------------------------------
# The bundled recipe's data (recipes/data/make_multifashion_side.py)


def _side_generator():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / "data" / "make_multifashion_side.py"
    spec = importlib.util.spec_from_file_location("make_multifashion_side", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_side_features_are_measured_on_each_items_own_image_by_hand():
    gen = _side_generator()
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, :2, :2] = [[255, 51], [0, 102]]  # 3 of 784 pixels on, mean 136
    fill, tone = gen.measurements(images)
    np.testing.assert_allclose(fill, [3 / 784, 0.0], rtol=1e-6)
    np.testing.assert_allclose(tone, [136 / 255, 0.0], rtol=1e-6)  # an empty image: tone 0, not NaN


def test_side_data_pairs_are_multifashions_and_the_right_features_are_the_partners(tmp_path):
    from mtlcli.data import multifashion

    gen = _side_generator()
    n = 30
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):  # image i has i + 1 pixels on: its fill names it
        images[i].flat[: i + 1] = 200
    labels = np.random.default_rng(1).integers(0, 10, size=n).astype(np.uint8)
    gen.read_idx = lambda path: images if "images" in path.name else labels
    cols = gen.build(tmp_path, "test")
    same = multifashion.overlay(images, labels, gen.SEED)
    assert all(np.array_equal(cols[k], same[k]) for k in ("image", "left", "right"))
    np.testing.assert_allclose(cols["left_fill"] * 784, np.arange(1, n + 1), rtol=1e-5)
    partner = np.rint(cols["right_fill"] * 784).astype(int) - 1
    assert labels[partner].tolist() == cols["right"].tolist()  # each row's right item's own image
    assert len(set(partner.tolist())) > 1
    np.testing.assert_allclose(cols["right_tone"], 200 / 255, rtol=1e-6)


def test_the_fusion_recipe_gives_every_input_one_width_so_each_fusion_builds(tmp_path):
    """recipes/multifashion_fusion.yaml compares concat, sum and attention with nothing else changed:
    on a tiny stand-in for its generated data every input is 32 wide after its encoder, the size check
    passes for all three, and attention's shared block is 4·32·33; a narrower side encoder is refused."""
    import shutil
    from pathlib import Path

    shutil.copy(
        Path(__file__).resolve().parents[1] / "recipes" / "multifashion_fusion.yaml", tmp_path / "r.yaml"
    )
    folder = tmp_path / "data" / "multifashion_side"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        side = {
            k: rng.random(40, dtype=np.float32)
            for k in ("left_fill", "left_tone", "right_fill", "right_tone")
        }
        labels = {k: rng.integers(0, 10, size=40) for k in ("left", "right")}
        np.savez(
            folder / f"{split}.npz", image=rng.integers(0, 256, (40, 28, 28, 1), np.uint8), **labels, **side
        )
    for fusion in ("concat", "sum", "attention"):
        loaded = R.load(tmp_path / "r.yaml", overrides=[f"model.fusion={fusion}"])
        est = size.check(loaded, data.prepare(loaded).prep)
        assert {math.prod(s) for s in est.widths.values()} == {32} and len(est.widths) == 5, fusion
        if fusion == "attention":
            assert est.layers[("model", "fusion")].params == 4 * 32 * 33
    loaded = R.load(
        tmp_path / "r.yaml", overrides=["model.fusion=sum", "model.encoders.left_tone.0.dense.units=16"]
    )
    with pytest.raises(RecipeError, match="left_tone 16"):
        size.check(loaded, data.prepare(loaded).prep)


def test_runs_from_before_encoders_resume_unchanged():
    """resolved.yaml of a run written before model.encoders / model.fusion has neither key: the default
    recipe resolves to no change (resume compares the two), a sum fusion or an encoder to a change."""
    from mtlcli.run.resume import diff

    from .conftest import TINY_RECIPE

    before = R.loads(TINY_RECIPE, file="r.yaml").recipe.resolved()
    for key in ("encoders", "fusion"):
        before["model"].pop(key, None)
    assert diff(before, R.loads(TINY_RECIPE, file="r.yaml").recipe.resolved()) == []
    summed = TINY_RECIPE.replace("  shared:\n", "  fusion: sum\n  shared:\n")
    assert [c.key for c in diff(before, R.loads(summed, file="r.yaml").recipe.resolved())] == ["model.fusion"]
    encoded = TINY_RECIPE.replace("  shared:\n", "  encoders: {a: [{dense: {units: 2}}]}\n  shared:\n")
    assert [c.key for c in diff(before, R.loads(encoded, file="r.yaml").recipe.resolved())] == [
        "model.encoders.a[0].dense.units"
    ]


@pytest.mark.slow
def test_a_served_export_takes_image_bytes_raw_text_and_a_number_together(tmp_path):
    """Image files, a text and a number through their encoders: the SavedModel's serving signature
    takes encoded image bytes and raw strings and returns what the in-process Predictor returns."""
    import tensorflow as tf

    from mtlcli.run import export as E
    from mtlcli.run import runner

    from .test_export import _in_process

    rng = np.random.default_rng(0)
    words = ["soft", "warm", "torn", "cheap", "lovely", "small"]
    rows = ["photo,review,price,liked"]
    for i in range(24):
        pixels = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
        (tmp_path / f"p{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
        rows.append(f"p{i}.png,{words[i % 6]} {words[(i * 5) % 6]},{i / 4},{i % 2}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "recipe.yaml").write_text(
        "seed: 0\ndata:\n  train: d.csv\n  validation: 0.25\n  inputs:\n"
        "    photo: {kind: image, shape: [6, 6, 3]}\n    review: {kind: text, sequence_length: 3}\n"
        "    price: numeric\nmodel:\n  encoders:\n"
        "    photo: [{conv2d: {filters: 2, kernel_size: 3}}, global_average_pooling2d]\n"
        "    review: [{embedding: {output_dim: 2}}, global_average_pooling1d]\n"
        "  shared: [{dense: {units: 4, activation: relu}}]\n  tasks: {liked: {type: binary}}\n"
        "train: {epochs: 1, batch_size: 8}\n"
    )
    run_dir = runner.train(R.load(tmp_path / "recipe.yaml"), output=tmp_path / "run").run_dir
    done = E.export(run_dir, output=tmp_path / "sm")
    assert {k: v["dtype"] for k, v in done.manifest["inputs"].items()} == {
        "photo": "string",
        "review": "string",
        "price": "float64",
    }
    fn = tf.saved_model.load(str(done.path)).signatures["serving_default"]
    picked = [0, 5, 10]
    served = fn(
        photo=tf.constant([(tmp_path / f"p{i}.png").read_bytes() for i in picked]),
        review=tf.constant(["soft torn", "never seen words", ""]),
        price=tf.constant([0.0, 1.25, 2.5], tf.float64),
    )
    here = _in_process(
        run_dir,
        [
            {"photo": str(tmp_path / f"p{i}.png"), "review": r, "price": p}
            for i, r, p in zip(picked, ["soft torn", "never seen words", ""], [0.0, 1.25, 2.5], strict=True)
        ],
    )
    np.testing.assert_allclose(served["liked_probability"].numpy(), here["liked_probability"], atol=1e-6)
