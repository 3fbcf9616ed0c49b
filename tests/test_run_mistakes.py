"""Run-time mistakes from issue #12: a failed start leaves nothing that blocks a re-run, out of memory
is one line (exit 1), and early stopping says what it did and which epoch's weights the results are."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import tensorflow as tf
from rich.console import Console

from mtlcli import events
from mtlcli.errors import RecipeError, RunError
from mtlcli.run import callbacks, checkpoint, runner
from mtlcli.views import TrainView


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory)."""
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))
    }


def _fail_in_fit(monkeypatch, exc: BaseException) -> None:
    """Make the first training step fail (after the run directory was made, before any checkpoint)."""

    def fail(*_args, **_kwargs):
        raise exc

    monkeypatch.setattr(runner, "_fit_epochs", fail)


def _fail_at(monkeypatch, epoch: int, step: int, exc: BaseException) -> None:
    """Raise ``exc`` from inside ``model.fit`` once step ``step`` of ``epoch`` (1-based) is done."""
    original = callbacks.RunCallback.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        original(self, batch, logs)
        if self.run.at == (epoch, step):
            raise exc

    monkeypatch.setattr(callbacks.RunCallback, "on_train_batch_end", on_train_batch_end)


# ------------------------------------------------------------------------------------------------
# A failed start


def test_a_build_failure_creates_no_directory_and_the_rerun_works(cli, tiny_project, tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RecipeError("model.shared[0]: a layer TensorFlow refuses")

    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(runner, "build", broken)
        failed = cli("train", tiny_project, "--epochs", "1", "-o", out)
    assert failed.exit_code == 2
    assert failed.output.strip() == "error: model.shared[0]: a layer TensorFlow refuses"
    assert not out.exists()
    again = cli("train", tiny_project, "--epochs", "1", "-o", out)
    assert again.exit_code == 0, again.output
    assert (out / "model.keras").is_file()


def test_a_failure_before_the_first_checkpoint_removes_the_run_directory(
    cli, tiny_project, tmp_path, monkeypatch
):
    out = tmp_path / "deep" / "er" / "out"
    with monkeypatch.context() as m:
        _fail_in_fit(m, RunError("training failed at once"))
        failed = cli("train", tiny_project, "--epochs", "1", "-o", out)
    assert failed.exit_code == 1
    assert failed.output.strip().splitlines()[-1] == "error: training failed at once"
    assert "Traceback" not in failed.output
    assert not (tmp_path / "deep").exists()  # the parents it made go too
    again = cli("train", tiny_project, "--epochs", "1", "-o", out)
    assert again.exit_code == 0, again.output


def test_a_failed_start_in_runs_leaves_no_numbered_directory(cli, tiny_project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("train", tiny_project, "--epochs", "1").exit_code == 0
    with monkeypatch.context() as m:
        _fail_in_fit(m, RunError("boom"))
        assert cli("train", tiny_project, "--epochs", "1").exit_code == 1
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == ["1"]
    with monkeypatch.context() as m:
        _fail_in_fit(m, RunError("boom"))
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        monkeypatch.chdir(fresh)
        assert cli("train", tiny_project, "--epochs", "1").exit_code == 1
    assert list(fresh.iterdir()) == []  # runs/ and runs/tiny/ were made by the failed start


def test_force_on_an_existing_directory_leaves_it_as_it_was(cli, tiny_project, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert cli("train", tiny_project, "--epochs", "1", "-o", out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    before = _tree(out)
    with monkeypatch.context() as m:
        _fail_in_fit(m, RunError("boom"))
        assert cli("train", tiny_project, "--epochs", "2", "-o", out, "--force").exit_code == 1
    assert _tree(out) == before
    # an empty directory the user made stays, empty
    empty = tmp_path / "empty"
    empty.mkdir()
    with monkeypatch.context() as m:
        _fail_in_fit(m, RunError("boom"))
        assert cli("train", tiny_project, "--epochs", "1", "-o", empty).exit_code == 1
    assert empty.is_dir() and list(empty.iterdir()) == []
    # and a --force run that succeeds replaces the earlier run's files, keeping the user's
    assert cli("train", tiny_project, "--epochs", "2", "-o", out, "--force").exit_code == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert checkpoint.read_state(out / "checkpoints" / "last")["epoch"] == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".mtl-replaced")]


def test_a_failed_resume_leaves_the_run_as_it_was_and_resumable(cli, tiny_project, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert cli("train", tiny_project, "--epochs", "1", "-o", run).exit_code == 0
    (run / "model.keras").unlink()  # as if the run had stopped before its end
    before = _tree(run)
    with monkeypatch.context() as m:
        _fail_in_fit(m, RunError("boom"))
        assert cli("train", "--resume", run, "--epochs", "2").exit_code == 1
    assert _tree(run) == before  # env.json has no entry for the failed session, resolved.yaml is as it was
    done = cli("train", "--resume", run, "--epochs", "2")
    assert done.exit_code == 0, done.output
    assert len(json.loads((run / "env.json").read_text())["resumes"]) == 1


def test_a_failure_after_a_checkpoint_keeps_a_resumable_run(cli, tiny_project, tmp_path, monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _fail_at(m, 2, 1, RunError("boom in epoch 2"))
        assert cli("train", tiny_project, "--epochs", "3", "-o", run).exit_code == 1
    assert checkpoint.read_state(run / "checkpoints" / "last")["epoch"] == 1
    done = cli("train", "--resume", run)
    assert done.exit_code == 0, done.output
    assert json.loads((run / "env.json").read_text())["epochs_run"] == 3


# ------------------------------------------------------------------------------------------------
# Out of memory


def _real_oom(*_args, **_kwargs):
    """TensorFlow's own out-of-memory error: 40 TB asked of the CPU allocator, refused at once."""
    tf.zeros([10**7, 10**6])


OOM_LINE = "OOM when allocating tensor with shape[10000000,1000000] and type float"


def test_out_of_memory_while_building_is_one_line(cli, tiny_project, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "build", _real_oom)
    result = cli("train", tiny_project, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: out of memory while building the model: {OOM_LINE}; the model's weights do not fit: "
        "use fewer units (or filters) in the model's layers"
    )
    assert not (tmp_path / "out").exists()
    with pytest.raises(RunError) as info:  # --debug: the traceback, with TensorFlow's error as its cause
        cli("--debug", "train", tiny_project, "-o", tmp_path / "out")
    assert isinstance(info.value.__cause__, tf.errors.ResourceExhaustedError)


def test_out_of_memory_in_the_first_step_says_where_and_keeps_nothing(
    cli, tiny_project, tmp_path, monkeypatch
):
    monkeypatch.setattr(callbacks.RunCallback, "on_train_batch_end", _raise_memory_error)
    result = cli("train", tiny_project, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: out of memory while training epoch 1, step 1/3: Unable to allocate 29.8 GiB for an array "
        "with shape (1000000000, 8) and data type float32; try a smaller train.batch_size (now 32) or "
        "fewer units (or filters) in the model's layers; no checkpoint had been written yet"
    )
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def _raise_memory_error(self, batch, logs=None):
    raise MemoryError(
        "Unable to allocate 29.8 GiB for an array with shape (1000000000, 8) and data type float32"
    )


def test_out_of_memory_after_a_checkpoint_names_it_and_the_run_resumes(
    cli, tiny_project, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        original = callbacks.RunCallback.on_train_batch_end

        def on_train_batch_end(self, batch, logs=None):
            original(self, batch, logs)
            if self.run.at == (2, 1):
                _real_oom()

        m.setattr(callbacks.RunCallback, "on_train_batch_end", on_train_batch_end)
        result = cli("train", tiny_project, "--epochs", "3", "-o", run)
    assert result.exit_code == 1
    last = run / "checkpoints" / "last"
    assert result.output.strip().splitlines()[-1] == (
        f"error: out of memory while training epoch 2, step 2/3: {OOM_LINE}; try a smaller "
        "train.batch_size (now 32) or fewer units (or filters) in the model's layers; the last good "
        f"checkpoint (epoch 1) is {last}; to retry from it with other settings: mtl train RECIPE --resume "
        f"{last} --fork NEW_DIR"
    )
    assert "Traceback" not in result.output
    done = cli("train", "--resume", run)
    assert done.exit_code == 0, done.output


# ------------------------------------------------------------------------------------------------
# Early stopping and the epoch of the final weights

STOPPING = "weighting: static\n  early_stopping: {patience: 2, min_delta: 1000, restore_best: RESTORE}"


def _stopping(recipe: Path, restore: bool) -> Path:
    text = recipe.read_text().replace("epochs: 3", "epochs: 10")
    recipe.write_text(text.replace("weighting: static", STOPPING.replace("RESTORE", str(restore).lower())))
    return recipe


def test_early_stopping_says_when_and_which_weights(cli, tiny_project, tmp_path):
    result = cli("train", _stopping(tiny_project, True), "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    message = "stopped at epoch 3: val_loss did not improve by more than 1000 for 2 epochs; restored the weights of epoch 1"
    assert message in lines
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/10", "2/10", "3/10"]
    assert "validation (30 rows) — weights of epoch 1" in result.output
    assert lines.index(message) > max(i for i, line in enumerate(lines) if line.startswith("epoch "))


def test_early_stopping_without_restore_labels_the_last_epoch(cli, tiny_project, tmp_path):
    result = cli("train", _stopping(tiny_project, False), "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert (
        "stopped at epoch 3: val_loss did not improve by more than 1000 for 2 epochs"
        in result.output.splitlines()
    )
    assert "restored" not in result.output
    assert "validation (30 rows) — weights of epoch 3" in result.output


def test_a_run_that_finishes_labels_its_tables_with_the_last_epoch(cli, tiny_project, tmp_path):
    result = cli("train", tiny_project, "--epochs", "2", "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "validation (30 rows) — weights of epoch 2" in result.output
    assert "stopped at" not in result.output


TASKS = {"a": {"type": "binary", "metrics": ["accuracy"], "main": "a_accuracy"}}


def _live_run(final_epoch: int, epochs: int, stop: events.EarlyStopped | None) -> str:
    out = io.StringIO()
    view = TrainView(Console(file=out, force_terminal=True, width=140, color_system=None))
    view.handle(
        events.Started(
            Path("run"),
            TASKS,
            {"train": 20},
            {"train": {"a": 20}},
            {"shared": 5, "a": 1},
            epochs,
            7,
            "static",
            0,
        )
    )
    for epoch in range(1, final_epoch + 1):
        for step in range(1, 8):
            view.handle(events.BatchEnd(epoch, step, 7, {"loss": 0.5}))
        final = epoch == final_epoch
        view.handle(events.EpochEnd(epoch, epochs, {"loss": 0.5, "a_loss": 0.5}, 0.1, final))
    if stop is not None:
        view.handle(stop)
    view.close()
    return out.getvalue()


def test_the_live_view_ends_on_the_last_epoch_without_a_phantom_bar():
    stop = events.EarlyStopped(38, "val_loss", 25, 0.0, 13, True)
    text = _live_run(38, 150, stop)
    assert (
        "stopped at epoch 38: val_loss did not improve for 25 epochs; restored the weights of epoch 13"
        in text
    )
    assert "epoch 39/150" not in text
    last_frame = text.rsplit("epoch 38/150", 1)[1]
    assert re.match(r"\s*━+\s+7/7", last_frame), last_frame[:80]
    finished = _live_run(3, 3, None)
    assert re.search(r"epoch 3/3\s*━+\s+7/7", finished) and "0/7" not in finished.rsplit("epoch 3/3", 1)[1]
