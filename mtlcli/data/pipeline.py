"""The data side of the tf.data input pipeline (imports TensorFlow lazily through its callers).

* :func:`feed` gives the ``(x, y, mask)`` dicts the model consumes: the per-task class weights ride in the
  mask dict as ``<task>.weight`` (``MultiTaskModel.task_losses`` multiplies the per-row losses by them).
* Image-file inputs hold paths until here: :func:`decode_batched` / :func:`decode_rows` read, decode,
  resize and scale them inside the pipeline (in parallel), so they never sit in memory as pixels.
"""

from __future__ import annotations

import numpy as np

from mtlcli.data import preprocess as data


def feed(arrays: data.Arrays) -> tuple[dict, dict, dict]:
    mask = dict(arrays.mask)
    mask.update({data.weight_key(t): w for t, w in arrays.weight.items()})
    return arrays.x, arrays.y, mask


def tensor_spec(tf, values: np.ndarray):
    dtype = tf.string if values.dtype.kind in "OUS" else tf.as_dtype(values.dtype)
    return tf.TensorSpec((None, *values.shape[1:]), dtype)


def _decoder(tf, spec: dict):
    h, w, c = spec["shape"]
    scale = float(spec["scale"])

    def decode(path):
        img = tf.io.decode_image(tf.io.read_file(path), channels=c, expand_animations=False)
        img = tf.image.resize(tf.cast(img, tf.float32), (h, w))
        return tf.ensure_shape(img * scale, (h, w, c))

    return decode


def decode_rows(tf, ds, arrays: data.Arrays):
    """Decode image paths in a dataset of single rows."""
    if not arrays.images:
        return ds
    decoders = {name: _decoder(tf, spec) for name, spec in arrays.images.items()}

    def fn(x, y, m):
        x = dict(x)
        for name, decode in decoders.items():
            x[name] = decode(x[name])
        return x, y, m

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def decode_batched(tf, ds, arrays: data.Arrays):
    """Decode image paths in a dataset of batches."""
    if not arrays.images:
        return ds
    decoders = {name: (_decoder(tf, spec), spec) for name, spec in arrays.images.items()}

    def fn(x, y, m):
        x = dict(x)
        for name, (decode, spec) in decoders.items():
            x[name] = tf.map_fn(
                decode, x[name], fn_output_signature=tf.TensorSpec(tuple(spec["shape"]), tf.float32)
            )
        return x, y, m

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
