"""Checks of ``model.encoders`` and ``model.fusion`` that need the inputs but no data: every encoder
names an input, and an image meeting other inputs has an encoder (no pixel-by-pixel flattening).

The layers inside each encoder are checked by :func:`mtlcli.recipe.checks.layer_problems`, the
widths ``fusion: sum`` needs by :func:`mtlcli.model.size.check` (they depend on the data's shapes).
"""

from __future__ import annotations

from mtlcli.errors import Problem, did_you_mean
from mtlcli.recipe.yamlio import Located, describe

#: what the refusal of an image without an encoder suggests
IMAGE_ENCODER = (
    "[{conv2d: {filters: 16, kernel_size: 3, activation: relu}}, {max_pooling2d: {}}, "
    "{conv2d: {filters: 32, kernel_size: 3, activation: relu}}, global_average_pooling2d]"
)


def _inputs(data: dict) -> dict:
    inputs = data.get("inputs") if isinstance(data.get("inputs"), dict) else {}
    return {k: {"kind": v} if isinstance(v, str) else v for k, v in inputs.items()}


def _valid_image(spec) -> bool:
    """An image input whose shape the data checks accept ([height, width, 1|3|4])."""
    shape = spec.get("shape") if isinstance(spec, dict) else None
    return (
        isinstance(spec, dict)
        and spec.get("kind") == "image"
        and isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
        and shape[-1] in (1, 3, 4)
    )


def encoder_problems(model: dict, data: dict, src: Located) -> list[Problem]:
    """``model.encoders``' names (each an input of ``data.inputs``, with did-you-mean), an empty
    encoder, and an image input that would be flattened into the first layer with other inputs."""
    out: list[Problem] = []

    def add(message: str, path: tuple) -> None:
        out.append(src.problem(message, path))

    inputs = _inputs(data)
    encoders = model.get("encoders")
    encoders = encoders if isinstance(encoders, dict) else {}
    for name, layers in encoders.items():
        if inputs and name not in inputs:
            add(
                f"unknown input {name!r}{did_you_mean(str(name), list(inputs))}; an encoder is keyed by "
                f"an input of data.inputs ({', '.join(str(k) for k in inputs)})",
                ("model", "encoders", name),
            )
        elif isinstance(layers, list) and not layers:
            add(
                "expected at least one layer (leave the input out of model.encoders to feed it as it is)",
                ("model", "encoders", name),
            )
        elif layers is not None and not isinstance(layers, list):
            add(
                f"expected a list of layers, e.g. [{{dense: {{units: 32}}}}], received {describe(layers)}",
                ("model", "encoders", name),
            )
    if len(inputs) < 2:
        return out  # a single image without an encoder: the trunk is its encoder
    for name, spec in inputs.items():
        if _valid_image(spec) and name not in encoders:
            others = ", ".join(str(k) for k in inputs if k != name)
            add(
                f"image input {name!r} would be flattened pixel by pixel and joined with the other inputs "
                f"({others}) before the first layer, without a convolution; give it an encoder, e.g. "
                f"model.encoders: {{{name}: {IMAGE_ENCODER}}}",
                ("data", "inputs", name),
            )
    return out
