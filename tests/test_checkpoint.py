"""Checkpoint files: atomic writes, crash leftovers, corruption, disk errors, recipe diffs, data order."""

from __future__ import annotations

import errno
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcli import data, fsio
from mtlcli import recipe as R
from mtlcli.data import pipeline
from mtlcli.errors import CheckpointError, RunError
from mtlcli.model.build import build_model
from mtlcli.run import checkpoint, resume

DROPOUT = "- dense: {units: 16, activation: relu}\n    - dropout: {rate: 0.3}"


@pytest.fixture
def trained(tiny_project):
    """A model built from the tiny recipe (with dropout) after one epoch of training."""
    tiny_project.write_text(
        tiny_project.read_text().replace("- dense: {units: 16, activation: relu}", DROPOUT)
    )
    loaded = R.load(tiny_project)
    prepared = data.prepare(loaded)
    keras.utils.set_random_seed(3)
    model = build_model(loaded, prepared, seed=3)
    model.optimizer.build(model.trainable_variables)
    stream = pipeline.train_stream(tf, prepared.splits["train"], 32, 3, 0, 0, 1)
    model.fit(stream, epochs=1, steps_per_epoch=3, verbose=0, shuffle=False)
    return loaded, prepared, model


def _fresh(loaded, prepared):
    keras.utils.set_random_seed(99)
    model = build_model(loaded, prepared, seed=3)
    model.optimizer.build(model.trainable_variables)
    return model


def test_round_trip_restores_weights_optimizer_and_dropout_rng(trained, tmp_path):
    loaded, prepared, model = trained
    where = checkpoint.save(model, tmp_path, "last", {"epoch": 1, "step_in_epoch": 0})
    assert where == tmp_path / "checkpoints" / "last"
    assert sorted(p.name for p in where.iterdir()) == ["arrays.npz", "model.keras", "state.json"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last"]  # no temporary leftovers
    state = checkpoint.read_state(checkpoint.find(tmp_path))
    assert state["epoch"] == 1 and state["format"] == checkpoint.FORMAT

    other = _fresh(loaded, prepared)
    rng = checkpoint.extra_variables(model)
    assert rng and all("seed_generator" in v.path for v in rng)  # the dropout layer's RNG state
    assert not np.array_equal(rng[0].numpy(), checkpoint.extra_variables(other)[0].numpy())
    checkpoint.restore(other, where, state)
    for a, b in zip(model.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(other.optimizer.iterations.numpy()) == 3
    for a, b in zip(model.optimizer.variables, other.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(rng[0].numpy(), checkpoint.extra_variables(other)[0].numpy())
    # The weighting strategy's parameters and state are model weights, so the checkpoint holds them.
    names = {v.path.rsplit("/", 1)[-1] for v in model.weights}
    assert {"epoch", "seen_epoch"} <= names


def test_a_crash_between_the_renames_leaves_the_old_copy_loadable(trained, tmp_path):
    _, _, model = trained
    checkpoint.save(model, tmp_path, "last", {"epoch": 1, "step_in_epoch": 0})
    root = tmp_path / "checkpoints"
    (root / "last").rename(root / ".last.old")  # the instant after "rename last -> .last.old"
    (root / ".last.new-99999999").mkdir()  # and a half-written new one
    (root / ".last.new-99999999" / "model.keras").write_bytes(b"PK\x03\x04 half")
    found = checkpoint.find(tmp_path)
    assert found == root / ".last.old"
    assert checkpoint.read_state(found)["epoch"] == 1
    # The next save replaces both leftovers and keeps exactly one valid copy.
    checkpoint.save(model, tmp_path, "last", {"epoch": 2, "step_in_epoch": 0})
    assert checkpoint.read_state(checkpoint.find(tmp_path))["epoch"] == 2
    assert sorted(p.name for p in root.iterdir()) == ["last"]  # the dead writer's leftover is gone too


def test_corrupted_truncated_and_foreign_checkpoints_are_refused(trained, tmp_path):
    _, _, model = trained
    where = checkpoint.save(model, tmp_path, "last", {"epoch": 1, "step_in_epoch": 0})
    raw = bytearray((where / "model.keras").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (where / "model.keras").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as exc:
        checkpoint.read_state(where)
    assert str(exc.value) == f"{where / 'model.keras'}: corrupted (sha256 differs from state.json)"

    (where / "state.json").write_text('{"epoch": 1, "fi')
    with pytest.raises(CheckpointError, match=r"state.json: not valid JSON"):
        checkpoint.read_state(where)
    (where / "state.json").write_text('{"hello": "world"}')
    with pytest.raises(CheckpointError) as exc:
        checkpoint.read_state(where)
    assert str(exc.value) == f"{where / 'state.json'}: not an mtl checkpoint (format 1 expected)"
    (where / "state.json").unlink()
    with pytest.raises(CheckpointError) as exc:
        checkpoint.read_state(where)
    assert str(exc.value) == f"{where}: not a checkpoint (no state.json)"


def test_disk_full_leaves_the_previous_checkpoint_and_no_half_written_one(trained, tmp_path, monkeypatch):
    _, _, model = trained
    checkpoint.save(model, tmp_path, "last", {"epoch": 1, "step_in_epoch": 0})
    real = fsio.write_synced

    def full(path, raw):
        if path.name == "state.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, raw)

    monkeypatch.setattr(fsio, "write_synced", full)
    with pytest.raises(RunError) as exc:
        checkpoint.save(model, tmp_path, "last", {"epoch": 2, "step_in_epoch": 0})
    root = tmp_path / "checkpoints"
    assert str(exc.value) == f"cannot write the last checkpoint in {root}: no space left on device"
    assert exc.value.exit_code == 1
    assert [p.name for p in root.iterdir()] == ["last"]
    assert checkpoint.read_state(root / "last")["epoch"] == 1


def test_unwritable_run_directory_is_a_clear_error(cli, tiny_project, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = cli("train", tiny_project, "--output", blocker / "run")
    assert result.exit_code == 2
    assert (
        result.output.strip() == f"error: cannot create the run directory {blocker / 'run'}: Not a directory"
    )
    assert "Traceback" not in result.output


def test_a_checkpoint_model_file_evaluates(cli, tiny_project, tmp_path):
    out = tmp_path / "run"
    assert cli("train", tiny_project, "--output", out, "--epochs", "2").exit_code == 0
    for name in ("last", "best"):
        state = json.loads((out / "checkpoints" / name / "state.json").read_text())
        assert state["epoch"] == 2 and state["step_in_epoch"] == 0
    result = cli("evaluate", out / "checkpoints" / "best" / "model.keras", "--data", tmp_path / "tiny.csv")
    assert result.exit_code == 0, result.output
    shutil.rmtree(out / "checkpoints" / "last")
    result = cli("train", "--resume", out)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: --resume {out}: this run directory has no checkpoint (checkpoints/last is missing)"
    )


def test_recipe_diff_classifies_safe_and_refused_changes():
    old = {
        "train": {"epochs": 4, "batch_size": 32, "early_stopping": {"patience": 3}},
        "model": {"shared": [1]},
    }
    new = {
        "train": {"epochs": 6, "batch_size": 64, "early_stopping": {"patience": 5}},
        "model": {"shared": [2]},
    }
    changes = resume.diff(old, new)
    assert [c.render() for c in changes] == [
        "train.epochs: 4 -> 6",
        "train.batch_size: 32 -> 64",
        "train.early_stopping.patience: 3 -> 5",
        "model.shared[0]: 1 -> 2",
    ]
    applied, refused = resume.split_changes(changes, fork=False)
    assert [c.key for c in applied] == ["train.epochs", "train.early_stopping.patience"]
    assert [c.key for c in refused] == ["train.batch_size", "model.shared[0]"]
    applied, refused = resume.split_changes(changes, fork=True)
    assert [c.key for c in refused] == ["model.shared[0]"]
    added = resume.diff({"train": {}}, {"train": {"on_nan": "skip_batch"}})
    # the empty mapping that became a parent is not a change of its own: only the new leaf is
    assert [c.render() for c in added] == ['train.on_nan: (absent) -> "skip_batch"']


def test_epoch_order_depends_only_on_seed_and_epoch():
    a = pipeline.epoch_order(100, 7, 3)
    assert sorted(a.tolist()) == list(range(100))
    np.testing.assert_array_equal(a, pipeline.epoch_order(100, 7, 3))
    assert not np.array_equal(a, pipeline.epoch_order(100, 7, 4))
    assert not np.array_equal(a, pipeline.epoch_order(100, 8, 3))


def test_stream_resumes_at_a_batch_and_never_mixes_epochs(tiny_project):
    prepared = data.prepare(R.load(tiny_project))
    arr = prepared.splits["train"]  # 90 rows: batches of 32, 32, 26
    full = [b[2]["kind"].numpy() for b in pipeline.train_stream(tf, arr, 32, 5, 0, 0, 3)]
    assert [len(b) for b in full] == [32, 32, 26] * 3
    part = [b[2]["kind"].numpy() for b in pipeline.train_stream(tf, arr, 32, 5, 1, 2, 3)]
    assert len(part) == 4
    for a, b in zip(full[5:], part, strict=True):
        np.testing.assert_array_equal(a, b)
    ids = [b[0]["a"].numpy() for b in pipeline.train_stream(tf, arr, 32, 5, 0, 0, 1)]
    np.testing.assert_array_equal(np.concatenate(ids)[:, 0], arr.x["a"][pipeline.epoch_order(90, 5, 0)][:, 0])


def test_atomic_writes_replace_with_the_umask_mode_or_leave_the_old_file(tmp_path):
    import os
    import stat

    target = tmp_path / "env.json"
    target.write_text("old")
    mask = os.umask(0o027)
    try:
        fsio.atomic_write(target, "new")
    finally:
        os.umask(mask)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # mkstemp alone would leave 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["env.json"]

    class FullDisk:
        def save(self, path):
            with open(path, "wb") as fh:
                fh.write(b"half a model")
            raise OSError(errno.ENOSPC, "No space left on device")

    model_file = tmp_path / "model.keras"
    model_file.write_bytes(b"the old model")
    with pytest.raises(OSError):
        fsio.save_model_atomic(FullDisk(), model_file)
    assert model_file.read_bytes() == b"the old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env.json", "model.keras"]
    assert (
        str(fsio.disk_error(OSError(errno.ENOSPC, "x"), "the run"))
        == "cannot write the run: no space left on device"
    )
    assert fsio.sha256(model_file) == data.sources.file_digest(model_file)
