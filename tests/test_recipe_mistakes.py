"""Mistakes that once crashed, passed ``validate`` and failed in ``train``, or were accepted silently.

Each is caught when the recipe is loaded -- so ``mtl validate`` and ``mtl train`` both exit 2 with one
message naming the line, and no traceback -- without importing TensorFlow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtlcli.cli import app

BASE = """\
name: mistakes
seed: 1
data:
  train: data.csv
  inputs:
    a: numeric
    c: categorical
model:
  shared:
    - {layer}
  tasks:
    cls: {{type: classification{cls_extra}}}
    y: {{type: regression{y_extra}}}
train:
  epochs: {epochs}
  batch_size: 16
  optimizer: {{adam: {{learning_rate: {lr}}}}}
"""
LAYER_LINE = 10


def recipe(tmp_path: Path, **over) -> Path:
    values = dict(layer="dense: {units: 8, activation: relu}", cls_extra="", y_extra="", epochs=2, lr=0.01)
    values.update(over)
    (tmp_path / "data.csv").write_text(
        "a,c,cls,y\n" + "".join(f"{i},{'xy'[i % 2]},{i % 3},{i}\n" for i in range(30))
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(BASE.format(**values))
    return path


CASES = {
    "dropout rate above one": (
        dict(layer="dropout: {rate: 1.5}"),
        LAYER_LINE,
        "model.shared[0].dropout.rate: Dropout rate: expected a number in [0, 1), received a number (1.5)",
    ),
    "zero units": (
        dict(layer="dense: {units: 0}"),
        LAYER_LINE,
        "Dense units: expected an integer between 1 and 2147483647, received 0",
    ),
    "units as text": (
        dict(layer="dense: {units: many}"),
        LAYER_LINE,
        "Dense units: expected an integer >= 1, received text ('many')",
    ),
    "billion-digit units": (
        dict(layer="dense: {units: 100000000000000000000}"),
        LAYER_LINE,
        "Dense units: expected an integer between 1 and 2147483647",
    ),
    "activation typo": (
        dict(layer="dense: {units: 8, activation: rleu}"),
        LAYER_LINE,
        "Dense activation: unknown activation 'rleu'; did you mean 'relu'?",
    ),
    "initializer typo": (
        dict(layer="dense: {units: 8, kernel_initializer: glorot_unifrm}"),
        LAYER_LINE,
        "unknown initializer 'glorot_unifrm'; did you mean 'glorot_uniform'?",
    ),
    "regularizer unknown": (
        dict(layer="dense: {units: 8, kernel_regularizer: l3}"),
        LAYER_LINE,
        "Dense kernel_regularizer: unknown regularizer 'l3'",
    ),
    "padding typo": (
        dict(layer="conv1d: {filters: 4, kernel_size: 3, padding: sme}"),
        LAYER_LINE,
        "Conv1D padding: expected one of valid, same, causal; received 'sme'; did you mean 'same'?",
    ),
    "boolean for a boolean-less argument": (
        dict(layer="dense: {units: 8, use_bias: 1}"),
        LAYER_LINE,
        "Dense use_bias: expected true or false, received a number (1)",
    ),
    "infinite learning rate": (
        dict(lr="1e400"),
        17,
        "train.optimizer.adam.learning_rate: expected a finite number",
    ),
    "yaml infinity": (dict(lr=".inf"), 17, "train.optimizer.adam.learning_rate: expected a finite number"),
    "epochs true": (dict(epochs="true"), 15, "train.epochs: expected an integer, received a boolean (true)"),
    "epochs beyond int32": (
        dict(epochs="100000000000000000000000000000"),
        15,
        "train.epochs: expected a value <= 2147483647, received 100000000000000000000000000000",
    ),
    "every weight zero": (
        dict(cls_extra=", weight: 0", y_extra=", weight: 0.0"),
        11,
        "model.tasks: every task has weight 0, so the run would train nothing",
    ),
}


@pytest.mark.parametrize("command", ["validate", "train"])
@pytest.mark.parametrize("case", list(CASES))
def test_mistake_is_caught_at_load(tmp_path, command, case):
    over, line, message = CASES[case]
    path = recipe(tmp_path, **over)
    args = [command, str(path)] + (["--output", str(tmp_path / "out")] if command == "train" else [])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert f"recipe.yaml:{line} " in res.output, res.output
    assert message in res.output, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("seed: -1\n", 2, "seed: expected a value >= 0, received -1"),
        ("seed: 1000000000000000000000000000000\n", 2, "seed: expected a value <= 4294967295"),
        ("seed: true\n", 2, "seed: expected an integer, received a boolean (true)"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "train"])
def test_seed_range(tmp_path, command, text, line, message):
    path = recipe(tmp_path)
    path.write_text(path.read_text().replace("seed: 1\n", text))
    res = CliRunner().invoke(app, [command, str(path)])
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    assert f"recipe.yaml:{line} {message}" in res.output, res.output


@pytest.mark.parametrize("flag", [["--seed", "-1"], ["--seed", "4294967296"], ["--epochs", "0"]])
def test_seed_and_epochs_flags_are_ranged(tmp_path, flag):
    res = CliRunner().invoke(app, ["train", str(recipe(tmp_path)), *flag])
    assert res.exit_code == 2
    assert flag[0] in res.output
    assert "Traceback" not in res.output


def test_a_fine_recipe_still_validates(tmp_path):
    res = CliRunner().invoke(app, ["validate", str(recipe(tmp_path)), "--no-data"])
    assert res.exit_code == 0, res.output


def test_layer_argument_checks_import_no_tensorflow(tmp_path):
    path = recipe(tmp_path, layer="dense: {units: 8, activation: rleu}")
    code = (
        "import sys\nfrom mtlcli import recipe\ntry:\n    recipe.load(sys.argv[1])\nexcept recipe.RecipeError:\n"
        "    pass\nassert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
