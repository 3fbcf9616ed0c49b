"""Every registered strategy learns a small synthetic three-task problem to a stated validation loss,
and (slow) trains a tabular and a two-task image recipe end to end without NaN, logging its per-task
weights (and gradient cosines for gradient-based strategies)."""

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
from mtlcli.run import runner

from .conftest import TINY_RECIPE, add_primary, write_tiny_csv

#: the strategies that accept ``on: representation`` (gradients w.r.t. the shared representation)
REPRESENTATION = sorted(
    name for name, cls in weighting.REGISTRY.items() if "on" in {f.name for f in dataclasses.fields(cls)}
)
SPECS = [
    *weighting.available(),
    *(f"{{{name}: {{on: representation}}}}" for name in REPRESENTATION),
    "{mgda: {normalization: loss+}}",
    "{cagrad: {c: 0.5, rescale: 1}}",
]
#: strategies whose defaults do not learn every task of the problem below, with the parameters that do.
#: Krum (n_selected 1) applies ONE task's gradient per step, the most central one: measured, flag's
#: validation loss is still 0.35 after 8 epochs (threshold 0.25); Multi-Krum with 2 of the 3 selected
#: learns all three. The defaults still train end to end (the slow test below).
LEARN_SPECS = {"krum": "{krum: {n_selected: 2}}"}

# -- every strategy learns ------------------------------------------------------------------------
# The problem is conftest's tiny CSV with 400 rows (300 to train): a 3-class task (``kind``, from
# thresholds on ``a``), a binary one (``flag``, from ``b`` and the colour, some labels missing) and a
# regression (``value = 3a - 2b + noise``, standardised), trained for 8 epochs of batches of 32 with
# Adam at 0.01 from a fixed seed. Untrained, the validation losses are about 1.10, 0.69 and 1.0.
#
# Thresholds: measured with data seeds 0, 1, 2 (each also a different initialisation) for every entry
# of SPECS, the worst final validation losses were kind 0.65 (gls; every other strategy <= 0.49), flag
# 0.16 (gls; others <= 0.12) and value 0.043 (gradnorm). Each threshold leaves >= 25% margin above the
# worst, and is well below the untrained loss (checked before training: the test can fail).
THRESHOLDS = {"kind": 0.8, "flag": 0.25, "value": 0.1}
LEARN_ROWS, LEARN_EPOCHS, LEARN_RATE, LEARN_SEED = 400, 8, 0.01, 0


class _Epochs(keras.callbacks.Callback):
    """Tell the model which epoch it is in, as the runner's callback does (DWA's epoch means use it)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.epoch_var.assign(epoch)


def _dataset(split, shuffle: bool):
    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y, split.mask))
    if shuffle:
        ds = ds.shuffle(len(split.mask["kind"]), seed=LEARN_SEED)
    return ds.batch(32 if shuffle else 256)


@pytest.mark.parametrize("spec", [LEARN_SPECS.get(spec, spec) for spec in SPECS])
def test_strategy_learns_a_synthetic_three_task_problem(spec, tmp_path):
    write_tiny_csv(tmp_path / "tiny.csv", n=LEARN_ROWS, seed=LEARN_SEED)
    text = TINY_RECIPE.replace(
        "weighting: static",
        f"weighting: {spec}\n  optimizer: {{adam: {{learning_rate: {LEARN_RATE}}}}}",
    )
    text = add_primary(text, spec)
    loaded = R.loads(text, file="r.yaml", base_dir=tmp_path)
    prepared = data.prepare(loaded)
    keras.utils.set_random_seed(LEARN_SEED)  # the initial weights, whatever ran before in this process
    model = build_model(loaded, prepared, seed=LEARN_SEED)
    train, validation = (
        _dataset(prepared.splits["train"], True),
        _dataset(prepared.splits["validation"], False),
    )
    if model.strategy.needs_validation:  # Auto-Lambda: a validation batch with every training batch
        train = tf.data.Dataset.zip((train, _dataset(prepared.splits["validation"], True).repeat()))
    before = model.evaluate(validation, return_dict=True, verbose=0)
    history = model.fit(
        train,
        validation_data=validation,
        epochs=LEARN_EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[_Epochs()],
    ).history
    for task, limit in THRESHOLDS.items():
        assert before[f"{task}_loss"] > 1.25 * limit, (task, before)
        final = history[f"val_{task}_loss"][-1]
        assert math.isfinite(final) and final < limit, (task, history[f"val_{task}_loss"])


def test_every_registered_strategy_is_trained():
    assert set(weighting.available()) <= set(SPECS)
    assert set(LEARN_SPECS) <= set(weighting.available())
    assert {"mgda", "gradnorm"} <= set(REPRESENTATION)


# -- end to end without NaN (slow) ----------------------------------------------------------------

IMAGE_RECIPE = """\
name: img
seed: 1
data:
  train: img.npz
  validation: 0.25
  inputs: {image: {kind: image, shape: [8, 8, 1]}}
model:
  shared:
    - conv2d: {filters: 4, kernel_size: 3, activation: relu}
    - flatten
    - dense: {units: 16, activation: relu}
  tasks:
    left: {type: classification}
    right: {type: classification}
train:
  epochs: 2
  batch_size: 16
  weighting: WEIGHTING
"""


def _image_project(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 8, 8, 1), dtype=np.uint8)
    left = (images[:, :4].mean(axis=(1, 2, 3)) > 127).astype(int) + (images[:, 4:].mean(axis=(1, 2, 3)) > 127)
    right = (images[:, :, :4].mean(axis=(1, 2, 3)) > 127).astype(int)
    bright = (images.mean(axis=(1, 2, 3)) > 127).astype(int)
    np.savez(tmp_path / "img.npz", image=images, left=left, right=right, bright=bright)


def _image_tasks(name: str) -> list[str]:
    """The image recipe's tasks: ``left`` and ``right``, and ``bright`` for a strategy whose defaults
    need three tasks (Krum, TrimmedMean: the recipe refuses them with two)."""
    needs_three = weighting.get(name).task_count_problem(2) is not None
    return ["left", "right", "bright"] if needs_three else ["left", "right"]


def _check(result, gradient_based: bool, tasks: list[str]):
    for row in result.history:
        for task in tasks:
            assert math.isfinite(row[f"{task}_loss"]), row
            assert math.isfinite(row[f"{task}_weight"]), row
    if gradient_based:
        cos = [k for k in result.history[-1] if k.startswith("cos_")]
        assert len(cos) == len(tasks) * (len(tasks) - 1) // 2
        assert all(-1.0001 <= result.history[-1][k] <= 1.0001 for k in cos)


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS)
def test_strategy_trains_tabular_and_image(spec, tiny_project, tmp_path):
    name = weighting.spec_name(spec if not spec.startswith("{") else {spec[1:].split(":")[0]: {}})
    gradient_based = weighting.REGISTRY[name].needs == "gradients"
    loaded = R.loads(
        add_primary(tiny_project.read_text().replace("weighting: static", f"weighting: {spec}"), spec),
        file="r.yaml",
        base_dir=tiny_project.parent,
    )
    result = runner.train(loaded, output=tmp_path / "tab", epochs=2)
    _check(result, gradient_based, ["kind", "flag", "value"])

    _image_project(tmp_path)
    tasks = _image_tasks(name)
    text = IMAGE_RECIPE.replace("WEIGHTING", spec)
    if "bright" in tasks:
        text = text.replace(
            "    right: {type: classification}\n",
            "    right: {type: classification}\n    bright: {type: binary}\n",
        )
    loaded = R.loads(add_primary(text, spec, task="left"), file="img.yaml", base_dir=tmp_path)
    result = runner.train(loaded, output=tmp_path / "img")
    _check(result, gradient_based, tasks)


def test_no_test_module_skips_itself_when_tensorflow_or_keras_is_missing():
    """TensorFlow and Keras are required: a broken install must fail the suite, not skip whole modules
    (``pytest.importorskip`` stays for optional dependencies only)."""
    import re
    from pathlib import Path

    pattern = re.compile(r"importorskip\(\s*[\"'](tensorflow|keras)[\"']")
    here = Path(__file__).parent
    offenders = [
        str(p.relative_to(here)) for p in sorted(here.rglob("*.py")) if pattern.search(p.read_text())
    ]
    assert offenders == []
