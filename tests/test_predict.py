"""``mtl predict``: round trips against ``mtl evaluate`` (metrics from the output equal evaluate's), the
three output formats, streamed vs one-chunk reading, ``when:`` and labels, and every error path."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from .conftest import PENGUINS, REPO

RICH_RECIPE = textwrap.dedent(
    """\
    name: rich
    seed: 5
    data:
      train: rich.csv
      validation: 0.2
      inputs:
        a: numeric
        b: numeric
        color: {kind: categorical, encoding: embedding, dim: 3}
    model:
      shared:
        - dense: {units: 16, activation: relu}
      tasks:
        kind: {type: classification, metrics: [accuracy]}
        click: {type: binary, metrics: [accuracy]}
        buy: {type: binary, when: {column: click, equals: 1}, metrics: [accuracy]}
        pos: {type: regression, target: [px, py], metrics: [mae, rmse]}
        tags: {type: multilabel, separator: "|", metrics: [hamming, exact_match]}
    train:
      epochs: 3
      batch_size: 32
      weighting: static
    """
)


def write_rich_csv(path: Path, n: int = 160, seed: int = 1) -> Path:
    """Numeric a, b; a categorical color (embedded); string classes, 0/1 binary labels (some missing), a
    binary task that counts where click is 1, a two-column regression and '|'-joined labels."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    lines = ["id,a,b,color,kind,click,buy,px,py,tags"]
    for i in range(n):
        kind = "x" if a[i] > 0.4 else "z" if a[i] < -0.4 else "y"
        click = "" if i % 13 == 5 else str(int(b[i] > 0))
        buy = "" if i % 7 == 2 else str(int(a[i] + b[i] > 0))
        tags = "|".join(t for t, on in (("p", a[i] > 0), ("q", b[i] > 0), ("r", color[i] == "red")) if on)
        lines.append(
            f"r{i},{a[i]:.4f},{b[i]:.4f},{color[i]},{kind},{click},{buy},"
            f"{2 * a[i] + 1:.4f},{b[i] - 3:.4f},{tags}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def rich_run(tmp_path_factory):
    """One trained run of RICH_RECIPE (3 epochs) shared by the module: (run directory, data file)."""
    from typer.testing import CliRunner

    from mtlcli.cli import app

    root = tmp_path_factory.mktemp("rich")
    write_rich_csv(root / "rich.csv")
    (root / "recipe.yaml").write_text(RICH_RECIPE)
    result = CliRunner().invoke(app, ["train", str(root / "recipe.yaml"), "-o", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root / "run", root / "rich.csv"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def evaluated(cli, run: Path, data: Path) -> dict:
    result = cli("evaluate", run, "--data", data, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["tasks"]


# ------------------------------------------------------------------------------------------------
# round trips: metrics from predict's output equal evaluate's


def test_metrics_from_predictions_equal_evaluate(cli, rich_run, tmp_path):
    import pandas as pd

    run, data = rich_run
    out = tmp_path / "p.csv"
    result = cli("predict", run, data, "-o", out, "--with-labels", "--keep", "id")
    assert result.exit_code == 0, result.output
    assert f"wrote 160 rows to {out}" in result.output
    p = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert list(p.columns) == [
        "id", "kind", "kind:true", "click", "click:p", "click:true", "buy", "buy:p", "buy:applies",
        "buy:true", "pos:px", "pos:py", "pos:px:true", "pos:py:true", "tags", "tags:true",
    ]  # fmt: skip
    ev = evaluated(cli, run, data)
    got = {}
    for task in ("kind", "click"):
        labelled = p[f"{task}:true"].notna()
        got[(task, "accuracy")] = (p[task][labelled] == p[f"{task}:true"][labelled]).mean()
    counted = p["buy:true"].notna() & (p["buy:applies"] == True)  # noqa: E712
    got[("buy", "accuracy")] = (p["buy"][counted] == p["buy:true"][counted]).mean()
    err = np.stack([p["pos:px"] - p["pos:px:true"], p["pos:py"] - p["pos:py:true"]], axis=1)
    got[("pos", "mae")] = np.abs(err).mean(axis=0).mean()
    got[("pos", "rmse")] = np.sqrt((err**2).mean(axis=0).mean())
    tagged = p[p["tags:true"].notna()]  # a blank cell is a missing label, not an empty set
    chosen = np.array([[t in str(v).split("|") for t in "pqr"] for v in tagged["tags"].fillna("")])
    truth = np.array([[t in v.split("|") for t in "pqr"] for v in tagged["tags:true"]])
    got[("tags", "hamming")] = (chosen != truth).mean()
    got[("tags", "exact_match")] = (chosen == truth).all(axis=1).mean()
    for (task, metric), value in got.items():
        assert value == pytest.approx(ev[task][metric], rel=1e-6, abs=1e-7), (task, metric)
    assert ev["buy"]["n"] == int(counted.sum())


@pytest.mark.slow
def test_penguins_demo_round_trip(cli, tmp_path):
    """The demo (2 epochs): accuracy and MAE from predict's output equal evaluate's on the same file."""
    import pandas as pd

    run = tmp_path / "run"
    assert cli("train", REPO / "recipes" / "penguins.yaml", "--epochs", "2", "-o", run).exit_code == 0
    out = tmp_path / "p.parquet"
    result = cli("predict", run, PENGUINS, "-o", out, "--with-labels")
    assert result.exit_code == 0, result.output
    p = pd.read_parquet(out)
    ev = evaluated(cli, run, PENGUINS)
    for task in ("species", "sex"):
        labelled = p[f"{task}:true"].notna()
        acc = (p[task][labelled] == p[f"{task}:true"][labelled]).mean()
        assert acc == pytest.approx(ev[task]["accuracy"], rel=1e-6)
    mae = (p["body_mass"] - p["body_mass:true"]).abs().mean()
    assert mae == pytest.approx(ev["body_mass"]["mae"], rel=1e-6)
    assert p["species"].map(type).eq(str).all()


# ------------------------------------------------------------------------------------------------
# formats, types, streaming


def test_csv_parquet_jsonl_agree_and_keep_types(rich_run, tmp_path):
    import pandas as pd

    from mtlcli.run.predict import predict

    run, data = rich_run
    outs = {}
    for suffix in ("csv", "parquet", "jsonl"):
        outs[suffix] = tmp_path / f"p.{suffix}"
        predict(run, data, output=outs[suffix], keep=["id"], proba=True, with_labels=True)
    c = read_csv(outs["csv"])
    pq = pd.read_parquet(outs["parquet"])
    js = [json.loads(line) for line in outs["jsonl"].read_text().splitlines()]
    assert len(c) == len(pq) == len(js) == 160
    assert [r["id"] for r in js] == [f"r{i}" for i in range(160)]  # input order
    assert {r["kind"] for r in js} <= {"x", "y", "z"}  # string labels stay strings
    assert all(r["click"] in (0, 1) and isinstance(r["click"], int) for r in js)  # int labels stay ints
    assert pq["click"].dtype.kind == "i" and pq["kind"].map(type).eq(str).all()
    for i in range(160):
        tags = js[i]["tags"]
        assert isinstance(tags, list) and list(pq["tags"][i]) == tags and c[i]["tags"] == "|".join(tags)
        assert js[i]["kind"] == c[i]["kind"] == pq["kind"][i]
        assert float(c[i]["pos:px"]) == pytest.approx(js[i]["pos:px"], rel=1e-7)
        assert js[i]["buy:applies"] == pq["buy:applies"][i] if js[i]["buy:applies"] is not None else True
        total = sum(js[i][f"kind:{k}"] for k in "xyz")
        assert total == pytest.approx(1.0, abs=1e-6)


def test_streamed_chunks_give_the_same_file(rich_run, tmp_path):
    from mtlcli.run.predict import predict

    run, data = rich_run
    one, many = tmp_path / "one.csv", tmp_path / "many.csv"
    # the same batches (7 rows) either way: the numbers agree to the bit (another batch size may move the
    # last bit of a float32, as any batched matrix product does)
    predict(run, data, output=one, keep=["id"], proba=True, with_labels=True, chunk_rows=10**6, batch_size=7)
    events = []
    r = predict(
        run, data, output=many, keep=["id"], proba=True, with_labels=True, chunk_rows=7, batch_size=7,
        on_event=events.append,
    )  # fmt: skip
    assert one.read_text() == many.read_text()
    assert r.rows == 160 and [e.rows for e in events[1:]][:3] == [7, 14, 21]


def test_when_applies_and_absent_condition_column(rich_run, tmp_path):
    run, data = rich_run
    from mtlcli.run.predict import predict

    out = tmp_path / "p.csv"
    predict(run, data, output=out, tasks=["buy"], keep=["click"])
    rows = read_csv(out)
    assert [r["buy:applies"] for r in rows[:6]] == [
        {"1": "true", "0": "false", "": ""}[r["click"]] for r in rows[:6]
    ]
    assert {r["buy:applies"] for r in rows if r["click"] == ""} == {""}
    assert {r["buy:applies"] for r in rows if r["click"] == "1"} == {"true"}
    lines = data.read_text().splitlines()  # a file without the click column: applies is unknown
    cut = tmp_path / "noclick.csv"
    cut.write_text("\n".join(",".join(x.split(",")[:5]) for x in lines) + "\n")
    predict(run, cut, output=out, tasks=["buy", "kind"])
    rows = read_csv(out)
    assert list(rows[0]) == ["buy", "buy:p", "buy:applies", "kind"]
    assert {r["buy:applies"] for r in rows} == {""}


def test_threshold_and_no_output_table(cli, rich_run):
    run, data = rich_run
    low = cli("predict", run, data, "--tasks", "click", "--threshold", "click=0.0", "--json")
    assert low.exit_code == 0, low.output
    payload = json.loads(low.stdout)
    assert payload["rows"] == 160 and payload["columns"] == ["click", "click:p"]
    assert {r["click"] for r in payload["predictions"]} == {1} and len(payload["predictions"]) == 50
    shown = cli("predict", run, data, "--tasks", "kind")
    assert shown.exit_code == 0, shown.output
    assert "... 140 more rows (160 in all); write them all with -o FILE" in shown.output


def test_unseen_categories_are_counted(cli, rich_run, tmp_path):
    run, data = rich_run
    text = data.read_text().replace(",red,", ",purple,", 3)
    new = tmp_path / "new.csv"
    new.write_text(text)
    result = cli("predict", run, new, "-o", tmp_path / "p.csv", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["unseen"] == {"color": 3}
    plain = cli("predict", run, new, "-o", tmp_path / "p.csv")
    assert "categories not seen in training (predicted as unknown): 'color' 3" in plain.output


# ------------------------------------------------------------------------------------------------
# errors: exit 2, file and line, no traceback, no file left


def _no_file(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_missing_input_column_with_did_you_mean(cli, rich_run, tmp_path):
    run, data = rich_run
    bad = tmp_path / "bad.csv"
    bad.write_text(data.read_text().replace("id,a,b,color", "id,a,b,colour", 1))
    out = tmp_path / "p.csv"
    result = cli("predict", run, bad, "-o", out)
    assert result.exit_code == 2
    assert f"{bad}: input column 'color' not found; did you mean 'colour'?" in result.output
    assert "Traceback" not in result.output
    _no_file(out)


def test_bad_cells_of_every_chunk_in_one_error_and_no_file(cli, rich_run, tmp_path):
    run, data = rich_run
    lines = data.read_text().splitlines()
    for i in (3, 150):  # line i + 1 of the file
        fields = lines[i].split(",")
        fields[1] = "abc"
        lines[i] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "p.parquet"
    from mtlcli.errors import DataError
    from mtlcli.run.predict import predict

    with pytest.raises(DataError) as info:
        predict(run, bad, output=out, chunk_rows=20)
    assert [p.render() for p in info.value.problems] == [
        f"{bad}:4 column 'a': expected a number, received 'abc'",
        f"{bad}:151 column 'a': expected a number, received 'abc'",
    ]
    _no_file(out)
    result = cli("predict", run, bad, "-o", out)
    assert result.exit_code == 2 and f"{bad}:151 column 'a': expected a number" in result.output
    assert "Traceback" not in result.output


def test_interrupt_midway_leaves_the_old_file(rich_run, tmp_path, monkeypatch):
    from mtlcli.run import predict as mod

    run, data = rich_run
    real, calls = mod.Run.chunk, []

    def chunk(self, table, sink):
        calls.append(1)
        if len(calls) == 3:  # two chunks written, then Ctrl-C
            raise KeyboardInterrupt
        return real(self, table, sink)

    monkeypatch.setattr(mod.Run, "chunk", chunk)
    out = tmp_path / "p.csv"
    out.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        mod.predict(run, data, output=out, chunk_rows=20)
    assert out.read_text() == "old\n" and len(calls) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["p.csv"]


def test_write_failure_midway_leaves_no_file(cli, rich_run, tmp_path, monkeypatch):
    import errno

    from mtlcli.run import writers

    run, data = rich_run
    real, calls = writers.CsvWriter.write, []

    def write(self, chunk):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, chunk)

    monkeypatch.setattr(writers.CsvWriter, "write", write)
    from mtlcli.run.predict import predict

    out = tmp_path / "p.csv"
    from mtlcli.errors import RunError

    with pytest.raises(RunError, match=f"cannot write {out}: no space left on device"):
        predict(run, data, output=out, chunk_rows=20)
    _no_file(out)


def test_ctrl_c_exits_130_without_a_file(cli, rich_run, tmp_path, monkeypatch):
    from mtlcli.run import predict as mod

    run, data = rich_run

    def chunk(self, table, sink):
        sink.write({"x": np.arange(3)})
        raise KeyboardInterrupt

    monkeypatch.setattr(mod.Run, "chunk", chunk)
    out = tmp_path / "p.jsonl"
    result = cli("predict", run, data, "-o", out)
    assert result.exit_code == 130
    assert "interrupted: no output file written" in result.output
    _no_file(out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--tasks", "kidn"],
            "error: --tasks: unknown task 'kidn'; did you mean 'kind'? (the model's tasks: ",
        ),
        (
            ["--threshold", "click"],
            "error: --threshold: expected TASK=PROBABILITY such as sex=0.3, received 'click'",
        ),
        (["--threshold", "click=2"], "error: --threshold click=2: expected a probability between 0 and 1"),
        (
            ["--threshold", "pos=0.2"],
            "error: --threshold pos=0.2: 'pos' is a regression task; a threshold applies",
        ),
        (["--threshold", "clik=0.2"], "error: --threshold: unknown task 'clik'; did you mean 'click'?"),
        (
            ["-o", "p.txt"],
            "error: p.txt: unknown output format ('.txt'); expected a file name ending in .csv, ",
        ),
        (["--keep", "idd"], ": --keep column 'idd' not found; did you mean 'id'?"),
        (["--keep", "kind"], "error: --keep kind: an output column has this name"),
    ],
)
def test_usage_errors(cli, rich_run, args, message):
    run, data = rich_run
    result = cli("predict", run, data, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_run_dir_and_labels(cli, rich_run, tmp_path):
    run, data = rich_run
    result = cli("predict", tmp_path / "nope", data)
    assert result.exit_code == 2
    assert f"error: {tmp_path / 'nope'}: no such run directory or model file" in result.output
    result = cli("predict", run, tmp_path / "none.csv")
    assert result.exit_code == 2 and f"{tmp_path / 'none.csv'}: file not found" in result.output
    nolabels = tmp_path / "x.csv"
    nolabels.write_text("\n".join(",".join(x.split(",")[:4]) for x in data.read_text().splitlines()) + "\n")
    ok = cli("predict", run, nolabels, "-o", tmp_path / "p.csv")  # label columns are not needed
    assert ok.exit_code == 0, ok.output
    result = cli("predict", run, nolabels, "--with-labels")
    assert result.exit_code == 2
    assert (
        f"{nolabels}: target column 'kind' of task 'kind' not found; did you mean 'id'? (--with-labels needs "
        "the label columns of the tasks predicted; --tasks chooses them)"
    ) in result.output


# ------------------------------------------------------------------------------------------------
# images


IMAGE_RECIPE = textwrap.dedent(
    """\
    name: pics
    data:
      train: pics.csv
      inputs:
        image: {kind: image, shape: [8, 8, 1]}
    model:
      shared: [{flatten: {}}, {dense: {units: 4}}]
      tasks:
        label: {type: binary}
    train: {epochs: 1, batch_size: 4}
    """
)


def _png(path: Path, value: int) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(np.full((8, 8, 1), value, np.uint8)).numpy())


@pytest.mark.slow
def test_images_from_a_list_and_a_folder_and_unreadable_images(cli, tmp_path):
    rows = ["image,label"]
    for i in range(8):
        _png(tmp_path / f"i{i}.png", 30 if i % 2 else 220)
        rows.append(f"i{i}.png,{i % 2}")
    (tmp_path / "pics.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "recipe.yaml").write_text(IMAGE_RECIPE)
    assert cli("train", tmp_path / "recipe.yaml", "-o", tmp_path / "run").exit_code == 0
    out = tmp_path / "p.csv"
    result = cli("predict", tmp_path / "run", tmp_path / "pics.csv", "-o", out)
    assert result.exit_code == 0, result.output
    listed = read_csv(out)
    assert [r["label"] in ("0", "1") for r in listed] == [True] * 8
    for i in range(4):  # an image folder (one sub-folder per class): the same files, the same numbers
        _png(tmp_path / "new" / ("dark" if i % 2 else "light") / f"i{i}.png", 30 if i % 2 else 220)
    result = cli("predict", tmp_path / "run", tmp_path / "new", "-o", out, "--keep", "image")
    assert result.exit_code == 0, result.output
    folder = {Path(r["image"]).name: float(r["label:p"]) for r in read_csv(out)}
    assert folder == {f"i{i}.png": pytest.approx(float(listed[i]["label:p"]), rel=1e-6) for i in range(4)}
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    (tmp_path / "new.csv").write_text("image\ni0.png\nmissing.png\nbroken.png\n")
    result = cli("predict", tmp_path / "run", tmp_path / "new.csv", "-o", out)
    assert result.exit_code == 2
    missing = tmp_path / "missing.png"
    assert f"{tmp_path / 'new.csv'}:3 column 'image': image file not found: {missing}" in result.output
    (tmp_path / "new.csv").write_text("image\ni0.png\nbroken.png\n")
    result = cli("predict", tmp_path / "run", tmp_path / "new.csv", "-o", out)
    assert result.exit_code == 2, result.output
    broken = tmp_path / "broken.png"
    assert f"{tmp_path / 'new.csv'}:3 column 'image': cannot decode the image {broken}" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_the_runs_csv_dialect_from_a_run_and_a_checkpoint(cli, tmp_path):
    """A run trained on ';'-separated cells with decimal commas reads new files the same way."""
    text = tmp_path
    rows = ["a;b;y"] + [f"{i / 10:.1f};{i % 3};{i % 2}".replace(".", ",") for i in range(40)]
    (text / "semi.csv").write_text("\n".join(rows) + "\n")
    (text / "recipe.yaml").write_text(
        "data: {train: semi.csv, csv: {sep: ';', decimal: ','}, inputs: {a: numeric, b: numeric}}\n"
        "model: {shared: [{dense: {units: 4}}], tasks: {y: {type: binary}}}\n"
        "train: {epochs: 1}\n"
    )
    assert cli("train", text / "recipe.yaml", "-o", text / "run").exit_code == 0
    for target in (text / "run", text / "run" / "checkpoints" / "last" / "model.keras"):
        result = cli("predict", target, text / "semi.csv", "-o", text / "p.csv", "--with-labels")
        assert result.exit_code == 0, result.output
        got = read_csv(text / "p.csv")
        assert len(got) == 40 and [r["y:true"] for r in got[:3]] == ["0", "1", "0"]


def test_parquet_and_glob_sources_give_the_csv_output(rich_run, tmp_path):
    import pandas as pd

    from mtlcli.run.predict import predict

    run, data = rich_run
    frame = pd.read_csv(data, keep_default_na=False, na_values=[""])
    frame.to_parquet(tmp_path / "rich.parquet")
    lines = data.read_text().splitlines()
    (tmp_path / "part-1.csv").write_text("\n".join(lines[:91]) + "\n")  # 90 rows: the same batches
    (tmp_path / "part-2.csv").write_text("\n".join([lines[0], *lines[91:]]) + "\n")
    outs, events = [], []
    for source in (data, tmp_path / "rich.parquet", tmp_path / "part-*.csv"):
        out = tmp_path / f"p{len(outs)}.csv"
        predict(run, source, output=out, keep=["id"], batch_size=10, chunk_rows=30, on_event=events.append)
        outs.append(out.read_text())
    assert outs[0] == outs[2]  # a glob of two parts: the rows of both, in order
    a, b = pd.read_csv(tmp_path / "p0.csv"), pd.read_csv(tmp_path / "p1.csv")
    pd.testing.assert_frame_equal(a, b)  # Parquet: the same predictions
    assert [e.total for e in events if type(e).__name__ == "PredictStarted"] == [None, 160, None]


def test_csv_quoting_and_the_pandas_writer_agree(rich_run, tmp_path, monkeypatch):
    """A kept value with a comma or a quote is quoted; without pyarrow pandas writes the same table."""
    import pandas as pd

    from mtlcli.run import writers
    from mtlcli.run.predict import predict

    run, data = rich_run
    lines = data.read_text().splitlines()
    lines[1] = lines[1].replace("r0,", '"r0, ""the first""",', 1)
    quoted = tmp_path / "q.csv"
    quoted.write_text("\n".join(lines) + "\n")
    fast, slow = tmp_path / "fast.csv", tmp_path / "slow.csv"
    predict(run, quoted, output=fast, keep=["id"], with_labels=True, chunk_rows=50)
    real = writers.CsvWriter.__init__

    def no_arrow(self, stream):
        real(self, stream)
        self.arrow = None

    monkeypatch.setattr(writers.CsvWriter, "__init__", no_arrow)
    predict(run, quoted, output=slow, keep=["id"], with_labels=True, chunk_rows=50)
    a, b = pd.read_csv(fast), pd.read_csv(slow)
    assert a["id"][0] == 'r0, "the first"' and list(a["id"][1:3]) == ["r1", "r2"]
    pd.testing.assert_frame_equal(a, b)


def _chunk():
    from mtlcli.run.writers import Flags, LabelSets

    return {
        "id": np.array(["a", None, 'q"x, y'], dtype=object),
        "n": np.array([7, None, 3], dtype=object),
        "f": np.array([0.1, np.nan, 1e-7], np.float32),
        "i": np.array([1, 2, 3]),
        "t:applies": Flags(np.array([True, False, True]), np.array([True, True, False])),
        "t": LabelSets(
            np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], bool),
            ["p", "q", "r"],
            np.array(["p|r", "", "q"], object),
        ),
    }


@pytest.mark.parametrize("arrow", [True, False])
def test_writers_by_hand(tmp_path, arrow):
    """Each format's cells for strings with quotes and commas, missing values, ints, float32, flags and
    label sets; with pyarrow (the fast paths) and without (pandas)."""
    import pandas as pd

    from mtlcli.run import writers

    for suffix in (".csv", ".jsonl"):
        path = tmp_path / f"x{suffix}"
        with writers.output(path) as w:
            if not arrow:
                w.arrow = None
            w.write(_chunk())
            w.write(_chunk())
        if suffix == ".csv":
            text = path.read_text().splitlines()
            assert text[0] == "id,n,f,i,t:applies,t"
            assert text[2] == ",,,2,false,"  # missing values are empty cells
            back = pd.read_csv(path, keep_default_na=False, na_values=[""])
            assert back["id"][0] == "a" and pd.isna(back["id"][1]) and back["id"][2] == 'q"x, y'
            assert back["n"].tolist()[:1] == [7] and back["t"].fillna("").tolist()[:3] == ["p|r", "", "q"]
            assert back["f"][0] == pytest.approx(0.1, rel=1e-7) and len(back) == 6
        else:
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            assert len(rows) == 6
            assert [r["id"] for r in rows[:3]] == ["a", None, 'q"x, y']
            assert [r["n"] for r in rows[:3]] == [7, None, 3]
            assert [r["t:applies"] for r in rows[:3]] == [True, False, None]
            assert [r["t"] for r in rows[:3]] == [["p", "r"], [], ["q"]]
            assert rows[0]["f"] == pytest.approx(0.1, rel=1e-7) and rows[1]["f"] is None
            assert rows[2]["f"] == pytest.approx(1e-7, rel=1e-7) and rows[2]["i"] == 3
    if arrow:
        path = tmp_path / "x.parquet"
        with writers.output(path) as w:
            w.write(_chunk())
        back = pd.read_parquet(path)
        assert back["t"].map(list).tolist() == [["p", "r"], [], ["q"]]
        assert back["t:applies"].tolist()[:2] == [True, False] and pd.isna(back["t:applies"][2])
        assert back["n"].tolist()[:1] == [7] and back["i"].dtype.kind == "i"
