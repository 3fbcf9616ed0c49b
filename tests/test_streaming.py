"""Larger-than-memory data (mtlcli.data.stream): the chunked statistics pass, hashed splits, the streamed
epoch order, errors with the right line across chunk boundaries, and training / evaluating streamed runs
against the in-memory path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.data import sources
from mtlcli.data import stream as streaming
from mtlcli.data.split import uniform
from mtlcli.errors import DataError

from .conftest import REPO, write_tiny_csv

RECIPE = """\
seed: 3
data:
  train: f.csv
  SPLIT
  inputs: {a: numeric, b: {kind: numeric, flag: true}, color: categorical}
  STREAM
model:
  shared: [{dense: {units: 8, activation: relu}}]
  tasks:
    kind: {type: classification}
    flag: {type: binary, class_weight: balanced}
    value: {type: regression}
train: {epochs: 2, batch_size: 16}
"""
COLUMN_SPLIT = "split: {column: fold, train: [0, 1, 2], validation: [3], test: [4]}"
SMALL = "stream: {chunk_rows: 7, shuffle_buffer: 1000}"


def project(tmp_path: Path, split: str = COLUMN_SPLIT, stream: str = SMALL, n: int = 120) -> Path:
    write_tiny_csv(tmp_path / "tiny.csv", n=n)
    rows = (tmp_path / "tiny.csv").read_text().splitlines()
    out = [rows[0] + ",fold"] + [r + f",{i % 5}" for i, r in enumerate(rows[1:])]
    (tmp_path / "f.csv").write_text("\n".join(out) + "\n")
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.replace("SPLIT", split).replace("STREAM", stream))
    return path


def both(tmp_path: Path, split: str = COLUMN_SPLIT, stream: str = SMALL):
    path = project(tmp_path, split, stream)
    mem = tmp_path / "mem.yaml"
    mem.write_text(path.read_text().replace(stream, "stream: false"))
    return R.load(mem), R.load(path)


def close(a, b) -> bool:
    if isinstance(a, dict):
        return set(a) == set(b) and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a))
    return a == b


def test_statistics_splits_and_coverage_equal_the_in_memory_pass(tmp_path):
    mem, streamed = both(tmp_path)
    a, b = data.prepare(mem), data.prepare(streamed)
    assert isinstance(b.splits["train"], streaming.StreamSplit)
    assert close(a.prep.to_dict(), b.prep.to_dict())
    assert a.info["split_rows"] == b.info["split_rows"] and a.info["coverage"] == b.info["coverage"]
    assert b.info["stream"] == {"chunk_rows": 7, "shuffle_buffer": 1000, "fractions": {}, "split": "column"}
    assert b.info["files"]["train"]["sha256"] == a.info["files"]["train"]["sha256"]
    # the streamed training rows, transformed chunk by chunk, are the in-memory rows
    parts = list(b.splits["train"].parts())
    x = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    for k, v in a.splits["train"].x.items():
        np.testing.assert_allclose(x[k], v, rtol=1e-6)


def test_hashed_fractions_are_seeded_and_independent_of_the_chunk_size(tmp_path):
    path = project(tmp_path, split="validation: 0.25\n  test: 0.25", n=400)
    sizes = []
    for chunk in (7, 1000):
        path.write_text(path.read_text().replace(SMALL, f"stream: {{chunk_rows: {chunk}}}"))
        loaded = R.load(path)
        prepared = data.prepare(loaded)
        rows = {k: [] for k in prepared.splits}
        for c in sources.iter_chunks(
            prepared.splits["train"].files, ["a"], chunk
        ):  # the assignment, row by row
            for k, idx in prepared.splits["train"].plan.assign(c).items():
                rows[k].extend((c.start + idx).tolist())
        sizes.append(({k: len(v) for k, v in rows.items()}, rows))
        path.write_text(path.read_text().replace(f"stream: {{chunk_rows: {chunk}}}", SMALL))
    assert sizes[0] == sizes[1]
    counts = sizes[0][0]
    assert sum(counts.values()) == 400 and all(60 <= counts[k] <= 140 for k in ("validation", "test"))
    other = uniform(4, np.arange(400))
    assert not np.array_equal(other, uniform(3, np.arange(400)))  # another seed, other rows


def test_epoch_order_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch(tmp_path):
    path = project(tmp_path, split="validation: null", stream="stream: {chunk_rows: 7, shuffle_buffer: 20}")
    split = data.prepare(R.load(path)).splits["train"]

    def rows(first_epoch, first_step, end):
        return [b[0]["a"][:, 0].tolist() for b in split.epoch_batches(16, 3, first_epoch, first_step, end)]

    full = rows(0, 0, 2)
    assert full == rows(0, 0, 2)  # deterministic
    assert rows(1, 3, 2) == full[8 + 3 :]  # 120 rows -> 8 batches an epoch; resume at epoch 1, step 3
    epoch0 = sorted(v for b in full[:8] for v in b)
    assert epoch0 == sorted(v for b in full[8:] for v in b) and len(epoch0) == 120  # every row once
    assert full[:8] != full[8:]  # another order each epoch
    # a buffer as large as the split gives exactly the in-memory order (pipeline.epoch_order)
    from mtlcli.data import pipeline

    split.shuffle_buffer = 1000
    first = [v for b in rows(0, 0, 1) for v in b]
    in_order = [v for p in split.parts() for v in p[0]["a"][:, 0].tolist()]
    assert first == [in_order[i] for i in pipeline.epoch_order(120, 3, 0)]


def test_a_bad_value_after_a_chunk_boundary_names_its_line(tmp_path):
    path = project(tmp_path)
    lines = (tmp_path / "f.csv").read_text().splitlines()
    cells = lines[20].split(",")  # data row 19, line 21 of the file: the third chunk of 7 rows
    cells[0] = "oops"
    lines[20] = ",".join(cells)
    cells = lines[30].split(",")
    cells[5] = "inf"  # the regression target
    lines[30] = ",".join(cells)
    (tmp_path / "f.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as streamed:
        data.prepare(R.load(path))
    f = str(tmp_path / "f.csv")
    assert [p.render() for p in streamed.value.problems] == [
        f"{f}:21 column 'a': expected a number, received 'oops'",
        f"{f}:31 column 'value': infinite value in a regression target",
    ]
    mem = tmp_path / "mem.yaml"
    mem.write_text(path.read_text().replace(SMALL, "stream: false"))
    with pytest.raises(DataError) as in_memory:
        data.prepare(R.load(mem))
    assert {p.render() for p in in_memory.value.problems} == {p.render() for p in streamed.value.problems}


def test_missing_column_unseen_label_and_missing_error_match_the_in_memory_text(tmp_path):
    path = project(tmp_path, split="validation: v.csv")
    rows = (tmp_path / "f.csv").read_text().splitlines()
    bad = rows[9].split(",")
    bad[3] = "w"  # a class the training data never has
    (tmp_path / "v.csv").write_text("\n".join([rows[0], *rows[1:9], ",".join(bad)]) + "\n")
    text = path.read_text()

    def problems(recipe_text: str) -> list[list[str]]:
        out = []
        for stream in (SMALL, "stream: false"):
            path.write_text(recipe_text.replace(SMALL, stream))
            with pytest.raises(DataError) as exc:
                data.prepare(R.load(path))
            out.append([p.render() for p in exc.value.problems])
        return out

    streamed, in_memory = problems(text)
    assert (
        streamed
        == in_memory
        == [
            f"{tmp_path / 'v.csv'}:10 column 'kind': label 'w' is not one of the task's classes ('x', 'y', 'z')"
        ]
    )
    streamed, in_memory = problems(text.replace("a: numeric,", "a: numeric, typo: numeric,"))
    assert streamed == in_memory and len(streamed) == 2  # in f.csv and in v.csv
    assert "column 'typo' not found in " in streamed[0]

    (tmp_path / "v.csv").write_text("\n".join(rows[:10]) + "\n")
    lines = (tmp_path / "f.csv").read_text().splitlines()
    for i in (12, 40):  # two missing values, in the second and the sixth chunk
        cells = lines[i].split(",")
        cells[0] = ""
        lines[i] = ",".join(cells)
    (tmp_path / "f.csv").write_text("\n".join(lines) + "\n")
    streamed, in_memory = problems(text.replace("a: numeric,", "a: {kind: numeric, missing: error},"))
    assert (
        streamed
        == in_memory
        == [
            f"{tmp_path / 'f.csv'}:13 column 'a': missing value (2 in all); the input has missing: error "
            f"(use missing: mean or zero to impute)"
        ]
    )


def test_group_by_and_array_inputs_are_recipe_errors_when_streaming(cli, tmp_path):
    path = project(tmp_path, split="validation: 0.2\n  group_by: color")
    result = cli("validate", str(path))
    assert result.exit_code == 2
    assert (
        "data.group_by: group_by is not supported when streaming (data.stream): grouping needs every key in "
        "memory; split by a column (data.split) or set stream: false" in " ".join(result.output.split())
    )
    path.write_text(path.read_text().replace("group_by: color", "").replace(SMALL, "stream: {chunk: 5}"))
    result = cli("validate", str(path))
    assert result.exit_code == 2
    assert (
        "data.stream.chunk: unknown key 'chunk'; expected chunk_rows, shuffle_buffer; did you mean 'chunk_rows'?"
        in " ".join(result.output.split())
    )


def test_auto_streams_above_the_size_threshold(tmp_path, monkeypatch):
    path = project(tmp_path, stream="")
    loaded = R.load(path)
    assert streaming.settings(loaded) is None
    monkeypatch.setattr(streaming, "AUTO_BYTES", 100)
    assert streaming.settings(loaded) == {"chunk_rows": 65536, "shuffle_buffer": 100000}


def test_validate_streams_without_tensorflow(tmp_path):
    path = project(tmp_path)
    code = (
        "import sys; from mtlcli import data; from mtlcli import recipe as recipe; p = data.prepare(recipe.load(sys.argv[1])); "
        "assert 'tensorflow' not in sys.modules; print(p.info['split_rows'])"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'train': 72, 'test': 24, 'validation': 24}"


@pytest.mark.slow
def test_a_streamed_run_equals_the_in_memory_run_and_evaluates(tmp_path):
    from mtlcli.run import evaluate as run_eval
    from mtlcli.run import runner

    mem, streamed = both(tmp_path)
    a = runner.train(mem, output=tmp_path / "ra")
    b = runner.train(streamed, output=tmp_path / "rb")
    assert len(a.history) == len(b.history) == 2
    for ra, rb in zip(a.history, b.history, strict=True):
        for k, v in ra.items():
            assert rb[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    for split in ("validation", "test"):
        sa, sb = a.results["splits"][split], b.results["splits"][split]
        assert sa["n"] == sb["n"] and sb["loss"] == pytest.approx(sa["loss"], rel=1e-4)
        for t, row in sa["tasks"].items():
            for k, v in row.items():
                assert sb["tasks"][t][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (split, t, k)
    assert json.loads((tmp_path / "rb" / "data.json").read_text())["stream"]["split"] == "column"
    ev = run_eval.evaluate(tmp_path / "rb")
    assert ev.source == "test"
    assert ev.results["loss"] == pytest.approx(b.results["splits"]["test"]["loss"], rel=1e-5)
    assert {t: r["n"] for t, r in ev.results["tasks"].items()} == {"kind": 24, "flag": 23, "value": 24}


@pytest.mark.slow
def test_a_streamed_run_interrupted_mid_epoch_resumes_to_the_same_weights(tmp_path):
    """Chunks of 7 rows through a shuffle pool smaller than the split; SIGINT at epoch 2, step 3."""
    import os
    import signal

    import keras

    from mtlcli import events
    from mtlcli.run import runner
    from mtlcli.run.signals import Interrupted

    path = project(tmp_path, stream="stream: {chunk_rows: 7, shuffle_buffer: 20}")
    path.write_text(path.read_text().replace("epochs: 2", "epochs: 3, weighting: uncertainty"))

    def interrupt(event):
        if isinstance(event, events.BatchEnd) and (event.epoch, event.step) == (2, 3):
            os.kill(os.getpid(), signal.SIGINT)

    runner.train(R.load(path), output=tmp_path / "full")
    with pytest.raises(Interrupted) as exc:
        runner.train(R.load(path), output=tmp_path / "cut", on_event=interrupt)
    assert exc.value.exit_code == 130
    runner.train(None, resume=tmp_path / "cut")
    a, b = (
        keras.saving.load_model(tmp_path / run / "model.keras", safe_mode=True, compile=False)
        for run in ("full", "cut")
    )
    assert (
        max(float(np.max(np.abs(x - y))) for x, y in zip(a.get_weights(), b.get_weights(), strict=True)) == 0
    )
