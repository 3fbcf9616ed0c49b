"""Checks of ``model.init_from`` that need other keys but no files: the names ``layers:`` lists, a
gradient-based strategy with every shared layer frozen for the whole run (nothing left for it to
combine), and ``freeze_epochs`` (not with ``freeze: true``).

Whether the run and its model exist, and whether the shapes fit, is checked when the model is built
(:mod:`mtlcli.model.warmstart`).
"""

from __future__ import annotations

from mtlcli.errors import Problem, did_you_mean
from mtlcli.recipe.yamlio import Located
from mtlcli.weighting.registry import REGISTRY

#: the ``layers:`` item naming ``model.shared`` (the trunk); other items are input names
TRUNK = "trunk"
WHERE = ("model", "init_from")


def _strategy(train: dict):
    spec = train.get("weighting", "static")
    name = next(iter(spec)) if isinstance(spec, dict) and len(spec) == 1 else spec
    return name, REGISTRY.get(name) if isinstance(name, str) else None


def _named(model: dict, data: dict) -> list[str]:
    """The inputs ``layers:`` may name: those with an encoder or a category embedding."""
    inputs = data.get("inputs") if isinstance(data.get("inputs"), dict) else {}
    encoders = model.get("encoders") if isinstance(model.get("encoders"), dict) else {}
    embedded = [k for k, v in inputs.items() if isinstance(v, dict) and v.get("encoding") == "embedding"]
    return [str(k) for k in dict.fromkeys([*encoders, *embedded])]


def _everything_shared(layers, model: dict, data: dict) -> bool:
    """``layers`` names every shared layer (``shared``, or a list that covers a hard-sharing model)."""
    if layers == "shared":
        return True
    if not isinstance(layers, list) or model.get("architecture", "hard_sharing") not in (
        "hard_sharing",
        "aitm",
    ):
        return False
    if model.get("fusion") == "attention":
        return False
    trunk = TRUNK in layers or not model.get("shared")
    return trunk and all(name in layers for name in _named(model, data))


def init_from_problems(model: dict, data: dict, train: dict, src: Located) -> list[Problem]:
    """``init_from.layers`` names (inputs with an encoder or embedding, ``trunk``), and ``freeze: true``
    of every shared layer with a strategy that combines the tasks' gradients of shared parameters."""
    spec = model.get("init_from")
    if not isinstance(spec, dict):
        return []
    out: list[Problem] = []
    layers = spec.get("layers", "shared")
    if isinstance(layers, list):
        named = _named(model, data)
        choices = [*named, TRUNK]
        if not layers:
            out.append(
                src.problem(f"expected shared or a list of parts ({', '.join(choices)})", (*WHERE, "layers"))
            )
        for i, name in enumerate(layers):
            if not isinstance(name, str) or name in choices:
                continue
            out.append(
                src.problem(
                    f"unknown part {name!r}{did_you_mean(name, choices)} (expected an input with an encoder "
                    f"or an embedding, or trunk for model.shared: {', '.join(choices)})",
                    (*WHERE, "layers", i),
                )
            )
        if TRUNK in layers and model.get("architecture") == "cross_stitch":
            out.append(
                src.problem(
                    "cross_stitch has no trunk (model.shared is one column per task): expected layers: shared",
                    (*WHERE, "layers"),
                )
            )
    out.extend(_freeze_epochs_problems(spec, train, src))
    name, cls = _strategy(train)
    gradients = cls is not None and cls.needs == "gradients"
    if spec.get("freeze") is True and gradients and _everything_shared(layers, model, data):
        out.append(
            src.problem(
                f"freeze: true keeps every shared layer fixed, and {name} combines the tasks' gradients "
                f"of the shared parameters: none would be left to combine; use a loss-based strategy "
                f"(e.g. static) or freeze only some parts (layers: [...])",
                (*WHERE, "freeze"),
            )
        )
    return out


def _freeze_epochs_problems(spec: dict, train: dict, src: Located) -> list[Problem]:
    """``freeze_epochs: N`` unfreezes after N epochs: it contradicts ``freeze: true``. (N may reach
    ``train.epochs``: a run stopped at the boundary and resumed with more epochs is the same run.)"""
    n = spec.get("freeze_epochs")
    if not isinstance(n, int) or isinstance(n, bool):
        return []
    if spec.get("freeze") is True:
        return [
            src.problem(
                f"freeze: true keeps the layers fixed for the whole run and freeze_epochs: {n} trains them "
                f"after epoch {n}: expected one of the two",
                (*WHERE, "freeze_epochs"),
            )
        ]
    return []
