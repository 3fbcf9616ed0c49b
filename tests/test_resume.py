"""--resume continues exactly where a run stopped; --fork starts a new run from a checkpoint; recipe
changes are either applied and echoed or refused naming the keys."""

from __future__ import annotations

import csv
import json
import os
import signal

import keras
import numpy as np
import pytest

from mtlcli import events
from mtlcli import recipe as R
from mtlcli.errors import UsageError
from mtlcli.run import checkpoint, runner
from mtlcli.run.signals import Interrupted
from tests.conftest import write_tiny_csv

DROPOUT = "- dense: {units: 16, activation: relu}\n    - dropout: {rate: 0.3}"


def _weights(path):
    import mtlcli.model.train_step  # noqa: F401 - registers the custom objects

    return keras.saving.load_model(path, compile=False).get_weights()


def _same_weights(a, b):
    for x, y in zip(_weights(a), _weights(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


def _history(run):
    with open(run / "history.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def project(tiny_project):
    """The tiny recipe with dropout (so the dropout RNG state matters) and early stopping."""
    text = tiny_project.read_text().replace("- dense: {units: 16, activation: relu}", DROPOUT)
    text = text.replace("weighting: static", "weighting: uncertainty\n  early_stopping: {patience: 5}")
    tiny_project.write_text(text)
    return tiny_project


@pytest.mark.slow
def test_four_epochs_equal_two_plus_two_with_a_resume(cli, project, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli("train", project, "-o", one, "--epochs", "4").exit_code == 0
    assert cli("train", project, "-o", two, "--epochs", "2").exit_code == 0
    result = cli("train", "--resume", two, "--epochs", "4")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"resuming from {two / 'checkpoints' / 'last'} at epoch 3 of 4" in lines
    assert "  changed: train.epochs: 2 -> 4" in lines
    _same_weights(one / "model.keras", two / "model.keras")
    _same_weights(one / "checkpoints" / "best" / "model.keras", two / "checkpoints" / "best" / "model.keras")
    assert _history(one) == _history(two)  # the epoch means, including the weighting's weights
    env = json.loads((two / "env.json").read_text())
    assert [r["changes"] for r in env["resumes"]] == [["train.epochs: 2 -> 4"]]
    assert env["epochs_run"] == 4


@pytest.mark.slow
def test_a_mid_epoch_interruption_resumes_to_the_same_result(project, tmp_path):
    """SIGINT in the middle of epoch 2 (sent from inside the run, at a known step); the resume continues
    from that batch with the same data order, dropout RNG and running epoch means."""
    write_tiny_csv(project.parent / "tiny.csv", n=400)
    project.write_text(project.read_text().replace("batch_size: 32", "batch_size: 16"))
    loaded = R.load(project)
    full = runner.train(loaded, output=tmp_path / "full").run_dir

    def interrupt(event):
        if isinstance(event, events.BatchEnd) and (event.epoch, event.step) == (2, 7):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as exc:
        runner.train(R.load(project), output=tmp_path / "cut", on_event=interrupt)
    cut = tmp_path / "cut"
    assert exc.value.exit_code == 130
    assert str(exc.value) == (
        f"SIGINT: stopped at epoch 2, step 7/19; checkpoint saved in {cut / 'checkpoints' / 'last'}\n"
        f"resume with: mtl train --resume {cut}"
    )
    state = checkpoint.read_state(cut / "checkpoints" / "last")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 7, 26)
    assert not (cut / "model.keras").exists()
    seen = []
    runner.train(None, resume=cut, on_event=seen.append)
    resumed = [e for e in seen if isinstance(e, events.Resumed)]
    assert [(e.epoch, e.step, e.applied) for e in resumed] == [(1, 7, [])]
    assert [e.step for e in seen if isinstance(e, events.BatchEnd)][:2] == [8, 9]
    _same_weights(full / "model.keras", cut / "model.keras")
    assert _history(full) == _history(cut)


@pytest.mark.slow
def test_refused_changes_name_the_keys(cli, project, tmp_path):
    run = tmp_path / "run"
    assert cli("train", project, "-o", run, "--epochs", "1").exit_code == 0
    changed = project.read_text().replace("units: 16", "units: 12").replace("batch_size: 32", "batch_size: 8")
    project.write_text(changed.replace("patience: 5", "patience: 9"))
    result = cli("train", project, "--resume", run, "--epochs", "2")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"error: the recipe differs from the one {run} was trained with in ways that break the run:",
        "  - model.shared[0].dense.units: 16 -> 12",
        "  - train.batch_size: 32 -> 8",
        "--resume accepts changes to train.epochs, train.early_stopping.patience, train.checkpoint_every, "
        f"train.on_nan, train.distribute, train.devices, train.tensorboard, logging only; to change anything in train (optimizer, batch size, weighting, ...) fork "
        f"it: mtl train RECIPE --resume {run} --fork NEW_DIR",
    ]
    assert cli("train", project, "--resume", run, "--seed", "4").exit_code == 2
    result = cli("train", "--resume", run, "--seed", "4")
    assert "  - seed: 3 -> 4" in result.output.splitlines()


def test_data_that_changed_is_refused(cli, project, tmp_path):
    run = tmp_path / "run"
    assert cli("train", project, "-o", run, "--epochs", "1").exit_code == 0
    write_tiny_csv(project.parent / "tiny.csv", seed=1)
    result = cli("train", "--resume", run, "--epochs", "2")
    assert result.exit_code == 2
    assert "  - data.train (file content, sha256): " in result.output
    assert "model.shared" not in result.output


def test_finished_runs_and_wrong_arguments(cli, project, tmp_path):
    run = tmp_path / "run"
    assert cli("train", project, "-o", run, "--epochs", "1").exit_code == 0
    result = cli("train", "--resume", run)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {run} has already finished (1 of 1 epochs); to train longer pass --epochs N with N > 1"
    )
    result = cli("train", "--resume", run / "checkpoints" / "best")
    assert result.exit_code == 2
    assert "a run continues in place from checkpoints/last only; to start from best use --fork NEW_DIR" in (
        result.output
    )
    assert cli("train", project, "--fork", tmp_path / "f").output.strip() == (
        "error: --fork NEW_DIR needs --resume RUN_DIR: the run (or checkpoint) to start from"
    )
    assert cli("train", "--resume", run, "-o", tmp_path / "x").exit_code == 2
    assert cli("train").output.strip() == "error: missing RECIPE: give a recipe file (or --resume RUN_DIR)"
    assert cli("train", "--resume", tmp_path / "nope").output.strip() == (
        f"error: --resume {tmp_path / 'nope'}: no such run directory"
    )


def test_fork_changes_the_train_section_and_leaves_the_original_alone(cli, project, tmp_path):
    run, new = tmp_path / "run", tmp_path / "fork"
    assert cli("train", project, "-o", run, "--epochs", "2").exit_code == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    project.write_text(project.read_text().replace("batch_size: 32", "batch_size: 16"))
    result = cli("train", project, "--resume", run, "--fork", new, "--epochs", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"forked from {run / 'checkpoints' / 'last'} at epoch 3 of 3" in lines
    assert "  changed: train.epochs: 2 -> 3" in lines
    assert "  changed: train.batch_size: 32 -> 16" in lines
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert [row["epoch"] for row in _history(new)] == ["1", "2", "3"]
    assert _history(new)[:2] == _history(run)
    env = json.loads((new / "env.json").read_text())
    assert env["forked_from"]["epoch"] == 2
    project.write_text(project.read_text().replace("units: 16", "units: 12"))
    result = cli("train", project, "--resume", run, "--fork", tmp_path / "f2")
    assert result.exit_code == 2
    assert "  - model.shared[0].dense.units: 16 -> 12" in result.output.splitlines()
    assert not (tmp_path / "f2").exists()


def test_prepare_decides_a_job_before_tensorflow_and_resume_check_reads_its_position(tiny_project, tmp_path):
    """The first step of runner.train on its own: arguments, data and the run's numbers, with no
    TensorFlow import, and for a resume the position and the changes it applies."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mtlcli import recipe\n"
        "from mtlcli.run import runner\n"
        f"job = runner.prepare(recipe.load({str(tiny_project)!r}), epochs=5)\n"
        "print(job.epochs, job.steps, job.batch, job.seed, job.in_place, job.source is None)\n"
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["5 3 32 3 False True", "False"]  # 90 training rows, batches of 32

    run = tmp_path / "run"
    runner.train(R.load(tiny_project), output=run, epochs=1)
    job = runner.prepare(None, resume=run, epochs=2)
    assert job.in_place and job.source.run_dir == run and job.seed == 3
    assert (job.position.epoch, job.position.step) == (1, 0)
    assert job.position.rendered() == ["train.epochs: 1 -> 2"]
    with pytest.raises(UsageError) as exc:
        runner.prepare(None, resume=run, epochs=2, output=tmp_path / "x")
    assert str(exc.value).startswith("--resume continues the run in its own directory")


def test_a_setting_added_since_the_run_and_left_off_is_no_change():
    """A run written before a recipe key existed (``data.csv``) resumes when the key is unset; setting it
    is still a change."""
    from mtlcli.run import resume as resuming

    old = {"data": {"train": "a.csv"}, "train": {"epochs": 2}}
    assert resuming.diff(old, {"data": {"train": "a.csv", "csv": None}, "train": {"epochs": 2}}) == []
    assert resuming.diff({"data": {"train": "a.csv", "csv": None}}, {"data": {"train": "a.csv"}}) == []
    changed = resuming.diff(old, {"data": {"train": "a.csv", "csv": {"sep": ";"}}, "train": {"epochs": 2}})
    assert [c.render() for c in changed] == ['data.csv.sep: (absent) -> ";"']
    # an empty list added since (``product_of: []``) is off too; a non-empty one is a change
    tasks = {"model": {"tasks": {"y": {"type": "binary"}}}}
    added = {"model": {"tasks": {"y": {"type": "binary", "product_of": []}}}}
    assert resuming.diff(tasks, added) == []
    added["model"]["tasks"]["y"]["product_of"] = ["a", "b"]
    assert [c.render() for c in resuming.diff(tasks, added)] == [
        'model.tasks.y.product_of[0]: (absent) -> "a"',
        'model.tasks.y.product_of[1]: (absent) -> "b"',
    ]
