"""Every tf.data dataset of the project: evaluation batches, training streams, streamed splits.

TensorFlow arrives as the ``tf`` argument (the callers import it lazily), so importing this module costs
nothing. One split is either in memory (:class:`mtlcli.data.preprocess.Arrays`) or streamed
(:class:`mtlcli.data.stream.StreamSplit`); both give the same contract:

* :func:`dataset` -- ``(x, y, mask)`` batches in file order (validation, test, evaluation), or shuffled
  by tf.data when asked.
* :func:`train_stream` -- the training batches of epochs ``first_epoch..end_epoch-1`` from batch
  ``first_step`` of the first one, in the order of :func:`epoch_order` (a pure function of (seed,
  epoch)), so a mid-epoch resume is exact. Batches never mix epochs; the last one of an epoch may be
  smaller. Use with ``fit(steps_per_epoch=...)``: one iterator runs across epochs.

The per-task class weights ride in the mask dict as ``<task>.weight``. Image-file inputs hold paths
until here and are decoded, resized and scaled inside the pipeline (in parallel), so they never sit in
memory as pixels. Python runs once per epoch (in memory) or once per chunk (streamed), never per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from mtlcli.data.stream import Feed, StreamSplit, aligned, piece_rows


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of epoch ``epoch`` (0-based): a pure function of (seed, epoch)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)]).permutation(n)


def tensor_spec(tf, values: np.ndarray):
    """The ``tf.TensorSpec`` of a batch of ``values`` (strings for object / text arrays)."""
    dtype = tf.string if values.dtype.kind in "OUS" else tf.as_dtype(values.dtype)
    return tf.TensorSpec((None, *values.shape[1:]), dtype)


def dataset(tf, split, batch_size: int, seed: int = 0, shuffle: bool = False):
    """``(x, y, mask)`` batches of a split: in file order, or (in memory only) reshuffled each
    iteration by tf.data with ``seed``. A streamed split is always read in file order."""
    if isinstance(split, StreamSplit):
        steps = -(-split.n // batch_size)
        return _stacked(tf, split, lambda: aligned(split.parts(raw=True), batch_size), batch_size, steps)
    ds = tf.data.Dataset.from_tensor_slices(split.feed())
    if shuffle:
        ds = ds.shuffle(split.n, seed=seed, reshuffle_each_iteration=True)
    ds = _decode_rows(tf, ds, split.images)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def train_stream(tf, split, batch_size: int, seed: int, first_epoch: int, first_step: int, end_epoch: int):
    """The training batches of epochs ``first_epoch..end_epoch-1``, from batch ``first_step`` of the
    first one (see the module docstring)."""
    if isinstance(split, StreamSplit):
        steps = -(-split.n // batch_size) * (end_epoch - first_epoch) - first_step

        def pieces() -> Iterator[Feed]:
            return split.epoch_pieces(batch_size, seed, first_epoch, first_step, end_epoch, raw=True)

        return _stacked(tf, split, pieces, batch_size, steps)
    n = split.n
    # The arrays live in memory as tensors; per epoch, one call computes the order (numpy, a pure
    # function of (seed, epoch)) and tf.data gathers the batches -- no Python work per step.
    parts = [
        {k: tf.constant(v.astype(str) if v.dtype.kind == "O" else v) for k, v in d.items()}
        for d in split.feed()
    ]

    def order_of(epoch):
        return epoch_order(n, seed, int(epoch)).astype(np.int64)

    def epoch_batches(epoch):
        order = tf.numpy_function(order_of, [epoch], tf.int64, stateful=False)
        order.set_shape([n])
        skip = tf.where(
            tf.equal(epoch, first_epoch), tf.constant(first_step, tf.int64), tf.constant(0, tf.int64)
        )
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).skip(skip)

    def gather(idx):
        return tuple({k: tf.gather(v, idx) for k, v in part.items()} for part in parts)

    stream = tf.data.Dataset.range(first_epoch, end_epoch).flat_map(epoch_batches)
    stream = stream.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _decode_batched(tf, stream, split.images).prefetch(tf.data.AUTOTUNE)


def _stacked(tf, split: StreamSplit, pieces: Callable[[], Iterator[Feed]], batch_size: int, steps: int):
    """Batches from batch-aligned pieces of raw features of a streamed split: Python runs once per piece
    (a chunk, or a shuffle pool's overflow), ahead of training in tf.data's background thread, and hands
    over each piece as a stack of batches (``(k, batch_size, ...)``, reshaped, not copied); the
    TensorFlow transform (:mod:`mtlcli.data.layers`) turns the stack into model inputs in one call, and
    ``unbatch`` takes it apart."""
    from mtlcli.data import layers  # imports Keras

    transform = layers.layer(split.prep.inputs)

    def stacks() -> Iterator[Feed]:
        for piece in pieces():
            n = piece_rows(piece)
            full = n // batch_size * batch_size
            for lo, hi, k in ((0, full, full // batch_size), (full, n, 1)):
                if hi > lo:
                    yield tuple(
                        {key: v[lo:hi].reshape(k, -1, *v.shape[1:]) for key, v in d.items()} for d in piece
                    )  # type: ignore[misc]

    def stacked(values: np.ndarray):
        spec = tensor_spec(tf, values)
        return tf.TensorSpec((None, *spec.shape), spec.dtype)

    signature = tuple({k: stacked(v) for k, v in d.items()} for d in split.example())
    ds = tf.data.Dataset.from_generator(stacks, output_signature=signature).prefetch(2)
    ds = ds.map(lambda x, y, m: (transform(x), y, m)).unbatch()
    # a known length: Keras' evaluate() of a dataset of unknown length averages in one empty step
    return ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


def _decoder(spec: dict):
    from mtlcli.data import layers  # imports Keras

    def decode(path):
        return layers.decode_image(path, spec["shape"], float(spec["scale"]))

    return decode


def _decode_rows(tf, ds, images: dict[str, dict]):
    """Decode image paths in a dataset of single rows."""
    if not images:
        return ds
    decoders = {name: _decoder(spec) for name, spec in images.items()}

    def fn(x, y, m):
        x = dict(x)
        for name, decode in decoders.items():
            x[name] = decode(x[name])
        return x, y, m

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _decode_batched(tf, ds, images: dict[str, dict]):
    """Decode image paths in a dataset of batches."""
    if not images:
        return ds
    decoders = {name: (_decoder(spec), spec) for name, spec in images.items()}

    def fn(x, y, m):
        x = dict(x)
        for name, (decode, spec) in decoders.items():
            x[name] = tf.map_fn(
                decode, x[name], fn_output_signature=tf.TensorSpec(tuple(spec["shape"]), tf.float32)
            )
        return x, y, m

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
