"""Strategy state sized by the number ``P`` of columns of ``J`` (DB-MTL's gradient buffer, MoCo's
tracked gradients): created by the train step when the model is built, saved with the model and in
checkpoints, so a resumed run equals an uninterrupted one; strategies without it keep their variables."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcli import data, weighting
from mtlcli import recipe as R
from mtlcli.model.build import build_model
from mtlcli.weighting import eager
from tests.test_resume import _history, _same_weights

SIZED = {"db_mtl": ["grad_buffer"], "excess_mtl": ["sq_grad_sum"], "moco": ["y"]}


def _model(tiny_project, spec: str):
    tiny_project.write_text(tiny_project.read_text().replace("weighting: static", f"weighting: {spec}"))
    loaded = R.load(tiny_project)
    prepared = data.prepare(loaded)
    return build_model(loaded, prepared, seed=3), prepared


def test_registered_strategies_with_sized_state_are_exactly_these():
    found = {
        name: sorted(cls().sized_state_spec(3, 7))
        for name, cls in weighting.REGISTRY.items()
        if cls().sized_state_spec(3, 7)
    }
    assert found == SIZED
    for name in SIZED:
        cls = weighting.REGISTRY[name]
        # no on: representation (P would grow with the batch); every: K only for a weighting (excess_mtl)
        assert cls.needs == "gradients" and "on" not in {f.name for f in dataclasses.fields(cls)}
        assert cls().sized_state_spec(3, 7) == {k: ((3, 7), 0.0) for k in SIZED[name]}


def test_eager_initial_state_adds_sized_state_only_when_given_p():
    strategy = weighting.get("moco")
    assert sorted(eager.initial_state(strategy, 3)) == ["lambd", "step"]
    state = eager.initial_state(strategy, 3, num_params=5)
    assert state["y"].shape == (3, 5) and state["y"].dtype == tf.float64
    np.testing.assert_array_equal(state["y"].numpy(), np.zeros((3, 5)))
    _, new = weighting.aggregate("db_mtl", np.eye(3, 4), losses=[1.0, 2.0, 3.0], return_state=True)
    assert new["grad_buffer"].shape == (3, 4)


@pytest.mark.parametrize("name", sorted(SIZED))
def test_model_creates_sized_state_last_and_it_loads_back(name, tiny_project, tmp_path):
    model, _ = _model(tiny_project, name)
    shared = sum(math.prod(v.shape) for v in model.shared_variables)
    for key in SIZED[name]:
        assert tuple(model.strategy_state[key].shape) == (len(model.task_names), shared)
    names = [v.path.rsplit("/", 1)[-1] for v in model.weights if "/" not in v.path or v.path.count("/") == 1]
    own = [n for n in names if n.startswith(("state_", "epoch", "seen_epoch"))]
    assert own[-len(SIZED[name]) :] == [f"state_{k}" for k in SIZED[name]]
    for key in SIZED[name]:
        model.strategy_state[key].assign(tf.fill(model.strategy_state[key].shape, 0.5))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    for key in SIZED[name]:
        np.testing.assert_array_equal(loaded.strategy_state[key].numpy(), model.strategy_state[key].numpy())


def test_a_wrapper_creates_its_bases_sized_state_prefixed_and_it_loads_back(tiny_project, tmp_path):
    model, _ = _model(tiny_project, "{cr_mogm: {base: excess_mtl}}")
    shared = sum(math.prod(v.shape) for v in model.shared_variables)
    assert tuple(model.strategy_state["base_sq_grad_sum"].shape) == (len(model.task_names), shared)
    names = [v.path.rsplit("/", 1)[-1] for v in model.weights if v.path.count("/") <= 1]
    assert [n for n in names if n.startswith("state_")][-1] == "state_base_sq_grad_sum"
    model.strategy_state["base_sq_grad_sum"].assign(
        tf.fill(model.strategy_state["base_sq_grad_sum"].shape, 0.5)
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    np.testing.assert_array_equal(
        loaded.strategy_state["base_sq_grad_sum"].numpy(), np.full((3, shared), 0.5)
    )


def test_strategies_without_sized_state_keep_their_variables(tiny_project):
    model, _ = _model(tiny_project, "pcgrad")
    own = [v.path for v in model.weights if v.path.count("/") <= 1]
    assert not any("grad_buffer" in p or p.endswith("state_y") for p in own)
    assert set(model.strategy_state) == set(weighting.get("pcgrad").state_spec(len(model.task_names)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    ["db_mtl", "{moco: {gamma: 0.2}}", "{excess_mtl: {n_warmup_steps: 3}}", "{cr_mogm: {base: excess_mtl}}"],
)
def test_four_epochs_equal_two_plus_two_with_a_resume(spec, cli, tiny_project, tmp_path):
    tiny_project.write_text(tiny_project.read_text().replace("weighting: static", f"weighting: {spec}"))
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli("train", tiny_project, "-o", one, "--epochs", "4").exit_code == 0
    assert cli("train", tiny_project, "-o", two, "--epochs", "2").exit_code == 0
    result = cli("train", "--resume", two, "--epochs", "4")
    assert result.exit_code == 0, result.output
    _same_weights(one / "model.keras", two / "model.keras")  # includes the (T, P) state
    assert _history(one) == _history(two)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{db_mtl: {on: representation}}", "train.weighting.db_mtl.on: unknown parameter 'on'; db_mtl takes"),
        ("{moco: {on: representation}}", "train.weighting.moco.on: unknown parameter 'on'; moco takes"),
        (
            "{excess_mtl: {on: representation}}",
            "train.weighting.excess_mtl.on: unknown parameter 'on'; excess_mtl takes",
        ),
        (
            "{moco: {every: 2}}",
            "train.weighting.moco.every: every: 2 is not available for moco: moco is not a",
        ),
        ("{db_mtl: {every: 4}}", "train.weighting.db_mtl.every: every: 4 is not available for db_mtl"),
        ("{db_mtl: {beta: 2}}", "train.weighting.db_mtl: `beta` must be in [0, 1], received 2"),
    ],
)
def test_unsupported_options_are_refused_with_file_and_line(spec, message, cli, tiny_project):
    text = tiny_project.read_text()
    line = text[: text.index("weighting: static")].count("\n") + 1
    tiny_project.write_text(text.replace("weighting: static", f"weighting: {spec}"))
    result = cli("validate", tiny_project)
    assert result.exit_code == 2
    assert f"{tiny_project}:{line} {message}" in " ".join(result.output.split())


@pytest.mark.slow
def test_a_mid_epoch_interruption_resumes_moco_to_the_same_result(tiny_project, tmp_path):
    """SIGINT in the middle of epoch 2: the checkpoint holds MoCo's tracked gradients (T, P), so the
    resumed run ends with the same weights and history as the uninterrupted one."""
    import os
    import signal

    from mtlcli import events
    from mtlcli.run import runner
    from mtlcli.run.signals import Interrupted

    tiny_project.write_text(tiny_project.read_text().replace("weighting: static", "weighting: moco"))
    full = runner.train(R.load(tiny_project), output=tmp_path / "full").run_dir

    def interrupt(event):
        if isinstance(event, events.BatchEnd) and (event.epoch, event.step) == (2, 3):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        runner.train(R.load(tiny_project), output=tmp_path / "cut", on_event=interrupt)
    cut = tmp_path / "cut"
    assert not (cut / "model.keras").exists()
    runner.train(None, resume=cut)
    _same_weights(full / "model.keras", cut / "model.keras")
    assert _history(full) == _history(cut)
