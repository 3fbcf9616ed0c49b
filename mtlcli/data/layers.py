"""The raw-features -> model-inputs transform, written once in TensorFlow (imports Keras at import time:
import this module only where TensorFlow is wanted).

:class:`InputTransform` is a registered Keras layer (``mtl>InputTransform``, loadable with
``safe_mode=True``, no Lambda) built from the fitted :class:`mtlcli.data.inputs.InputStats` -- never from
``adapt()``: the statistics come from the chunked pass. It maps a dict of raw feature tensors (what
:mod:`mtlcli.data.inputs` ``encode`` returns, or what a client sends) to the dict of model inputs:

* numeric: ``(x - mean) / std`` in float64 (so the numbers equal the numpy arithmetic of earlier
  versions bit for bit), NaN -> the ``missing:`` fill, plus the 0/1 "was missing" flag when asked;
* categorical: a ``keras.layers.StringLookup`` over the training vocabulary (index 0 = unknown or
  missing, i.e. the empty key), then one-hot columns or, for ``encoding: embedding``, the int32 id;
* text: a ``keras.layers.TextVectorization`` over the training vocabulary (and, for ``tf_idf``, the
  training idf weights), never adapted: ``int`` gives ``sequence_length`` int32 ids (0 padding, 1
  unknown), ``multi_hot`` / ``tf_idf`` one float32 column per token (column 0 unknown);
* image arrays: ``x * scale``; image files: read, decode, resize and scale.

It runs in three places: over the whole in-memory table once (:func:`transform_features`), on every
streamed piece inside tf.data (:mod:`mtlcli.data.pipeline`), and in front of the model for serving
(:func:`serving_inputs`). Hand-written instead of ``keras.layers.Normalization``: that layer computes in
float32 and clamps the deviation at 1e-7, which would move every standardised value of old runs by
float32 rounding; the look-up is Keras's own.
"""

from __future__ import annotations

from dataclasses import asdict

import keras
import numpy as np
import tensorflow as tf

from mtlcli.data.inputs import InputStats

UNKNOWN = ""  # the key of a missing category: also StringLookup's out-of-vocabulary token (index 0)


def decode_image(path, shape, scale: float, encoded: bool = False):
    """One image file (or, ``encoded``, the file's bytes) -> float32 pixels of ``shape`` (height, width,
    channels), times ``scale``."""
    h, w, c = shape
    raw = path if encoded else tf.io.read_file(path)
    img = tf.io.decode_image(raw, channels=c, expand_animations=False)
    img = tf.image.resize(tf.cast(img, tf.float32), (h, w))
    return tf.ensure_shape(img * scale, (h, w, c))


@keras.saving.register_keras_serializable(package="mtl")
class InputTransform(keras.layers.Layer):
    """Raw feature tensors -> model inputs, for the inputs in ``inputs`` (name -> InputStats as a dict).
    ``decode_files=False`` leaves image paths as they are (training decodes them per batch, after
    shuffling, so pixels never sit in memory); ``image_bytes=True`` takes the encoded files' bytes
    instead of their paths (serving: a client sends the image, not a path on the server). Any leading
    shape works (rows, or stacks of batches)."""

    def __init__(self, inputs: dict, decode_files: bool = True, image_bytes: bool = False, **kwargs) -> None:
        super().__init__(autocast=False, **kwargs)  # the numeric arithmetic is float64 on purpose
        self.inputs = {k: dict(v) for k, v in inputs.items()}
        self.decode_files = bool(decode_files)
        self.image_bytes = bool(image_bytes)
        self.stats = {k: InputStats(**v) for k, v in self.inputs.items()}
        self.lookups = {
            name: keras.layers.StringLookup(
                vocabulary=st.vocabulary, num_oov_indices=1, oov_token=UNKNOWN, name=f"{name}_lookup"
            )
            for name, st in self.stats.items()
            if st.kind == "categorical" and st.vocabulary
        }
        self.vectorizers = {
            name: text_vectorization(name, st) for name, st in self.stats.items() if st.kind == "text"
        }

    def build(self, input_shape) -> None:
        self.built = True  # the look-ups hold their vocabulary from the start: nothing shape-dependent

    def call(self, raw: dict) -> dict:
        return {name: self._one(name, st, raw[name]) for name, st in self.stats.items()}

    def _one(self, name: str, st: InputStats, x):
        if st.kind == "numeric":
            return _numeric(st, x)
        if st.kind == "categorical":
            ids = self.lookups[name](x) if name in self.lookups else tf.zeros_like(x, tf.int64)
            if st.encoding == "embedding":  # ids for the model's embedding table: 0 = unknown
                return tf.cast(ids, tf.int32)[..., None]
            return tf.one_hot(ids, len(st.vocabulary) + 1, dtype=tf.float32)
        if st.kind == "text":
            return _vectorized(self.vectorizers[name], st, x)
        if st.files:
            if not self.decode_files:
                return x
            flat = tf.reshape(x, [-1])
            spec = tf.TensorSpec(tuple(st.shape), tf.float32)
            pixels = tf.map_fn(
                lambda p: decode_image(p, st.shape, st.scale, self.image_bytes),
                flat,
                fn_output_signature=spec,
            )
            return tf.reshape(pixels, tf.concat([tf.shape(x), st.shape], 0))
        return tf.cast(x, tf.float32) * np.float32(st.scale)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "inputs": self.inputs,
            "decode_files": self.decode_files,
            "image_bytes": self.image_bytes,
        }


#: TextVectorization's names of the recipe's ``standardize`` / ``split`` values (``none`` is None)
KERAS_TEXT = {"none": None}


def text_vectorization(name: str, st: InputStats) -> keras.layers.TextVectorization:
    """The TextVectorization of a fitted text input: vocabulary (and idf weights) from the statistics
    pass; ``int`` output is padded or cut to ``sequence_length``."""
    o = st.text or {}
    output = o.get("output", "int")
    vocabulary = list(st.vocabulary) or [OOV_PLACEHOLDER]
    return keras.layers.TextVectorization(
        standardize=KERAS_TEXT.get(o.get("standardize"), o.get("standardize")),
        split=KERAS_TEXT.get(o.get("split"), o.get("split")),
        ngrams=o.get("ngrams"),
        output_mode=output,
        output_sequence_length=o.get("sequence_length") if output == "int" else None,
        vocabulary=vocabulary,
        idf_weights=(list(st.idf) or [1.0]) if output == "tf_idf" else None,
        name=f"{name}_vectorization",
    )


#: the vocabulary of a text input whose training rows had no token: one token no text can make after
#: standardising (upper case, and ``none``-standardised texts contain no NUL), so every id is unknown
OOV_PLACEHOLDER = "\x00[EMPTY]"


def _vectorized(vectorize, st: InputStats, x):
    """Texts of any leading shape -> ``(..., width)`` ids (int32) or token columns (float32)."""
    flat = tf.reshape(tf.cast(x, tf.string), [-1])
    out = vectorize(flat)
    width = st.width
    if (st.text or {}).get("output") == "int":
        out = tf.cast(out, tf.int32)
    else:
        out = tf.cast(out, tf.float32)
        if not st.vocabulary:  # the placeholder column is never hit: drop it
            out = out[:, :1]
    return tf.reshape(out, tf.concat([tf.shape(x), [width]], 0))


def _numeric(st: InputStats, x):
    v = tf.cast(x, tf.float64)
    finite = tf.math.is_finite(v)
    fill = 0.0 if st.missing != "zero" else (0.0 - st.mean) / st.std
    out = tf.where(finite, (v - st.mean) / st.std, tf.constant(fill, tf.float64))
    out = tf.cast(out, tf.float32)[..., None]
    if st.flag:
        absent = tf.cast(tf.math.is_nan(v), tf.float32)[..., None]
        out = tf.concat([out, absent], axis=-1)
    return out


def layer(
    inputs: dict[str, InputStats], decode_files: bool = True, image_bytes: bool = False
) -> InputTransform:
    """The transform of fitted inputs (see :class:`InputTransform` for the two options)."""
    return InputTransform(
        {k: asdict(v) for k, v in inputs.items()}, decode_files=decode_files, image_bytes=image_bytes
    )


def raw_spec(st: InputStats) -> tf.TensorSpec:
    """The raw feature of one row, as :func:`serving_inputs` takes it."""
    if st.kind == "numeric":
        return tf.TensorSpec((None,), tf.float64)
    if st.kind in ("categorical", "text") or st.files:
        return tf.TensorSpec((None,), tf.string)
    return tf.TensorSpec((None, *st.shape), tf.float32)


def transform_features(inputs: dict[str, InputStats], raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Model inputs of in-memory raw features, transformed once (image paths stay paths)."""
    t = layer(inputs, decode_files=False)
    tensors = {k: _tensor(inputs[k], v) for k, v in raw.items()}
    return {k: (raw[k] if inputs[k].files else v.numpy()) for k, v in t(tensors).items()}


def _tensor(st: InputStats, values: np.ndarray):
    if st.kind in ("categorical", "text") or st.files:
        return tf.constant(np.asarray(values, dtype=object).astype(str) if len(values) else np.array([], str))
    return tf.constant(values)


def serving_inputs(inputs: dict[str, InputStats]) -> keras.Model:
    """A Keras model from raw features (numbers as float64 with NaN for missing, categories as their
    string key, texts as strings, image files as paths) to the model-input dict; put it in front of a trained model to
    serve raw rows. Saved and loaded like any registered layer (``safe_mode=True``)."""
    raw = {
        name: keras.Input(shape=raw_spec(st).shape[1:], dtype=raw_spec(st).dtype, name=name)
        for name, st in inputs.items()
    }
    return keras.Model(raw, layer(inputs)(raw), name="mtl_serving_inputs")
