"""Checks of a recipe's ``data:`` section and the data keys of tasks that the schema cannot express.

Pure Python, no TensorFlow: sources (``{idx: ..., labels: ...}``, ``{multifashion: DIR}``), column splits
(``split:``), ``group_by``, input options (text inputs and where their token ids may go included), and the per-task ``when:``, ``class_weight`` and multi-label /
multi-column targets. Each problem names the recipe path and line.
"""

from __future__ import annotations

import codecs
import encodings.aliases
from collections.abc import Callable
from typing import Any

from mtlcli.errors import Problem, did_you_mean
from mtlcli.recipe.yamlio import Located, describe
from mtlcli.weighting.registry import REGISTRY

#: keys of a source mapping and what each means
SOURCE_KEYS = {
    "idx": "an IDX images file (MNIST format, optionally .gz)",
    "labels": "the IDX labels file that goes with idx",
    "multifashion": "the directory of the Fashion-MNIST IDX files (builds the two-item overlay)",
    "split": "multifashion: train or test",
    "seed": "multifashion: seed of the partner draw (default 0)",
    "cache": "multifashion: directory of the built overlay (default ~/.cache/mtl)",
    "path": "a CSV / CSV.gz (or any) file or glob, read with the dialect keys beside it",
    "sep": "path: the field separator of the CSV file (one character, or \\t for tabs)",
    "encoding": "path: the text encoding of the CSV file (default utf-8)",
    "decimal": "path: the decimal mark of its numbers (default .)",
}
#: the keys of a CSV dialect (``data.csv``, or beside ``path:`` in a source) and their defaults
CSV_DEFAULTS = {"sep": ",", "encoding": "utf-8", "decimal": "."}
#: operators of a ``when:`` condition
WHEN_OPS = ("equals", "not_equals", "in", "not_in", "greater_than", "less_than", "present")
SPLIT_KEYS = ("column", "train", "validation", "test")


def target_columns(spec: Any, task: str) -> list[str]:
    """The label columns of a task (``target`` may be one column or a list)."""
    target = spec.get("target") if isinstance(spec, dict) else getattr(spec, "target", None)
    if target is None:
        return [task]
    if isinstance(target, list):
        return [str(t) for t in target]
    return [str(target)]


def when_conditions(when: Any) -> list[dict]:
    """A ``when:`` value as a list of conditions (all must hold)."""
    if when is None:
        return []
    return list(when) if isinstance(when, list) else [when]


def data_problems(data: dict, tasks: dict, src: Located) -> list[Problem]:
    """Every problem of the ``data`` mapping: sources, dialects, splits, inputs, and each task's data keys."""
    out: list[Problem] = []

    def add(message: str, path: tuple) -> None:
        out.append(src.problem(message, path))

    for key in ("train", "validation", "test"):
        value = data.get(key)
        if isinstance(value, dict):
            out.extend(_source_problems(value, ("data", key), add))
    if data.get("csv") is not None:
        if not isinstance(data["csv"], dict):
            add(
                f"expected a mapping such as {{sep: ';', decimal: ','}}, received {describe(data['csv'])}",
                ("data", "csv"),
            )
        else:
            for key in data["csv"]:
                if key not in CSV_DEFAULTS:
                    add(
                        f"unknown key {key!r}{did_you_mean(key, CSV_DEFAULTS)}; data.csv has "
                        f"{', '.join(CSV_DEFAULTS)}",
                        ("data", "csv", key),
                    )
            csv_problems(data["csv"], ("data", "csv"), add)

    split = data.get("split")
    if isinstance(split, dict):
        _split_problems(split, data, add)
    group_by = data.get("group_by")
    if group_by is not None and not isinstance(group_by, str):
        add(f"expected a column name, received {describe(group_by)}", ("data", "group_by"))
    if data.get("stream") is not None:
        stream_problems(data, add)

    inputs = data.get("inputs")
    if isinstance(inputs, dict):
        if not inputs:
            add("expected at least one input", ("data", "inputs"))
        for inp, spec in inputs.items():
            if not isinstance(spec, dict):
                continue
            kind = spec.get("kind")
            if kind == "image" and not spec.get("shape"):
                add("an image input needs its shape, e.g. shape: [28, 28, 1]", ("data", "inputs", inp))
            if kind not in ("image", "array") and spec.get("shape"):
                add("shape applies to image and array inputs only", ("data", "inputs", inp, "shape"))
            shape = spec.get("shape")
            if isinstance(shape, list) and any(isinstance(s, int) and s < 1 for s in shape):
                add(f"expected positive sizes, received {shape}", ("data", "inputs", inp, "shape"))
            if kind == "image" and isinstance(shape, list) and len(shape) == 3 and shape[-1] not in (1, 3, 4):
                add(
                    f"an image has 1, 3 or 4 channels (the last size), received {shape[-1]}",
                    ("data", "inputs", inp, "shape"),
                )
            for key in ("missing", "flag"):
                if spec.get(key) not in (None, False) and kind != "numeric":
                    add(f"{key} applies to numeric inputs only", ("data", "inputs", inp, key))
            if spec.get("encoding") is not None and kind != "categorical":
                add("encoding applies to categorical inputs only", ("data", "inputs", inp, "encoding"))
            elif spec.get("dim") is not None and spec.get("encoding") != "embedding":
                add(
                    "dim applies to categorical inputs with encoding: embedding only",
                    ("data", "inputs", inp, "dim"),
                )
        _text_problems(inputs, src, add)
        for task, spec in tasks.items():
            for target in target_columns(spec, str(task)):
                if target in inputs:
                    add(
                        f"the target {target!r} is also listed as an input (data.inputs.{target}): the model "
                        f"would see the answer",
                        ("model", "tasks", task, "target"),
                    )

    for task, spec in tasks.items():
        if isinstance(spec, dict):
            _task_data_problems(str(task), spec, add)
    return out


#: the keys of a text input
TEXT_KEYS = ("max_tokens", "sequence_length", "standardize", "split", "ngrams", "output")


def _first_layer(layers: Any) -> str | None:
    """The name of the first layer of a layer list (``dense`` of ``[{dense: {...}}, ...]``)."""
    if not isinstance(layers, list) or not layers:
        return None
    first = layers[0]
    if isinstance(first, str):
        return first
    return next(iter(first)) if isinstance(first, dict) and len(first) == 1 else None


def _text_problems(inputs: dict, src: Located, add) -> None:
    """Text options on other kinds, ``sequence_length`` of a bag of tokens, and where token ids can go:
    a text input with ``output: int`` gives a sequence of ids, which only an ``embedding`` layer reads
    (first in ``model.shared``, or first in the input's own ``model.encoders`` entry) and which cannot be
    flattened and joined with other inputs unless the input has an encoder."""
    texts = {}
    for inp, spec in inputs.items():
        spec = {"kind": spec} if isinstance(spec, str) else spec  # the shorthand ``review: text``
        if not isinstance(spec, dict):
            continue
        if spec.get("kind") != "text":
            for key in TEXT_KEYS:
                if spec.get(key) is not None:
                    add(f"{key} applies to text inputs only", ("data", "inputs", inp, key))
            continue
        output = spec.get("output") or "int"
        texts[inp] = output
        if output != "int" and spec.get("sequence_length") is not None:
            add(
                f"sequence_length applies to output: int only (output: {output} gives one column per "
                f"token, whatever the length of the text)",
                ("data", "inputs", inp, "sequence_length"),
            )
    ids = [name for name, output in texts.items() if output == "int"]
    doc = src.data if isinstance(src.data, dict) else {}
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    encoders = model.get("encoders") if isinstance(model.get("encoders"), dict) else {}
    for name in ids:  # an input with its own encoder: that encoder starts with the embedding
        layers = encoders.get(name)
        if isinstance(layers, list) and layers and _first_layer(layers) != "embedding":
            add(
                f"text input {name!r} gives token ids (output: int): its encoder must start with an "
                f"embedding layer, e.g. model.encoders: {{{name}: [{{embedding: {{output_dim: 32}}}}, "
                f"global_average_pooling1d]}} (input_dim defaults to the vocabulary size)",
                ("model", "encoders", name, 0),
            )
    ids = [name for name in ids if name not in encoders]
    if not ids:
        return
    name = ids[0]
    if len(inputs) > 1:
        add(
            f"text input {name!r} gives token ids (output: int), a sequence that cannot be flattened and "
            f"joined with the other inputs ({', '.join(str(k) for k in inputs if k != name)}) unless the "
            f"input has an encoder: add model.encoders: {{{name}: [{{embedding: {{output_dim: 32}}}}, "
            f"global_average_pooling1d]}}, make it the only input, or use output: multi_hot or tf_idf "
            f"(one column per token)",
            ("data", "inputs", name),
        )
        return
    if _first_layer(model.get("shared")) != "embedding":
        add(
            f"text input {name!r} gives token ids (output: int): model.shared must start with an embedding "
            f"layer, e.g. shared: [{{embedding: {{output_dim: 64}}}}, {{global_average_pooling1d: {{}}}}, "
            f"...] (input_dim defaults to the vocabulary size); or use output: multi_hot or tf_idf",
            ("model", "shared", 0) if model.get("shared") else ("data", "inputs", name),
        )


def _source_problems(value: dict, path: tuple, add) -> list[Problem]:
    """A source given as a mapping: exactly one known form (idx, multifashion, path) with its keys."""
    for key in value:
        if key not in SOURCE_KEYS:
            add(
                f"unknown key {key!r}{did_you_mean(key, SOURCE_KEYS)}; a data source is a path, a glob, "
                f"{{path: FILE, sep: ';'}}, {{idx: IMAGES, labels: LABELS}} or {{multifashion: DIR, split: train}}",
                (*path, key),
            )
    kinds = [k for k in ("idx", "multifashion", "path") if k in value]
    if len(kinds) != 1:
        add(
            "a data source mapping needs exactly one of path, idx or multifashion, received "
            + (", ".join(kinds) if kinds else "none"),
            path,
        )
        return []
    for key in ("idx", "labels", "multifashion", "cache", "path"):
        if key in value and not isinstance(value[key], str):
            add(f"expected a path, received {describe(value[key])}", (*path, key))
    if kinds == ["path"]:
        for key in ("labels", "split", "seed", "cache"):
            if key in value:
                add(f"{key} applies to idx or multifashion sources, not to path", (*path, key))
        csv_problems(value, path, add)
        return []
    for key in CSV_DEFAULTS:
        if key in value:
            add(f"{key} applies to path sources (a CSV file): {{path: FILE, {key}: ...}}", (*path, key))
    if kinds == ["idx"]:
        for key in ("split", "seed", "cache"):
            if key in value:
                add(f"{key} applies to multifashion sources only", (*path, key))
    else:
        if "labels" in value:
            add("labels applies to idx sources only", (*path, "labels"))
        if value.get("split", "train") not in ("train", "test"):
            add(f"expected train or test, received {describe(value.get('split'))}", (*path, "split"))
        seed = value.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            add(f"expected an integer, received {describe(seed)}", (*path, "seed"))
    return []


def csv_problems(dialect: dict, path: tuple, add) -> None:
    """Checks of the dialect keys of ``data.csv`` or of a ``{path: FILE, ...}`` source."""
    for key in ("sep", "decimal"):
        value = dialect.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value.replace("\\t", "\t")) != 1:
            example = "';', '|' or '\\t' (a tab)" if key == "sep" else "',' or '.'"
            add(f"expected one character such as {example}, received {describe(value)}", (*path, key))
    sep, decimal = dialect.get("sep", ","), dialect.get("decimal", ".")
    if isinstance(sep, str) and sep == decimal:
        add(
            f"the decimal mark {decimal!r} is also the field separator; choose two different characters",
            (*path, "decimal"),
        )
    encoding = dialect.get("encoding")
    if encoding is None:
        return
    if not isinstance(encoding, str):
        add(
            f"expected an encoding name such as utf-8 or latin-1, received {describe(encoding)}",
            (*path, "encoding"),
        )
        return
    try:
        codecs.lookup(encoding)
    except LookupError:
        known = sorted(set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values()))
        hint = did_you_mean(encoding.lower().replace("-", "_"), known) or did_you_mean(encoding, known)
        add(
            f"unknown encoding {encoding!r}{hint} (Python's codecs know utf-8, latin-1, cp1252, utf-16, ...)",
            (*path, "encoding"),
        )


def _split_problems(split: dict, data: dict, add) -> None:
    """``data.split``: a column and the values that go to each split, each value in one split only."""
    base = ("data", "split")
    for key in split:
        if key not in SPLIT_KEYS:
            add(
                f"unknown key {key!r}{did_you_mean(key, SPLIT_KEYS)}; expected {', '.join(SPLIT_KEYS)}",
                (*base, key),
            )
    if not isinstance(split.get("column"), str):
        add(
            "a split needs the column that assigns rows, e.g. {column: fold, train: [0, 1, 2], "
            "validation: [3], test: [4]}",
            base,
        )
    seen: dict[str, str] = {}
    for key in ("train", "validation", "test"):
        values = split.get(key)
        if values is None:
            if key == "train":
                add("a split needs the train values, e.g. train: [0, 1, 2]", base)
            continue
        if not isinstance(values, list) or not values:
            add(f"expected a non-empty list of column values, received {describe(values)}", (*base, key))
            continue
        for v in values:
            if isinstance(v, (dict, list)) or v is None:
                add(f"expected column values (numbers or text), received {describe(v)}", (*base, key))
                break
            k = str(v)
            if k in seen:
                add(f"value {v!r} is in both split.{seen[k]} and split.{key}", (*base, key))
            seen[k] = key
    for key in ("validation", "test"):
        if key in data and data[key] is not None:
            add(
                f"data.{key} cannot be combined with data.split (the split column assigns the {key} rows); "
                f"remove one",
                ("data", key),
            )


def _task_data_problems(task: str, spec: dict, add) -> None:
    """A task's data keys: ``target``, ``separator``, ``class_weight`` and ``when``."""
    base = ("model", "tasks", task)
    ttype = spec.get("type")
    target = spec.get("target")
    separator = spec.get("separator")
    if isinstance(target, list):
        if ttype not in ("multilabel", "regression"):
            add(
                "several target columns need type: multilabel or type: regression",
                (*base, "target"),
            )
        elif len(target) < 2:
            add("expected at least 2 columns in a target list (or one column name)", (*base, "target"))
        elif len(set(map(str, target))) != len(target):
            add("a target column is listed twice", (*base, "target"))
    if separator is not None:
        if ttype != "multilabel":
            add("separator applies to multilabel tasks only", (*base, "separator"))
        elif isinstance(target, list):
            add("separator splits one column; a list of target columns needs none", (*base, "separator"))
        elif isinstance(separator, str) and not separator:
            add("expected a non-empty separator such as '|' or ' '", (*base, "separator"))
    elif ttype == "multilabel" and not isinstance(target, list):
        add(
            "a multilabel task needs several 0/1 target columns (target: [a, b, c]) or one column of "
            "labels joined by a separator (separator: '|')",
            base,
        )
    if spec.get("when") is not None:
        _when_problems(spec["when"], (*base, "when"), add)
    cw = spec.get("class_weight")
    if cw is not None:
        path = (*base, "class_weight")
        if ttype not in ("classification", "binary"):
            add(f"class_weight applies to classification and binary tasks, not {ttype}", path)
        elif isinstance(cw, str):
            if cw != "balanced":
                add(f"expected balanced or a mapping {{label: weight}}, received {cw!r}", path)
        elif isinstance(cw, dict):
            if not cw:
                add("expected at least one label: weight pair", path)
            for label, weight in cw.items():
                if (
                    not isinstance(weight, (int, float))
                    or isinstance(weight, bool)
                    or not weight >= 0
                    or weight == float("inf")
                ):
                    add(f"expected a finite weight >= 0, received {describe(weight)}", (*path, label))
        else:
            add(f"expected balanced or a mapping {{label: weight}}, received {describe(cw)}", path)


def _when_problems(when: Any, path: tuple, add) -> None:
    """A ``when:`` condition (or a list of them): a column and exactly one known operator."""
    example = "e.g. when: {column: click, equals: 1}"
    items = when if isinstance(when, list) else [when]
    if isinstance(when, list) and not when:
        add(f"expected at least one condition, {example}", path)
    for i, cond in enumerate(items):
        at = (*path, i) if isinstance(when, list) else path
        if not isinstance(cond, dict):
            add(
                f"expected a condition {{column: name, <operator>: value}}, {example}; received {describe(cond)}",
                at,
            )
            continue
        for key in cond:
            if key != "column" and key not in WHEN_OPS:
                add(
                    f"unknown key {key!r}{did_you_mean(key, ('column', *WHEN_OPS))}; a condition has a column and "
                    f"one of {', '.join(WHEN_OPS)}",
                    (*at, key),
                )
        if not isinstance(cond.get("column"), str):
            add(f"a condition needs the column it tests, {example}", at)
        ops = [k for k in cond if k in WHEN_OPS]
        if len(ops) != 1:
            add(
                f"a condition needs exactly one of {', '.join(WHEN_OPS)}, received "
                + (", ".join(ops) if ops else "none"),
                at,
            )
            continue
        op, value = ops[0], cond[ops[0]]
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value or any(isinstance(v, (list, dict)) for v in value):
                add(f"expected a non-empty list of values, received {describe(value)}", (*at, op))
        elif op in ("greater_than", "less_than"):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                add(f"expected a number, received {describe(value)}", (*at, op))
        elif op == "present":
            if not isinstance(value, bool):
                add(f"expected true or false, received {describe(value)}", (*at, op))
        elif isinstance(value, (list, dict)) or value is None:
            add(
                f"expected one value (a number or text), received {describe(value)}; use in: for several",
                (*at, op),
            )


STREAM_KEYS = ("chunk_rows", "shuffle_buffer")
SPLITS = ("train", "validation", "test")


# ------------------------------------------------------------------------------------------------
# data.stream


def stream_problems(data_spec: dict, add: Callable[[str, tuple], None]) -> None:
    """Checks of ``data.stream`` (called from :func:`data_problems`)."""
    value = data_spec.get("stream")
    path = ("data", "stream")
    if isinstance(value, dict):
        for key, v in value.items():
            if key not in STREAM_KEYS:
                add(
                    f"unknown key {key!r}; expected {', '.join(STREAM_KEYS)}{did_you_mean(key, STREAM_KEYS)}",
                    (*path, key),
                )
            elif not isinstance(v, int) or isinstance(v, bool) or v < 1:
                add(f"expected a positive integer (rows), received {v!r}", (*path, key))
    elif not isinstance(value, bool):
        add(
            f"expected true, false or {{chunk_rows: N, shuffle_buffer: M}}, received {value!r}",
            path,
        )
        return
    if value is False:
        return
    for problem in stream_unsupported(data_spec):
        add(*problem)


def stream_unsupported(data_spec: dict) -> list[tuple[str, tuple]]:
    """The parts of ``data`` that streaming cannot handle, as ``(message, path)`` pairs."""
    out = []
    if data_spec.get("group_by") is not None:
        out.append(
            (
                "group_by is not supported when streaming (data.stream): grouping needs every key in memory; "
                "split by a column (data.split) or set stream: false",
                ("data", "group_by"),
            )
        )
    for name, spec in (data_spec.get("inputs") or {}).items():
        kind = spec.get("kind") if isinstance(spec, dict) else spec
        if kind in ("image", "array"):
            out.append(
                (
                    f"{kind} inputs are not supported when streaming (data.stream); streamed data has "
                    f"numeric and categorical inputs",
                    ("data", "inputs", name),
                )
            )
    for key in SPLITS:
        if isinstance(data_spec.get(key), dict) and "path" not in data_spec[key]:
            out.append(
                (
                    "streaming reads CSV, CSV.gz and Parquet files; this source is not one (set stream: false)",
                    ("data", key),
                )
            )
    return out


def validation_problems(train: dict, data_spec: dict, add) -> None:
    """A strategy reading validation batches every step (Auto-Lambda) needs a validation split, and one
    device (its meta step assigns the model's variables inside the step)."""
    spec = train.get("weighting", "static")
    name = next(iter(spec)) if isinstance(spec, dict) and len(spec) == 1 else spec
    cls = REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None or not cls.needs_validation:
        return
    split = data_spec.get("split")
    if data_spec.get("validation", 0.2) is None and not (isinstance(split, dict) and split.get("validation")):
        add(
            f"{name} reads a validation batch every step, and data.validation is null: give the data a "
            f"validation split (e.g. data.validation: 0.2) or choose another strategy",
            ("train", "weighting"),
        )
    if train.get("distribute", "none") not in ("none", None):
        add(
            f"{name} is not available with train.distribute {train['distribute']} (its meta step assigns "
            f"the model's variables inside the step): expected train.distribute none",
            ("train", "weighting"),
        )
