"""Text inputs: the tokens of the statistics pass are TextVectorization's, the vocabulary and tf-idf
weights against a hand computation (in memory and chunk by chunk), the transform's numbers, bad cells at
file:line, recipe mistakes, and the sequence layers (their table entries and a safe-mode round trip)."""

from __future__ import annotations

import inspect
import math
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mtlcli.data import inputs as K
from mtlcli.data.sources import read_source
from mtlcli.errors import DataError, RecipeError

TRICKY = [
    "Hello, World!  It's A-OK",
    "tabs\tand\nnew lines\x0bvertical",
    "ÄÖÜ Été straße ŞİX",  # tf.strings.lower changes ASCII letters only
    "non\u00a0breaking\u2003em space",  # not ASCII whitespace: no split
    "[UNK] (brackets) {braces} $100.5%",
    "",
    "   ",
    "emoji 🙂 and ümlaut-Ä",
]


def spec(**kw):
    """An input spec as the recipe gives it (None: the default)."""
    base = dict.fromkeys(K.TEXT_DEFAULTS)
    base.update(kind="text", column=None, **kw)
    return SimpleNamespace(**base)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"standardize": "lower"},
        {"standardize": "strip_punctuation"},
        {"standardize": "none"},
        {"split": "character"},
        {"split": "none"},
        {"ngrams": 3},
        {"split": "character", "ngrams": 2, "standardize": "none"},
    ],
)
def test_tokens_are_textvectorizations(options):
    import keras

    from mtlcli.data.layers import KERAS_TEXT

    o = K.text_options(spec(**options))
    tv = keras.layers.TextVectorization(
        standardize=KERAS_TEXT.get(o["standardize"], o["standardize"]),
        split=KERAS_TEXT.get(o["split"], o["split"]),
        ngrams=o["ngrams"],
        output_mode="int",
    )
    tv.adapt(TRICKY)
    for text in TRICKY:
        ours = K.tokens(text, o)
        ids = np.asarray(tv([text])).reshape(-1) if ours else []
        theirs = [tv.get_vocabulary()[i] for i in ids if i != 0]
        assert sorted(ours) == sorted(theirs), (text, options)


def _stats(texts: list, chunks: int = 1, **kw) -> K.InputStats:
    acc = K.Text("review", spec(**kw))
    table = SimpleNamespace(file="t.csv", where=lambda i: ("t.csv", i + 2))
    for part in np.array_split(np.array(texts, dtype=object), chunks):
        problems = []
        acc.fit(part, table, problems)
        assert problems == []
    return acc.stats()


DOCS = ["b a a", "B c.", None, "a d", "e"]  # counts a 3, b 2, c d e 1; document counts a 2, b 2, c d e 1


def test_vocabulary_by_count_then_token_with_the_reserved_ids():
    st = _stats(DOCS)
    assert st.vocabulary == ["a", "b", "c", "d", "e"] and st.idf == []
    assert st.token_ids == 7 and st.width == 128  # padding, unknown, 5 tokens; ids padded to 128
    assert _stats(DOCS, max_tokens=4).vocabulary == ["a", "b"]  # 4 - padding - unknown
    hot = _stats(DOCS, max_tokens=4, output="multi_hot")
    assert hot.vocabulary == ["a", "b", "c"] and hot.width == 4 and hot.token_ids is None  # 4 - unknown


def test_tf_idf_weights_by_hand_and_chunked_equals_in_memory():
    st = _stats(DOCS, output="tf_idf")
    n = 5  # documents, the empty one included
    expected = [math.log(1 + n / (1 + df)) for df in (2, 2, 1, 1, 1)]
    assert st.idf == pytest.approx(expected, rel=1e-15)
    assert st.text == {
        "sequence_length": None,
        "standardize": "lower_and_strip_punctuation",
        "split": "whitespace",
        "ngrams": None,
        "output": "tf_idf",
    }
    assert _stats(DOCS, chunks=5, output="tf_idf") == st
    assert _stats(DOCS, chunks=2, ngrams=2) == _stats(DOCS, ngrams=2)
    assert _stats(DOCS, ngrams=2).vocabulary[:3] == ["a", "b", "a a"]


def test_the_transform_gives_ids_token_columns_and_tf_idf_by_hand():
    import tensorflow as tf

    from mtlcli.data import layers

    texts = np.array(["A b zzz", "", "c c a"], dtype=object)
    ids = _stats(DOCS, sequence_length=4)
    hot = _stats(DOCS, output="multi_hot")
    tfidf = _stats(DOCS, output="tf_idf")
    out = layers.transform_features({"i": ids, "h": hot, "t": tfidf}, {"i": texts, "h": texts, "t": texts})
    # ids: 0 padding, 1 unknown, then the vocabulary a b c d e from 2
    np.testing.assert_array_equal(out["i"], [[2, 3, 1, 0], [0, 0, 0, 0], [4, 4, 2, 0]])
    assert out["i"].dtype == np.int32
    np.testing.assert_array_equal(out["h"], [[1, 1, 1, 0, 0, 0], [0] * 6, [0, 1, 0, 1, 0, 0]])
    w = tfidf.idf
    unknown = float(np.mean(w))  # Keras: the unknown column's weight is the mean weight
    expected = [[unknown, w[0], w[1], 0, 0, 0], [0] * 6, [0, w[0], 0, 2 * w[2], 0, 0]]
    np.testing.assert_allclose(out["t"], expected, rtol=1e-6)
    # any leading shape (the streamed pipeline transforms stacks of batches)
    stacked = layers.layer({"i": ids})({"i": tf.constant([["A b zzz", ""], ["c c a", "d"]])})["i"]
    assert stacked.shape == (2, 2, 4) and stacked.numpy()[1, 1].tolist() == [5, 0, 0, 0]


def test_no_training_token_gives_unknown_ids_only():
    from mtlcli.data import layers

    for output, width in (("int", 128), ("multi_hot", 1), ("tf_idf", 1)):
        st = _stats([None, "", "  "], output=output)
        assert st.vocabulary == [] and st.width == width
        out = layers.transform_features({"t": st}, {"t": np.array(["new words", ""], dtype=object)})["t"]
        assert out.shape == (2, width)
        if output == "int":
            assert out[0, :2].tolist() == [1, 1] and not out[1].any()
        else:  # two unknown tokens (tf_idf: weight 1 when no weight was learned)
            assert out[0, 0] == (1 if output == "multi_hot" else 2) and not out[1].any()


def test_bad_cells_are_named_by_file_and_line_and_numbers_are_text():
    table = SimpleNamespace(file="t.jsonl", where=lambda i: ("t.jsonl", i + 1))
    values = np.array(["ok", 5, None, ["x"], True, 2.5, {"k": 1}, float("nan"), " "], dtype=object)
    problems = []
    cells = K.text_cells(values, table, "t", problems)
    assert cells.tolist() == ["ok", "5", "", "", "True", "2.5", "", "", " "]
    assert [(p.message, p.path, p.file, p.line) for p in problems] == [
        ("expected text, received ['x']", "column 't'", "t.jsonl", 4),
        ("expected text, received {'k': 1}", "column 't'", "t.jsonl", 7),
    ]
    numbers = K.text_cells(np.array([1.0, np.nan, 3.0]), table, "t", [])
    assert numbers.tolist() == ["1", "", "3"]


RECIPE = """\
data:
  train: data.csv
  inputs:
{inputs}
model:
  shared:
{shared}
  tasks:
    y: {{type: binary}}
"""


def _problems(tmp_path: Path, inputs: str, shared: str = "    - embedding: {output_dim: 8}") -> list[str]:
    from mtlcli import recipe as R

    (tmp_path / "data.csv").write_text("review,n,y\nhello there,1,0\nbye now,2,1\n")
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(inputs=textwrap.indent(inputs, "    "), shared=shared))
    with pytest.raises(RecipeError) as info:
        R.load(path)
    return [f"{p.line} {p.path}: {p.message}" for p in info.value.problems]


def test_recipe_mistakes_of_text_inputs(tmp_path):
    got = _problems(tmp_path, "review: {kind: text, output: tfidf, sequence_lenght: 0}")
    assert got == [
        "4 data.inputs.review.output: expected one of int, multi_hot, tf_idf; received text ('tfidf'); "
        "did you mean 'tf_idf'?",
        "4 data.inputs.review.sequence_lenght: unknown key 'sequence_lenght'; did you mean 'sequence_length'?",
    ]
    assert _problems(tmp_path, "review: {kind: text, sequence_length: 0}") == [
        "4 data.inputs.review.sequence_length: expected a value >= 1, received 0"
    ]
    assert _problems(tmp_path, "review: {kind: text, output: multi_hot, sequence_length: 8}\nn: numeric") == [
        "4 data.inputs.review.sequence_length: sequence_length applies to output: int only (output: "
        "multi_hot gives one column per token, whatever the length of the text)"
    ]
    assert sorted(_problems(tmp_path, "review: text\nn: {kind: numeric, max_tokens: 10}")) == [
        "4 data.inputs.review: text input 'review' gives token ids (output: int), a sequence that cannot be "
        "flattened and joined with the other inputs (n) unless the input has an encoder: add model.encoders: "
        "{review: [{embedding: {output_dim: 32}}, global_average_pooling1d]}, make it the only input, or use "
        "output: multi_hot or tf_idf (one column per token)",
        "5 data.inputs.n.max_tokens: max_tokens applies to text inputs only",
    ]
    got = _problems(tmp_path, "review: text", shared="    - dense: {units: 8}")
    assert len(got) == 1 and got[0].startswith(
        "7 model.shared[0]: text input 'review' gives token ids (output: int): model.shared must start with an "
        "embedding layer"
    )
    got = _problems(tmp_path, "review: text", shared="    []")
    assert len(got) == 1 and got[0].startswith("4 data.inputs.review: text input 'review' gives token ids")


def test_recipe_mistakes_of_sequence_layers(tmp_path):
    layers = (
        "    - embedding: {output_dim: 8}\n"
        "    - bidirectional: {layer: {lstm: {unit: 4}}}\n"
        "    - bidirectional: {layer: {dense: {units: 4}}, merge_mode: mean}\n"
        "    - bidirectional: {}\n"
        "    - transformer_encoder: {num_heads: 0}\n"
        "    - multi_head_attention: {num_heads: 2, key_dim: 1.5}\n"
        "    - positional_embeding"
    )
    assert sorted(_problems(tmp_path, "review: text", shared=layers), key=lambda p: int(p.split()[0])) == [
        "8 model.shared[1].bidirectional.layer: Bidirectional layer: LSTM has no argument 'unit'; did you "
        "mean 'units'?",
        "9 model.shared[2].bidirectional.layer: Bidirectional layer: expected a recurrent layer (lstm, gru, "
        "simple_rnn), e.g. layer: {lstm: {units: 32}}; received 'dense'",
        "9 model.shared[2].bidirectional.merge_mode: Bidirectional merge_mode: expected one of concat, sum, "
        "mul, ave; received 'mean'",
        "10 model.shared[3].bidirectional: Bidirectional needs the argument 'layer'",
        "11 model.shared[4].transformer_encoder: TransformerEncoder needs the argument 'intermediate_dim'",
        "11 model.shared[4].transformer_encoder.num_heads: TransformerEncoder num_heads: expected an integer "
        "between 1 and 2147483647, received 0",
        "12 model.shared[5].multi_head_attention.key_dim: SelfAttention key_dim: expected an integer >= 1, "
        "received a number (1.5)",
        "13 model.shared[6].positional_embeding: unknown layer 'positional_embeding'; did you mean "
        "'positional_embedding'?",
    ]


def test_own_layer_entries_match_the_classes():
    import keras

    from mtlcli.model import sequence  # noqa: F401 - registers them
    from mtlcli.recipe import layer_table

    for name, entry in layer_table.OWN_LAYERS.items():
        if entry.get("package"):
            cls = keras.saving.get_registered_object(f"mtl>{entry['class']}")
        else:
            cls = getattr(keras.layers, entry["class"])
        sig = inspect.signature(cls.__init__).parameters
        own = [p for p in sig if p not in ("self", "kwargs") and sig[p].kind != sig[p].VAR_KEYWORD]
        required = [p for p in own if sig[p].default is inspect.Parameter.empty]
        listed = [p for p in entry["params"] if p not in layer_table.BASE_KWARGS]
        assert set(listed) <= set(own) and required == entry["required"], name
        assert layer_table.table()[name] == entry


def test_sequence_layers_keep_shapes_and_round_trip_in_safe_mode(tmp_path):
    import keras

    from mtlcli.model.architectures import make_layer

    stack = [
        {"embedding": {"input_dim": 20, "output_dim": 8}},
        "positional_embedding",
        {"transformer_encoder": {"num_heads": 2, "intermediate_dim": 16, "dropout": 0.1}},
        {"multi_head_attention": {"num_heads": 2}},
        {"bidirectional": {"layer": {"gru": {"units": 3, "return_sequences": True}}, "merge_mode": "sum"}},
        {"global_max_pooling1d": {}},
    ]
    x = keras.Input((6,), dtype="int32")
    h = x
    for i, s in enumerate(stack):
        h = make_layer(s, f"l{i}")(h)
    model = keras.Model(x, h)
    assert model.output_shape == (None, 3)
    ids = np.array([[1, 2, 3, 0, 0, 0], [5, 19, 7, 7, 1, 0]], np.int32)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(again.predict(ids, verbose=0), model.predict(ids, verbose=0), rtol=1e-6)
    # the positions are learned per position: the same token at two places differs after them
    pos = keras.Model(x, model.get_layer("l1").output)(ids).numpy()
    assert not np.allclose(pos[1, 2], pos[1, 3])


def test_a_table_of_texts_per_row_is_refused_by_fit(tmp_path):
    from mtlcli.data.preprocess import fit

    np.savez(tmp_path / "d.npz", t=np.array([["a", "b"], ["c", "d"]]), y=np.array([0, 1]))
    recipe = SimpleNamespace(data=SimpleNamespace(inputs={"t": spec()}), model=SimpleNamespace(tasks={}))
    with pytest.raises(DataError) as info:
        fit(recipe, read_source(str(tmp_path / "d.npz")))
    assert [p.message for p in info.value.problems] == [
        "a text input must be one text per row, received shape (2,)"
    ]


def test_the_bundled_reviews_are_the_generators_and_the_recipe_is_valid():
    import csv
    import importlib.util

    from mtlcli import recipe as R

    data = Path(__file__).resolve().parents[1] / "recipes" / "data"
    spec_ = importlib.util.spec_from_file_location("make_reviews", data / "make_reviews.py")
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    with (data / "reviews.csv").open(newline="") as f:
        assert list(csv.DictReader(f)) == module.generate()
    loaded = R.load(data.parent / "reviews.yaml")
    assert loaded.recipe.data.inputs["review"].kind == "text"


def test_attention_ignores_padding_under_an_embedding_mask():
    import keras

    from mtlcli.model.architectures import make_layer

    x = keras.Input((None,), dtype="int32")
    h = make_layer({"embedding": {"input_dim": 20, "output_dim": 8, "mask_zero": True}})(x)
    h = make_layer({"transformer_encoder": {"num_heads": 2, "intermediate_dim": 16}})(h)
    h = make_layer({"multi_head_attention": {"num_heads": 2}})(h)
    model = keras.Model(x, h)
    short = model(np.array([[3, 7, 5]])).numpy()
    padded = model(np.array([[3, 7, 5, 0, 0, 0]])).numpy()
    np.testing.assert_allclose(padded[:, :3], short, rtol=1e-5, atol=1e-6)
    unmasked = keras.Model(x, make_layer({"multi_head_attention": {"num_heads": 2}})(
        make_layer({"embedding": {"input_dim": 20, "output_dim": 8}})(x)))  # fmt: skip
    a, b = unmasked(np.array([[3, 7, 5]])).numpy(), unmasked(np.array([[3, 7, 5, 0, 0, 0]])).numpy()
    assert not np.allclose(b[:, :3], a, atol=1e-6)  # without the mask the padding is attended to


def test_validate_of_the_text_recipe_needs_no_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mtlcli.cli import app\n"
        "r = CliRunner().invoke(app, ['validate', 'recipes/reviews.yaml'])\n"
        "print(r.exit_code, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["0", "False", "False"], proc.stderr[-2000:]
