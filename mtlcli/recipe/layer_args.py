"""The values a recipe gives to Keras layer arguments: kinds and ranges, checked without TensorFlow.

Which arguments a layer has, and the kind of each default (bool, int, float, str), comes from the
installed Keras (:mod:`mtlcli.recipe.layer_table`). What Keras does not say in its signatures -- that
``units`` is a positive integer, ``rate`` a fraction in [0, 1), ``activation`` one of its names -- is
written here once, by argument name, so every layer with such an argument is checked the same way.
Integers are bounded by what TensorFlow holds in a shape (int32). Mappings (Keras's serialised
``{class_name, config}`` form) are passed through unchecked.
"""

from __future__ import annotations

import math
from typing import Any

from mtlcli.errors import did_you_mean
from mtlcli.recipe import layer_table
from mtlcli.recipe.yamlio import describe

INT32_MAX = 2**31 - 1

#: arguments that are a count or a size: an integer >= 1
POSITIVE_INTS = frozenset(
    {
        "units",
        "filters",
        "output_dim",
        "input_dim",
        "groups",
        "depth_multiplier",
        "num_bins",
        "n",
        "lora_rank",
        "num_heads",
        "key_dim",
        "value_dim",
        "intermediate_dim",
    }
)
#: window sizes and steps: an integer >= 1, or a list of them (one per spatial axis)
POSITIVE_INT_TUPLES = frozenset({"kernel_size", "strides", "pool_size", "dilation_rate", "size"})
#: dropout-like probabilities: a number in [0, 1)
FRACTIONS = frozenset({"rate", "dropout", "recurrent_dropout"})
#: string arguments with a fixed set of values
CHOICES = {
    "padding": ("valid", "same", "causal"),
    "data_format": ("channels_last", "channels_first"),
    "merge_mode": ("concat", "sum", "mul", "ave"),
}
#: the layers ``bidirectional`` runs forwards and backwards
RECURRENT = ("lstm", "gru", "simple_rnn")


def _named_kind(arg: str) -> str | None:
    """Which table of Keras names an argument's string value must come from, if any."""
    if arg in ("activation", "recurrent_activation"):
        return "activation"
    for kind in ("initializer", "regularizer", "constraint"):
        if arg.endswith(f"_{kind}"):
            return kind
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any) -> str | None:
    if not _is_int(value):
        return f"expected an integer >= 1, received {describe(value)}"
    if not 1 <= value <= INT32_MAX:
        return f"expected an integer between 1 and {INT32_MAX}, received {value!r}"
    return None


def _positive_ints(value: Any) -> str | None:
    if isinstance(value, list) and value:
        bad = [v for v in value if _positive_int(v)]
        return None if not bad else f"expected integers >= 1, received {describe(bad[0])} in the list"
    if isinstance(value, list):
        return "expected an integer >= 1 or a list of them, received an empty list"
    problem = _positive_int(value)
    return problem and problem.replace("integer >= 1", "integer >= 1 or a list of them", 1)


def _fraction(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        return f"expected a number in [0, 1), received {describe(value)}"
    return None


def _name(kind: str, value: Any) -> str | None:
    if value is None or isinstance(value, dict):
        return None
    if not isinstance(value, str):
        return f"expected the name of a Keras {kind}, received {describe(value)}"
    choices = layer_table.names()[kind]
    if value not in choices:
        return f"unknown {kind} {value!r}{did_you_mean(value, choices)} (e.g. {', '.join([c for c in choices if c.islower()][:6])}, ...)"
    return None


def _by_default_kind(default: str | None, value: Any) -> str | None:
    """An argument without a rule of its own takes the kind of its Keras default."""
    if default == "bool" and not isinstance(value, bool):
        return f"expected true or false, received {describe(value)}"
    if default == "int" and value is not None:
        if not _is_int(value):
            return f"expected an integer, received {describe(value)}"
        if abs(value) > INT32_MAX:
            return f"expected an integer of at most {INT32_MAX}, received {value!r}"
    if (
        default == "float"
        and value is not None
        and (isinstance(value, bool) or not isinstance(value, (int, float)))
    ):
        return f"expected a number, received {describe(value)}"
    return None


def _recurrent_layer(value: Any) -> str | None:
    """``bidirectional``'s ``layer``: one recurrent layer written as in a layer list."""
    example = "e.g. layer: {lstm: {units: 32}}"
    if isinstance(value, str):
        value = {value: {}}
    if not isinstance(value, dict) or len(value) != 1:
        return f"expected one recurrent layer ({', '.join(RECURRENT)}), {example}; received {describe(value)}"
    ((name, kwargs),) = value.items()
    if name not in RECURRENT:
        return f"expected a recurrent layer ({', '.join(RECURRENT)}), {example}; received {name!r}{did_you_mean(name, RECURRENT)}"
    kwargs = kwargs or {}
    if not isinstance(kwargs, dict):
        return f"expected the layer's arguments as a mapping, received {describe(kwargs)}"
    entry = layer_table.table()[name]
    for key, v in kwargs.items():
        if key not in entry["params"]:
            return f"{entry['class']} has no argument {key!r}{did_you_mean(key, entry['params'])}"
        if problem := argument_problem(name, key, v):
            return f"{entry['class']} {key}: {problem}"
    lacking = [k for k in entry["required"] if k not in kwargs]
    return f"{entry['class']} needs the argument {lacking[0]!r}" if lacking else None


#: the endings of the local weights files a backbone loads (Keras's own format and legacy HDF5)
WEIGHTS_FILES = (".weights.h5", ".h5")


def backbone_problem(layer: str, arg: str, value: Any) -> str | None:
    """A Keras Applications backbone's own arguments: ``weights`` (null or a local file; never a
    download), ``include_top`` (false: the tasks' towers are the top), ``pooling`` and ``alpha``."""
    if arg == "weights":
        if value is None:
            return None
        if value == "imagenet":
            return (
                "imagenet downloads the ImageNet weights from the internet when the model is "
                "built, which these machines cannot reach (and a run must not depend on); give a local "
                f"file instead: on a machine with internet, run `keras.applications."
                f"{layer_table.table()[layer]['class']}(include_top=False, weights='imagenet')"
                f".save_weights('{layer}.weights.h5')` (or copy the no-top .h5 that Keras caches in "
                f"~/.keras/models/), then write weights: {layer}.weights.h5 (relative to the recipe); or "
                "leave weights out (null) to start from random values"
            )
        if not isinstance(value, str) or not value.endswith(WEIGHTS_FILES):
            return (
                f"expected null (random initial values) or the path of a local weights file ending in "
                f"{' or '.join(WEIGHTS_FILES)}, received {describe(value)}"
            )
        return None
    if arg == "include_top" and value is not False:
        return (
            f"a backbone is used without its ImageNet classifier (the tasks' towers are the top): "
            f"expected false, received {describe(value)}"
        )
    if arg == "pooling" and value not in ("avg", "max", None):
        return (
            f"expected avg, max or null (the last feature map); received {describe(value)}"
            f"{did_you_mean(value, ('avg', 'max')) if isinstance(value, str) else ''}"
        )
    if arg == "alpha" and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        return f"expected a width multiplier > 0 (e.g. 0.75 or 1.0), received {describe(value)}"
    return None


def argument_problem(layer: str, arg: str, value: Any) -> str | None:
    """What is wrong with ``layer(arg=value)``, or None. ``layer`` is a snake_case table name."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, received {value!r}"
    if layer in layer_table.BACKBONES and arg in ("weights", "include_top", "pooling", "alpha"):
        return backbone_problem(layer, arg, value)
    if arg in layer_table.table()[layer].get("layers", ()):
        return _recurrent_layer(value)
    if arg in ("key_dim", "value_dim") and value is None:
        return None
    if arg in POSITIVE_INTS:
        return _positive_int(value)
    if arg in POSITIVE_INT_TUPLES and (arg != "size" or layer.startswith("up_sampling")):
        return _positive_ints(value)
    if arg in FRACTIONS:
        return _fraction(value)
    named = _named_kind(arg)
    if named:
        return _name(named, value)
    if arg in CHOICES and isinstance(value, str) and value not in CHOICES[arg]:
        options = CHOICES[arg]
        return f"expected one of {', '.join(options)}; received {value!r}{did_you_mean(value, options)}"
    return _by_default_kind(layer_table.table()[layer].get("defaults", {}).get(arg), value)
