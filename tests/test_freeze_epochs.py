"""model.init_from.freeze_epochs: the warm-started layers stay fixed for the first N epochs (no update,
no weight decay), then train with Adam restarted; a resume at the boundary or inside the unfrozen
epochs ends where the uninterrupted run does; the recipe checks refuse what cannot mean anything."""

from __future__ import annotations

import os
import shutil
import signal

import keras
import numpy as np
import pytest

from mtlcli import events
from mtlcli import recipe as R
from mtlcli.errors import RecipeError
from mtlcli.run import checkpoint, runner
from mtlcli.run.signals import Interrupted
from tests.conftest import TINY_RECIPE, add_primary, write_tiny_csv

SCHEDULE = "  init_from: {run: ../a, freeze_epochs: 1}\n"
DECAY = "  optimizer: {adam: {learning_rate: 0.01, weight_decay: 0.05}}\n"


def _with(text: str, init: str, weighting: str = "static") -> str:
    text = text.replace("  tasks:\n", init + "  tasks:\n", 1).replace(
        "weighting: static", f"weighting: {weighting}"
    )
    return add_primary(text + DECAY, weighting)


def _model(path):
    import mtlcli.model.train_step  # noqa: F401 - registers the custom objects

    return keras.saving.load_model(path, safe_mode=True, compile=False)


def _shared(path) -> list[np.ndarray]:
    model = _model(path)
    return [np.asarray(v) for v in model.shared_variables]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """A finished tiny run in ``<root>/a`` (one epoch); the projects that start from it live next to it."""
    root = tmp_path_factory.mktemp("freeze")
    src = root / "src"
    src.mkdir()
    write_tiny_csv(src / "tiny.csv", n=200)
    (src / "recipe.yaml").write_text(TINY_RECIPE.replace("epochs: 3", "epochs: 1"))
    runner.train(R.load(src / "recipe.yaml"), output=root / "a")
    return root / "a"


def _project(run_a, name: str, init: str = SCHEDULE, weighting: str = "static"):
    d = run_a.parent / name
    d.mkdir()
    shutil.copy(run_a.parent / "src" / "tiny.csv", d / "tiny.csv")
    (d / "recipe.yaml").write_text(_with(TINY_RECIPE, init, weighting))
    return d / "recipe.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["static", "upgrad", "moco"])
def test_fixed_for_n_epochs_even_with_weight_decay_then_trained(run_a, cli, weighting):
    """Static (loss-based), UPGrad (the Jacobian's frozen columns are zeros) and MoCo (a state sized by
    the shared parameters, which keeps its size when the layers unfreeze)."""
    path = _project(run_a, f"b_{weighting}", weighting=weighting)
    run = path.parent / "run"
    source = _shared(run_a / "model.keras")
    result = cli("train", path, "-o", run, "--epochs", "1")  # the frozen epoch only (a resume extends it)
    assert result.exit_code == 0, result.output
    for got, want in zip(_shared(run / "model.keras"), source, strict=True):
        np.testing.assert_array_equal(got, want)  # no update and no weight decay while frozen
    assert int(_model(run / "model.keras").state_unfrozen.numpy()) == 0
    result = cli("train", "--resume", run, "--epochs", "3")
    assert result.exit_code == 0, result.output
    trained = _model(run / "model.keras")
    assert int(trained.state_unfrozen.numpy()) == 1
    for got, want in zip(_shared(run / "model.keras"), source, strict=True):
        assert not np.array_equal(got, want)
        assert np.all(np.isfinite(got))
    state = checkpoint.read_state(run / "checkpoints" / "last")
    # Adam restarted at the start of epoch 2: its step count holds epochs 2 and 3 only
    assert state["global_step"] == 2 * state["steps_per_epoch"]
    if weighting == "static":  # the run predicts and exports like any other
        _predicts_and_exports(cli, run, path.parent)


def _predicts_and_exports(cli, run, project) -> None:
    import csv

    import tensorflow as tf

    from mtlcli.run import export as E

    out = project / "pred.csv"
    result = cli("predict", run, project / "tiny.csv", "-o", out, "--proba")
    assert result.exit_code == 0, result.output
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    with open(project / "tiny.csv") as fh:
        first = next(csv.DictReader(fh))
    fn = tf.saved_model.load(str(E.export(run, output=project / "sm").path)).signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    values = {"a": float(first["a"]), "b": float(first["b"]), "color": first["color"]}
    served = fn(**{k: tf.constant([values[k]], dtype=spec.dtype) for k, spec in specs.items()})
    assert float(rows[0]["value"]) == pytest.approx(float(served["value_value"].numpy()[0]), abs=1e-4)


@pytest.mark.slow
def test_a_resume_at_the_boundary_and_inside_the_unfrozen_epochs_ends_like_the_full_run(run_a):
    path = _project(run_a, "b_resume", weighting="upgrad")
    root = path.parent
    full = runner.train(R.load(path), output=root / "full").run_dir
    # stopped at the end of the frozen epoch (before Adam restarts), then resumed with more epochs
    runner.train(R.load(path, overrides=["train.epochs=1"]), output=root / "boundary")
    runner.train(None, resume=root / "boundary", epochs=3)
    _same(full, root / "boundary")

    def interrupt(event):
        if isinstance(event, events.BatchEnd) and (event.epoch, event.step) == (2, 2):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        runner.train(R.load(path), output=root / "cut", on_event=interrupt)
    state = checkpoint.read_state(root / "cut" / "checkpoints" / "last")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 2)  # inside epoch 2, after the unfreeze
    runner.train(None, resume=root / "cut")
    _same(full, root / "cut")


def _same(a, b) -> None:
    for x, y in zip(_model(a / "model.keras").weights, _model(b / "model.keras").weights, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6, err_msg=x.path)


def _problems(tmp_path, init: str, extra: str = "") -> list[str]:
    write_tiny_csv(tmp_path / "tiny.csv")
    path = tmp_path / "recipe.yaml"
    path.write_text(_with(TINY_RECIPE, init) + extra)
    with pytest.raises(RecipeError) as info:
        R.load(path)
    return [p.render() for p in info.value.problems]


def test_freeze_and_freeze_epochs_together_are_refused(tmp_path):
    got = _problems(tmp_path, "  init_from: {run: ../a, freeze: true, freeze_epochs: 2}\n")
    assert got == [
        f"{tmp_path / 'recipe.yaml'}:13 model.init_from.freeze_epochs: freeze: true keeps the layers fixed "
        "for the whole run and freeze_epochs: 2 trains them after epoch 2: expected one of the two"
    ]


@pytest.mark.parametrize("value", [0, -1, 1.5, "two"])
def test_freeze_epochs_is_a_positive_integer(tmp_path, value):
    (got,) = _problems(tmp_path, f"  init_from: {{run: ../a, freeze_epochs: {value}}}\n")
    assert got.startswith(f"{tmp_path / 'recipe.yaml'}:13 model.init_from.freeze_epochs:")


def test_every_gradient_based_strategy_accepts_every_shared_layer_frozen_for_a_while(tmp_path):
    """Unlike ``freeze: true``, ``freeze_epochs`` leaves the shared layers something to train later: every
    strategy is accepted (the frozen epochs hand it a Jacobian of zeros, on which each one is finite)."""
    from mtlcli import weighting

    write_tiny_csv(tmp_path / "tiny.csv")
    path = tmp_path / "recipe.yaml"
    for name in sorted(weighting.REGISTRY):
        path.write_text(_with(TINY_RECIPE, SCHEDULE, name))
        assert R.load(path).recipe.model.init_from.freeze_epochs == 1, name


@pytest.mark.slow
def test_mirrored_training_through_the_unfreeze_reaches_the_single_device_results(run_a):
    """Under ``distribute: mirrored`` (2 logical CPU devices, a subprocess) the switch happens in the
    same place and the epochs' logs equal the single-device run's."""
    import csv
    import subprocess
    import sys
    from pathlib import Path

    path = _project(run_a, "b_mirrored", weighting="upgrad")
    single = runner.train(R.load(path), output=path.parent / "single").run_dir
    text = path.read_text().replace("  weighting:", "  distribute: mirrored\n  devices: 2\n  weighting:", 1)
    path.write_text(text)
    out = path.parent / "mirrored"
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run(
        [sys.executable, "-m", "mtlcli", "train", str(path), "--output", str(out)],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert "train from now on (Adam restarts)" in proc.stdout + proc.stderr
    assert int(_model(out / "model.keras").state_unfrozen.numpy()) == 1

    def history(run):
        with open(run / "history.csv") as fh:
            return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]

    for a, b in zip(history(single), history(out), strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
