"""Non-finite losses: the step-level check names the first task and the step, stops with exit 1 and
keeps the last good checkpoint; ``train.on_nan: skip_batch`` skips the update of a bad batch."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.model.build import build_model
from mtlcli.run import checkpoint
from mtlcli.run.callbacks import NonFinite, RunCallback, RunState, Selection

EXPLODE = "weighting: static\n  optimizer: {adam: {learning_rate: 1.0e10}}"


def test_exploding_learning_rate_stops_with_exit_1_naming_task_and_step(cli, tiny_project, tmp_path):
    tiny_project.write_text(tiny_project.read_text().replace("weighting: static", EXPLODE))
    out = tmp_path / "run"
    result = cli("train", tiny_project, "-o", out)
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    found = re.fullmatch(
        r"error: task '(kind|flag|value)' produced a non-finite loss \((nan|inf|-inf)\) at epoch 1, "
        r"step ([123])/3 \(global step \3\); lower train\.optimizer\.adam\.learning_rate or check the data; "
        r"no checkpoint had been written yet",
        message,
    )
    assert found, message
    assert "Traceback" not in result.output
    assert not (out / "model.keras").exists()  # no model with non-finite weights is saved as a result


def test_the_last_good_checkpoint_is_kept(cli, tiny_project, tmp_path):
    """Epoch 1 trains normally; the learning rate then becomes huge (a fork from epoch 1): the run stops
    at its first non-finite step and its last checkpoint is epoch 1's."""
    run, fork = tmp_path / "run", tmp_path / "fork"
    assert cli("train", tiny_project, "-o", run, "--epochs", "1").exit_code == 0
    tiny_project.write_text(tiny_project.read_text().replace("weighting: static", EXPLODE))
    result = cli("train", tiny_project, "--resume", run, "--fork", fork, "--epochs", "3")
    assert result.exit_code == 1
    last = fork / "checkpoints" / "last"
    tail = result.output.strip().splitlines()[-1]
    assert re.search(r"at epoch 2, step \d/3 \(global step \d\)", tail), tail
    assert tail.endswith(
        f"; the last good checkpoint (epoch 1) is {last}; to retry from it with other settings: "
        f"mtl train RECIPE --resume {last} --fork NEW_DIR"
    )
    state = checkpoint.read_state(last)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 0)
    import mtlcli.model.train_step  # noqa: F401

    model = keras.saving.load_model(last / "model.keras", compile=False)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_skip_batch_gives_up_when_a_whole_epoch_is_skipped(cli, tiny_project, tmp_path):
    tiny_project.write_text(
        tiny_project.read_text().replace("weighting: static", EXPLODE + "\n  on_nan: skip_batch")
    )
    result = cli("train", tiny_project, "-o", tmp_path / "run")
    assert result.exit_code == 1
    assert re.search(r"^skipped batch at epoch \d, step \d: task '\w+' loss (nan|inf)", result.output, re.M)
    assert re.search(
        r"error: every batch of epoch \d had a non-finite loss or gradient and was skipped "
        r"\(train\.on_nan: skip_batch\)",
        result.output,
    )


@pytest.fixture
def model_and_batch(tiny_project):
    loaded = R.load(tiny_project)
    prepared = data.prepare(loaded)
    model = build_model(loaded, prepared, seed=3)
    model.optimizer.build(model.trainable_variables)
    arr = prepared.splits["train"]
    batch = (
        {k: v[:32] for k, v in arr.x.items()},
        {k: v[:32].copy() for k, v in arr.y.items()},
        {k: v[:32].copy() for k, v in arr.mask.items()},
    )
    return model, batch


def test_skip_batch_changes_nothing_for_a_non_finite_batch(model_and_batch):
    model, (x, y, mask) = model_and_batch
    model.skip_nonfinite = True
    bad_y = dict(y)
    bad_y["value"] = y["value"].copy()
    bad_y["value"][0] = np.nan  # a labelled row whose regression target is NaN: that task's loss is NaN
    before = [w.copy() for w in model.get_weights()]
    model.fit(tf.data.Dataset.from_tensors((x, bad_y, mask)), epochs=1, verbose=0, shuffle=False)
    assert not bool(model.batch_applied.numpy())
    losses = model.batch_losses.numpy()
    assert np.isfinite(losses[[0, 1]]).all() and np.isnan(losses[2])
    assert int(model.optimizer.iterations.numpy()) == 0
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    model.fit(tf.data.Dataset.from_tensors((x, y, mask)), epochs=1, verbose=0, shuffle=False)
    assert bool(model.batch_applied.numpy())
    assert int(model.optimizer.iterations.numpy()) == 1


def test_the_step_check_reads_raw_batch_losses_and_names_the_first_bad_task(model_and_batch, tmp_path):
    model, _ = model_and_batch
    run = RunState(tmp_path, 3, 4, [], Selection("loss"), {}, "mtl train --resume X")
    callback = RunCallback(lambda e: None, run, model)
    callback.set_model(model)
    callback.on_epoch_begin(1)
    model.batch_losses.assign([0.5, np.inf, np.nan])  # flag (2nd task) and value (3rd) are not finite
    with pytest.raises(NonFinite):
        callback.on_train_batch_end(2, {"loss": 0.7})  # the epoch mean may still look finite
    assert run.failure == (
        "task 'flag' produced a non-finite loss (inf) at epoch 2, step 3/4 (global step 0); "
        "lower train.optimizer.adam.learning_rate or check the data"
    )
