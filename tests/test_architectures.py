"""Multi-task architectures: recipe keys and errors (exact text), shapes, gates, the shared/task split,
serialization round trips, every strategy on every architecture, and ``mtl plan``."""

from __future__ import annotations

import copy
import json
import textwrap

import numpy as np
import pytest

from mtlcli import recipe as R
from mtlcli.errors import RecipeError

from .conftest import TINY_RECIPE

EXPERT = "[{dense: {units: 8, activation: relu}}]"
#: The model section of the tiny recipe for each architecture (``flag`` also reads ``kind``'s output).
MODELS = {
    "hard_sharing": "",
    "mmoe": f"  architecture: mmoe\n  experts: {{count: 3, layers: {EXPERT}}}\n",
    "cgc": f"  architecture: cgc\n  task_experts: 2\n  experts: {{count: 2, layers: {EXPERT}}}\n",
    "ple": f"  architecture: ple\n  levels: 3\n  experts: {{count: 2, layers: {EXPERT}}}\n",
    "cross_stitch": "  architecture: cross_stitch\n",
}
ARCHS = list(MODELS)


def recipe_text(arch: str, weighting: str = "static", inputs_from: bool = True) -> str:
    text = TINY_RECIPE.replace("model:\n", "model:\n" + MODELS[arch])
    if arch == "cross_stitch":  # two layers: one inner cross-stitch unit and the tasks' final ones
        text = text.replace(
            "    - dense: {units: 16, activation: relu}\n",
            "    - dense: {units: 16, activation: relu}\n    - dense: {units: 8, activation: relu}\n",
        )
    if inputs_from:
        text = text.replace("flag: {type: binary,", "flag: {type: binary, inputs_from: [kind],")
    return text.replace("weighting: static", f"weighting: {weighting}")


def problems(text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        R.loads(textwrap.dedent(text), file="r.yaml")
    return [p.render() for p in info.value.problems]


BASE = """\
data: {train: x.csv, inputs: {a: numeric}}
model:
%s
  tasks:
    click: {type: binary}
    buy: {type: binary}
"""


# ------------------------------------------------------------------------------------------------
# Recipe (no TensorFlow)


def test_architecture_defaults_are_resolved():
    r = R.loads(recipe_text("ple"), file="r.yaml").recipe
    assert r.model.architecture_spec() == {
        "name": "ple",
        "experts": {"count": 2, "layers": [{"dense": {"units": 8, "activation": "relu"}}]},
        "task_experts": 1,
        "levels": 3,
    }
    resolved = r.resolved()["model"]
    assert resolved["architecture"] == "ple" and resolved["task_experts"] == 1 and resolved["levels"] == 3
    assert resolved["tasks"]["flag"]["inputs_from"] == ["kind"]
    again = R.loads(json.dumps(r.resolved()), file="resolved.yaml").recipe
    assert again.resolved() == r.resolved()
    plain = R.loads(TINY_RECIPE, file="r.yaml").recipe
    assert plain.model.architecture_spec() == {"name": "hard_sharing"}
    assert not {"experts", "task_experts", "levels"} & set(plain.resolved()["model"])
    cgc = R.loads(recipe_text("cgc").replace("  task_experts: 2\n", ""), file="r.yaml").recipe
    assert (
        cgc.model.architecture_spec()["task_experts"] == 1 and "levels" not in cgc.model.architecture_spec()
    )


def test_unknown_architecture():
    assert problems(BASE % "  architecture: mmoee") == [
        "r.yaml:3 model.architecture: expected one of hard_sharing, mmoe, cgc, ple, cross_stitch, aitm; "
        "received text ('mmoee'); did you mean 'mmoe'?"
    ]


def test_expert_architectures_need_experts():
    assert problems(BASE % "  architecture: cgc") == [
        "r.yaml:3 model.architecture: the cgc architecture needs model.experts, e.g. "
        "experts: {count: 4, layers: [{dense: {units: 64, activation: relu}}]}"
    ]


def test_keys_of_another_architecture_are_refused():
    text = BASE % (
        "  architecture: mmoe\n  experts: {count: 2, layers: [flatten]}\n  task_experts: 2\n  levels: 2"
    )
    assert problems(text) == [
        "r.yaml:5 model.task_experts: task_experts applies to the cgc and ple architectures only; "
        "the architecture is 'mmoe'",
        "r.yaml:6 model.levels: levels applies to the ple architecture only; the architecture is 'mmoe'",
    ]
    assert problems(BASE % "  experts: {count: 2, layers: [flatten]}") == [
        "r.yaml:3 model.experts: experts apply to the mmoe, cgc and ple architectures only; "
        "the architecture is 'hard_sharing'"
    ]


def test_expert_layers_are_checked():
    assert problems(BASE % "  architecture: mmoe\n  experts: {count: 0, layers: []}") == [
        "r.yaml:4 model.experts.count: expected a value >= 1, received 0",
        "r.yaml:4 model.experts.layers: expected at least one layer in each expert",
    ]
    assert problems(
        BASE % "  architecture: mmoe\n  experts:\n    cout: 2\n    layers: [{dens: {units: 3}}]"
    ) == [
        "r.yaml:5 model.experts.cout: unknown key 'cout'; did you mean 'count'?",
        "r.yaml:6 model.experts.layers[0].dens: unknown layer 'dens'; did you mean 'dense'?",
    ]
    assert problems(BASE % "  architecture: ple\n  experts: {count: 2}\n  levels: 0") == [
        "r.yaml:4 model.experts.layers: required key is missing",
        "r.yaml:5 model.levels: expected a value >= 1, received 0",
    ]


def test_cross_stitch_needs_layers_and_two_tasks():
    text = "data: {train: x.csv, inputs: {a: numeric}}\nmodel:\n  architecture: cross_stitch\n"
    text += "  tasks:\n    click: {type: binary}\n"
    assert problems(text) == [
        "r.yaml:3 model.shared: cross_stitch replicates model.shared once per task: expected at least one layer",
        "r.yaml:4 model.tasks: cross_stitch mixes one column per task: expected at least two tasks, received 1",
    ]


def test_inputs_from_names_and_cycles():
    text = """\
    data: {train: x.csv, inputs: {a: numeric}}
    model:
      tasks:
        click: {type: binary, inputs_from: [buy]}
        buy: {type: binary, inputs_from: [clik, buy, view]}
        view: {type: binary, inputs_from: [click, click]}
    """
    assert problems(text) == [
        "r.yaml:4 model.tasks.click.inputs_from: tasks read each other's outputs in a cycle: "
        "click -> buy -> view -> click",
        "r.yaml:5 model.tasks.buy.inputs_from[0]: unknown task 'clik'; did you mean 'click'? "
        "(tasks: click, buy, view)",
        "r.yaml:5 model.tasks.buy.inputs_from[1]: task 'buy' cannot read its own output",
        "r.yaml:6 model.tasks.view.inputs_from[1]: task 'click' is listed twice",
    ]
    two = "data: {train: x.csv, inputs: {a: numeric}}\nmodel:\n  tasks:\n"
    two += "    p: {type: binary, inputs_from: [q]}\n    q: {type: binary, inputs_from: [p]}\n"
    assert problems(two) == [
        "r.yaml:4 model.tasks.p.inputs_from: tasks read each other's outputs in a cycle: p -> q -> p"
    ]


def test_recipe_error_from_the_cli_exits_2(cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(BASE % "  architecture: mmoe")
    for command in ("validate", "plan"):
        result = cli(command, path)
        assert result.exit_code == 2
        assert "model.architecture: the mmoe architecture needs model.experts" in result.output
        assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------
# Models

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtlcli import data, fsio  # noqa: E402
from mtlcli.model import architectures as arch  # noqa: E402
from mtlcli.model import train_step as mtl_model  # noqa: E402
from mtlcli.model.build import build_model  # noqa: E402
from mtlcli.run import evaluate as run_eval  # noqa: E402


def build(tmp_path, name: str, weighting: str = "static", inputs_from: bool = True):
    from .conftest import add_primary, write_tiny_csv

    if not (tmp_path / "tiny.csv").exists():
        write_tiny_csv(tmp_path / "tiny.csv")
    text = add_primary(recipe_text(name, weighting, inputs_from), weighting)  # pcd needs train.primary
    loaded = R.loads(text, file="r.yaml", base_dir=tmp_path)
    prepared = data.prepare(loaded)
    return prepared, build_model(loaded, prepared, seed=3)


def _ids(variables) -> set:
    return {id(v) for v in variables}


@pytest.mark.parametrize("name", ARCHS)
def test_shapes_split_and_representation(tmp_path, name):
    prepared, model = build(tmp_path, name)
    x = prepared.splits["train"].x
    out = model(x)
    assert list(out) == ["kind", "flag", "value"]
    assert out["kind"].shape == (90, 3) and out["flag"].shape == (90, 1) and out["value"].shape == (90, 1)
    z = model.represent(x)
    assert z.shape == (90, model.representation_shape[-1])
    for t in out:
        np.testing.assert_allclose(model.heads_from(z)[t].numpy(), out[t].numpy(), rtol=1e-6)
    # The partition: shared, task-specific and strategy parameters, disjoint, covering everything.
    shared, heads = _ids(model.shared_variables), _ids(model.head_variables)
    per_task = [_ids(model.task_variables(t)) for t in model.task_names]
    assert shared and heads and not shared & heads
    assert heads == set().union(*per_task) and sum(map(len, per_task)) == len(heads)
    assert shared | heads | _ids(model.strategy_params.values()) == _ids(model.trainable_variables)
    assert list(model.heads) == model.task_names


@pytest.mark.parametrize("name", ARCHS)
def test_task_variables_only_serve_their_task_and_z_is_the_only_path(tmp_path, name):
    """A task's own variables get no gradient from another task's loss (except through inputs_from),
    and no gradient reaches the shared variables unless it flows through z."""
    prepared, model = build(tmp_path, name)
    arr = prepared.splits["train"]
    with tf.GradientTape(persistent=True) as tape:
        z = model.represent(arr.x, training=False)
        losses, _ = model.task_losses(arr.y, model.heads_from(z), arr.mask)
        losses = tf.unstack(losses)  # inside the tape, so each task's loss can be differentiated
        total = tf.add_n(losses)
        cut, _ = model.task_losses(arr.y, model.heads_from(tf.stop_gradient(z)), arr.mask)
    reads = {"flag": {"kind"}}  # flag reads kind's output: flag's loss reaches kind's variables
    for i, loss_task in enumerate(model.task_names):
        for owner in model.task_names:
            grads = tape.gradient(losses[i], model.task_variables(owner))
            touched = any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
            assert touched == (owner == loss_task or owner in reads.get(loss_task, set())), (loss_task, owner)
    assert all(g is None for g in tape.gradient(cut, model.shared_variables))
    assert any(g is not None for g in tape.gradient(total, model.shared_variables))


@pytest.mark.parametrize("name", ["mmoe", "cgc", "ple"])
def test_gate_weights_sum_to_one(tmp_path, name):
    prepared, model = build(tmp_path, name)
    gates = model.gate_weights(prepared.splits["train"].x)
    expected = {
        "mmoe": {t: 3 for t in model.task_names},
        "cgc": {t: 4 for t in model.task_names},
        "ple": {
            **{f"level_{i}/{t}": 3 for i in (0, 1) for t in model.task_names},
            **{f"level_{i}/shared": 5 for i in (0, 1)},
            **{t: 3 for t in model.task_names},
        },
    }[name]
    assert {k: v.shape[1] for k, v in gates.items()} == expected
    for w in gates.values():
        w = w.numpy()
        assert (w > 0).all()
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)


def test_cross_stitch_starts_near_identity(tmp_path):
    _, model = build(tmp_path, "cross_stitch")
    np.testing.assert_allclose(
        model.stitches[0].alpha.numpy(),
        [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]],
        rtol=1e-6,
    )
    np.testing.assert_allclose(model.task_blocks["flag"].alpha.numpy(), [[0.05, 0.9, 0.05]], rtol=1e-6)
    unit = arch.CrossStitch(2, self_weight=0.9)
    unit.build([(None, 2), (None, 2)])
    a, b = unit([tf.constant([[1.0, 2.0]]), tf.constant([[10.0, 20.0]])])
    np.testing.assert_allclose(a.numpy(), [[1.9, 3.8]], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), [[9.1, 18.2]], rtol=1e-6)


@pytest.mark.parametrize("name", ARCHS)
def test_model_keras_round_trip_safe_mode(tmp_path, name):
    prepared, model = build(tmp_path, name, weighting="pcgrad")
    arr = prepared.splits["train"]
    model.train_step((arr.x, arr.y, arr.mask))
    path = tmp_path / "model.keras"
    fsio.save_model_atomic(model, path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, mtl_model.MultiTaskModel) and loaded.architecture == name
    before, after = model(arr.x), loaded(arr.x)
    for t in before:
        np.testing.assert_array_equal(before[t].numpy(), after[t].numpy())
    assert run_eval.load_model(path).spec["architecture"] == model.spec["architecture"]


def test_blocks_serialize_with_their_config():
    x = tf.random.stateless_normal((4, 5), seed=[1, 2])
    expert = [{"dense": {"units": 3, "activation": "relu"}}]
    cases = [
        (arch.LayerStack(expert, name="s"), x, (None, 5)),
        (arch.Experts(2, expert, name="e"), x, (None, 5)),
        (arch.Gate(2, name="g"), [x, tf.ones((4, 2, 3))], [(None, 5), (None, 2, 3)]),
        (arch.TaskExtraction(2, 1, expert, name="t"), [x, tf.ones((4, 2, 3))], [(None, 5), (None, 2, 3)]),
        (arch.ExtractionLevel(["a", "b"], 2, 1, expert, name="l"), [x, x, x], [(None, 5)] * 3),
        (arch.CrossStitch(2, rows=[1], name="c"), [x, 2 * x], [(None, 5)] * 2),
    ]
    for layer, inputs, shape in cases:
        layer.build(shape)
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
        if not clone.built:
            clone.build(shape)
        clone.set_weights(layer.get_weights())
        for a, b in zip(keras.tree.flatten(layer(inputs)), keras.tree.flatten(clone(inputs)), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert keras.saving.get_registered_name(type(layer)).startswith("mtl>")


def test_spec_without_architecture_is_hard_sharing(tmp_path):
    """model.keras files written before architectures existed keep loading."""
    prepared, model = build(tmp_path, "hard_sharing", inputs_from=False)
    spec = copy.deepcopy(model.spec)
    del spec["architecture"]
    for t in spec["tasks"].values():
        del t["inputs_from"]
    old = mtl_model.MultiTaskModel(spec, name="mtl_model")
    old.build()
    old.set_weights(model.get_weights())
    x = prepared.splits["train"].x
    np.testing.assert_array_equal(old(x)["value"].numpy(), model(x)["value"].numpy())


def _image_spec(model, name: str, shared: list, extra: dict) -> dict:
    spec = copy.deepcopy(model.spec)
    spec["inputs"] = {"img": "image"}
    spec["input_shapes"] = {"img": [8, 8, 1]}
    spec["shared"] = shared
    spec["architecture"] = {"name": name, **extra}
    return spec


@pytest.mark.parametrize("name", ["mmoe", "ple", "cross_stitch"])
def test_image_input_with_convolutional_experts_and_columns(tmp_path, name):
    _, base = build(tmp_path, "hard_sharing")
    conv = [{"conv2d": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}}]
    if name == "cross_stitch":
        spec = _image_spec(base, name, [*conv, "flatten", {"dense": {"units": 6}}], {})
    else:
        experts = {"count": 2, "layers": [*conv, {"max_pooling2d": {}}]}
        extra = (
            {"experts": experts, "task_experts": 1, "levels": 2} if name == "ple" else {"experts": experts}
        )
        spec = _image_spec(base, name, [], extra)
    for t in spec["tasks"].values():
        t["head"] = ["flatten"] if name != "cross_stitch" and not t.get("inputs_from") else []
    model = mtl_model.MultiTaskModel(spec, name="mtl_model")
    model.build()
    x = {"img": tf.random.stateless_uniform((5, 8, 8, 1), seed=[3, 4])}
    out = model(x)
    assert out["kind"].shape == (5, 3) and out["flag"].shape == (5, 1)
    z = model.represent(x)
    np.testing.assert_allclose(model.heads_from(z)["value"].numpy(), out["value"].numpy(), rtol=1e-6)


FAST_STRATEGIES = ["static", "uncertainty", "pcgrad", "{mgda: {on: representation}}", "upgrad"]


def _one_step(tmp_path, name: str, weighting: str) -> None:
    prepared, model = build(tmp_path, name, weighting=weighting)
    arr = prepared.splits["train"]
    shared = model.shared_variables
    before = [v.numpy().copy() for v in shared]
    batch = (arr.x, arr.y, arr.mask)
    if model.strategy.needs_validation:  # Auto-Lambda: a validation batch with the training batch
        val = prepared.splits["validation"]
        batch = (batch, (val.x, val.y, val.mask))
    logs = model.train_step(batch)
    assert all(np.isfinite(float(np.asarray(v).reshape(-1)[0])) for v in logs.values()), logs
    moved = [not np.allclose(b, v.numpy()) for b, v in zip(before, shared, strict=True)]
    assert sum(moved) >= len(moved) // 2, (name, weighting, moved)
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)


@pytest.mark.parametrize("weighting", FAST_STRATEGIES)
@pytest.mark.parametrize("name", ARCHS)
def test_strategy_trains_a_step_on_every_architecture(tmp_path, name, weighting):
    _one_step(tmp_path, name, weighting)


def _all_strategies() -> list[str]:
    from mtlcli import weighting

    return [s for s in weighting.available() if s not in FAST_STRATEGIES]


@pytest.mark.slow
@pytest.mark.parametrize("weighting", _all_strategies())
@pytest.mark.parametrize("name", ARCHS)
def test_every_strategy_trains_a_step_on_every_architecture(tmp_path, name, weighting):
    _one_step(tmp_path, name, weighting)


# ------------------------------------------------------------------------------------------------
# mtl plan


def test_plan_counts_parameters_and_resolves_weights(cli, tmp_path):
    from .conftest import write_tiny_csv

    write_tiny_csv(tmp_path / "tiny.csv")
    path = tmp_path / "r.yaml"
    path.write_text(
        recipe_text("cgc").replace(
            "value: {type: regression, metrics: [mae]}", "value: {type: regression, weight: 2}"
        )
    )
    result = cli("plan", path, "--json")
    assert result.exit_code == 0, result.output
    p = json.loads(result.output)
    assert p["architecture"] == {
        "name": "cgc",
        "experts": {"count": 2, "layers": [{"dense": {"units": 8, "activation": "relu"}}]},
        "task_experts": 2,
    }
    params = p["params"]
    assert (
        params["shared"] + sum(params[t] for t in ("kind", "flag", "value")) + params["strategy"]
        == params["total"]
    )
    # shared: bottom dense 6->16 (112) + 2 experts 16->8 (136 each); kind: 2 own experts (272) + gate
    # 16->4 (68) + output 8->3 (27)
    assert params["shared"] == 112 + 2 * 136 and params["kind"] == 272 + 68 + 27
    assert p["representation"] == 2 * 8 + 16
    assert p["weights"] == pytest.approx({"kind": 0.25, "flag": 0.25, "value": 0.5})
    assert p["weights_fixed"] is True and p["eval_weights"] == pytest.approx(p["weights"])
    assert p["tasks"]["flag"]["inputs_from"] == ["kind"]
    text = cli("plan", path)
    assert text.exit_code == 0
    assert (
        "tiny: architecture cgc (2 shared experts per level, task_experts 2); 3 task(s); weighting static"
        in text.output
    )
    assert "objective: L = 0.25·ce(kind) + 0.25·bce(flag) + 0.5·mse(value)" in text.output
    assert "validation loss: L = 0.25·ce(kind) + 0.25·bce(flag) + 0.5·mse(value)" in text.output
    assert set(p["initial_losses"]) == {"kind", "flag", "value"} and p["batch"] == 32
    assert all(np.isfinite(v) and v > 0 for v in p["initial_losses"].values())
    # untrained 3-class softmax: about log 3
    assert abs(p["initial_losses"]["kind"] - np.log(3)) < 0.5
    assert "initial loss on the first batch (32 rows): kind " in text.output
    assert "parameters: shared 384; kind 367;" in text.output
    assert "flag also reads the output of kind" in text.output


def test_plan_of_a_gradient_strategy_on_the_representation(cli, tmp_path):
    from .conftest import write_tiny_csv

    write_tiny_csv(tmp_path / "tiny.csv")
    path = tmp_path / "r.yaml"
    path.write_text(recipe_text("mmoe", weighting="{mgda: {on: representation}}"))
    result = cli("plan", path)
    assert result.exit_code == 0, result.output
    assert (
        "objective: shared parameters: the gradient of sum_i w_i L_i, with the weights w that mgda computes "
        "each step from the 3 per-task gradients w.r.t. the representation z (40 features per example); "
        "each task's own parameters: the gradient of its own loss"
    ) in result.output
    assert "validation loss: L = 0.3333·ce(kind) + 0.3333·bce(flag) + 0.3333·mse(value)" in result.output


def test_plan_of_a_two_batch_strategy_says_where_its_weights_come_from(cli, tmp_path):
    from .conftest import write_tiny_csv

    write_tiny_csv(tmp_path / "tiny.csv")
    path = tmp_path / "r.yaml"
    path.write_text(recipe_text("hard_sharing", weighting="modo"))
    result = cli("plan", path)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert (
        "objective: shared parameters: the two half-batches' mean gradient of sum_i w_i L_i, with the weights "
        "w that modo computes each step from J1 J2ᵀ, the 3 per-task gradients of the"
    ) in text
    assert "on each half of the batch (two independent mini-batches)" in text


def test_plan_warns_when_initial_losses_differ_in_scale():
    from mtlcli.run.plan import scale_warning

    assert scale_warning({"a": 1.0, "b": 9.9}) is None
    assert scale_warning({"a": 0.0, "b": 50.0}) is None  # a task without labels in the batch reports 0
    assert scale_warning({"a": 0.5, "b": 6.0, "c": 1.0}) == (
        "the initial task losses differ by more than 10x (b 6 vs a 0.5): consider task weights or a "
        "loss-balancing strategy such as uncertainty or dwa"
    )
