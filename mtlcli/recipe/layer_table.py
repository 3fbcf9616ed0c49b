"""The Keras layers a recipe may name, their keyword arguments and the kinds of their defaults.

``keras_layers.json`` (layers) and ``keras_names.json`` (activation, initializer, regularizer and
constraint names) are generated from the installed Keras by :func:`generate` and :func:`generate_names`
(run ``python -m mtlcli.recipe.layer_table`` after a Keras upgrade); ``tests/test_layers.py`` fails when
they are out of date. :mod:`mtlcli.recipe.layer_args` checks argument values with them. Layers that take
Python callables or other layers as objects (``Lambda``, wrappers, RNN cells) are excluded: nothing in a
recipe may execute code. ``bidirectional`` takes its recurrent layer as a recipe layer, and mtl's own
sequence layers (``multi_head_attention`` as self-attention, ``transformer_encoder``,
``positional_embedding``) are listed by hand in :data:`OWN_LAYERS`, and the Keras Applications backbones
(:mod:`mtlcli.model.backbones`) in :data:`BACKBONES`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("keras_layers.json")
NAMES_PATH = Path(__file__).with_name("keras_names.json")

# Keyword arguments every layer accepts through ``keras.layers.Layer.__init__``.
BASE_KWARGS = ["name", "dtype", "trainable"]

# Never allowed: they execute code or wrap other layers given as Python objects.
EXCLUDED = {
    "Lambda",
    "TFSMLayer",
    "InputLayer",
    "Input",
    "Layer",
    "Wrapper",
    "Bidirectional",
    "TimeDistributed",
    "RNN",
    "StackedRNNCells",
    "SimpleRNNCell",
    "LSTMCell",
    "GRUCell",
    "ConvLSTM1D",
    "ConvLSTM2D",
    "ConvLSTM3D",
    "JaxLayer",
    "FlaxLayer",
    "TorchModuleWrapper",
    "Pipeline",
    "InputSpec",
    "SpectralNormalization",
    # several inputs: not usable in a stack of layers
    "Add",
    "Average",
    "Concatenate",
    "Dot",
    "Maximum",
    "Minimum",
    "Multiply",
    "Subtract",
    "Attention",
    "AdditiveAttention",
    "MultiHeadAttention",
    "GroupQueryAttention",
    "HashedCrossing",
}
# Layers of mtl's own (registered ``mtl>Class``, :mod:`mtlcli.model.sequence`) and Keras's Bidirectional,
# whose ``layer`` argument is a recipe layer (``{bidirectional: {layer: {lstm: {units: 32}}}}``), not a
# Python object. ``"package": "mtl"`` marks a registered class; ``"layers"`` the arguments that are layers.
OWN_LAYERS = {
    "bidirectional": {
        "class": "Bidirectional",
        "params": ["layer", "merge_mode", *BASE_KWARGS],
        "required": ["layer"],
        "defaults": {"merge_mode": "str"},
        "layers": ["layer"],
    },
    "multi_head_attention": {
        "class": "SelfAttention",
        "package": "mtl",
        "params": ["num_heads", "key_dim", "value_dim", "dropout", "use_bias", *BASE_KWARGS],
        "required": ["num_heads"],
        "defaults": {"key_dim": "null", "value_dim": "null", "dropout": "float", "use_bias": "bool"},
    },
    "transformer_encoder": {
        "class": "TransformerEncoder",
        "package": "mtl",
        "params": [
            "num_heads",
            "intermediate_dim",
            "key_dim",
            "dropout",
            "activation",
            "layer_norm_epsilon",
            *BASE_KWARGS,
        ],
        "required": ["num_heads", "intermediate_dim"],
        "defaults": {
            "key_dim": "null",
            "dropout": "float",
            "activation": "str",
            "layer_norm_epsilon": "float",
        },
    },
    "positional_embedding": {
        "class": "PositionEmbedding",
        "package": "mtl",
        "params": list(BASE_KWARGS),
        "required": [],
        "defaults": {},
    },
}
#: Keras Applications backbones (registered ``mtl>Class``, :mod:`mtlcli.model.backbones`), used without
#: their top. Besides the table entry: ``min_size`` (the smallest height and width Keras builds),
#: ``features`` (channels of the last feature map) and the parameter count of the default options for an
#: image of ``c`` channels: ``trainable`` and ``fixed`` (non-trainable) as ``[a, b]`` for ``a + b c``
#: (the first convolution's kernel, and EfficientNet's input normalization, grow with the channels).
#: ``tests/test_backbones.py`` checks them against the installed Keras.
_BACKBONE_ARGS = ["weights", "pooling", "include_top"]
BACKBONES = {
    "mobilenet_v3_small": {
        "class": "MobileNetV3Small",
        "package": "mtl",
        "params": [*_BACKBONE_ARGS, "alpha", "minimalistic", *BASE_KWARGS],
        "required": [],
        "defaults": {
            "weights": "null",
            "pooling": "str",
            "include_top": "bool",
            "alpha": "float",
            "minimalistic": "bool",
        },
        "min_size": 32,
        "features": 576,
        "trainable": [926576, 144],
        "fixed": [12112, 0],
    },
    "mobilenet_v3_large": {
        "class": "MobileNetV3Large",
        "package": "mtl",
        "params": [*_BACKBONE_ARGS, "alpha", "minimalistic", *BASE_KWARGS],
        "required": [],
        "defaults": {
            "weights": "null",
            "pooling": "str",
            "include_top": "bool",
            "alpha": "float",
            "minimalistic": "bool",
        },
        "min_size": 32,
        "features": 960,
        "trainable": [2971520, 144],
        "fixed": [24400, 0],
    },
    "mobilenet_v2": {
        "class": "MobileNetV2",
        "package": "mtl",
        "params": [*_BACKBONE_ARGS, "alpha", *BASE_KWARGS],
        "required": [],
        "defaults": {"weights": "null", "pooling": "str", "include_top": "bool", "alpha": "float"},
        "min_size": 32,
        "features": 1280,
        "trainable": [2223008, 288],
        "fixed": [34112, 0],
    },
    "efficientnet_b0": {
        "class": "EfficientNetB0",
        "package": "mtl",
        "params": [*_BACKBONE_ARGS, *BASE_KWARGS],
        "required": [],
        "defaults": {"weights": "null", "pooling": "str", "include_top": "bool"},
        "min_size": 32,
        "features": 1280,
        "trainable": [4006684, 288],
        "fixed": [42017, 2],
    },
    "resnet50": {
        "class": "ResNet50",
        "package": "mtl",
        "params": [*_BACKBONE_ARGS, *BASE_KWARGS],
        "required": [],
        "defaults": {"weights": "null", "pooling": "str", "include_top": "bool"},
        "min_size": 32,
        "features": 2048,
        "trainable": [23525184, 3136],
        "fixed": [53120, 0],
    },
}
#: Keras arguments that need not be given: ``embedding``'s ``input_dim`` is the vocabulary size of the
#: text input it reads (filled in by :func:`mtlcli.model.build.shared_layers`).
OPTIONAL = {"embedding": ["input_dim"]}
# Friendlier spellings of Keras's own snake_case names.
ALIASES = {"relu": "re_lu", "prelu": "p_re_lu", "leaky_relu": "leaky_re_lu"}


@functools.cache
def table() -> dict[str, dict]:
    """``snake_case name -> {"class": ClassName, "params": [...], "required": [...], "defaults": {...}}``.

    ``defaults`` maps each argument to the kind of its default value (``bool``, ``int``, ``float``,
    ``str``, ``null``, ``list``, ``other``): what the argument takes when nothing else says more."""
    return json.loads(TABLE_PATH.read_text())


@functools.cache
def names() -> dict[str, list[str]]:
    """``{"activation": [...], "initializer": [...], "regularizer": [...], "constraint": [...]}``."""
    return json.loads(NAMES_PATH.read_text())


def _kind_of_default(value) -> str:
    if value is None:
        return "null"
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind.__name__
    return "list" if isinstance(value, (list, tuple)) else "other"


def generate() -> dict[str, dict]:
    """Build the table from the installed Keras (imports TensorFlow)."""
    import inspect

    import keras
    from keras.src.utils.naming import to_snake_case

    out = {}
    for cls_name in sorted(dir(keras.layers)):
        cls = getattr(keras.layers, cls_name)
        if not (inspect.isclass(cls) and issubclass(cls, keras.layers.Layer)) or cls_name in EXCLUDED:
            continue
        sig = inspect.signature(cls.__init__)
        params, required, defaults = [], [], {}
        for p in list(sig.parameters.values())[1:]:
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            params.append(p.name)
            if p.default is inspect.Parameter.empty:
                required.append(p.name)
            else:
                defaults[p.name] = _kind_of_default(p.default)
        for base in BASE_KWARGS:
            if base not in params:
                params.append(base)
        out[to_snake_case(cls_name)] = {
            "class": cls_name,
            "params": params,
            "required": required,
            "defaults": defaults,
        }
    for name, optional in OPTIONAL.items():
        out[name]["required"] = [r for r in out[name]["required"] if r not in optional]
    out.update(OWN_LAYERS)
    out.update(BACKBONES)
    for alias, target in ALIASES.items():
        out[alias] = out[target]
    return out


def generate_names() -> dict[str, list[str]]:
    """The names Keras resolves for activations, initializers, regularizers and constraints."""
    import keras

    def public(module, drop=("deserialize", "get", "serialize")) -> list[str]:
        return sorted(n for n in dir(module) if not n.startswith("_") and n not in drop)

    def resolvable(module) -> list[str]:
        """Names ``module.get(name)`` turns into a usable object (not ``constant``: it needs a value;
        not the abstract base classes)."""
        out = []
        for name in public(
            module, drop=("deserialize", "get", "serialize", "Initializer", "Regularizer", "Constraint")
        ):
            try:
                if module.get(name) is not None:
                    out.append(name)
            except Exception:  # noqa: BLE001 - any failure means "not usable by name"
                continue
        return out

    return {
        "activation": resolvable(keras.activations),
        "initializer": resolvable(keras.initializers),
        "regularizer": resolvable(keras.regularizers),
        "constraint": resolvable(keras.constraints),
    }


if __name__ == "__main__":
    TABLE_PATH.write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    NAMES_PATH.write_text(json.dumps(generate_names(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {TABLE_PATH} and {NAMES_PATH}")
