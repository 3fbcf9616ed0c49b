"""model.init_from: a run's shared layers (or named encoders) start from another run's saved model, with
shape checks, freeze: true, provenance in data.json, and resume/fork from the checkpoint alone."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

from mtlcli import recipe as R
from mtlcli.errors import RecipeError
from mtlcli.fsio import sha256
from mtlcli.run import runner
from tests.conftest import TINY_RECIPE, write_tiny_csv

INIT = "  init_from: {run: ../a}\n"
FROZEN = "  init_from: {run: ../a, freeze: true}\n"


def _with(text: str, init: str) -> str:
    """The tiny recipe with ``init`` (lines under model) added before ``model.tasks``."""
    return text.replace("  tasks:\n", init + "  tasks:\n", 1)


def _model(path):
    import mtlcli.model.train_step  # noqa: F401 - registers the custom objects

    return keras.saving.load_model(path, safe_mode=True, compile=False)


def _layer_weights(model, name: str) -> list[np.ndarray]:
    layer = {x.name: x for x in [*model.shared_layers(), *(x for t in model.heads.values() for x in t)]}[name]
    return [np.asarray(w) for w in layer.get_weights()]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """A finished tiny run in ``<root>/a`` (one epoch); B's projects live next to it."""
    root = tmp_path_factory.mktemp("warm")
    src = root / "src"
    src.mkdir()
    write_tiny_csv(src / "tiny.csv")
    (src / "recipe.yaml").write_text(TINY_RECIPE.replace("epochs: 3", "epochs: 1"))
    runner.train(R.load(src / "recipe.yaml"), output=root / "a")
    return root / "a"


def _project(run_a, name: str, init: str, text: str = TINY_RECIPE):
    """A project ``<root>/<name>`` whose recipe has ``init`` (relative ``run: ../a``)."""
    d = run_a.parent / name
    d.mkdir()
    shutil.copy(run_a.parent / "src" / "tiny.csv", d / "tiny.csv")
    (d / "recipe.yaml").write_text(_with(text, init))
    return d / "recipe.yaml"


def _built(path):
    from mtlcli.model.build import build_model

    job = runner.prepare(R.load(path))
    return build_model(job.loaded, job.prepared, job.seed), job


def _errors(path) -> list[str]:
    with pytest.raises(RecipeError) as info:
        _built(path)
    return [p.render() for p in info.value.problems]


def _line(path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.slow
def test_the_shared_layers_start_from_the_source_run(run_a):
    path = _project(run_a, "b_start", INIT)
    model, job = _built(path)
    a = _model(run_a / "model.keras")
    for got, want in zip(_layer_weights(model, "shared_0"), _layer_weights(a, "shared_0"), strict=True):
        np.testing.assert_array_equal(got, want)
    assert job.prepared.info["init_from"] == {
        "run": str(run_a.resolve()),
        "model": str((run_a / "model.keras").resolve()),
        "sha256": sha256(run_a / "model.keras"),
        "layers": "shared",
        "copied": ["model.shared[0]"],
        "values": sum(int(np.size(w)) for w in _layer_weights(a, "shared_0")),
        "freeze": False,
    }
    # a model file (or a checkpoint directory) names the same model
    path.write_text(path.read_text().replace("run: ../a}", "run: ../a/model.keras}"))
    assert _built(path)[1].prepared.info["init_from"]["model"] == str((run_a / "model.keras").resolve())
    # the heads are this run's own (random) ones
    assert not np.array_equal(_layer_weights(model, "flag_output")[0], _layer_weights(a, "flag_output")[0])


@pytest.mark.slow
def test_frozen_layers_stay_fixed_and_the_provenance_is_recorded(run_a):
    path = _project(run_a, "b_frozen", FROZEN)
    result = runner.train(R.load(path), output=path.parent / "run")
    b, a = _model(result.run_dir / "model.keras"), _model(run_a / "model.keras")
    for got, want in zip(_layer_weights(b, "shared_0"), _layer_weights(a, "shared_0"), strict=True):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(_layer_weights(b, "value_output")[0], _layer_weights(a, "value_output")[0])
    info = json.loads((result.run_dir / "data.json").read_text())
    assert info["init_from"]["sha256"] == sha256(run_a / "model.keras")
    assert info["init_from"]["freeze"] is True
    resolved = (result.run_dir / "resolved.yaml").read_text()
    assert "init_from:" in resolved and "run: ../a" in resolved


@pytest.mark.slow
def test_a_resume_and_a_fork_take_the_weights_from_the_checkpoint_not_the_source(run_a, cli):
    path = _project(run_a, "b_resume", FROZEN)
    run = path.parent / "run"
    assert cli("train", path, "-o", run, "--epochs", "1").exit_code == 0
    first = _layer_weights(_model(run / "model.keras"), "shared_0")
    moved = run_a.parent / "a_moved"
    run_a.rename(moved)  # the source run is gone: a resume must not need it
    try:
        result = cli("train", "--resume", run, "--epochs", "2")
        assert result.exit_code == 0, result.output
        fork = path.parent / "fork"
        result = cli("train", "--resume", run / "checkpoints" / "last", "--fork", fork, "--epochs", "3")
        assert result.exit_code == 0, result.output
    finally:
        moved.rename(run_a)
    for out in (run, fork):
        b = _model(out / "model.keras")
        for got, want in zip(_layer_weights(b, "shared_0"), first, strict=True):
            np.testing.assert_array_equal(got, want)  # frozen through the resume and the fork
    info = json.loads((fork / "data.json").read_text())
    assert info["init_from"]["sha256"] == sha256(run_a / "model.keras")  # the fork keeps the provenance


@pytest.mark.slow
def test_a_shape_mismatch_names_the_first_layer_and_both_shapes(run_a, cli):
    path = _project(run_a, "b_shape", INIT, TINY_RECIPE.replace("units: 16", "units: 8"))
    (msg,) = _errors(path)
    line = _line(path, "init_from")
    model = (run_a / "model.keras").resolve()
    assert msg.startswith(f"{path}:{line} model.init_from")
    assert "model.shared[0] does not fit the source run's weights" in msg
    # the trunk reads a, b and color one-hot (3 colours and the unknown one): 6 features
    assert f"shared_0/kernel has shape [6, 16] in {model} and [6, 8] in this recipe" in msg
    result = cli("train", path, "-o", path.parent / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_missing_run_or_model_is_named_with_its_path(tmp_path, cli):
    write_tiny_csv(tmp_path / "tiny.csv")
    path = tmp_path / "recipe.yaml"
    path.write_text(_with(TINY_RECIPE, "  init_from: {run: runs/nope}\n"))
    (msg,) = _errors(path)
    assert msg == (
        f"{path}:{_line(path, 'init_from')} model.init_from.run: no such run directory: "
        f"{tmp_path / 'runs' / 'nope'} (relative to the recipe file)"
    )
    (tmp_path / "runs" / "nope" / "checkpoints" / "last").mkdir(parents=True)
    (tmp_path / "runs" / "nope" / "checkpoints" / "last" / "model.keras").write_bytes(b"")
    (msg,) = _errors(path)
    assert f"{tmp_path / 'runs' / 'nope'} has no model.keras (expected a finished mtl run directory)" in msg
    assert f"write run: {tmp_path / 'runs' / 'nope' / 'checkpoints' / 'last'}" in msg
    result = cli("train", path, "-o", tmp_path / "run")
    assert result.exit_code == 2 and "no model.keras" in result.output and "Traceback" not in result.output
    for args in ([], ["--no-data"]):  # what mtl validate accepts must train
        result = cli("validate", path, *args)
        assert (
            result.exit_code == 2 and "no model.keras" in result.output and "Traceback" not in result.output
        )


def _problems(tmp_path, init: str, text: str = TINY_RECIPE) -> list[str]:
    write_tiny_csv(tmp_path / "tiny.csv")
    path = tmp_path / "recipe.yaml"
    path.write_text(_with(text, init))
    with pytest.raises(RecipeError) as info:
        R.load(path)
    return [p.render() for p in info.value.problems]


def test_unknown_parts_are_refused_with_did_you_mean(tmp_path):
    (msg,) = _problems(tmp_path, "  init_from: {run: ../a, layers: [trunc]}\n")
    assert msg == (
        f"{tmp_path / 'recipe.yaml'}:13 model.init_from.layers[0]: unknown part 'trunc'; did you mean "
        f"'trunk'? (expected an input with an encoder or an embedding, or trunk for model.shared: trunk)"
    )


def test_freezing_every_shared_layer_refuses_a_gradient_based_strategy(tmp_path):
    text = TINY_RECIPE.replace("weighting: static", "weighting: pcgrad")
    (msg,) = _problems(tmp_path, "  init_from: {run: ../a, freeze: true}\n", text)
    path = tmp_path / "recipe.yaml"
    assert msg.startswith(
        f"{path}:{_line(path, 'init_from')} model.init_from.freeze: freeze: true keeps every"
    )
    assert "pcgrad combines the tasks' gradients of the shared parameters" in msg
    (msg,) = _problems(tmp_path, "  init_from: {run: ../a, layers: [trunk], freeze: true}\n", text)
    assert "pcgrad combines" in msg
    # not frozen, or a loss-based strategy: accepted
    path.write_text(_with(text, "  init_from: {run: ../a}\n"))
    assert R.load(path).recipe.model.init_from.layers == "shared"
    path.write_text(_with(TINY_RECIPE, "  init_from: {run: ../a, freeze: true}\n"))
    assert R.load(path).recipe.model.init_from.freeze is True


ENCODED = TINY_RECIPE.replace(
    "  shared:\n", "  encoders:\n    a: [{dense: {units: 4, activation: relu}}]\n  shared:\n", 1
)


@pytest.mark.slow
def test_a_named_encoder_starts_from_the_source_and_the_rest_is_fresh(tmp_path, cli):
    write_tiny_csv(tmp_path / "tiny.csv")
    (tmp_path / "a.yaml").write_text(ENCODED.replace("epochs: 3", "epochs: 1"))
    a_dir = runner.train(R.load(tmp_path / "a.yaml"), output=tmp_path / "a").run_dir
    # B's trunk is narrower (it would not fit), but only the encoder of input a is taken
    text = ENCODED.replace("units: 16", "units: 8")
    (tmp_path / "b.yaml").write_text(_with(text, "  init_from: {run: a, layers: [a], freeze: true}\n"))
    model, job = _built(tmp_path / "b.yaml")
    a = _model(a_dir / "model.keras")
    for got, want in zip(_layer_weights(model, "a_encoder"), _layer_weights(a, "a_encoder"), strict=True):
        np.testing.assert_array_equal(got, want)
    assert job.prepared.info["init_from"]["copied"] == ["model.encoders.a"]
    assert job.prepared.info["init_from"]["values"] == 1 * 4 + 4
    encoder = model.encoders["a"]
    assert not encoder.trainable_variables and encoder.non_trainable_variables
    shared = {id(v) for v in model.shared_variables}
    assert shared == {id(v) for v in model.trunk[0].trainable_variables}  # the trunk still trains
    plan = cli("plan", tmp_path / "b.yaml").output  # names the encoder it starts, not the trunk
    assert f"warm start: from run a (resolved: {a_dir.resolve()}); frozen for the whole run" in plan
    assert "  a_encoder (model.encoders.a) starts from a: frozen for the whole run" in plan
    assert "shared_0 (" not in plan
    # a gradient-based strategy combines the trunk's task gradients; the frozen encoder stays as it was
    path = tmp_path / "b.yaml"
    path.write_text(
        path.read_text().replace("weighting: static", "weighting: pcgrad").replace("epochs: 3", "epochs: 1")
    )
    run = runner.train(R.load(path), output=tmp_path / "b").run_dir
    b = _model(run / "model.keras")
    for got, want in zip(_layer_weights(b, "a_encoder"), _layer_weights(a, "a_encoder"), strict=True):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(_layer_weights(b, "shared_0")[0], _layer_weights(model, "shared_0")[0])


def test_every_strategy_with_every_shared_layer_frozen(tmp_path):
    """Registry-driven: a gradient-based strategy is refused when freeze: true leaves no shared parameter
    to combine; a loss-based one is accepted."""
    from mtlcli import weighting
    from tests.conftest import add_primary

    write_tiny_csv(tmp_path / "tiny.csv")
    path = tmp_path / "recipe.yaml"
    for name, cls in sorted(weighting.REGISTRY.items()):
        text = add_primary(TINY_RECIPE.replace("weighting: static", f"weighting: {name}"), name)
        path.write_text(_with(text, FROZEN))
        if cls.needs == "gradients":
            with pytest.raises(RecipeError) as info:
                R.load(path)
            assert [p.render() for p in info.value.problems] == [
                f"{path}:{_line(path, 'init_from')} model.init_from.freeze: freeze: true keeps every shared "
                f"layer fixed, and {name} combines the tasks' gradients of the shared parameters: none would "
                f"be left to combine; use a loss-based strategy (e.g. static) or freeze only some parts "
                f"(layers: [...])"
            ], name
        else:
            assert R.load(path).recipe.model.init_from.freeze is True, name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "init", "training"),
    [
        ("p_trained", INIT, "trained from there"),
        ("p_frozen", FROZEN, "frozen for the whole run"),
    ],
)
def test_plan_names_the_source_run_and_how_the_warm_started_layers_train(run_a, cli, name, init, training):
    path = _project(run_a, name, init)
    result = cli("plan", path)  # CliRunner: not a terminal, the plain text
    assert result.exit_code == 0, result.output
    resolved = run_a.resolve()
    assert f"warm start: from run ../a (resolved: {resolved}); {training}" in result.output
    assert f"  shared_0 (model.shared[0]) starts from ../a: {training}" in result.output
    result = cli("plan", path, "--json")
    w = json.loads(result.output)["warm_start"]
    assert w["run"] == "../a" and w["resolved"] == str(resolved) and w["layers"] == ["shared_0"]
    assert w["freeze"] is (init == FROZEN) and w["training"] == training


def test_plan_like_validate_refuses_a_missing_source_run(tmp_path, cli):
    write_tiny_csv(tmp_path / "tiny.csv")
    path = tmp_path / "recipe.yaml"
    path.write_text(_with(TINY_RECIPE, "  init_from: {run: runs/nope}\n"))
    for command in ("plan", "validate"):
        result = cli(command, path)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"{path}:{_line(path, 'init_from')}" in result.output
        assert f"no such run directory: {tmp_path / 'runs' / 'nope'}" in result.output


def test_plan_says_frozen_for_the_first_n_epochs_when_freeze_epochs_is_set():
    from types import SimpleNamespace

    from mtlcli.run.plan import warm_start

    layer = SimpleNamespace(name="shared_0")
    model = SimpleNamespace(named_parts=lambda layers: [layer])
    record = {"run": "/runs/a", "model": "/runs/a/model.keras", "copied": ["model.shared[0]"]}
    for epochs, freeze, want in (
        (2, False, "frozen for the first 2 epochs, then trained"),
        (1, False, "frozen for the first epoch, then trained"),
        (None, True, "frozen for the whole run"),
        (None, False, "trained from there"),
    ):
        spec = SimpleNamespace(run="../a", layers="shared", freeze=freeze, freeze_epochs=epochs)
        loaded = SimpleNamespace(recipe=SimpleNamespace(model=SimpleNamespace(init_from=spec)))
        w = warm_start(loaded, model, record)
        assert w["training"] == want and w["freeze_epochs"] == epochs and w["layers"] == ["shared_0"]
    assert (
        warm_start(
            SimpleNamespace(recipe=SimpleNamespace(model=SimpleNamespace(init_from=None))), model, None
        )
        is None
    )
