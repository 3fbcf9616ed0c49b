"""The Keras layers a recipe may name, with their keyword arguments -- checked without TensorFlow.

``keras_layers.json`` is generated from the installed Keras by :func:`generate` (run
``python -m mtlcli.recipe.layer_table`` after a Keras upgrade); ``tests/test_layers.py`` fails when it is
out of date. Layers that take Python callables or other layers (``Lambda``, wrappers, RNN cells) are
excluded: nothing in a recipe may execute code.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("keras_layers.json")

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
# Friendlier spellings of Keras's own snake_case names.
ALIASES = {"relu": "re_lu", "prelu": "p_re_lu", "leaky_relu": "leaky_re_lu"}
# Keyword arguments every layer accepts through ``keras.layers.Layer.__init__``.
BASE_KWARGS = ["name", "dtype", "trainable"]


@functools.cache
def table() -> dict[str, dict[str, list[str]]]:
    """``snake_case name -> {"class": ClassName, "params": [...], "required": [...]}``."""
    return json.loads(TABLE_PATH.read_text())


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
        params, required = [], []
        for p in list(sig.parameters.values())[1:]:
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            params.append(p.name)
            if p.default is inspect.Parameter.empty:
                required.append(p.name)
        for base in BASE_KWARGS:
            if base not in params:
                params.append(base)
        out[to_snake_case(cls_name)] = {"class": cls_name, "params": params, "required": required}
    for alias, target in ALIASES.items():
        out[alias] = out[target]
    return out


if __name__ == "__main__":
    TABLE_PATH.write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {TABLE_PATH}")
