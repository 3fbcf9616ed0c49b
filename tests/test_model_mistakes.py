"""Model mistakes caught before anything is allocated: a model too big for the machine's memory.

The estimate (:mod:`mtlcli.model.size`, no TensorFlow) is checked against Keras's own
``count_params()`` on real models; the refusal through ``mtl validate`` and ``mtl train`` (exit 2, the
message, the layer's own line, no traceback, no run directory).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.errors import RecipeError
from mtlcli.model import size

from .conftest import TINY_RECIPE, write_tiny_csv
from .test_architectures import ARCHS, recipe_text

HUGE = TINY_RECIPE.replace("units: 16", "units: 1000000000")

IMAGE = """\
data:
  train: img.npz
  inputs: {image: {kind: image, shape: [8, 8, 1]}}
model:
  shared:
SHARED
  tasks:
    left: {type: classification}
    right: {type: binary, head: [{dense: {units: 3}}]}
"""
#: Layer kinds the estimate knows, in shapes that exercise strides, padding, groups, axes and copies.
CONV = """\
    - conv2d: {filters: 4, kernel_size: 3, strides: 2, padding: same, activation: relu}
    - max_pooling2d: {pool_size: 2, padding: same}
    - conv2d: {filters: 6, kernel_size: [2, 1], use_bias: false}
    - average_pooling2d: {pool_size: 1, strides: 1}
    - batch_normalization: {axis: 3}
    - global_average_pooling2d
    - prelu
    - repeat_vector: {n: 5}
    - conv1d: {filters: 3, kernel_size: 2, padding: causal, groups: 3}
    - simple_rnn: {units: 4, return_sequences: true}
    - rms_normalization
    - flatten
    - dense: {units: 16, activation: relu}
"""
CHANNELS_FIRST = """\
    - reshape: {target_shape: [1, 8, 8]}
    - conv2d: {filters: 4, kernel_size: 3, data_format: channels_first}
    - max_pooling2d: {data_format: channels_first}
    - prelu: {shared_axes: [2, 3]}
    - global_max_pooling2d: {data_format: channels_first, keepdims: true}
    - flatten
    - dense: {units: 16}
    - embedding: {input_dim: 7, output_dim: 2}
    - lstm: {units: 2, return_sequences: true}
    - layer_normalization: {axis: 1, center: false}
    - gru: {units: 3, reset_after: false}
    - dropout: {rate: 0.1}
"""


def _tiny(tmp_path, text: str):
    write_tiny_csv(tmp_path / "tiny.csv")
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def _image(tmp_path, shared: str):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", image=images, left=rng.integers(0, 3, 40), right=rng.integers(0, 2, 40))
    path = tmp_path / "recipe.yaml"
    path.write_text(IMAGE.replace("SHARED\n", shared))
    return path


def _keras_counts(loaded, prepared) -> tuple[int, int]:
    """Keras's count of every variable and of the trainable ones, less the strategy's own variables
    (a few values per task, which the estimate leaves out)."""
    from mtlcli.model.build import build_model

    model = build_model(loaded, prepared, 0)
    learned = sum(math.prod(v.shape) for v in model.strategy_params.values())
    state = sum(math.prod(v.shape) for v in model.strategy_state.values())
    trainable = sum(math.prod(v.shape) for v in model.trainable_variables)
    return model.count_params() - learned - state, trainable - learned


# ------------------------------------------------------------------------------------------------
# The estimate


@pytest.mark.parametrize(
    ("arch", "weighting"),
    [(a, "static") for a in ARCHS] + [("mmoe", "gradnorm"), ("hard_sharing", "uncertainty")],
)
def test_estimate_equals_keras_count_params_for_every_architecture(tmp_path, arch, weighting):
    loaded = R.load(_tiny(tmp_path, recipe_text(arch, weighting)))
    prepared = data.prepare(loaded)
    est = size.estimate(loaded.recipe, prepared.prep)
    assert est.complete
    assert (est.params, est.trainable) == _keras_counts(loaded, prepared)


def test_estimate_counts_embeddings_normalization_and_hidden_reads(tmp_path):
    text = (
        TINY_RECIPE.replace("color: categorical", "color: {kind: categorical, encoding: embedding, dim: 3}")
        .replace(
            "    - dense: {units: 16, activation: relu}\n",
            "    - dense: {units: 16, activation: relu}\n    - batch_normalization\n"
            "    - layer_normalization: {center: false}\n",
        )
        .replace("kind: {type: classification}", "kind: {type: classification, head: [{dense: {units: 5}}]}")
        .replace("flag: {type: binary,", "flag: {type: binary, inputs_from: [kind.hidden],")
    )
    loaded = R.load(_tiny(tmp_path, text))
    prepared = data.prepare(loaded)
    est = size.estimate(loaded.recipe, prepared.prep)
    assert est.complete and est.layers[("data", "inputs", "color")].params == 4 * 3  # 3 colours + unknown
    bn = est.layers[("model", "shared", 1)]
    assert (bn.trainable, bn.fixed) == (32, 32)  # gamma, beta; moving mean and variance
    assert (est.params, est.trainable) == _keras_counts(loaded, prepared)


@pytest.mark.parametrize("shared", [CONV, CHANNELS_FIRST], ids=["channels_last", "channels_first"])
def test_estimate_equals_keras_count_params_for_convolutions_and_recurrent_layers(tmp_path, shared):
    loaded = R.load(_image(tmp_path, shared))
    prepared = data.prepare(loaded)
    est = size.estimate(loaded.recipe, prepared.prep)
    assert est.complete
    assert (est.params, est.trainable) == _keras_counts(loaded, prepared)


def test_a_layer_it_cannot_estimate_gives_a_lower_bound_and_never_a_refusal(tmp_path):
    shared = (
        "    - conv2d: {filters: 4, kernel_size: 3}\n    - separable_conv2d: {filters: 4, kernel_size: 3}\n"
        "    - flatten\n    - dense: {units: 1000000000}\n"
    )
    loaded = R.load(_image(tmp_path, shared))
    prepared = data.prepare(loaded)
    est = size.estimate(loaded.recipe, prepared.prep)
    assert not est.complete
    assert est.layers[("model", "shared", 0, "conv2d", "filters")].params == 3 * 3 * 1 * 4 + 4
    assert ("model", "shared", 3, "dense", "units") not in est.layers  # after the unknown layer
    assert size.check(loaded, prepared.prep, memory=10**6) is not None  # the lower bound fits: no refusal


def test_copies_of_experts_and_columns_are_counted_on_the_layer_line(tmp_path):
    loaded = R.load(_tiny(tmp_path, recipe_text("ple", inputs_from=False)))  # levels 3, 2 experts, 1 own
    est = size.estimate(loaded.recipe, data.prepare(loaded).prep)
    expert = est.layers[("model", "experts", "layers", 0, "dense", "units")]
    tasks = 3
    assert expert.copies == 3 * (2 + tasks * 1)  # per level: 2 shared experts and each task's own one
    # the first level's 5 experts read the 16-wide trunk, the 10 above them an 8-wide expert output
    assert expert.params == 5 * (16 * 8 + 8) + 10 * (8 * 8 + 8)
    loaded = R.load(_tiny(tmp_path, recipe_text("cross_stitch", inputs_from=False)))
    est = size.estimate(loaded.recipe, data.prepare(loaded).prep)
    assert est.layers[("model", "shared", 0, "dense", "units")].copies == tasks  # one column per task
    assert est.layers[("model", "architecture")].params == 2 * tasks * tasks  # alpha of the 2 units


def test_bytes_are_weights_and_two_adam_slots_and_amsgrad_adds_one(tmp_path):
    est = size.Estimate()
    est.add(("a",), 10, fixed=4)
    assert est.bytes() == 4 * (14 + 2 * 10)
    assert est.bytes(slots=3) == 4 * (14 + 3 * 10)


def test_available_memory_is_the_smaller_of_the_machine_and_its_cgroup():
    import os

    memory = size.available_memory()
    assert memory is not None and 0 < memory <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_a_model_that_fits_is_not_refused_and_one_that_does_not_names_its_layers(tmp_path):
    loaded = R.load(_tiny(tmp_path, TINY_RECIPE))
    prep = data.prepare(loaded).prep
    est = size.check(loaded, prep, memory=10**9)
    with pytest.raises(RecipeError) as info:
        size.check(loaded, prep, memory=est.bytes() - 1)
    err = info.value
    assert err.exit_code == 2
    assert err.message.startswith(f"the model is too big for this machine: {est.params:,} parameters need ")
    first, second = err.problems[:2]  # the biggest first
    assert (first.path, first.line) == ("model.tasks.flag.head[0].dense.units", 15)
    assert (second.path, second.line) == ("model.shared[0].dense.units", 12)


# ------------------------------------------------------------------------------------------------
# Through the CLI

HEAD = re.compile(
    r"error: the model is too big for this machine: 19,000,000,023 parameters need 212\.3 GiB for the "
    r"weights and Adam's 2 slots per weight \(float32, also under mixed precision\), more than the "
    r"16\.0 GiB of memory here; make the layers below smaller"
)
FIRST = "recipe.yaml:15 model.tasks.flag.head[0].dense.units: 8,000,000,008 parameters, 89.4 GiB with Adam's slots"
SECOND = "recipe.yaml:12 model.shared[0].dense.units: 7,000,000,000 parameters, 78.2 GiB with Adam's slots"


@pytest.fixture
def sixteen_gib(monkeypatch):
    """This machine has 16 GiB (the message is then the same everywhere)."""
    monkeypatch.setattr(size, "available_memory", lambda: 16 * 2**30)


def _assert_refused(result) -> None:
    assert result.exit_code == 2, result.output
    out = result.output
    assert HEAD.search(out), out
    assert FIRST in out and SECOND in out
    assert "Traceback" not in out


def test_validate_refuses_a_model_too_big_for_the_machine(tmp_path, cli, monkeypatch, sixteen_gib):
    monkeypatch.chdir(tmp_path)
    path = _tiny(tmp_path, HUGE)
    _assert_refused(cli("validate", path.name))
    result = cli("validate", "--json", path.name)
    assert result.exit_code == 2
    payload = json.loads(result.output)
    assert payload["valid"] is False
    assert payload["problems"][1]["path"] == "model.shared[0].dense.units"
    assert payload["problems"][1]["line"] == 12
    assert cli("validate", "--no-data", path.name).exit_code == 0  # no data, no input widths: no estimate


def test_train_refuses_a_model_too_big_for_the_machine_before_building(
    tmp_path, cli, monkeypatch, sixteen_gib
):
    monkeypatch.chdir(tmp_path)
    path = _tiny(tmp_path, HUGE)
    _assert_refused(cli("train", path.name, "--output", "out"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_validate_refuses_what_no_machine_holds_with_the_real_memory(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wide = "    - dense: {units: 2147483647}\n"
    path = _tiny(tmp_path, TINY_RECIPE.replace("    - dense: {units: 16, activation: relu}\n", wide * 2))
    result = cli("validate", path.name)
    assert result.exit_code == 2 and "the model is too big for this machine" in result.output
    assert (
        "recipe.yaml:13 model.shared[1].dense.units: 4,611,686,016,279,904,256 parameters, 48.0 EiB"
        in result.output
    )


def test_a_task_reading_one_that_cannot_be_estimated_is_left_out_and_the_rest_still_counts(tmp_path):
    text = (
        TINY_RECIPE.replace(
            "    - dense: {units: 16, activation: relu}\n", "    - dense: {units: 2147483647}\n"
        )
        .replace(
            "kind: {type: classification}",
            "kind: {type: classification, head: [{einsum_dense: {equation: 'ab,bc->ac', output_shape: 4}}]}",
        )
        .replace("flag: {type: binary,", "flag: {type: binary, inputs_from: [kind],")
    )
    loaded = R.loads(text, file="recipe.yaml", base_dir=_tiny(tmp_path, TINY_RECIPE).parent)
    prep = data.prepare(loaded).prep
    est = size.estimate(loaded.recipe, prep)
    assert not est.complete and ("model", "tasks", "flag", "head", 0, "dense", "units") not in est.layers
    with pytest.raises(RecipeError) as info:  # the trunk and value's output alone do not fit
        size.check(loaded, prep, memory=16 * 2**30)
    assert info.value.message.startswith("the model is too big for this machine: at least ")
