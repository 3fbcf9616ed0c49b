"""``inputs_from`` reading another task's last hidden layer (``click.hidden``) as well as its output
(``click``): recipe errors (exact text), tower input sizes, which losses reach which variables on every
architecture, the shared/task partition, a train step, save/load with ``safe_mode=True`` and ``mtl plan``."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from mtlcli import recipe as R
from mtlcli.errors import RecipeError

from .conftest import TINY_RECIPE, write_tiny_csv
from .test_architectures import MODELS

ARCHS = list(MODELS)


def recipe_text(
    arch: str = "hard_sharing", flag_reads: str = "[kind.hidden, value]", weighting: str = "static"
):
    """The tiny recipe; ``kind`` gets a hidden layer of 5 units, ``flag`` reads ``flag_reads``."""
    text = TINY_RECIPE.replace("model:\n", "model:\n" + MODELS[arch])
    if arch == "cross_stitch":
        text = text.replace(
            "    - dense: {units: 16, activation: relu}\n",
            "    - dense: {units: 16, activation: relu}\n    - dense: {units: 8, activation: relu}\n",
        )
    text = text.replace(
        "kind: {type: classification}",
        "kind: {type: classification, head: [{dense: {units: 5, activation: relu}}]}",
    )
    text = text.replace("flag: {type: binary,", f"flag: {{type: binary, inputs_from: {flag_reads},")
    return text.replace("weighting: static", f"weighting: {weighting}")


def problems(text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        R.loads(textwrap.dedent(text), file="r.yaml")
    return [p.render() for p in info.value.problems]


TASKS = """\
data: {train: x.csv, inputs: {a: numeric}}
model:
  tasks:
    click: {type: binary, head: [{dense: {units: 4}}]%s}
    buy: {type: binary%s}
"""


def with_deps(click: str = "", buy: str = "") -> str:
    return TASKS % (f", inputs_from: {click}" if click else "", f", inputs_from: {buy}" if buy else "")


# ------------------------------------------------------------------------------------------------
# Recipe (no TensorFlow)


def test_hidden_and_output_dependencies_are_accepted():
    r = R.loads(with_deps(buy="[click.hidden, click]"), file="r.yaml").recipe
    assert r.model.tasks["buy"].inputs_from == ["click.hidden", "click"]
    assert R.dependencies(["click.hidden", "click"]) == [("click", "hidden"), ("click", "output")]
    assert R.dependencies(None) == []
    assert r.resolved()["model"]["tasks"]["buy"]["inputs_from"] == ["click.hidden", "click"]


def test_dependency_errors():
    assert problems(with_deps(buy="[clik.hidden, buy.hidden, click.hiden, click.hidden, click.hidden]")) == [
        "r.yaml:5 model.tasks.buy.inputs_from[0]: unknown task 'clik'; did you mean 'click'? (tasks: click, buy)",
        "r.yaml:5 model.tasks.buy.inputs_from[1]: task 'buy' cannot read its own hidden layer",
        "r.yaml:5 model.tasks.buy.inputs_from[2]: expected click (its output) or click.hidden (its last hidden "
        "layer), received 'click.hiden'; did you mean 'click.hidden'?",
        "r.yaml:5 model.tasks.buy.inputs_from[4]: 'click.hidden' is listed twice",
    ]
    assert problems(with_deps(buy="[click.output, click.]")) == [
        "r.yaml:5 model.tasks.buy.inputs_from[0]: expected click (its output) or click.hidden (its last hidden "
        "layer), received 'click.output'",
        "r.yaml:5 model.tasks.buy.inputs_from[1]: expected click (its output) or click.hidden (its last hidden "
        "layer), received 'click.'; did you mean 'click.hidden'?",
    ]
    # a cycle through a hidden layer is a cycle too
    assert problems(with_deps(click="[buy]", buy="[click.hidden]")) == [
        "r.yaml:4 model.tasks.click.inputs_from: tasks read each other's outputs in a cycle: click -> buy -> click"
    ]


def test_dependency_errors_from_the_cli_exit_2(cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(with_deps(buy="[click.hiden]"))
    result = cli("validate", path)
    assert result.exit_code == 2
    assert (
        "model.tasks.buy.inputs_from[0]: expected click (its output) or click.hidden (its last hidden layer), "
        "received 'click.hiden'; did you mean 'click.hidden'?"
    ) in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------
# Models

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtlcli import data, fsio  # noqa: E402
from mtlcli.model import train_step as mtl_model  # noqa: E402
from mtlcli.model.build import build_model  # noqa: E402


def build(
    tmp_path, arch: str = "hard_sharing", flag_reads: str = "[kind.hidden, value]", weighting: str = "static"
):
    if not (tmp_path / "tiny.csv").exists():
        write_tiny_csv(tmp_path / "tiny.csv")
    loaded = R.loads(recipe_text(arch, flag_reads, weighting), file="r.yaml", base_dir=tmp_path)
    prepared = data.prepare(loaded)
    return prepared, build_model(loaded, prepared, seed=3)


def _ids(variables) -> set:
    return {id(v) for v in variables}


def _touched(grads) -> bool:
    return any(g is not None and float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))) > 0 for g in grads)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_hidden_layer_feeds_the_reader_and_gradients_stop_before_the_output_layer(tmp_path, arch):
    prepared, model = build(tmp_path, arch)
    arr = prepared.splits["train"]
    # flag's first layer reads its own base, kind's 5 hidden units and value's 1 output
    base = model.towers["kind"][0].kernel.shape[0]  # kind's head reads the same kind of base as flag's
    assert model.towers["flag"][0].kernel.shape[0] == base + 5 + 1
    assert model.head_order.index("flag") > max(
        model.head_order.index("kind"), model.head_order.index("value")
    )
    out = model(arr.x)
    z = model.represent(arr.x)
    for t in out:
        np.testing.assert_allclose(model.heads_from(z)[t].numpy(), out[t].numpy(), rtol=1e-6)
    # the partition is unchanged: every variable is shared, one task's own, or the strategy's
    shared, heads = _ids(model.shared_variables), _ids(model.head_variables)
    per_task = [_ids(model.task_variables(t)) for t in model.task_names]
    assert not shared & heads and sum(map(len, per_task)) == len(heads)
    assert shared | heads | _ids(model.strategy_params.values()) == _ids(model.trainable_variables)
    with tf.GradientTape(persistent=True) as tape:
        losses = tf.unstack(model.task_losses(arr.y, model.heads_from(model.represent(arr.x)), arr.mask)[0])
    flag = losses[model.task_names.index("flag")]
    kind_hidden = model.towers["kind"][0].trainable_variables
    kind_output = model.towers["kind"][-1].trainable_variables
    assert _touched(tape.gradient(flag, kind_hidden))  # flag's loss reaches kind's hidden layer ...
    assert not _touched(tape.gradient(flag, kind_output))  # ... not kind's output layer
    assert _touched(tape.gradient(flag, model.towers["value"][-1].trainable_variables))  # value's output
    for i, loss_task in enumerate(model.task_names):  # kind and value read nobody
        if loss_task != "flag":
            for owner in model.task_names:
                touched = _touched(tape.gradient(losses[i], model.task_variables(owner)))
                assert touched == (owner == loss_task), (loss_task, owner)


@pytest.mark.parametrize("arch", ARCHS)
def test_train_step_and_safe_mode_round_trip(tmp_path, arch):
    prepared, model = build(tmp_path, arch, weighting="pcgrad")
    arr = prepared.splits["train"]
    hidden = model.towers["kind"][0].kernel
    before = hidden.numpy().copy()
    logs = model.train_step((arr.x, arr.y, arr.mask))
    assert np.isfinite(float(logs["loss"])) and not np.allclose(before, hidden.numpy())
    path = tmp_path / "model.keras"
    fsio.save_model_atomic(model, path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    a, b = model(arr.x), loaded(arr.x)
    for t in a:
        np.testing.assert_array_equal(a[t].numpy(), b[t].numpy())


@pytest.mark.parametrize("weighting", ["pcgrad", "static"])
def test_a_read_hidden_layer_gets_the_gradient_of_both_losses(tmp_path, weighting):
    """The train step gives kind's hidden layer the gradient of kind's + flag's loss (both reach it) and
    kind's output layer that of kind's loss alone: plain sums for a gradient-based strategy (each task's
    own variables get the gradient of the losses that reach them), weighted by the normalised static
    weights (1/3 each) for static."""
    prepared, model = build(tmp_path, "mmoe", weighting=weighting)
    arr = prepared.splits["train"]
    hidden, output = model.towers["kind"][0].kernel, model.towers["kind"][-1].kernel
    w = 1.0 if weighting == "pcgrad" else 1.0 / 3.0
    with tf.GradientTape(persistent=True) as tape:
        preds = model.heads_from(model.represent(arr.x, training=True), training=True)
        losses = tf.unstack(model.task_losses(arr.y, preds, arr.mask)[0])
        k, f = model.task_names.index("kind"), model.task_names.index("flag")
        both = w * (losses[k] + losses[f])
        own = w * losses[k]
    expected_hidden = tape.gradient(both, [hidden])[0].numpy()
    expected_output = tape.gradient(own, [output])[0].numpy()
    seen = {}
    model.optimizer.build(model.trainable_variables)
    apply = model.optimizer.apply

    def capture(grads, variables):
        seen.update({id(v): np.asarray(g) for g, v in zip(grads, variables, strict=True)})
        return apply(grads, variables)

    model.optimizer.apply = capture
    model.train_step((arr.x, arr.y, arr.mask))
    np.testing.assert_allclose(seen[id(hidden)], expected_hidden, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(seen[id(output)], expected_output, rtol=1e-5, atol=1e-7)
    assert np.abs(expected_hidden - tape.gradient(own, [hidden])[0].numpy()).max() > 1e-6  # flag adds


def test_the_hidden_layer_of_a_task_without_a_head_is_its_output_layers_input(tmp_path):
    """value has no head: value.hidden is the input of value's output layer (here the trunk's output)."""
    prepared, model = build(tmp_path, flag_reads="[value.hidden]")
    assert model.towers["flag"][0].kernel.shape[0] == 16 + 16
    assert model(prepared.splits["train"].x)["flag"].shape == (prepared.splits["train"].n, 1)


def test_reading_a_task_that_reads_another_task(tmp_path):
    """A chain: value reads flag's hidden layer, flag reads kind's: kind, flag, value in that order."""
    text = recipe_text(flag_reads="[kind.hidden]").replace(
        "value: {type: regression,", "value: {type: regression, inputs_from: [flag.hidden, kind],"
    )
    write_tiny_csv(tmp_path / "tiny.csv")
    loaded = R.loads(text, file="r.yaml", base_dir=tmp_path)
    model = build_model(loaded, data.prepare(loaded), seed=3)
    assert model.head_order == ["kind", "flag", "value"]
    assert model.towers["value"][0].kernel.shape[0] == 16 + 8 + 3  # trunk, flag's hidden 8, kind's 3 logits


def test_old_specs_with_plain_names_build_the_same_model(tmp_path):
    """``inputs_from: [kind]`` (an output) builds exactly as before hidden layers could be read."""
    prepared, model = build(tmp_path, flag_reads="[kind]")
    assert model._inputs_from("flag") == [("kind", "output")]
    assert model.towers["flag"][0].kernel.shape[0] == 16 + 3
    spec = json.loads(json.dumps(model.spec))
    clone = mtl_model.MultiTaskModel(spec, name="mtl_model")
    clone.build()
    clone.set_weights(model.get_weights())
    x = prepared.splits["train"].x
    np.testing.assert_array_equal(clone(x)["flag"].numpy(), model(x)["flag"].numpy())


def test_plan_describes_hidden_dependencies(cli, tmp_path):
    write_tiny_csv(tmp_path / "tiny.csv")
    path = tmp_path / "r.yaml"
    path.write_text(recipe_text())
    result = cli("plan", path)
    assert result.exit_code == 0, result.output
    assert "flag also reads the output of value and the last hidden layer of kind" in result.output
    p = json.loads(cli("plan", path, "--json").output)
    assert p["tasks"]["flag"]["inputs_from"] == ["kind.hidden", "value"]
    # flag: dense (16 + 5 + 1) -> 8 and output 8 -> 1
    assert p["params"]["flag"] == (22 * 8 + 8) + (8 + 1)
