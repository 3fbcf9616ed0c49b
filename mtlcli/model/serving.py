"""Raw features in, decoded predictions out, in one TensorFlow graph: what ``mtl predict`` runs and
``mtl export`` saves (imports TensorFlow at import time).

* :class:`OutputDecoder` (registered ``mtl>OutputDecoder``) turns the heads' logits into what a user
  reads, per task (:func:`output_key` names the tensors ``<task>_<field>``):

  ===============  =================================================================================
  classification   ``probabilities`` (batch, classes) softmax; ``class_index`` (batch,) int64 argmax;
                   ``label`` (batch,) string: the class as trained (``str`` of the label value)
  binary           ``probability`` (batch,) sigmoid: P(second class); ``class_index`` 1 where
                   ``probability >= threshold`` (0.5 unless set), else 0; ``label`` as above
  multilabel       ``probabilities`` (batch, labels) sigmoids; ``labels`` (batch, labels) int64 0/1 at
                   the threshold; ``label`` the chosen labels joined by the recipe's separator (``|``
                   for labels held in 0/1 columns)
  regression       ``value`` in the target's own units: (batch,) for one target column, (batch,
                   columns) for several
  ===============  =================================================================================

* :class:`Predictor` chains the fitted input transform (:mod:`mtlcli.data.layers`), the trained network
  and the decoder. Its :meth:`Predictor.signature` is the raw features by input name; ``predict`` and
  the exported SavedModel call the same graph, so their numbers agree to the bit.
"""

from __future__ import annotations

from dataclasses import asdict

import keras
import tensorflow as tf

from mtlcli.data import layers
from mtlcli.data.preprocess import Preprocessing
from mtlcli.data.targets import TargetStats
from mtlcli.model.registration import serializable

DEFAULT_THRESHOLD = 0.5
COLUMN_LABELS_SEPARATOR = "|"  # multilabel tasks whose labels are 0/1 columns have no separator of their own

#: the decoded fields of each task type, in output order
FIELDS = {
    "classification": ("probabilities", "class_index", "label"),
    "binary": ("probability", "class_index", "label"),
    "multilabel": ("probabilities", "labels", "label"),
    "regression": ("value",),
}


def output_key(task: str, field: str) -> str:
    """The name of one decoded tensor: ``<task>_<field>`` (a valid SavedModel signature key)."""
    return f"{task}_{field}"


def label_strings(classes: list) -> list[str]:
    """The string form of a task's classes, as the ``label`` outputs give them."""
    return [str(c) for c in classes]


def separator(st: TargetStats) -> str:
    """What a multilabel task's chosen labels are joined with."""
    return st.separator if st.separator is not None else COLUMN_LABELS_SEPARATOR


@serializable
class OutputDecoder(keras.layers.Layer):
    """Logits of every head -> the decoded outputs of ``tasks`` (see the module docstring).

    ``targets`` are the fitted :class:`~mtlcli.data.targets.TargetStats` as dicts (the model spec's
    ``preprocessing["targets"]``); ``thresholds`` maps a binary or multilabel task to its decision
    threshold on the probability (default 0.5, i.e. a logit above 0 as in training's metrics)."""

    def __init__(self, targets: dict, tasks: list[str] | None = None, thresholds: dict | None = None, **kw):
        super().__init__(autocast=False, **kw)
        self.targets = {k: dict(v) for k, v in targets.items()}
        self.tasks = list(tasks) if tasks is not None else list(self.targets)
        self.thresholds = {k: float(v) for k, v in (thresholds or {}).items()}
        self.stats = {t: TargetStats(**self.targets[t]) for t in self.tasks}

    def build(self, input_shape=None) -> None:
        self.built = True

    def call(self, logits: dict) -> dict:
        out = {}
        for task in self.tasks:
            st = self.stats[task]
            fields = _decoded(
                st, tf.cast(logits[task], tf.float32), self.thresholds.get(task, DEFAULT_THRESHOLD)
            )
            out.update({output_key(task, k): v for k, v in fields.items()})
        return out

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "targets": self.targets,
            "tasks": self.tasks,
            "thresholds": self.thresholds,
        }


def _decoded(st: TargetStats, logits, threshold: float) -> dict:
    """The decoded fields of one task's logits."""
    if st.type == "regression":
        mean = tf.constant(st.mean, tf.float32)
        std = tf.constant(st.std, tf.float32)
        value = logits * std + mean
        return {"value": value[:, 0] if not isinstance(st.column, list) else value}
    names = tf.constant(label_strings(st.classes))
    if st.type == "classification":
        index = tf.argmax(logits, axis=-1, output_type=tf.int64)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "class_index": index,
            "label": tf.gather(names, index),
        }
    probabilities = tf.sigmoid(logits)
    chosen = probabilities >= threshold
    if st.type == "binary":
        index = tf.cast(chosen[:, 0], tf.int64)
        return {"probability": probabilities[:, 0], "class_index": index, "label": tf.gather(names, index)}
    every = tf.broadcast_to(names, tf.shape(chosen))
    joined = tf.strings.reduce_join(tf.ragged.boolean_mask(every, chosen), axis=-1, separator=separator(st))
    return {"probabilities": probabilities, "labels": tf.cast(chosen, tf.int64), "label": joined}


class Predictor(tf.Module):
    """Raw features -> decoded predictions of a trained :class:`~mtlcli.model.network.Network`.

    ``image_bytes`` takes image inputs as the encoded files' bytes instead of paths (serving).
    :meth:`__call__` runs eagerly or traced; :attr:`function` is it as one ``tf.function`` over
    :meth:`signature` (what predict runs per batch and export saves)."""

    def __init__(
        self, model, tasks=None, thresholds=None, image_bytes: bool = False, name: str = "mtl_predictor"
    ):
        super().__init__(name=name)
        self.prep = Preprocessing.from_dict(model.spec["preprocessing"])
        self.tasks = list(tasks) if tasks is not None else list(model.task_names)
        self.image_bytes = bool(image_bytes)
        self.transform = layers.layer(self.prep.inputs, decode_files=True, image_bytes=image_bytes)
        self.model = model
        targets = {t: asdict(st) for t, st in self.prep.targets.items()}
        self.decoder = OutputDecoder(targets, self.tasks, thresholds)
        self.function = tf.function(self.__call__, input_signature=[self.signature()])

    def signature(self) -> dict[str, tf.TensorSpec]:
        """The raw feature of every input, batched: numbers float64 (NaN = missing), categories and image
        files strings, image / array inputs float32."""
        return {name: layers.raw_spec(st) for name, st in self.prep.inputs.items()}

    def __call__(self, raw: dict) -> dict:
        return self.decoder(self.model(self.transform(raw), training=False))
