"""The Keras Applications backbones (:mod:`mtlcli.model.backbones`) before anything is built: their
parameters and output shape for the size estimate, and the checks that need the data (an image of at
least the backbone's minimum size, a weights file that is there).

Pure Python (no TensorFlow): :mod:`mtlcli.model.size` calls :func:`backbone_size` for each backbone of its
walk and :func:`problems` on the backbones it met, so ``mtl validate`` and ``mtl train`` refuse before
any variable exists. The counts come from :data:`mtlcli.recipe.layer_table.BACKBONES`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtlcli.errors import Problem
from mtlcli.recipe import layer_table

if TYPE_CHECKING:
    from mtlcli.recipe import LoadedRecipe

#: The classes of the Keras Applications backbones (:data:`mtlcli.recipe.layer_table.BACKBONES`).
BACKBONE_CLASSES = frozenset(e["class"] for e in layer_table.BACKBONES.values())


def backbone_size(kind: str, kw: dict, shape: tuple):
    """A Keras Applications backbone (:data:`mtlcli.recipe.layer_table.BACKBONES`): exact for its default
    options on an image of at least its minimum size (``a + b c`` parameters for ``c`` channels); the
    output is ``(features,)`` pooled, else the feature map of every axis divided by 32 (rounded up)."""
    entry = next(e for e in layer_table.BACKBONES.values() if e["class"] == kind)
    if len(shape) != 3 or min(shape[:2]) < entry["min_size"]:
        return None
    if kw.get("alpha", 1.0) != 1.0 or kw.get("minimalistic", False):
        return None  # other widths: not tabulated, so a lower bound
    c = shape[-1]
    (t0, t1), (f0, f1) = entry["trainable"], entry["fixed"]
    pooled = kw.get("pooling", "avg") is not None
    out = (entry["features"],) if pooled else (-(-shape[0] // 32), -(-shape[1] // 32), entry["features"])
    return t0 + t1 * c, f0 + f1 * c, out


def problems(loaded: LoadedRecipe, backbones: list[tuple]) -> list[Problem]:
    """A backbone that does not read an image (height, width, channels), an image smaller than the
    backbone's minimum, or a ``weights`` file that is not there (relative to the recipe's folder)."""
    out = []
    for path, name, kw, shape in backbones:
        entry = layer_table.BACKBONES[name]
        need = entry["min_size"]
        if shape is not None and len(shape) != 3:
            out.append(
                loaded.problem(
                    f"{entry['class']} reads images (height, width, channels), received one example of "
                    f"shape {list(shape)}; put it first in model.shared or in an image input's encoder",
                    (*path, name),
                )
            )
        elif shape is not None and min(shape[:2]) < need:
            out.append(
                loaded.problem(
                    f"{entry['class']} needs images of at least {need}x{need} pixels, received "
                    f"{shape[0]}x{shape[1]}; give the image input a shape of at least [{need}, {need}, "
                    f"{shape[2]}] (image files are resized to it) or use convolution layers of your own",
                    (*path, name),
                )
            )
        weights = kw.get("weights")
        if isinstance(weights, str) and not loaded.resolve_path(weights).is_file():
            out.append(
                loaded.problem(
                    f"no weights file {str(loaded.resolve_path(weights))!r} (weights is read relative to "
                    f"the recipe's folder); give an existing .weights.h5 or .h5 file, or null",
                    (*path, name, "weights"),
                )
            )
    return out
