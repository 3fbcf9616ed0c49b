"""Checkpoints on a time budget (mtlcli.run.callbacks.CHECKPOINT_SECONDS): ``last`` after the session's
first epoch, at the end and when due; a ``best`` epoch waits in memory until the next ``last``; a run
stopped between checkpoints resumes exactly (the epochs after ``last`` are replayed and their
history.csv rows dropped); history.csv is appended, and equals a full rewrite."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest

from mtlcli.errors import RunError
from mtlcli.run import callbacks, checkpoint

DROPOUT = "- dense: {units: 16, activation: relu}\n    - dropout: {rate: 0.3}"
# val_kind_accuracy of this recipe (seed 3), epochs 1-5: 0.133, 0.133, 0.2, 0.2, 0.2: the best epoch
# is 3, neither the first epoch (always checkpointed) nor the last
SELECTION = "early_stopping: {monitor: val_kind_accuracy, patience: 10}"


@pytest.fixture
def project(tiny_project):
    text = tiny_project.read_text().replace("- dense: {units: 16, activation: relu}", DROPOUT)
    text = text.replace("weighting: static", f"weighting: uncertainty\n  {SELECTION}")
    tiny_project.write_text(text.replace("epochs: 3", "epochs: 5"))
    return tiny_project


@pytest.fixture
def writes(monkeypatch):
    """Every checkpoint written: (name, epoch of its state, how: save or link)."""
    out = []
    save, link = checkpoint.save, checkpoint.link

    def spy_save(model, run_dir, name, state, **kw):
        out.append((name, state["epoch"], "save"))
        return save(model, run_dir, name, state, **kw)

    def spy_link(run_dir, source, name):
        out.append(
            (name, json.loads((run_dir / "checkpoints" / source / "state.json").read_text())["epoch"], "link")
        )
        return link(run_dir, source, name)

    monkeypatch.setattr(checkpoint, "save", spy_save)
    monkeypatch.setattr(checkpoint, "link", spy_link)
    return out


def _weights(path):
    import mtlcli.model.train_step  # noqa: F401 - registers the custom objects

    return keras.saving.load_model(path, compile=False).get_weights()


def _same_checkpoint(a, b):
    for x, y in zip(_weights(a / "model.keras"), _weights(b / "model.keras"), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    with np.load(a / "arrays.npz") as x, np.load(b / "arrays.npz") as y:
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    sa, sb = checkpoint.read_state(a), checkpoint.read_state(b)
    for key in ("epoch", "step_in_epoch", "global_step", "selection", "name"):
        assert sa[key] == sb[key], key
    assert [r["epoch"] for r in sa["history"]] == [r["epoch"] for r in sb["history"]]


def _rows(run):
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_last_at_the_first_and_final_epochs_best_written_before_the_next_last(cli, project, tmp_path, writes):
    run = tmp_path / "run"
    assert cli("train", project, "-o", run).exit_code == 0
    # epoch 1: best and last, one model write; epoch 3 (best) waits; epoch 5: best 3, then last
    assert writes == [("best", 1, "save"), ("last", 1, "link"), ("best", 3, "save"), ("last", 5, "save")]
    last = checkpoint.read_state(run / "checkpoints" / "last")
    assert last["selection"]["best_epoch"] == 3
    assert checkpoint.read_state(run / "checkpoints" / "best")["name"] == "best"
    # appended row by row, history.csv is what one write of the whole history gives
    text = (run / "history.csv").read_text()
    callbacks.write_history(tmp_path, last["history"])
    assert text == (tmp_path / "history.csv").read_text()
    assert [r["epoch"] for r in _rows(run)] == ["1", "2", "3", "4", "5"]

    # the best epoch's checkpoint, written two epochs later from memory, is the one written at once
    every = tmp_path / "every"
    writes.clear()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(callbacks, "CHECKPOINT_SECONDS", 0.0)
        assert cli("train", project, "-o", every).exit_code == 0
    assert [(n, e) for n, e, _ in writes if n == "last"] == [("last", e) for e in range(1, 6)]
    _same_checkpoint(run / "checkpoints" / "best", every / "checkpoints" / "best")
    _same_checkpoint(run / "checkpoints" / "last", every / "checkpoints" / "last")
    assert (run / "history.csv").read_text() == (every / "history.csv").read_text()


@pytest.mark.slow
def test_a_run_stopped_between_checkpoints_resumes_exactly(cli, project, tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli("train", project, "-o", one).exit_code == 0
    original = callbacks.RunCallback.on_train_batch_end

    def crash(self, batch, logs=None):  # as if killed in epoch 4: nothing written after epoch 1
        original(self, batch, logs)
        if self.run.at == (4, 1):
            raise RunError("killed")

    with monkeypatch.context() as m:
        m.setattr(callbacks.RunCallback, "on_train_batch_end", crash)
        assert cli("train", project, "-o", two).exit_code == 1
    state = checkpoint.read_state(two / "checkpoints" / "last")
    assert (state["epoch"], state["selection"]["best_epoch"]) == (1, 1)
    assert checkpoint.read_state(two / "checkpoints" / "best")["epoch"] == 1  # epoch 3's best never written
    assert [r["epoch"] for r in _rows(two)] == ["1", "2", "3"]  # rows the checkpoint does not have

    result = cli("train", "--resume", two)
    assert result.exit_code == 0, result.output
    assert _rows(two) == _rows(one)  # epochs 2 and 3 replayed, not repeated
    for name in ("best", "last"):
        _same_checkpoint(one / "checkpoints" / name, two / "checkpoints" / name)
    for x, y in zip(_weights(one / "model.keras"), _weights(two / "model.keras"), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


def test_link_makes_a_checkpoint_of_the_same_files(tmp_path):
    src = tmp_path / "checkpoints" / "best"
    src.mkdir(parents=True)
    (src / "model.keras").write_bytes(b"weights")
    (src / "arrays.npz").write_bytes(b"arrays")
    files = {f: checkpoint.fsio.sha256(src / f) for f in ("model.keras", "arrays.npz")}
    state = {"epoch": 2, "format": checkpoint.FORMAT, "name": "best", "files": files}
    (src / "state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoints" / "last").mkdir()  # an older last: replaced
    (tmp_path / "checkpoints" / "last" / "state.json").write_text("{}")
    where = checkpoint.link(tmp_path, "best", "last")
    assert where == tmp_path / "checkpoints" / "last"
    got = checkpoint.read_state(where)  # complete, sha256 as recorded
    assert (got["name"], got["epoch"]) == ("last", 2)
    assert checkpoint.read_state(src)["name"] == "best"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best", "last"]
