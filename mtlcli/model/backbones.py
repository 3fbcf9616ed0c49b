"""Keras Applications backbones as recipe layers: ``mobilenet_v3_small``, ``mobilenet_v3_large``,
``mobilenet_v2``, ``efficientnet_b0``, ``resnet50``.

Each is a registered layer (``mtl>MobileNetV3Small``, ``mtl>EfficientNetB0``, ``mtl>ResNet50``, ...) that
builds the Keras Applications model for its input's shape (``include_top=False``: the tasks' towers are
the top) inside itself, so it sits in ``model.shared`` or ``model.encoders`` like any other layer, is
shared by every task, and a saved model loads with ``safe_mode=True``.

Weights: ``weights: null`` (the default) starts from random values. ``weights: FILE`` (``.h5`` or
``.weights.h5``, relative to the recipe's folder) loads a local file once, when a new run's model is
built (:func:`resolve_weights` turns it into ``weights_from`` in the model spec and :func:`load_weights`
loads it after the build); a saved model carries the weights themselves, so loading it, resuming or
forking never reads the file again. ``weights: imagenet`` is refused by the recipe check
(:mod:`mtlcli.model.size`): it would download at run time, and the machines have no internet.

Pixels: mtl's image inputs are scaled to [0, 1]. The applications' ImageNet weights expect [0, 255]
pixels with their own preprocessing, so the layer feeds ``255 x`` to EfficientNet and MobileNetV3 (which
rescale inside), ``2 x - 1`` to MobileNetV2 and Caffe's BGR mean-subtracted pixels to ResNet50, as
``keras.applications.*.preprocess_input`` would: a local ImageNet weights file then sees what it was
trained on.
"""

from __future__ import annotations

import re

import keras
from keras import ops

from mtlcli.model.registration import serializable

#: ResNet's Caffe preprocessing: the ImageNet mean per channel, in BGR order
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


class Backbone(keras.layers.Layer):
    """A Keras Applications model without its top, built for the input's shape.

    Args:
        weights: None (random initialisation) or the path of a local weights file.
        pooling: ``avg`` (default), ``max`` or None (the last feature map, ``(h', w', channels)``).
        weights_from: the weights file the saved layer was first loaded from (a record only).
        options: the application's own arguments (``alpha``, ``minimalistic``, ...).
    """

    APPLICATION = ""
    PIXELS = "255"  # "255": 255 x; "tf": 2 x - 1; "caffe": BGR, 255 x, minus the ImageNet mean

    def __init__(self, weights=None, pooling="avg", include_top=False, weights_from=None, options=None,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        options = dict(options or {})
        if include_top:
            raise ValueError(f"{type(self).__name__} is used without its top (include_top: false)")
        self.weights_file, self.pooling, self.options = weights, pooling, options
        self.weights_from = weights_from
        self.model = None

    def build(self, input_shape):
        constructor = getattr(keras.applications, self.APPLICATION)
        self.model = constructor(
            include_top=False,
            weights=None,
            input_shape=tuple(input_shape[1:]),
            pooling=self.pooling,
            name=f"{self.name}_model",
            **self.options,
        )
        # Keras sets ``trainable`` on the sublayers that exist; this one is made here, after a
        # ``trainable: false`` (or a warm start's freeze): its batch normalizations must then keep their
        # moving statistics too.
        self.model.trainable = self.trainable
        if self.weights_file:
            self.model.load_weights(str(self.weights_file))
        self.built = True

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.model.output.shape[1:])

    def pixels(self, x):
        if self.PIXELS == "tf":
            return ops.cast(x, self.compute_dtype) * 2.0 - 1.0
        x = ops.cast(x, self.compute_dtype) * 255.0
        if self.PIXELS == "caffe":
            if x.shape[-1] == 3:
                return ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=x.dtype)
            return x - sum(CAFFE_MEAN_BGR) / 3
        return x

    def call(self, x, training=None):
        return self.model(self.pixels(x), training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "pooling": self.pooling,
            "weights_from": self.weights_from or (str(self.weights_file) if self.weights_file else None),
            **self.options,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("weights", None)  # a saved model holds its weights: never read the file again
        return cls(**config)


@serializable
class MobileNetV3Small(Backbone):
    """MobileNetV3-Small (Howard et al., ICCV 2019) without its top."""

    APPLICATION = "MobileNetV3Small"

    def __init__(self, weights=None, pooling="avg", include_top=False, alpha=1.0, minimalistic=False,
                 weights_from=None, **kwargs):  # fmt: skip
        options = {"alpha": float(alpha), "minimalistic": bool(minimalistic)}
        super().__init__(weights, pooling, include_top, weights_from, options, **kwargs)


@serializable
class MobileNetV3Large(Backbone):
    """MobileNetV3-Large (Howard et al., ICCV 2019) without its top."""

    APPLICATION = "MobileNetV3Large"

    def __init__(self, weights=None, pooling="avg", include_top=False, alpha=1.0, minimalistic=False,
                 weights_from=None, **kwargs):  # fmt: skip
        options = {"alpha": float(alpha), "minimalistic": bool(minimalistic)}
        super().__init__(weights, pooling, include_top, weights_from, options, **kwargs)


@serializable
class MobileNetV2(Backbone):
    """MobileNetV2 (Sandler et al., CVPR 2018) without its top; its ImageNet weights read [-1, 1]."""

    APPLICATION = "MobileNetV2"
    PIXELS = "tf"

    def __init__(self, weights=None, pooling="avg", include_top=False, alpha=1.0, weights_from=None,
                 **kwargs):  # fmt: skip
        super().__init__(weights, pooling, include_top, weights_from, {"alpha": float(alpha)}, **kwargs)


@serializable
class EfficientNetB0(Backbone):
    """EfficientNet-B0 (Tan & Le, ICML 2019) without its top."""

    APPLICATION = "EfficientNetB0"


@serializable
class ResNet50(Backbone):
    """ResNet-50 (He et al., CVPR 2016) without its top."""

    APPLICATION = "ResNet50"
    PIXELS = "caffe"


def load_weights(model) -> None:
    """Load each backbone's ``weights_from`` file into the built ``model`` (a new run only: a saved
    model, a resume or a fork has the weights already). A file that does not fit the backbone on its
    input is a ``ValueError`` naming the file."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, Backbone) and layer.weights_from:
            try:
                layer.model.load_weights(layer.weights_from)
            except (ValueError, KeyError, OSError) as exc:
                raise ValueError(
                    f"the weights file {layer.weights_from} does not fit {type(layer).__name__} on "
                    f"{layer.model.input_shape[1:]} images (it must come from the same application "
                    f"without its top, on as many channels): {_misfit(exc)}"
                ) from None


def _misfit(exc: Exception) -> str:
    """The first weight Keras could not load, with both shapes, from its (long) message."""
    text = str(exc)
    layer = re.search(r"object <\w+ name=([^,>]+)", text)
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text)
    if shapes:
        where = f"layer {layer.group(1)}: " if layer else ""
        return f"{where}the file's weight has shape {shapes.group(2)}, the model's {shapes.group(1)}"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def resolve_weights(spec: dict, resolve) -> dict:
    """The model spec with every backbone's ``weights: FILE`` (in ``shared``, ``encoders``, the
    architecture's experts and the towers) as ``weights_from``, made absolute by ``resolve``
    (:meth:`mtlcli.recipe.LoadedRecipe.resolve_path`: relative to the recipe's folder). The layers do not
    read it: :func:`load_weights` does, once, after the build, so the spec a saved model carries never
    makes its loading read the file again."""
    out = {**spec}
    for key in ("shared", "encoders", "architecture"):
        if key in spec:
            out[key] = _resolved(spec[key], resolve)
    if "tasks" in spec:
        out["tasks"] = {
            t: {**s, "head": _resolved(s.get("head") or [], resolve)} for t, s in spec["tasks"].items()
        }
    return out


def _resolved(layers, resolve):
    from mtlcli.recipe import layer_table

    if isinstance(layers, list):
        return [_resolved(x, resolve) for x in layers]
    if not isinstance(layers, dict):
        return layers
    if len(layers) == 1:
        ((name, kwargs),) = layers.items()
        if (
            name in layer_table.BACKBONES
            and isinstance(kwargs, dict)
            and isinstance(kwargs.get("weights"), str)
        ):
            kwargs = {k: v for k, v in kwargs.items() if k != "weights"}
            return {name: {**kwargs, "weights_from": str(resolve(layers[name]["weights"]).resolve())}}
    return {k: _resolved(v, resolve) for k, v in layers.items()}
