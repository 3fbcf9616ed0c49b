"""Categorical inputs with ``encoding: embedding``: recipe keys and errors (exact text), int32 ids from the
data side (in memory and streamed), the registered embedding layer in every architecture, save/load with
``safe_mode=True``, evaluation of new data with unseen categories, and ``mtl plan`` parameter counts."""

from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pytest

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.errors import RecipeError

from .conftest import TINY_RECIPE, write_tiny_csv

EMBED = "color: {kind: categorical, encoding: embedding, dim: 4}"
ARCH_MODELS = {
    "hard_sharing": "",
    "mmoe": "  architecture: mmoe\n  experts: {count: 2, layers: [{dense: {units: 8, activation: relu}}]}\n",
    "cgc": "  architecture: cgc\n  experts: {count: 2, layers: [{dense: {units: 8, activation: relu}}]}\n",
    "ple": "  architecture: ple\n  experts: {count: 2, layers: [{dense: {units: 8, activation: relu}}]}\n",
    "cross_stitch": "  architecture: cross_stitch\n",
}


def recipe_text(color: str = EMBED, arch: str = "hard_sharing", weighting: str = "static") -> str:
    text = TINY_RECIPE.replace("color: categorical", color).replace(
        "model:\n", "model:\n" + ARCH_MODELS[arch]
    )
    return text.replace("weighting: static", f"weighting: {weighting}")


def problems(text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        R.loads(textwrap.dedent(text), file="r.yaml")
    return [p.render() for p in info.value.problems]


def prepare(tmp_path, text: str):
    if not (tmp_path / "tiny.csv").exists():
        write_tiny_csv(tmp_path / "tiny.csv")
    loaded = R.loads(text, file="r.yaml", base_dir=tmp_path)
    return loaded, data.prepare(loaded)


# ------------------------------------------------------------------------------------------------
# Recipe and data (no TensorFlow)


def test_encoding_and_dim_errors():
    base = "data: {train: x.csv, inputs: {%s}}\nmodel: {tasks: {t: {type: binary}}}\n"
    assert problems(base % "c: {kind: categorical, dim: 8}") == [
        "r.yaml:1 data.inputs.c.dim: dim applies to categorical inputs with encoding: embedding only"
    ]
    assert problems(base % "c: {kind: categorical, encoding: one_hot, dim: 8}") == [
        "r.yaml:1 data.inputs.c.dim: dim applies to categorical inputs with encoding: embedding only"
    ]
    assert problems(base % "n: {kind: numeric, encoding: embedding}") == [
        "r.yaml:1 data.inputs.n.encoding: encoding applies to categorical inputs only"
    ]
    assert problems(base % "c: {kind: categorical, encoding: embeding}") == [
        "r.yaml:1 data.inputs.c.encoding: expected one of one_hot, embedding; received text ('embeding'); "
        "did you mean 'embedding'?"
    ]
    assert problems(base % "c: {kind: categorical, encoding: embedding, dim: 0}") == [
        "r.yaml:1 data.inputs.c.dim: expected a value >= 1, received 0"
    ]


def test_the_default_dimension_rule():
    # 1.6 * rows**0.56 = 2.36, 3.48, 5.81, 21.1, 45.8, 51.9 and 76.6 (capped at 50), rounded up
    assert [data.embedding_dim(r) for r in (2, 4, 10, 100, 400, 500, 1000)] == [3, 4, 6, 22, 46, 50, 50]


def test_ids_instead_of_one_hot_and_unseen_values_are_the_oov_bucket(tmp_path):
    loaded, prepared = prepare(tmp_path, recipe_text("color: {kind: categorical, encoding: embedding}"))
    st = prepared.prep.inputs["color"]
    assert (st.encoding, st.vocabulary, st.dim) == ("embedding", ["blue", "green", "red"], 4)  # rows 4
    assert prepared.prep.input_shapes()["color"] == (1,)
    x = prepared.splits["train"].x["color"]
    assert x.dtype == np.int32 and x.shape == (prepared.splits["train"].n, 1)
    assert set(np.unique(x)) == {1, 2, 3}
    table = data.Table(
        {
            "a": np.array([0.0, 1.0, 2.0]),
            "b": np.zeros(3),
            "color": np.array(["red", "purple", None], dtype=object),
        },
        3,
        "new.csv",
    )
    ids = data.transform(prepared.prep, table, tasks=[]).x["color"]
    np.testing.assert_array_equal(ids, [[3], [0], [0]])  # red; unseen -> 0; missing -> 0
    # one_hot (the default) is unchanged, and a preprocessing saved before encodings existed still reads
    _, plain = prepare(tmp_path, TINY_RECIPE)
    assert plain.prep.inputs["color"].encoding == "one_hot" and plain.prep.inputs["color"].dim is None
    assert plain.splits["train"].x["color"].shape[1] == 4
    old = plain.prep.to_dict()
    for st in old["inputs"].values():
        del st["encoding"], st["dim"]
    assert data.Preprocessing.from_dict(old).input_shapes()["color"] == (4,)
    resolved = loaded.recipe.resolved()["data"]["inputs"]["color"]
    assert resolved["encoding"] == "embedding" and resolved["dim"] is None  # resolved at fit: see data.json


def test_streamed_chunks_carry_the_same_ids(tmp_path):
    from .test_streaming import both

    mem, streamed = both(tmp_path)
    for loaded in (mem, streamed):
        loaded.path.write_text(loaded.path.read_text().replace("color: categorical", EMBED))
    mem, streamed = R.load(mem.path), R.load(streamed.path)
    a, b = data.prepare(mem), data.prepare(streamed)
    assert b.prep.inputs["color"] == a.prep.inputs["color"]
    parts = [p[0]["color"] for p in b.splits["train"].parts()]
    assert all(p.dtype == np.int32 and p.shape[1:] == (1,) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), a.splits["train"].x["color"])


# ------------------------------------------------------------------------------------------------
# Model

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtlcli import fsio  # noqa: E402
from mtlcli.model.build import build_model  # noqa: E402
from mtlcli.model.embedding import CategoryEmbedding  # noqa: E402
from mtlcli.run import evaluate as run_eval  # noqa: E402
from mtlcli.run import runner  # noqa: E402


def build(tmp_path, arch: str = "hard_sharing", weighting: str = "static", color: str = EMBED):
    loaded, prepared = prepare(tmp_path, recipe_text(color, arch, weighting))
    return loaded, prepared, build_model(loaded, prepared, seed=3)


def test_layer_serializes_with_its_config():
    layer = CategoryEmbedding(5, 3, name="e")
    layer.build((None, 1))
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is CategoryEmbedding and clone.get_config() == layer.get_config()
    if not clone.built:
        clone.build((None, 1))
    clone.set_weights(layer.get_weights())
    ids = np.array([[0], [4], [2]], np.int32)
    out = clone(ids).numpy()
    assert out.shape == (3, 3)
    np.testing.assert_array_equal(out, layer.get_weights()[0][[0, 4, 2]])
    assert keras.saving.get_registered_name(CategoryEmbedding) == "mtl>CategoryEmbedding"


@pytest.mark.parametrize("arch", list(ARCH_MODELS))
def test_every_architecture_trains_the_embedding_as_a_shared_layer(tmp_path, arch):
    _, prepared, model = build(tmp_path, arch, weighting="pcgrad")
    layer = model.input_embeddings["color"]
    table = layer.embeddings
    assert layer in model.shared_layers()
    assert id(table) in {id(v) for v in model.shared_variables}
    assert id(table) not in {id(v) for v in model.head_variables}
    assert tuple(table.shape) == (4, 4)
    arr = prepared.splits["train"]
    out = model(arr.x)
    assert out["kind"].shape == (arr.n, 3)
    # every task's loss reaches the table (it is upstream of z)
    with tf.GradientTape(persistent=True) as tape:
        losses = tf.unstack(model.task_losses(arr.y, model(arr.x), arr.mask)[0])
    for loss in losses:
        g = tape.gradient(loss, table)
        assert g is not None and float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))) > 0
    before = table.numpy().copy()
    model.train_step((arr.x, arr.y, arr.mask))
    after = table.numpy()
    assert not np.allclose(before[1:], after[1:])  # seen ids move
    np.testing.assert_array_equal(before[0], after[0])  # no training row has the unknown id 0


@pytest.mark.parametrize("arch", ["hard_sharing", "ple"])
def test_save_and_load_with_safe_mode_predict_the_same(tmp_path, arch):
    _, prepared, model = build(tmp_path, arch)
    arr = prepared.splits["train"]
    model.train_step((arr.x, arr.y, arr.mask))
    path = tmp_path / "model.keras"
    fsio.save_model_atomic(model, path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.input_embeddings["color"], CategoryEmbedding)
    before, after = model(arr.x), loaded(arr.x)
    for t in before:
        np.testing.assert_array_equal(before[t].numpy(), after[t].numpy())


def test_a_single_embedded_input(tmp_path):
    """The embedding alone (no other input): the joined input is its vector."""
    text = recipe_text().replace("    a: numeric\n    b: numeric\n", "")
    loaded, prepared = prepare(tmp_path, text)
    model = build_model(loaded, prepared, seed=3)
    assert model.input_names == ["color"]
    assert model.trunk[0].kernel.shape == (4, 16)
    assert model(prepared.splits["train"].x)["value"].shape == (prepared.splits["train"].n, 1)


def test_mixed_precision_embedding(tmp_path):
    text = recipe_text().replace("weighting: static", "weighting: static\n  mixed_precision: bfloat16")
    loaded, prepared = prepare(tmp_path, text)
    model = build_model(loaded, prepared, seed=3)
    try:
        arr = prepared.splits["train"]
        assert model.input_embeddings["color"].embeddings.dtype == "float32"
        assert model.input_embeddings["color"](arr.x["color"]).dtype == tf.bfloat16
        logs = model.train_step((arr.x, arr.y, arr.mask))
        assert np.isfinite(float(logs["loss"]))
    finally:
        keras.config.set_dtype_policy("float32")


def test_train_then_evaluate_new_data_with_unseen_categories(cli, tmp_path):
    write_tiny_csv(tmp_path / "tiny.csv")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text().replace("epochs: 3", "epochs: 1"))
    result = cli("train", recipe, "--output", tmp_path / "run")
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "tiny.csv").read_text().splitlines()
    new = [rows[0]] + [
        ",".join(c if j != 2 else ("purple" if i % 2 else "") for j, c in enumerate(r.split(",")))
        for i, r in enumerate(rows[1:31])
    ]
    (tmp_path / "new.csv").write_text("\n".join(new) + "\n")
    ev = run_eval.evaluate(tmp_path / "run", data_path=tmp_path / "new.csv")
    assert ev.results["n"] == 30 and np.isfinite(ev.results["loss"])
    model = run_eval.load_model(tmp_path / "run" / "model.keras")
    prep = data.Preprocessing.from_dict(model.spec["preprocessing"])
    table = data.read_table(tmp_path / "new.csv")
    ids = data.transform(prep, table, tasks=[]).x["color"]
    assert set(np.unique(ids)) == {0}
    # the unknown bucket's (untrained) vector is what every row of new.csv reads
    out = model.input_embeddings["color"](ids).numpy()
    np.testing.assert_array_equal(
        out, np.repeat(model.input_embeddings["color"].embeddings.numpy()[:1], 30, 0)
    )


def test_a_streamed_run_trains_the_embedding_and_evaluates(tmp_path):
    from .test_streaming import project

    path = project(tmp_path)
    path.write_text(path.read_text().replace("color: categorical", EMBED).replace("epochs: 2", "epochs: 1"))
    run = runner.train(R.load(path), output=tmp_path / "run")
    assert json_load(tmp_path / "run" / "data.json")["stream"]["split"] == "column"
    model = run_eval.load_model(tmp_path / "run" / "model.keras")
    assert model.input_embeddings["color"].embeddings.shape == (4, 4)
    ev = run_eval.evaluate(tmp_path / "run")
    assert ev.results["loss"] == pytest.approx(run.results["splits"]["test"]["loss"], rel=1e-5)


def json_load(path):
    return json.loads(path.read_text())


def test_plan_counts_the_embedding_as_shared(cli, tmp_path):
    write_tiny_csv(tmp_path / "tiny.csv")
    path = tmp_path / "r.yaml"
    path.write_text(recipe_text())
    result = cli("plan", path, "--json")
    assert result.exit_code == 0, result.output
    p = json.loads(result.output)
    # color: 4 rows x 4; trunk: (a, b, 4 color values) 6 -> 16
    assert p["params"]["shared"] == 4 * 4 + 6 * 16 + 16
    assert p["inputs"] == {"a": 1, "b": 1, "color": 4}  # what the trunk reads: the color vector
    text = cli("plan", path)
    assert "inputs: a 1, b 1, color 4 -> 6 features" in text.output
    assert re.search(
        r"shared\s+color_embedding\s+embedding 4 values x 4 \(row 0: unknown\)\s+16\b", text.output
    )
    assert "parameters: shared 128;" in text.output
