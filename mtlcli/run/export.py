"""``mtl export``: a trained run as a TensorFlow SavedModel (or a TFLite file) that serves raw features.

* ``saved_model`` (default): one ``serving_default`` signature that takes the raw features **by column
  name** (:func:`signature_keys`: a column that is not a valid key is sanitised, the mapping is kept in
  ``export.json``), batched: numbers float64 (NaN = missing), categories strings, image files the
  encoded file bytes, image / array inputs float32. It returns the decoded outputs of
  :class:`mtlcli.model.serving.Predictor` -- the same objects (input transform, network, decoder) that
  ``mtl predict`` runs, so the numbers are the same. The directory needs only TensorFlow to load.
* ``tflite``: the same network converted with ``tf.lite.TFLiteConverter`` to builtin ops only. TFLite
  has no float64 arithmetic and no hash tables after freezing, so its front end is rewritten with
  builtin ops: numbers arrive as float32 and are standardised in float32 (a few 1e-7 from the
  SavedModel), categories are matched against the vocabulary with string equality; a multilabel task
  has no joined ``label`` string there (no string join in TFLite). Image-file inputs (decoding), text
  inputs (tokenising) and recurrent layers that loop over the steps (a tensor list TFLite holds only at
  a fixed batch size; ``unroll: true`` converts) cannot convert and are refused, naming them.

Every export writes ``export.json`` beside the model (inputs, outputs, classes, thresholds, versions,
the source model's sha256) and is built in a temporary directory next to the target, renamed into place
at the end; an existing non-empty target is replaced only with ``force``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli import __version__, fsio
from mtlcli.errors import CheckpointError, UsageError, did_you_mean
from mtlcli.run.evaluate import find_model
from mtlcli.run.predict import check_thresholds, parse_thresholds
from mtlcli.tfutil import capture_fd2, import_tf

FORMATS = ("saved_model", "tflite")
SIGNATURE = "serving_default"
MANIFEST = "export.json"
TFLITE_FILE = "model.tflite"
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass
class Exported:
    """What :func:`export` wrote."""

    format: str
    path: Path  # the SavedModel directory, or the directory holding model.tflite
    model_file: Path  # saved_model.pb or model.tflite
    manifest: dict[str, Any]

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST


def default_output(model_path: Path, run_dir: Path | None, fmt: str) -> Path:
    """``<run>/export/saved_model`` (or ``.../tflite``); beside a bare model file, ``export/<format>``."""
    return (run_dir if run_dir is not None else model_path.parent) / "export" / fmt


def sanitise(column: str) -> str:
    """A signature key for a column name: letters, digits and ``_``, starting with a letter."""
    key = re.sub(r"[^A-Za-z0-9_]+", "_", str(column)).strip("_") or "input"
    return key if key[0].isalpha() else f"x_{key}"


def signature_keys(inputs: dict) -> dict[str, str]:
    """Input name -> the signature key its raw feature arrives under: the input's column (sanitised when
    it is not a valid key). Inputs reading the same column with the same raw kind share one key."""
    keys: dict[str, str] = {}
    owner: dict[str, tuple[str, str]] = {}  # key -> (column, raw kind) it stands for
    for name, st in inputs.items():
        kind = _raw_kind(st)
        base = st.column if _KEY_RE.match(str(st.column)) else sanitise(st.column)
        key, n = base, 1
        while key in owner and owner[key] != (st.column, kind):
            n += 1
            key = f"{base}_{n}"
        owner[key] = (st.column, kind)
        keys[name] = key
    return keys


def _raw_kind(st) -> str:
    if st.kind == "numeric":
        return "number"
    if st.kind in ("categorical", "text"):
        return "string"
    return "bytes" if st.files else f"array{tuple(st.shape)}"


def export(
    target: str | Path,
    *,
    fmt: str = "saved_model",
    output: str | Path | None = None,
    thresholds: dict[str, float] | list[str] | None = None,
    force: bool = False,
    verbose: bool = False,
) -> Exported:
    """Export the model of ``target`` (a run directory or a model file) in ``fmt``; see the module
    docstring; ``thresholds`` maps a binary or multilabel task to its threshold (or is a list of
    ``TASK=P`` strings). User mistakes raise UsageError before anything is written."""
    if not isinstance(thresholds, dict):
        thresholds = parse_thresholds(thresholds)
    if fmt not in FORMATS:
        raise UsageError(
            f"--format: expected one of {', '.join(FORMATS)}, received {fmt!r}{did_you_mean(fmt, FORMATS)}"
        )
    model_path, run_dir = find_model(Path(target))
    out = Path(output) if output is not None else default_output(model_path, run_dir, fmt)
    _check_output(out, model_path, force)
    tf = import_tf(verbose)
    from mtlcli.model.serving import Predictor
    from mtlcli.run.evaluate import load_model

    model = load_model(model_path, verbose)
    from mtlcli.data.preprocess import Preprocessing

    try:
        prep = Preprocessing.from_dict(model.spec["preprocessing"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{model_path}: no preprocessing in the model spec ({exc})") from None
    thresholds = dict(thresholds or {})
    check_thresholds(thresholds, prep.targets)
    if fmt == "tflite":
        _refuse_for_tflite(prep, model)
    files = any(st.files for st in prep.inputs.values())
    predictor = Predictor(model, thresholds=thresholds, image_bytes=files)
    keys = signature_keys(prep.inputs)
    source = {"model": str(model_path), "run": str(run_dir) if run_dir else None}
    source["sha256"] = fsio.sha256(model_path)
    info = dict(source=source, thresholds=thresholds, keys=keys, tf=tf, prep=prep)
    if fmt == "saved_model":
        return _write(out, force, lambda tmp: _saved_model(tf, predictor, keys, tmp), info, fmt)
    return _write(out, force, lambda tmp: _tflite(tf, predictor, keys, tmp), info, fmt)


def _check_output(out: Path, model_path: Path, force: bool) -> None:
    """Refuse a target that is a file, holds the exported model, or is a non-empty directory (unless
    ``force``)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a directory")
    if out.exists() and model_path.resolve().is_relative_to(out.resolve()):
        raise UsageError(f"-o {out}: holds the model being exported ({model_path}); choose another directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"-o {out}: the directory exists and is not empty; pass --force to replace it")


def _write(out: Path, force: bool, build, info: dict, fmt: str) -> Exported:
    """Build the export into a temporary directory beside ``out`` (``build(tmp)`` returns the model
    file and the signature), add export.json, then rename it into place."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as exc:
        raise fsio.disk_error(exc, str(out)) from None
    try:
        model_file, signature = build(tmp)
        manifest = _manifest(fmt, model_file, signature, info)
        fsio.atomic_write(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        _replace_dir(tmp, out, force)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise fsio.disk_error(exc, str(out)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(fmt, out, out / model_file, manifest)


def _replace_dir(tmp: Path, out: Path, force: bool) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` (empty, or any with ``force``) is moved aside first
    and removed once the new one is in place."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)
    old = None
    if out.exists():
        if any(out.iterdir()) and not force:  # appeared while exporting
            raise UsageError(f"-o {out}: the directory exists and is not empty; pass --force to replace it")
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    fsio.fsync_dir(out.parent)


# ------------------------------------------------------------------------------------------------
# SavedModel


def _specs(tf, predictor, keys: dict[str, str], numbers=None) -> dict:
    """The signature's TensorSpecs by key (``numbers`` overrides the numeric dtype: float32 for TFLite)."""
    raw = predictor.signature()
    specs = {}
    for name, key in keys.items():
        spec = raw[name]
        dtype = (
            numbers if numbers is not None and predictor.prep.inputs[name].kind == "numeric" else spec.dtype
        )
        specs.setdefault(key, tf.TensorSpec(spec.shape, dtype, name=key))
    return specs


def serving_module(tf, predictor, keys: dict[str, str]):
    """A tf.Module whose ``serve`` function takes the raw features by signature key and calls
    ``predictor`` (its transform, network and decoder are tracked, so tf.saved_model.save keeps their
    variables and look-up tables)."""
    module = tf.Module(name="mtl_serving")
    module.transform, module.model, module.decoder = predictor.transform, predictor.model, predictor.decoder

    def serve(features):
        return predictor({name: features[key] for name, key in keys.items()})

    module.serve = tf.function(serve, input_signature=[_specs(tf, predictor, keys)])
    return module


def _saved_model(tf, predictor, keys: dict[str, str], tmp: Path):
    module = serving_module(tf, predictor, keys)
    fn = module.serve.get_concrete_function()
    tf.saved_model.save(module, str(tmp), signatures={SIGNATURE: fn})
    return "saved_model.pb", _describe(fn)


def _describe(fn) -> dict:
    """The input and output keys of a concrete function, with dtypes and shapes (None = any)."""

    def one(t) -> dict:
        return {"dtype": t.dtype.name, "shape": [d for d in t.shape.as_list()]}

    inputs = fn.structured_input_signature[0][0]
    return {
        "inputs": {k: one(v) for k, v in inputs.items()},
        "outputs": {k: one(v) for k, v in fn.structured_outputs.items()},
    }


def _manifest(fmt: str, model_file: str, signature: dict, info: dict) -> dict:
    """export.json: what a client needs to call the export, and where it came from."""
    tf, keys, thresholds = info["tf"], info["keys"], info["thresholds"]
    prep = info["prep"]
    import keras

    from mtlcli.model.serving import FIELDS, label_strings, output_key

    outs = signature["outputs"]
    inputs = {}
    for key, desc in signature["inputs"].items():
        names = [n for n, k in keys.items() if k == key]
        st = prep.inputs[names[0]]
        kind = "image file (encoded bytes)" if st.files else st.kind
        inputs[key] = {"column": st.column, "inputs": names, "kind": kind, **desc}
        if st.kind == "categorical":  # the known categories; any other string is the unknown one
            inputs[key]["values"] = list(st.vocabulary)
        if st.kind == "numeric":  # what a NaN (missing) becomes: the training mean, or zero
            inputs[key].update(missing=st.missing if st.missing == "zero" else "mean", mean=st.mean)
    tasks = {}
    for task, st in prep.targets.items():
        row: dict[str, Any] = {"type": st.type}
        if st.type == "regression":
            row["columns"] = st.columns
        else:
            row["classes"] = label_strings(st.classes)
        if st.type in ("binary", "multilabel"):
            row["threshold"] = thresholds.get(task, 0.5)
        row["outputs"] = [output_key(task, f) for f in FIELDS[st.type] if output_key(task, f) in outs]
        tasks[task] = row
    return {
        "format": fmt,
        "model_file": model_file,
        "signature": SIGNATURE,
        "columns": {inputs[k]["column"]: k for k in inputs},
        "inputs": inputs,
        "outputs": signature["outputs"],
        "tasks": tasks,
        "thresholds": thresholds,
        "versions": {"mtl": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
        "source": info["source"],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ------------------------------------------------------------------------------------------------
# TFLite


def _refuse_for_tflite(prep, model) -> None:
    """Image-file inputs cannot convert (decoding a PNG/JPEG is no TFLite builtin op), nor can a
    network that computes in bfloat16."""
    if "bfloat16" in {model.compute_dtype, *(lay.compute_dtype for lay in model.layers)}:
        raise UsageError(
            "--format tflite: the model computes in bfloat16 (train.mixed_precision: bfloat16), which "
            "TFLite's builtin ops do not run. Use mtl export --format saved_model, or train without "
            "mixed_precision for a TFLite model"
        )
    files = [f"{name} (column {st.column!r})" for name, st in prep.inputs.items() if st.files]
    if files:
        raise UsageError(
            f"--format tflite: the image-file input(s) {', '.join(files)} cannot convert: decoding "
            "image files is not a TFLite builtin op. Use mtl export --format saved_model (it takes the "
            "encoded bytes), or train on image arrays (NPZ/IDX) for a TFLite model"
        )
    texts = [f"{name} (column {st.column!r})" for name, st in prep.inputs.items() if st.kind == "text"]
    if texts:
        raise UsageError(
            f"--format tflite: the text input(s) {', '.join(texts)} cannot convert: splitting and looking "
            "up tokens (TextVectorization) uses string ops that are not TFLite builtins. Use mtl export "
            "--format saved_model (it takes the raw strings)"
        )
    loops = [f"{x.name} ({_kind(x)})" for x in recurrent_loops(model)]
    if loops:
        raise UsageError(
            f"--format tflite: the recurrent layer(s) {', '.join(loops)} cannot convert: their loop over "
            "the steps keeps a TensorFlow tensor list, which TFLite's builtin ops hold only at a fixed "
            "batch size. Set unroll: true on them (the steps are then unrolled; the weights are the same) "
            "and train again, or use mtl export --format saved_model"
        )


def _kind(layer) -> str:
    inner = getattr(layer, "forward_layer", None)
    return type(layer).__name__ + (f" of {type(inner).__name__}" if inner is not None else "")


def recurrent_loops(model) -> list:
    """The recurrent layers of ``model`` that loop over the steps (``keras.layers.RNN``: lstm, gru,
    simple_rnn without ``unroll: true``; a bidirectional one as one layer), in an encoder, the trunk,
    experts or a head: found through the layers' attributes, each once, by name."""
    import keras

    found, seen, todo = [], set(), [model]
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, keras.layers.Bidirectional):
            if not (x.forward_layer.unroll and x.backward_layer.unroll):
                found.append(x)
        elif isinstance(x, keras.layers.RNN):
            if not x.unroll:
                found.append(x)
        else:
            items = vars(x).values() if isinstance(x, keras.layers.Layer) else x
            items = items.values() if isinstance(items, dict) else items
            todo.extend(v for v in items if isinstance(v, (keras.layers.Layer, list, tuple, dict)))
    return sorted(found, key=lambda layer: layer.name)


def _lite_numeric(tf, st, x):
    """A numeric input's model feature in float32 arithmetic (the SavedModel computes in float64):
    NaN (and +-inf) -> the missing fill, plus the "was missing" flag when asked."""
    finite = tf.abs(x) <= np.float32(np.finfo(np.float32).max)  # False for NaN and +-inf
    fill = 0.0 if st.missing != "zero" else (0.0 - st.mean) / st.std
    scaled = (x - np.float32(st.mean)) / np.float32(st.std)
    out = tf.where(finite, scaled, tf.fill(tf.shape(x), np.float32(fill)))[..., None]
    if st.flag:
        absent = tf.cast(tf.not_equal(x, x), tf.float32)[..., None]
        out = tf.concat([out, absent], axis=-1)
    return out


def _lite_categorical(tf, st, x):
    """A categorical input's model feature by string equality with the vocabulary (index 0 = unknown),
    as the SavedModel's StringLookup gives it."""
    hits = tf.equal(x[..., None], tf.constant(st.vocabulary or [""], tf.string))
    if not st.vocabulary:
        hits = tf.zeros_like(hits)
    known = tf.reduce_any(hits, axis=-1)
    if st.encoding == "embedding":
        index = tf.argmax(tf.cast(hits, tf.int32), axis=-1, output_type=tf.int32) + 1
        return tf.where(known, index, tf.zeros_like(index))[..., None]
    onehot = tf.concat([tf.logical_not(known)[..., None], hits], axis=-1)
    width = len(st.vocabulary) + 1
    return tf.cast(onehot, tf.float32)[..., :width]


def lite_features(tf, inputs: dict, raw: dict) -> dict:
    """The model inputs of the numeric and categorical ``inputs`` (name -> InputStats) from their raw
    tensors (numbers float32), in TFLite builtin ops; the other inputs are left out."""
    out = {}
    for name, st in inputs.items():
        if st.kind == "numeric":
            out[name] = _lite_numeric(tf, st, raw[name])
        elif st.kind == "categorical":
            out[name] = _lite_categorical(tf, st, raw[name])
    return out


def lite_module(tf, predictor, keys: dict[str, str]):
    """The TFLite twin of :func:`serving_module`: numbers float32, categories matched by equality, the
    other inputs through the fitted transform, then the same network and decoder."""
    from mtlcli.data import layers
    from mtlcli.model.serving import output_key

    prep = predictor.prep
    rest = {n: st for n, st in prep.inputs.items() if st.kind not in ("numeric", "categorical")}
    module = tf.Module(name="mtl_tflite")
    module.transform = layers.layer(rest) if rest else None
    module.model, module.decoder = predictor.model, predictor.decoder
    # A multilabel task's joined ``label`` string needs string joins, which TFLite lacks: left out
    # (its ``probabilities`` and 0/1 ``labels`` stay).
    joined = {output_key(t, "label") for t in predictor.tasks if prep.targets[t].type == "multilabel"}

    def serve(features):
        x = lite_features(tf, prep.inputs, {name: features[key] for name, key in keys.items()})
        if rest:
            x.update(module.transform({n: features[keys[n]] for n in rest}))
        out = module.decoder(module.model(x, training=False))
        return {k: v for k, v in out.items() if k not in joined}

    module.serve = tf.function(serve, input_signature=[_specs(tf, predictor, keys, numbers=tf.float32)])
    return module


def _tflite(tf, predictor, keys: dict[str, str], tmp: Path):
    module = lite_module(tf, predictor, keys)
    fn = module.serve.get_concrete_function()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # The converter's own freezing does not find Keras 3's variables (the .tflite read uninitialised
    # memory): freeze them into constants first. Freezing flattens the outputs (in sorted key order, as
    # tf.nest flattens a dict), so a small function names them again.
    frozen = convert_variables_to_constants_v2(fn)
    names = sorted(fn.structured_outputs)

    def named(features):
        return dict(zip(names, frozen(**features), strict=True))

    holder = tf.Module(name="mtl_tflite_frozen")
    holder.serve = tf.function(named, input_signature=[fn.structured_input_signature[0][0]])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [holder.serve.get_concrete_function()], holder
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with capture_fd2(replay=False):  # the converter writes its MLIR diagnostics to fd 2
        try:
            flat, failure = converter.convert(), None
        except Exception as exc:  # noqa: BLE001 - the converter raises its own ConverterError types
            flat, failure = None, exc
    if failure is not None:
        ops = re.findall(r"TF Select ops: ([^\n]+)", str(failure))
        what = f" (TensorFlow ops without a TFLite builtin: {ops[0]})" if ops else ""
        raise UsageError(
            f"--format tflite: the model does not convert to TFLite builtin ops{what}; use "
            "mtl export --format saved_model"
        )
    fsio.write_synced(tmp / TFLITE_FILE, flat)
    return TFLITE_FILE, _describe(fn)
