"""Warm starts (``model.init_from``): the shared layers, or named encoders, of a new model start from
another run's saved model, optionally frozen for the whole run.

:func:`source_model_path` finds the other run's ``model.keras`` (pure Python: a missing run or model is
a recipe error naming the path); :func:`parts` picks the layers ``layers:`` names in a model;
:func:`freeze` makes them untrainable before the model is built (so the train step, the optimizer and
a strategy's state sized by the shared parameters see only what trains); :func:`initialise` loads the
source model with ``safe_mode=True``, as ``mtl evaluate`` does, checks that every weight's shape fits
and copies the weights. :func:`mtlcli.model.build.build_model` calls them in that order; a resume or a
fork does not (its checkpoint holds the weights). The record it returns (the source's path and the
sha256 of its model file) goes into the run's ``data.json`` next to the data files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlcli.errors import RecipeError
from mtlcli.fsio import sha256

if TYPE_CHECKING:
    from mtlcli.recipe import LoadedRecipe

WHERE = ("model", "init_from")


def _error(loaded: LoadedRecipe, message: str, key: str) -> RecipeError:
    return RecipeError(problems=[loaded.problem(message, (*WHERE, key))])


def source_model_path(loaded: LoadedRecipe) -> Path:
    """The ``model.keras`` that ``model.init_from.run`` names: a run directory (or one of its
    checkpoint directories) holding one, or the file itself; relative paths are relative to the recipe."""
    run = loaded.recipe.model.init_from.run
    path = loaded.resolve_path(run).resolve()
    if path.is_file():
        return path
    if not path.is_dir():
        raise _error(loaded, f"no such run directory: {path} (relative to the recipe file)", "run")
    model = path / "model.keras"
    if model.is_file():
        return model
    last = path / "checkpoints" / "last" / "model.keras"
    hint = (
        f"; the run has not finished: to start from its last checkpoint write run: {path / 'checkpoints' / 'last'}"
        if last.is_file()
        else ""
    )
    raise _error(loaded, f"{path} has no model.keras (expected a finished mtl run directory){hint}", "run")


def _label(name: str) -> str:
    """A layer's place in the recipe, from the name :class:`mtlcli.model.network.Network` gives it."""
    if name.startswith("shared_") and name[7:].isdigit():
        return f"model.shared[{name[7:]}]"
    if name.endswith("_encoder"):
        return f"model.encoders.{name[: -len('_encoder')]}"
    if name.endswith("_embedding"):
        return f"data.inputs.{name[: -len('_embedding')]} (its embedding)"
    return name


def parts(model, layers: str | list[str]) -> list:
    """The layers of ``model`` that ``init_from.layers`` names (:meth:`mtlcli.model.network.Network.named_parts`)."""
    return model.named_parts(layers)


def freeze(model, layers: str | list[str]) -> None:
    """Make the named layers untrainable (call it before ``model.build()``: the strategy's state sized
    by the shared parameters, and the optimizer, then see only the layers that train). Batch
    normalization in a frozen layer runs in inference mode (Keras's rule for ``trainable=False``)."""
    for layer in parts(model, layers):
        layer.trainable = False


def _load_source(loaded: LoadedRecipe, path: Path):
    import keras

    from mtlcli.model import train_step  # registers the custom objects

    try:
        source = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - any loader failure means the file is not a usable model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _error(loaded, f"{path}: cannot load the model safely: {first}", "run") from None
    if not isinstance(source, train_step.MultiTaskModel):
        raise _error(loaded, f"{path}: not an mtl model (found {type(source).__name__})", "run")
    return source


def _shape(v) -> tuple[int, ...]:
    return tuple(int(d) for d in v.shape)


def _pairs(loaded: LoadedRecipe, targets: list, source, path: Path) -> list[tuple[Any, Any]]:
    """``(target variable, source variable)`` for every weight of ``targets``, matched by layer name
    (the recipe position or input name) and then in order; the first layer that does not fit is an
    error naming it and both shapes."""
    found = {layer.name: layer for layer in source.shared_layers()}
    pairs = []
    for layer in targets:
        label = _label(layer.name)
        other = found.get(layer.name)
        if other is None:
            have = ", ".join(_label(n) for n in found) or "no shared layers"
            raise _error(loaded, f"{path} has no layer for {label} (it has {have})", "layers")
        mine, theirs = list(layer.weights), list(other.weights)
        for k in range(max(len(mine), len(theirs))):
            a = _shape(mine[k]) if k < len(mine) else None
            b = _shape(theirs[k]) if k < len(theirs) else None
            if a != b:
                what = (mine[k] if k < len(mine) else theirs[k]).path.split("/", 1)[-1]
                raise _error(
                    loaded,
                    f"{label} does not fit the source run's weights: {what} has shape "
                    f"{list(b) if b is not None else 'none'} in {path} and "
                    f"{list(a) if a is not None else 'none'} in this recipe",
                    "layers",
                )
        pairs.extend(zip(mine, theirs, strict=True))
    return pairs


def initialise(model, loaded: LoadedRecipe) -> dict[str, Any]:
    """Copy the named layers' weights from the source run's model into the built ``model``; returns
    the provenance record (``data.json``'s ``init_from``)."""
    spec = loaded.recipe.model.init_from
    path = source_model_path(loaded)
    source = _load_source(loaded, path)
    targets = parts(model, spec.layers)
    pairs = _pairs(loaded, targets, source, path)
    for mine, theirs in pairs:
        mine.assign(theirs.numpy())
    return {
        "run": str(path.parent.resolve() if path.name == "model.keras" else path.resolve()),
        "model": str(path.resolve()),
        "sha256": sha256(path),
        "layers": spec.layers if isinstance(spec.layers, str) else list(spec.layers),
        "copied": [_label(layer.name) for layer in targets],
        "values": int(sum(int(v.numpy().size) for _, v in pairs)),
        "freeze": bool(spec.freeze),
    }
