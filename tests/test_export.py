"""``mtl export``: the SavedModel serves raw features by column name (loaded where mtlcli cannot be
imported, and as TensorFlow Serving's REST request maps to it), returns what the in-process Predictor
returns, writes export.json, refuses to overwrite; the TFLite file matches the SavedModel."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mtlcli.errors import UsageError
from mtlcli.run import export as E

from .conftest import TINY_RECIPE, write_tiny_csv
from .test_data_sources import image_folder

# Raw rows: an unseen category ("purple"), a missing number (NaN) and an empty category.
ROWS = [
    {"a": 0.1, "b": 1.0, "color": "red"},
    {"a": math.nan, "b": 2.0, "color": "purple"},
    {"a": 1.5, "b": -0.5, "color": ""},
    {"a": -1.2, "b": 0.3, "color": "blue"},
]

# ------------------------------------------------------------------------------------------------
# no TensorFlow


def test_parse_thresholds_and_its_mistakes():
    assert E.parse_thresholds(["flag=0.3", " t = 1"]) == {"flag": 0.3, "t": 1.0}
    assert E.parse_thresholds(None) == {}
    for bad, msg in (
        ("flag", "--threshold: expected TASK=PROBABILITY such as sex=0.3, received 'flag'"),
        ("flag=x", "--threshold: expected TASK=PROBABILITY such as sex=0.3, received 'flag=x'"),
        ("=0.2", "--threshold: expected TASK=PROBABILITY such as sex=0.3, received '=0.2'"),
        ("flag=1.5", "--threshold flag=1.5: expected a probability between 0 and 1"),
    ):
        with pytest.raises(UsageError) as info:
            E.parse_thresholds([bad])
        assert str(info.value) == msg


def test_signature_keys_sanitise_columns_and_keep_them_apart():
    from mtlcli.data.inputs import InputStats

    inputs = {
        "length": InputStats("numeric", "bill length (mm)"),
        "island": InputStats("categorical", "island"),
        "year": InputStats("numeric", "2007"),
        "again": InputStats("numeric", "bill length (mm)"),  # same column, same kind: one key
        "as_cat": InputStats("categorical", "bill length (mm)"),  # same column, other kind
    }
    assert E.signature_keys(inputs) == {
        "length": "bill_length_mm",
        "island": "island",
        "year": "x_2007",
        "again": "bill_length_mm",
        "as_cat": "bill_length_mm_2",
    }
    assert E.sanitise("é ü") == "input"


def test_export_view_lists_the_signature_and_the_next_commands(tmp_path):
    from rich.console import Console

    from mtlcli.export_view import render_export

    manifest = {
        "format": "saved_model",
        "model_file": "saved_model.pb",
        "inputs": {
            "island": {
                "column": "island",
                "kind": "categorical",
                "dtype": "string",
                "shape": [None],
                "values": ["Biscoe"],
            },
            "bill": {"column": "bill", "kind": "numeric", "dtype": "float64", "shape": [None]},
        },
        "outputs": {"species_probabilities": {"dtype": "float32", "shape": [None, 3]}},
    }
    console = Console(record=True, width=200)
    render_export(console, manifest, tmp_path / "sm")
    text = console.export_text()
    row = next(line for line in text.splitlines() if "species_probabilities" in line)
    assert row.replace("│", " ").split() == ["species_probabilities", "float32", "(batch,", "3)"]
    assert f"saved_model_cli show --dir {tmp_path / 'sm'} --all" in text
    assert '{"instances": [{"island": "Biscoe", "bill": 1.0}]}' in text
    assert "http://localhost:8501/v1/models/mtl:predict" in text


def test_cli_help_and_a_missing_run(cli, tmp_path):
    res = cli("export", "--help")
    assert res.exit_code == 0 and "<bool>" not in res.output
    for option in ("--format", "--output", "--threshold", "--force"):
        assert option in res.output
    res = cli("export", tmp_path / "nope")
    assert (
        res.exit_code == 2
        and f"error: {tmp_path / 'nope'}: no such run directory or model file" in res.output
    )
    res = cli("export", tmp_path)
    assert (
        res.exit_code == 2
        and f"error: {tmp_path} is not a run directory (no model.keras in it)" in res.output
    )
    assert "Traceback" not in res.output


# ------------------------------------------------------------------------------------------------
# a trained tiny run (numeric, categorical; classification, binary, regression)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from mtlcli import recipe as R
    from mtlcli.run import runner

    d = tmp_path_factory.mktemp("export")
    write_tiny_csv(d / "tiny.csv")
    (d / "recipe.yaml").write_text(TINY_RECIPE.replace("epochs: 3", "epochs: 2"))
    return runner.train(R.load(d / "recipe.yaml"), output=d / "run").run_dir


@pytest.fixture(scope="module")
def exported(tiny_run) -> E.Exported:
    return E.export(tiny_run, thresholds={"flag": 0.3})


def _columns(rows: list[dict], inputs: dict) -> dict:
    """TensorFlow Serving's row format ({"instances": rows}) as the columnar tensors it feeds the
    signature: every key of every row is a signature input; values are stacked along the batch."""
    import tensorflow as tf

    assert all(set(r) == set(inputs) for r in rows)
    return {k: tf.constant([r[k] for r in rows], dtype=spec.dtype) for k, spec in inputs.items()}


def _in_process(run_dir: Path, rows: list[dict], thresholds=None, **kw) -> dict:
    import tensorflow as tf

    from mtlcli.model.serving import Predictor
    from mtlcli.run.evaluate import load_model

    predictor = Predictor(load_model(run_dir / "model.keras"), thresholds=thresholds, **kw)
    spec = predictor.signature()
    raw = {k: tf.constant([r[k] for r in rows], dtype=spec[k].dtype) for k in spec}
    return {k: v.numpy() for k, v in predictor.function(raw).items()}


SUBPROCESS = textwrap.dedent(
    """\
    import sys
    sys.modules["mtlcli"] = None  # the export must not need mtl
    import json, numpy as np, tensorflow as tf
    fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    rows = json.loads(open(sys.argv[2]).read())["instances"]
    _, specs = fn.structured_input_signature
    feed = {k: tf.constant([r[k] for r in rows], dtype=s.dtype) for k, s in specs.items()}
    out = fn(**feed)
    print(json.dumps({k: (np.char.decode(v.numpy().astype(bytes)).tolist() if v.dtype == tf.string
                          else v.numpy().tolist()) for k, v in out.items()}))
    """
)


@pytest.mark.slow
def test_saved_model_in_a_python_without_mtl_equals_the_predictor(exported, tiny_run, tmp_path):
    (tmp_path / "load.py").write_text(SUBPROCESS)
    (tmp_path / "rows.json").write_text(json.dumps({"instances": ROWS}))  # NaN, as TF Serving accepts
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "load.py"), str(exported.path), str(tmp_path / "rows.json")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    here = _in_process(tiny_run, ROWS, thresholds={"flag": 0.3})
    assert set(served) == set(here) == set(exported.manifest["outputs"])
    for k, v in here.items():
        if v.dtype == object:
            assert served[k] == [s.decode() for s in v]
        else:
            assert np.max(np.abs(np.asarray(served[k]) - v)) <= 1e-5, k
    classes = {"kind": ["x", "y", "z"], "flag": ["no", "yes"]}
    assert served["kind_label"] == [classes["kind"][i] for i in served["kind_class_index"]]
    assert served["flag_label"] == [classes["flag"][int(p >= 0.3)] for p in served["flag_probability"]]


@pytest.mark.slow
def test_saved_model_equals_mtl_predict_on_a_csv_of_the_rows(exported, tiny_run, tmp_path):
    import tensorflow as tf

    from mtlcli.run import predict as run_predict

    lines = ["a,b,color"] + [f"{'' if math.isnan(r['a']) else r['a']},{r['b']},{r['color']}" for r in ROWS]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    run_predict.predict(
        tiny_run, tmp_path / "rows.csv", output=tmp_path / "p.jsonl", proba=True, thresholds={"flag": 0.3}
    )
    predicted = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    fn = tf.saved_model.load(str(exported.path)).signatures["serving_default"]
    served = {k: v.numpy() for k, v in fn(**_columns(ROWS, fn.structured_input_signature[1])).items()}
    assert [p["kind"] for p in predicted] == [s.decode() for s in served["kind_label"]]
    assert [p["flag"] for p in predicted] == [s.decode() for s in served["flag_label"]]
    for i, p in enumerate(predicted):
        assert abs(p["value"] - served["value_value"][i]) <= 1e-5
        assert abs(p["flag:p"] - served["flag_probability"][i]) <= 1e-5
        for j, c in enumerate(["x", "y", "z"]):
            assert abs(p[f"kind:{c}"] - served["kind_probabilities"][i, j]) <= 1e-5


@pytest.mark.slow
def test_signature_matches_the_rest_request_and_export_json(exported, tiny_run):
    import tensorflow as tf

    from mtlcli import __version__

    fn = tf.saved_model.load(str(exported.path)).signatures["serving_default"]
    _, inputs = fn.structured_input_signature
    assert {k: (s.dtype, tuple(s.shape)) for k, s in inputs.items()} == {
        "a": (tf.float64, (None,)),
        "b": (tf.float64, (None,)),
        "color": (tf.string, (None,)),
    }
    columnar = {"inputs": {k: [r[k] for r in ROWS] for k in inputs}}  # TF Serving's columnar format
    by_rows = fn(**_columns(ROWS, inputs))
    by_columns = fn(**{k: tf.constant(v, dtype=inputs[k].dtype) for k, v in columnar["inputs"].items()})
    for k in by_rows:
        np.testing.assert_array_equal(by_rows[k].numpy(), by_columns[k].numpy())
    outputs = {k: (v.dtype, tuple(v.shape)) for k, v in fn.structured_outputs.items()}
    assert outputs == {
        "kind_probabilities": (tf.float32, (None, 3)),
        "kind_class_index": (tf.int64, (None,)),
        "kind_label": (tf.string, (None,)),
        "flag_probability": (tf.float32, (None,)),
        "flag_class_index": (tf.int64, (None,)),
        "flag_label": (tf.string, (None,)),
        "value_value": (tf.float32, (None,)),
    }
    m = json.loads((exported.path / "export.json").read_text())
    assert m == exported.manifest
    assert exported.path == tiny_run / "export" / "saved_model"
    assert m["format"] == "saved_model" and m["signature"] == "serving_default"
    assert m["columns"] == {"a": "a", "b": "b", "color": "color"}
    assert m["inputs"]["color"] == {
        "column": "color",
        "inputs": ["color"],
        "kind": "categorical",
        "dtype": "string",
        "shape": [None],
        "values": ["blue", "green", "red"],
    }
    assert m["inputs"]["a"]["dtype"] == "float64" and m["inputs"]["a"]["missing"] == "mean"
    assert abs(m["inputs"]["a"]["mean"]) < 0.5  # the training mean of a standard normal column
    assert m["outputs"]["kind_probabilities"] == {"dtype": "float32", "shape": [None, 3]}
    assert m["tasks"]["kind"] == {
        "type": "classification",
        "classes": ["x", "y", "z"],
        "outputs": ["kind_probabilities", "kind_class_index", "kind_label"],
    }
    assert m["tasks"]["flag"]["threshold"] == 0.3 and m["thresholds"] == {"flag": 0.3}
    assert m["tasks"]["value"] == {"type": "regression", "columns": ["value"], "outputs": ["value_value"]}
    assert m["versions"] == {
        "mtl": __version__,
        "tensorflow": tf.__version__,
        "keras": __import__("keras").__version__,
    }
    from mtlcli import fsio

    assert m["source"] == {
        "model": str(tiny_run / "model.keras"),
        "run": str(tiny_run),
        "sha256": fsio.sha256(tiny_run / "model.keras"),
    }


@pytest.mark.slow
def test_regression_value_is_in_the_targets_units(exported, tiny_run):
    import tensorflow as tf

    from mtlcli.model.serving import Predictor
    from mtlcli.run.evaluate import load_model

    predictor = Predictor(load_model(tiny_run / "model.keras"))
    rows = [r for r in ROWS if not math.isnan(r["a"])]
    raw = {k: tf.constant([r[k] for r in rows], dtype=s.dtype) for k, s in predictor.signature().items()}
    logits = predictor.model(predictor.transform(raw), training=False)["value"].numpy()[:, 0]
    st = predictor.prep.targets["value"]
    fn = tf.saved_model.load(str(exported.path)).signatures["serving_default"]
    served = fn(**raw)["value_value"].numpy()
    np.testing.assert_allclose(served, logits * st.std + st.mean, rtol=1e-6)
    assert 5 < st.mean < 15 and st.std > 1  # the tiny target's units (about 10 +- 3.6), not z-scores


@pytest.mark.slow
def test_refuses_to_overwrite_without_force_and_replaces_with_it(exported, tiny_run, tmp_path, cli):
    out = tmp_path / "sm"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("export", tiny_run, "-o", out)
    assert result.exit_code == 2
    assert (
        f"error: -o {out}: the directory exists and is not empty; pass --force to replace it" in result.output
    )
    assert (out / "keep.txt").read_text() == "mine" and "Traceback" not in result.output
    result = cli("export", tiny_run, "-o", out, "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "saved_model.pb").exists()
    assert f"wrote saved_model to {out}" in result.output
    assert "kind_label" in result.output and f"saved_model_cli show --dir {out} --all" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["sm"]  # no temporary directory left beside it
    result = cli("export", tiny_run, "-o", tiny_run, "--force")
    assert result.exit_code == 2 and "holds the model being exported" in result.output
    result = cli("export", tiny_run, "-o", tmp_path / "x", "--threshold", "kind=0.2")
    assert result.exit_code == 2
    assert (
        "'kind' is a classification task; a threshold applies to binary and multilabel tasks" in result.output
    )
    result = cli("export", tiny_run, "--format", "onnx")
    assert (
        result.exit_code == 2
        and "--format: expected one of saved_model, tflite, received 'onnx'" in result.output
    )


@pytest.mark.slow
def test_an_interrupted_export_leaves_nothing_behind(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "sm"
    out.mkdir()
    (out / "old.txt").write_text("old")

    def stop(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(E, "_saved_model", stop)
    with pytest.raises(KeyboardInterrupt):
        E.export(tiny_run, output=out, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["sm"] and (out / "old.txt").read_text() == "old"


@pytest.mark.slow
def test_saved_model_cli_shows_the_signature(exported):
    tool = Path(sys.executable).parent / "saved_model_cli"
    if not tool.exists():
        pytest.skip("saved_model_cli is not installed beside this Python")
    proc = subprocess.run(
        [str(tool), "show", "--dir", str(exported.path), "--all"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "signature_def['serving_default']" in proc.stdout
    assert "inputs['color'] tensor_info:\n        dtype: DT_STRING" in proc.stdout
    assert "inputs['a'] tensor_info:\n        dtype: DT_DOUBLE" in proc.stdout
    assert "outputs['kind_label'] tensor_info:\n        dtype: DT_STRING" in proc.stdout


# ------------------------------------------------------------------------------------------------
# TFLite


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_tflite_converts_numbers_and_categories_and_matches_the_saved_model(
    exported, tiny_run, tmp_path, cli
):
    import tensorflow as tf

    result = cli("export", tiny_run, "--format", "tflite", "-o", tmp_path / "lite", "--threshold", "flag=0.3")
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "lite" / "export.json").read_text())
    assert m["format"] == "tflite" and m["model_file"] == "model.tflite"
    assert m["inputs"]["a"]["dtype"] == "float32" and m["inputs"]["color"]["dtype"] == "string"
    runner = tf.lite.Interpreter(model_path=str(tmp_path / "lite" / "model.tflite")).get_signature_runner()
    lite = runner(
        a=np.array([r["a"] for r in ROWS], np.float32),
        b=np.array([r["b"] for r in ROWS], np.float32),
        color=np.array([r["color"].encode() for r in ROWS]),
    )
    fn = tf.saved_model.load(str(exported.path)).signatures["serving_default"]
    served = {k: v.numpy() for k, v in fn(**_columns(ROWS, fn.structured_input_signature[1])).items()}
    assert set(lite) == set(served)
    for k, v in served.items():
        if v.dtype == object:
            assert lite[k].tolist() == v.tolist(), k
        else:  # float32 standardisation in TFLite vs float64 in the SavedModel
            assert np.max(np.abs(lite[k] - v)) <= 1e-5, k


def test_lite_front_end_equals_the_input_transform():
    import tensorflow as tf

    from mtlcli.data import layers
    from mtlcli.data.inputs import InputStats

    stats = {
        "n": InputStats("numeric", "n", mean=3.25, std=1.5, missing="zero", flag=True),
        "m": InputStats("numeric", "m", mean=-0.7, std=0.3),
        "c": InputStats("categorical", "c", vocabulary=["a", "b", "c"]),
        "e": InputStats("categorical", "e", vocabulary=["p", "q"], encoding="embedding", dim=2),
        "none": InputStats("categorical", "none", vocabulary=[]),
    }
    x = np.array([0.5, np.nan, 3.25, -2.0, np.inf])
    words = ["b", "zz", "", "a", "c"]
    raw = {"n": x, "m": x[::-1].copy(), "c": words, "e": ["q", "p", "x", "", "q"], "none": words}
    want = layers.layer(stats)({k: tf.constant(v) for k, v in raw.items()})
    got = E.lite_features(
        tf, stats, {k: tf.constant(np.float32(v) if k in "nm" else v) for k, v in raw.items()}
    )
    for k in stats:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), atol=1e-6, err_msg=k)
    assert got["e"].numpy()[:, 0].tolist() == [2, 1, 0, 0, 2]


# ------------------------------------------------------------------------------------------------
# images


@pytest.mark.slow
def test_image_folder_export_takes_encoded_bytes_and_refuses_tflite(tmp_path, cli):
    import tensorflow as tf

    from mtlcli import recipe as R
    from mtlcli.run import runner

    folder = image_folder(tmp_path, n=6)
    (tmp_path / "recipe.yaml").write_text(
        "seed: 0\ndata:\n  train: imgs\n  validation: 0.25\n  inputs: {image: {kind: image, shape: [4, 4, 1]}}\n"
        "model:\n  shared: [{flatten: {}}, {dense: {units: 4, activation: relu}}]\n"
        "  tasks: {label: {type: binary}}\ntrain: {epochs: 1, batch_size: 4}\n"
    )
    run_dir = runner.train(R.load(tmp_path / "recipe.yaml"), output=tmp_path / "run").run_dir
    done = E.export(run_dir, output=tmp_path / "sm")
    files = sorted(folder.glob("*/*.png"))
    assert done.manifest["inputs"]["image"]["kind"] == "image file (encoded bytes)"
    assert done.manifest["inputs"]["image"]["dtype"] == "string"
    fn = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    served = fn(image=tf.constant([p.read_bytes() for p in files]))
    here = _in_process(run_dir, [{"image": str(p)} for p in files])  # the Predictor reads the paths
    np.testing.assert_allclose(served["label_probability"].numpy(), here["label_probability"], atol=1e-6)
    assert [s.decode() for s in served["label_label"].numpy()] == [s.decode() for s in here["label_label"]]
    result = cli("export", run_dir, "--format", "tflite", "-o", tmp_path / "lite")
    assert result.exit_code == 2
    assert (
        "error: --format tflite: the image-file input(s) image (column 'image') cannot convert: decoding "
        "image files is not a TFLite builtin op. Use mtl export --format saved_model" in result.output
    )
    assert not (tmp_path / "lite").exists()
    shutil.rmtree(tmp_path / "sm")


# ------------------------------------------------------------------------------------------------
# an embedded category, a flagged number, a column that is no valid key; multilabel, 2-column regression

WIDE_RECIPE = """\
seed: 1
data:
  train: wide.csv
  validation: 0.2
  inputs:
    x: numeric
    y: {kind: numeric, missing: zero, flag: true}
    city: {kind: categorical, encoding: embedding, dim: 3}
    bill: {kind: numeric, column: "bill length (mm)"}
model:
  shared: [{dense: {units: 8, activation: relu}}]
  tasks:
    tags: {type: multilabel, separator: '|'}
    rr: {type: regression, target: [r1, r2]}
train: {epochs: 1, batch_size: 16}
"""
WIDE_ROWS = {
    "x": [0.3, math.nan, -1.0, 2.0],
    "y": [math.nan, 0.5, -0.2, math.inf],
    "city": ["rome", "paris", "", "lima"],
    "bill_length_mm": [40.0, 35.5, math.nan, 50.0],
}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_embedding_flag_multilabel_and_two_column_regression_export_and_convert(tmp_path):
    import tensorflow as tf

    from mtlcli import recipe as R
    from mtlcli.run import runner

    rng = np.random.default_rng(0)
    lines = ["x,y,city,tags,r1,r2,bill length (mm)"]
    for _ in range(60):
        x, y, city = rng.normal(), rng.normal(), rng.choice(["oslo", "rome", "lima", "kyiv"])
        tags = "|".join(t for t, c in (("a", x > 0), ("b", y > 0), ("c", city == "rome")) if c)
        lines.append(
            f"{x:.3f},{y:.3f},{city},{tags},{2 * x + 1:.3f},{y * 10 - 3:.3f},{rng.normal() * 5 + 40:.2f}"
        )
    (tmp_path / "wide.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "recipe.yaml").write_text(WIDE_RECIPE)
    run_dir = runner.train(R.load(tmp_path / "recipe.yaml"), output=tmp_path / "run").run_dir
    done = E.export(run_dir, output=tmp_path / "sm")
    assert done.manifest["columns"] == {
        "x": "x",
        "y": "y",
        "city": "city",
        "bill length (mm)": "bill_length_mm",
    }
    assert done.manifest["inputs"]["y"]["missing"] == "zero"
    fn = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    types = {k: s.dtype for k, s in fn.structured_input_signature[1].items()}
    served = {
        k: v.numpy() for k, v in fn(**{k: tf.constant(v, types[k]) for k, v in WIDE_ROWS.items()}).items()
    }
    rows = [{("bill" if k == "bill_length_mm" else k): v[i] for k, v in WIDE_ROWS.items()} for i in range(4)]
    here = _in_process(run_dir, rows)
    assert set(here) == set(served) == {"tags_probabilities", "tags_labels", "tags_label", "rr_value"}
    for k, v in here.items():
        if v.dtype == object:
            assert served[k].tolist() == v.tolist()
        else:
            assert np.max(np.abs(served[k] - v)) <= 1e-5, k
    assert served["rr_value"].shape == (4, 2)
    classes = done.manifest["tasks"]["tags"]["classes"]
    assert [s.decode() for s in served["tags_label"]] == [
        "|".join(c for c, on in zip(classes, row, strict=True) if on) for row in served["tags_labels"]
    ]
    lite_done = E.export(run_dir, fmt="tflite", output=tmp_path / "lite")
    assert "tags_label" not in lite_done.manifest["outputs"]
    assert lite_done.manifest["tasks"]["tags"]["outputs"] == ["tags_probabilities", "tags_labels"]
    runner_ = tf.lite.Interpreter(model_path=str(lite_done.model_file)).get_signature_runner()
    feed = {
        k: (np.array([s.encode() for s in v]) if k == "city" else np.array(v, np.float32))
        for k, v in WIDE_ROWS.items()
    }
    lite = runner_(**feed)
    assert set(lite) == {"tags_probabilities", "tags_labels", "rr_value"}
    for k, v in lite.items():
        assert np.max(np.abs(v - served[k])) <= 1e-5, k


@pytest.mark.slow
def test_a_bfloat16_model_exports_as_saved_model_and_is_refused_by_tflite(tmp_path, cli):
    import tensorflow as tf

    from mtlcli import recipe as R
    from mtlcli.run import runner

    write_tiny_csv(tmp_path / "tiny.csv")
    recipe = TINY_RECIPE.replace("epochs: 3", "epochs: 1").replace(
        "weighting: static", "weighting: static\n  mixed_precision: bfloat16"
    )
    (tmp_path / "recipe.yaml").write_text(recipe)
    run_dir = runner.train(R.load(tmp_path / "recipe.yaml"), output=tmp_path / "run").run_dir
    result = cli("export", run_dir, "-f", "tflite", "-o", tmp_path / "lite")
    assert result.exit_code == 2 and not (tmp_path / "lite").exists()
    assert (
        "error: --format tflite: the model computes in bfloat16 (train.mixed_precision: bfloat16), which "
        "TFLite's builtin ops do not run. Use mtl export --format saved_model" in result.output
    )
    done = E.export(run_dir, output=tmp_path / "sm")
    fn = tf.saved_model.load(str(done.path)).signatures["serving_default"]
    served = fn(**_columns(ROWS, fn.structured_input_signature[1]))
    here = _in_process(run_dir, ROWS)
    np.testing.assert_allclose(served["kind_probabilities"].numpy(), here["kind_probabilities"], atol=1e-6)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_an_image_array_input_exports_as_float32_pixels_and_converts(tmp_path):
    import tensorflow as tf

    from mtlcli import recipe as R
    from mtlcli.run import runner

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", image=images, left=rng.integers(0, 3, 40), right=rng.integers(0, 2, 40))
    (tmp_path / "recipe.yaml").write_text(
        "seed: 0\ndata:\n  train: d.npz\n  validation: 0.25\n  inputs: {image: {kind: image, shape: [8, 8, 1]}}\n"
        "model:\n  shared: [{flatten: {}}, {dense: {units: 4, activation: relu}}]\n"
        "  tasks: {left: {type: classification}, right: {type: binary}}\ntrain: {epochs: 1, batch_size: 8}\n"
    )
    run_dir = runner.train(R.load(tmp_path / "recipe.yaml"), output=tmp_path / "run").run_dir
    done = E.export(run_dir, output=tmp_path / "sm")
    assert done.manifest["inputs"]["image"] == {
        "column": "image",
        "inputs": ["image"],
        "kind": "image",
        "dtype": "float32",
        "shape": [None, 8, 8, 1],
    }
    assert done.manifest["tasks"]["left"]["classes"] == ["0", "1", "2"]  # integer labels, as strings
    pixels = images[:5].astype(np.float32)  # raw 0..255 values: the graph applies the 1/255 scale
    fn = tf.saved_model.load(str(done.path)).signatures["serving_default"]
    served = {k: v.numpy() for k, v in fn(image=tf.constant(pixels)).items()}
    here = _in_process(run_dir, [{"image": p} for p in pixels])
    for k, v in here.items():
        if v.dtype == object:
            assert served[k].tolist() == v.tolist()
        else:
            assert np.max(np.abs(served[k] - v)) <= 1e-6, k
    lite_done = E.export(run_dir, fmt="tflite", output=tmp_path / "lite")
    lite = tf.lite.Interpreter(model_path=str(lite_done.model_file)).get_signature_runner()(image=pixels)
    assert set(lite) == set(served)
    for k, v in served.items():
        if v.dtype == object:
            assert lite[k].tolist() == v.tolist(), k
        else:
            assert np.max(np.abs(lite[k] - v)) <= 1e-5, k
