"""Per-input encoders (``model.encoders``) as the model spec holds them, and the checks that need the
data: an encoder's embedding has a row for every token id of its text input, and ``fusion: sum`` or
``attention`` gets inputs of one width.

Pure Python (no TensorFlow): :func:`mtlcli.model.size.check` runs the checks (so ``mtl validate`` and
``mtl train`` refuse before any variable exists) and :func:`mtlcli.model.build.spec_from_recipe` takes
the specs. The layers themselves are :class:`mtlcli.model.architectures.LayerStack` s built by
:class:`mtlcli.model.network.Network`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from mtlcli.errors import Problem

if TYPE_CHECKING:
    from mtlcli.data.preprocess import Preprocessing
    from mtlcli.recipe import LoadedRecipe, Recipe


def _layer(spec) -> tuple[str, dict]:
    if isinstance(spec, str):
        return spec, {}
    ((name, kwargs),) = spec.items()
    return name, dict(kwargs or {})


def encoder_specs(recipe: Recipe, prep: Preprocessing) -> dict[str, list]:
    """``model.encoders`` in input order, with the ``input_dim`` of an encoder's first ``embedding``
    filled in from its text input's vocabulary (token ids) when the recipe leaves it out."""
    out = {}
    for name in prep.inputs:
        layers = list(recipe.model.encoders.get(name) or [])
        if not layers:
            continue
        rows = prep.inputs[name].token_ids
        first, kwargs = _layer(layers[0])
        if first == "embedding" and rows is not None:
            kwargs.setdefault("input_dim", int(rows))
            layers[0] = {"embedding": kwargs}
        out[name] = layers
    return out


def problems(loaded: LoadedRecipe, prep: Preprocessing, widths: dict[str, tuple | None]) -> list[Problem]:
    """An encoder embedding with fewer rows than its text input has token ids; ``fusion: sum`` or
    ``attention`` of inputs whose widths after their encoders differ (``widths``: each input's shape there, None if unknown)."""
    recipe, out = loaded.recipe, []
    for name, layers in recipe.model.encoders.items():
        st = prep.inputs.get(name)
        if st is None or st.token_ids is None or not layers:
            continue
        first, kwargs = _layer(layers[0])
        given = kwargs.get("input_dim")
        if first == "embedding" and isinstance(given, int) and given < st.token_ids:
            out.append(
                loaded.problem(
                    f"the embedding reads the text input's {st.token_ids} token ids (the vocabulary, "
                    f"padding and unknown), received input_dim: {given}; leave input_dim out to use the "
                    f"vocabulary size",
                    ("model", "encoders", name, 0, "embedding", "input_dim"),
                )
            )
    known = {k: math.prod(s) for k, s in widths.items() if s is not None}
    fusion = recipe.model.fusion
    if fusion in ("sum", "attention") and len(widths) > 1 and len(set(known.values())) > 1:
        listed = ", ".join(f"{k} {w:,}" for k, w in known.items())
        what = (
            "adds the inputs' features"
            if fusion == "sum"
            else "lets the inputs' features attend to each other"
        )
        out.append(
            loaded.problem(
                f"fusion: {fusion} {what} after their encoders, which needs one width, "
                f"received {listed}; end every encoder with the same width (e.g. a dense layer of "
                f"{max(known.values()):,} units) or use fusion: concat",
                ("model", "fusion"),
            )
        )
    return out
