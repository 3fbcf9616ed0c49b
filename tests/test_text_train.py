"""Text inputs end to end on a 50-row CSV: train, the saved run (safe mode, the embedding sized to the
vocabulary), evaluate, predict on raw texts, export (a SavedModel that takes the strings, served in a
Python without mtl, equal to the in-process predictor; TFLite refused), a streamed tf-idf run whose
statistics equal the in-memory ones, and an embedding too small for the ids."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mtlcli import recipe as R
from mtlcli.data import inputs as K
from mtlcli.errors import RecipeError, UsageError

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["The goal and the team was thrilling!", "", "laptop, never SEEN words: zyx", "a b c d e f g h i j k"]

RECIPE = textwrap.dedent(
    """\
    name: words
    seed: 2
    data:
      train: reviews.csv
      validation: 0.2
      inputs:
        review: {kind: text, max_tokens: 60, sequence_length: 12}
    model:
      shared:
        - embedding: {output_dim: 8}
        - positional_embedding
        - transformer_encoder: {num_heads: 2, intermediate_dim: 16}
        - bidirectional: {layer: {lstm: {units: 4, return_sequences: true}}}
        - multi_head_attention: {num_heads: 2}
        - conv1d: {filters: 8, kernel_size: 3}
        - global_max_pooling1d
      tasks:
        topic: {type: classification}
        sentiment: {type: binary}
    train: {epochs: 2, batch_size: 8}
    """
)


def _reviews(path: Path, n: int = 50) -> Path:
    spec = importlib.util.spec_from_file_location(
        "make_reviews", REPO / "recipes" / "data" / "make_reviews.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.generate(n, seed=1)
    rows[5]["review"] = ""  # a missing text is the empty text
    import csv

    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["review", "topic", "sentiment"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    from mtlcli.run import runner

    d = tmp_path_factory.mktemp("text")
    _reviews(d / "reviews.csv")
    (d / "recipe.yaml").write_text(RECIPE)
    return runner.train(R.load(d / "recipe.yaml"), output=d / "run").run_dir


def _predictor(run_dir: Path):
    from mtlcli.model.serving import Predictor
    from mtlcli.run.evaluate import load_model

    return Predictor(load_model(run_dir / "model.keras"))


@pytest.mark.slow
def test_the_saved_run_loads_safely_and_evaluates(text_run):
    from mtlcli import data
    from mtlcli.run.evaluate import evaluate, load_model

    model = load_model(text_run / "model.keras")  # safe_mode=True: no Lambda anywhere
    prep = data.Preprocessing.from_dict(model.spec["preprocessing"])
    st = prep.inputs["review"]
    assert st.kind == "text" and 0 < len(st.vocabulary) <= 58 and st.width == 12
    assert model.spec["shared"][0] == {"embedding": {"output_dim": 8, "input_dim": len(st.vocabulary) + 2}}
    layer = model.get_layer("shared_0")
    assert tuple(layer.embeddings.shape) == (len(st.vocabulary) + 2, 8)
    result = evaluate(text_run)
    assert set(result.results["tasks"]) == {"topic", "sentiment"} and result.results["n"] == 10


@pytest.mark.slow
def test_predict_takes_raw_texts_and_equals_the_predictor(text_run, tmp_path):
    import pandas as pd
    import tensorflow as tf

    from mtlcli.run import predict as run_predict

    pd.DataFrame({"review": TEXTS}).to_csv(tmp_path / "new.csv", index=False)
    run_predict.predict(text_run, tmp_path / "new.csv", output=tmp_path / "p.jsonl", proba=True)
    predicted = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(predicted) == len(TEXTS)
    here = _predictor(text_run).function({"review": tf.constant(TEXTS)})
    assert [p["topic"] for p in predicted] == [s.decode() for s in here["topic_label"].numpy()]
    np.testing.assert_allclose(
        [p["sentiment:p"] for p in predicted], here["sentiment_probability"], atol=1e-6
    )


SUBPROCESS = textwrap.dedent(
    """\
    import sys
    sys.modules["mtlcli"] = None  # the export must not need mtl
    import json, numpy as np, tensorflow as tf
    fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    _, specs = fn.structured_input_signature
    texts = json.loads(sys.argv[2])
    out = fn(review=tf.constant(texts))
    print(json.dumps({"spec": [specs["review"].dtype.name, list(specs["review"].shape)],
                      **{k: (np.char.decode(v.numpy().astype(bytes)).tolist() if v.dtype == tf.string
                             else v.numpy().tolist()) for k, v in out.items()}}))
    """
)


@pytest.mark.slow
def test_the_export_serves_raw_strings_without_mtl(text_run, tmp_path):
    import tensorflow as tf

    from mtlcli.run import export as E

    exported = E.export(text_run, output=tmp_path / "serving")
    assert exported.manifest["inputs"]["review"]["kind"] == "text"
    (tmp_path / "load.py").write_text(SUBPROCESS)
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "load.py"), str(exported.path), json.dumps(TEXTS)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert served.pop("spec") == ["string", [None]]
    here = {k: v.numpy() for k, v in _predictor(text_run).function({"review": tf.constant(TEXTS)}).items()}
    assert set(served) == set(here)
    for k, v in here.items():
        if v.dtype == object:
            assert served[k] == [s.decode() for s in v]
        else:
            assert np.max(np.abs(np.asarray(served[k]) - v)) <= 1e-5, k
    with pytest.raises(UsageError, match=r"--format tflite: the text input\(s\) review \(column 'review'\)"):
        E.export(text_run, output=tmp_path / "lite", fmt="tflite")


TFIDF = textwrap.dedent(
    """\
    name: bag
    seed: 1
    data:
      train: train.csv
      validation: val.csv
      stream: {stream}
      inputs:
        review: {{kind: text, output: tf_idf, ngrams: 2, max_tokens: 80}}
        n: numeric
    model:
      shared: [{{dense: {{units: 8, activation: relu}}}}]
      tasks:
        topic: {{type: classification}}
        sentiment: {{type: binary}}
    train: {{epochs: 1, batch_size: 8}}
    """
)


@pytest.mark.slow
def test_a_streamed_tf_idf_run_has_the_in_memory_statistics(tmp_path):
    import pandas as pd

    from mtlcli.run import runner
    from mtlcli.run.evaluate import load_model

    _reviews(tmp_path / "reviews.csv")
    frame = pd.read_csv(tmp_path / "reviews.csv", keep_default_na=False)
    frame.insert(1, "n", np.arange(len(frame)) % 7)
    frame[:40].to_csv(tmp_path / "train.csv", index=False)
    frame[40:].to_csv(tmp_path / "val.csv", index=False)
    stats = {}
    for name, stream in (("memory", "false"), ("chunks", "{chunk_rows: 7}")):
        (tmp_path / f"{name}.yaml").write_text(TFIDF.format(stream=stream))
        run = runner.train(R.load(tmp_path / f"{name}.yaml"), output=tmp_path / name).run_dir
        spec = load_model(run / "model.keras").spec
        stats[name] = spec["preprocessing"]["inputs"]["review"]
        assert spec["input_shapes"]["review"] == [len(stats[name]["vocabulary"]) + 1] == [80]
    assert stats["chunks"] == stats["memory"]  # the same training rows: the same vocabulary and weights
    # the idf weights travel into the SavedModel: it serves what the predictor computes
    import tensorflow as tf

    from mtlcli.run import export as E

    exported = E.export(run, output=tmp_path / "serving")
    fn = tf.saved_model.load(str(exported.path)).signatures["serving_default"]
    raw = {"review": tf.constant(TEXTS), "n": tf.constant([1.0, np.nan, 3.0, 0.0], tf.float64)}
    served = fn(**raw)
    here = _predictor(run).function(raw)
    np.testing.assert_allclose(served["sentiment_probability"], here["sentiment_probability"], atol=1e-6)
    np.testing.assert_allclose(served["topic_probabilities"], here["topic_probabilities"], atol=1e-6)
    texts = frame["review"][:40].tolist()
    first = stats["memory"]["vocabulary"][0]
    df = sum(first in K.tokens(t, stats["memory"]["text"]) for t in texts)
    assert stats["memory"]["idf"][0] == pytest.approx(np.log(1 + 40 / (1 + df)), rel=1e-12)


@pytest.mark.slow
def test_an_embedding_smaller_than_the_vocabulary_is_refused(tmp_path):
    from mtlcli.run import runner

    _reviews(tmp_path / "reviews.csv")
    (tmp_path / "r.yaml").write_text(
        RECIPE.replace("embedding: {output_dim: 8}", "embedding: {output_dim: 8, input_dim: 5}")
    )
    with pytest.raises(RecipeError) as info:
        runner.train(R.load(tmp_path / "r.yaml"), output=tmp_path / "run")
    (problem,) = info.value.problems
    assert problem.line == 10 and problem.message.startswith("the embedding reads the text input's ")
    assert problem.message.endswith("received input_dim: 5; leave input_dim out to use the vocabulary size")
