"""Every registered strategy trains a tabular and a two-task image recipe without NaN, and logs its
per-task weights (and gradient cosines for gradient-based strategies)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtlcli import recipe as R
from mtlcli import weighting

pytest.importorskip("tensorflow")

from mtlcli.run import runner  # noqa: E402

SPECS = [
    *weighting.available(),
    *(f"{{{name}: {{on: representation}}}}" for name in ("mgda", "gradnorm", "imtl_g", "aligned_mtl")),
    "{mgda: {normalization: loss+}}",
    "{cagrad: {c: 0.5, rescale: 1}}",
]

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
    np.savez(tmp_path / "img.npz", image=images, left=left, right=right)


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
        tiny_project.read_text().replace("weighting: static", f"weighting: {spec}"),
        file="r.yaml",
        base_dir=tiny_project.parent,
    )
    result = runner.train(loaded, output=tmp_path / "tab", epochs=2)
    _check(result, gradient_based, ["kind", "flag", "value"])

    _image_project(tmp_path)
    loaded = R.loads(IMAGE_RECIPE.replace("WEIGHTING", spec), file="img.yaml", base_dir=tmp_path)
    result = runner.train(loaded, output=tmp_path / "img")
    _check(result, gradient_based, ["left", "right"])
