"""Data features through training: partial labels, when:, class weights in the loss, multilabel and
several-column regression heads, image files decoded by tf.data, and evaluating column splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.data import pipeline
from mtlcli.model.build import build_model
from mtlcli.run import evaluate as run_eval
from mtlcli.run import runner

from .test_data_sources import image_folder


def load(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return R.load(path)


def test_class_weights_multiply_row_losses_and_keep_the_labelled_mean(tiny_project):
    loaded = R.load(tiny_project)
    model = build_model(loaded, data.prepare(loaded), seed=3)
    y = {
        "kind": tf.constant([0, 1, 2, 0]),
        "flag": tf.constant([[1.0], [0.0], [1.0], [0.0]]),
        "value": tf.constant([[1.0], [2.0], [3.0], [100.0]]),
    }
    preds = {"kind": tf.zeros((4, 3)), "flag": tf.zeros((4, 1)), "value": tf.zeros((4, 1))}
    mask = {
        "kind": tf.ones(4),
        "flag": tf.constant([1.0, 1.0, 1.0, 0.0]),
        "value": tf.ones(4),
        "flag.weight": tf.constant([3.0, 1.0, 3.0, 0.0]),
    }
    losses, counts = model.task_losses(y, preds, mask)
    # BCE of a zero logit is log 2 per row: (3 + 1 + 3) log 2 over the 3 labelled rows
    np.testing.assert_allclose(losses.numpy()[1], 7 * np.log(2) / 3, rtol=1e-5)
    np.testing.assert_allclose(counts.numpy(), [4, 3, 4])


PARTIAL = """\
seed: 2
data:
  train: p.csv
  validation: 0.25
  inputs: {a: numeric, b: numeric}
model:
  shared: [{dense: {units: 16, activation: relu}}]
  tasks:
    full: {type: binary}
    half: {type: binary, class_weight: balanced}
    gated: {type: regression, when: {column: full, equals: 1}}
train: {epochs: 40, batch_size: 32, optimizer: {adam: {learning_rate: 0.02}}}
"""


@pytest.mark.slow
def test_half_missing_labels_learn_and_report_n(tmp_path, cli, monkeypatch):
    rng = np.random.default_rng(0)
    n = 400
    a, b = rng.normal(size=n), rng.normal(size=n)
    full = (a > 0).astype(int)
    half = (b > 0.5).astype(int)
    gated = 2 * b + 1
    rows = [f"{a[i]:.4f},{b[i]:.4f},{full[i]},{half[i] if i % 2 else ''},{gated[i]:.4f}" for i in range(n)]
    (tmp_path / "p.csv").write_text("a,b,full,half,gated\n" + "\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.yaml").write_text(PARTIAL)
    result = cli("train", tmp_path / "recipe.yaml")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "recipe" / "1"
    info = json.loads((run_dir / "data.json").read_text())
    val_rows = info["fraction_indices"]["validation"]
    metrics = json.loads((run_dir / "metrics.json").read_text())["splits"]["validation"]["tasks"]
    assert metrics["full"]["n"] == 100
    assert metrics["half"]["n"] == sum(1 for i in val_rows if i % 2)
    assert metrics["gated"]["n"] == sum(1 for i in val_rows if full[i] == 1)
    assert metrics["half"]["accuracy"] > 0.85 and metrics["full"]["accuracy"] > 0.9
    assert metrics["gated"]["mae"] < 0.5
    evaluated = cli("evaluate", run_dir, "--json")
    got = json.loads(evaluated.output)
    assert {t: r["n"] for t, r in got["tasks"].items()} == {t: r["n"] for t, r in metrics.items()}


MULTI = """\
seed: 1
data:
  train: m.csv
  validation: 0.25
  inputs: {a: numeric, b: numeric}
model:
  shared: [{dense: {units: 16, activation: relu}}]
  tasks:
    tags: {type: multilabel, separator: '|', metrics: [hamming, exact_match, accuracy, auc, precision, recall]}
    both: {type: regression, target: [u, v], metrics: [mae, rmse, r2]}
train: {epochs: 2, batch_size: 16}
"""


def test_multilabel_and_several_column_regression_train_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(80):
        a, b = rng.normal(size=2)
        tags = "|".join(t for t, on in (("p", a > 0), ("q", b > 0), ("r", a + b > 1)) if on)
        rows.append(f"{a:.3f},{b:.3f},{tags},{a * 10:.3f},{b + 100:.3f}")
    (tmp_path / "m.csv").write_text("a,b,tags,u,v\n" + "\n".join(rows) + "\n")
    loaded = load(tmp_path, MULTI)
    result = runner.train(loaded, output=tmp_path / "run")
    val = result.results["splits"]["validation"]["tasks"]
    assert set(val["tags"]) == {
        "loss",
        "hamming",
        "exact_match",
        "accuracy",
        "auc",
        "precision",
        "recall",
        "n",
    }
    assert val["tags"]["hamming"] == pytest.approx(1 - val["tags"]["accuracy"], abs=1e-5)
    assert 0 <= val["tags"]["exact_match"] <= 1 and val["both"]["mae"] > 0
    model = run_eval.load_model(tmp_path / "run" / "model.keras")
    out = model(
        data.transform(
            data.Preprocessing.from_dict(model.spec["preprocessing"]),
            data.sources.read_source(str(tmp_path / "m.csv")),
        ).x
    )
    assert out["tags"].shape == (80, 3) and out["both"].shape == (80, 2)
    evaluated = run_eval.evaluate(tmp_path / "run")
    for key in ("hamming", "mae"):
        task = "tags" if key == "hamming" else "both"
        assert evaluated.results["tasks"][task][key] == pytest.approx(val[task][key], rel=1e-5)


def test_metric_classes_round_trip_their_config():
    from mtlcli.model import metrics as tm

    for metric in (
        tm.MultiLabelMetric("exact_match", name="t_exact_match"),
        tm.ColumnsRegressionMetric("rmse", [1.0, 2.0], [3.0, 4.0], name="t_rmse"),
        tm.MultiLabelAUC(name="t_auc"),
    ):
        clone = type(metric).from_config(metric.get_config())
        assert clone.get_config() == metric.get_config()
    m = tm.MultiLabelMetric("hamming")
    m.update_state(
        tf.constant([[1.0, 0.0], [1.0, 1.0]]), tf.constant([[2.0, 1.0], [-1.0, 3.0]]), tf.constant([1.0, 0.0])
    )
    assert float(m.result()) == pytest.approx(0.5)  # only the first row counts: 1 wrong of 2


def test_image_files_are_decoded_by_the_pipeline(tmp_path):
    image_folder(tmp_path, n=6)
    loaded = load(
        tmp_path,
        """\
seed: 0
data:
  train: imgs
  validation: 0.25
  inputs: {image: {kind: image, shape: [4, 4, 1]}}
model:
  shared: [{flatten: {}}, {dense: {units: 4, activation: relu}}]
  tasks: {label: {type: binary}}
train: {epochs: 1, batch_size: 4}
""",
    )
    prepared = data.prepare(loaded)
    ds = pipeline.dataset(tf, prepared.splits["train"], 4)
    x, _, _ = next(iter(ds))
    assert x["image"].shape == (4, 4, 4, 1) and x["image"].dtype == tf.float32
    assert float(tf.reduce_max(x["image"])) <= 1.0 and float(tf.reduce_min(x["image"])) >= 0.0
    result = runner.train(loaded, output=tmp_path / "run")
    assert result.results["splits"]["validation"]["tasks"]["label"]["n"] == 3


def test_evaluate_rebuilds_a_column_split(tmp_path):
    lines = ["a,t,fold"] + [f"{i * 0.1:.2f},{i * 0.3:.2f},{i % 4}" for i in range(40)]
    (tmp_path / "f.csv").write_text("\n".join(lines) + "\n")
    loaded = load(
        tmp_path,
        "data:\n  train: f.csv\n  split: {column: fold, train: [0, 1], validation: [2], test: [3]}\n"
        "  inputs: {a: numeric}\nmodel: {tasks: {t: {type: regression}}}\ntrain: {epochs: 1}\n",
    )
    result = runner.train(loaded, output=tmp_path / "run")
    evaluated = run_eval.evaluate(tmp_path / "run")
    assert evaluated.results["tasks"]["t"]["n"] == 10
    assert evaluated.results["tasks"]["t"]["mae"] == pytest.approx(
        result.results["splits"]["test"]["tasks"]["t"]["mae"], rel=1e-5
    )
