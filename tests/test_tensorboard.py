"""TensorBoard event files in tb/train and tb/validation: the history.csv values, read back with
tf.compat.v1.train.summary_iterator; off with train.tensorboard: false; a resume appends, a fork
writes its own; the tag names by hand."""

from __future__ import annotations

import csv
import os
import signal

import pytest

from mtlcli import events
from mtlcli import recipe as R
from mtlcli.run import runner
from mtlcli.run.signals import Interrupted
from mtlcli.run.tensorboard import split_row, tag_table

TASKS = ("kind", "flag", "value")  # the tiny recipe's tasks: classification, binary, regression


def _history(run) -> list[dict[str, str]]:
    with open(run / "history.csv") as fh:
        return list(csv.DictReader(fh))


def _events(directory):
    """Every event file of ``directory`` (sorted) as a list of {step: {tag: value}}; checks that each
    value carries the scalars plugin's metadata."""
    import tensorflow as tf

    files = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        steps: dict[int, dict[str, float]] = {}
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars", value.tag
                assert event.step not in steps or value.tag not in steps[event.step]  # once per epoch
                steps.setdefault(event.step, {})[value.tag] = float(tf.make_ndarray(value.tensor))
        files.append(steps)
    return files


def _merged(directory) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for steps in _events(directory):
        for step, values in steps.items():
            assert step not in out, f"epoch {step} written twice in {directory}"
            out[step] = values
    return out


def _assert_equals_history(run, *, lr: float | None = 0.001, lr_from: int = 1) -> None:
    """Every tag of every epoch equals its history.csv column (float32 and %.6g tolerance)."""
    train, val = _merged(run / "tb" / "train"), _merged(run / "tb" / "validation")
    rows = _history(run)
    assert sorted(train) == sorted(val) == [int(r["epoch"]) for r in rows]
    for row in rows:
        epoch = int(row["epoch"])
        for key, text in row.items():
            if key == "epoch" or text == "":
                continue
            split, name = (val, key[4:]) if key.startswith("val_") else (train, key)
            tag = tag_table(
                list(TASKS), {"kind": ["accuracy"], "flag": ["accuracy", "auc"], "value": ["mae"]}
            )[name]
            if split is val and tag.startswith("weight/"):
                assert tag not in val[epoch]
                continue
            assert split[epoch][tag] == pytest.approx(float(text), rel=1e-5, abs=1e-7), (epoch, key)
        if lr is not None and epoch >= lr_from:
            assert train[epoch]["learning_rate"] == pytest.approx(lr, rel=1e-6)


def test_the_tag_names_by_hand():
    table = tag_table(["a", "a_b"], {"a": ["accuracy"], "a_b": ["mae", "r2"]})
    row = {
        "epoch": 4,
        "loss": 1.5,
        "objective": 2.0,
        "a_loss": 0.5,
        "a_b_loss": 1.0,
        "a_accuracy": 0.75,
        "a_b_mae": 3.0,
        "a_b_r2": 0.25,
        "a_weight": 0.4,
        "a_b_weight": 0.6,
        "cos_a_a_b": -0.125,
        "skipped_batches": 2,
        "val_loss": 1.25,
        "val_a_b_loss": 1.5,
        "val_a_weight": 0.5,
    }
    assert split_row(row, table) == {
        "train": {
            "loss": 1.5,
            "objective": 2.0,
            "loss/a": 0.5,
            "loss/a_b": 1.0,
            "accuracy/a": 0.75,
            "mae/a_b": 3.0,
            "r2/a_b": 0.25,
            "weight/a": 0.4,
            "weight/a_b": 0.6,
            "cosine/a/a_b": -0.125,
            "skipped_batches": 2.0,
        },
        "validation": {"loss": 1.25, "loss/a_b": 1.5},  # no validation weights: the static ones
    }


def test_a_pcgrad_run_writes_the_history_values_with_cosines(tiny_project, tmp_path):
    tiny_project.write_text(
        tiny_project.read_text()
        .replace("weighting: static", "weighting: pcgrad")
        .replace("epochs: 3", "epochs: 2")
    )
    run = runner.train(R.load(tiny_project), output=tmp_path / "run").run_dir
    assert sorted(p.name for p in (run / "tb").iterdir()) == ["train", "validation"]
    assert [len(list((run / "tb" / s).iterdir())) for s in ("train", "validation")] == [1, 1]
    train = _merged(run / "tb" / "train")
    assert set(train[2]) == {
        "loss",
        "objective",
        "learning_rate",
        *(f"{kind}/{t}" for kind in ("loss", "weight") for t in TASKS),
        "accuracy/kind",
        "accuracy/flag",
        "auc/flag",
        "mae/value",
        "cosine/kind/flag",
        "cosine/kind/value",
        "cosine/flag/value",
    }
    assert set(_merged(run / "tb" / "validation")[2]) == {
        "loss",
        *(f"loss/{t}" for t in TASKS),
        "accuracy/kind",
        "accuracy/flag",
        "auc/flag",
        "mae/value",
    }
    _assert_equals_history(run)


@pytest.mark.slow
def test_off_then_turned_on_by_a_resume_fills_in_the_earlier_epochs(tiny_project, tmp_path):
    off = tiny_project.read_text().replace("weighting: static", "weighting: static\n  tensorboard: false")
    tiny_project.write_text(off)
    run = runner.train(R.load(tiny_project), output=tmp_path / "run", epochs=1).run_dir
    assert not (run / "tb").exists()
    assert "tensorboard: false" in (run / "resolved.yaml").read_text()
    tiny_project.write_text(off.replace("tensorboard: false", "tensorboard: true"))
    seen = []
    runner.train(R.load(tiny_project), resume=run, epochs=2, on_event=seen.append)
    resumed = [e for e in seen if isinstance(e, events.Resumed)]
    assert [e.applied for e in resumed] == [["train.epochs: 1 -> 2", "train.tensorboard: false -> true"]]
    assert [len(f) for f in _events(run / "tb" / "train")] == [2]  # epoch 1 from history.csv, then 2
    _assert_equals_history(run, lr_from=2)  # the learning rate is not in history.csv


@pytest.mark.slow
def test_an_interrupted_run_resumes_appending_and_a_fork_writes_its_own(tiny_project, tmp_path):
    def interrupt(event):
        if isinstance(event, events.BatchEnd) and (event.epoch, event.step) == (2, 1):
            os.kill(os.getpid(), signal.SIGINT)

    cut = tmp_path / "cut"
    with pytest.raises(Interrupted):
        runner.train(R.load(tiny_project), output=cut, on_event=interrupt)
    assert [sorted(f) for f in _events(cut / "tb" / "train")] == [[1]]  # closed: readable to the end
    runner.train(None, resume=cut)
    assert [sorted(f) for f in _events(cut / "tb" / "train")] == [[1], [2, 3]]
    assert [sorted(f) for f in _events(cut / "tb" / "validation")] == [[1], [2, 3]]
    _assert_equals_history(cut)

    fork = tmp_path / "fork"
    runner.train(None, resume=cut, fork=fork, epochs=4)
    assert [sorted(f) for f in _events(fork / "tb" / "train")] == [[1, 2, 3, 4]]
    _assert_equals_history(fork, lr_from=4)
    assert [sorted(f) for f in _events(cut / "tb" / "train")] == [[1], [2, 3]]  # the source is untouched


def test_epochs_after_the_resumed_checkpoint_are_dropped_from_the_event_files(tmp_path):
    """A run killed between time-budgeted checkpoints has events for epochs it trains again after
    resuming: those are dropped first, so every epoch is written once, with the resumed values."""
    import types

    import tensorflow as tf

    from mtlcli.run.tensorboard import Board

    model = types.SimpleNamespace(task_names=["kind"], spec={"tasks": {"kind": {"metrics": ["accuracy"]}}})
    rows = [{"epoch": e, "loss": 1.0 / e, "kind_accuracy": 0.1 * e, "val_loss": 2.0 / e} for e in (1, 2, 3)]
    first = Board(tf, tmp_path, model, [])
    for row in rows:
        first.epoch_end(row)
    first.close()
    # the checkpoint was at epoch 1: epochs 2 and 3 are trained again, with other values
    second = Board(tf, tmp_path, model, rows[:1])
    for row in rows[1:]:
        second.epoch_end({**row, "loss": 5.0})
    second.close()
    assert [sorted(f) for f in _events(tmp_path / "tb" / "train")] == [[1], [2, 3]]
    assert [sorted(f) for f in _events(tmp_path / "tb" / "validation")] == [[1], [2, 3]]
    train = _merged(tmp_path / "tb" / "train")
    assert [train[e]["loss"] for e in (1, 2, 3)] == [1.0, 5.0, 5.0]
    assert train[3]["accuracy/kind"] == pytest.approx(0.3)
