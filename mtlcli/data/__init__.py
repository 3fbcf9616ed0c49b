"""The data stage: read sources, split, compute statistics in chunks, transform, and build tf.data datasets.

This ``__init__`` is the stage's public face: other stages write ``from mtlcli import data`` and call
``data.prepare(...)``, ``data.reload_split(...)``, ``data.pipeline.dataset(...)``; modules inside the
package import their siblings directly. Nothing here imports the model or run stages, and nothing imports
TensorFlow at import time (``mtl validate`` prepares data without it). ``penguins.csv`` (the demo data)
ships in this folder.
"""

from mtlcli.data import pipeline, sources, stream
from mtlcli.data.inputs import InputStats, embedding_dim
from mtlcli.data.preprocess import Arrays, Prepared, Preprocessing, fit, transform, weight_key
from mtlcli.data.sources import SUPPORTED, Table, file_digest, read_source, read_table
from mtlcli.data.step import (
    RunSplit,
    choose_split,
    locate,
    prepare,
    read_run_info,
    recipe_dir,
    recorded,
    reload_split,
    run_dialect,
)
from mtlcli.data.targets import TargetStats

__all__ = [
    "SUPPORTED",
    "Arrays",
    "InputStats",
    "Prepared",
    "Preprocessing",
    "RunSplit",
    "Table",
    "TargetStats",
    "choose_split",
    "embedding_dim",
    "file_digest",
    "fit",
    "pipeline",
    "prepare",
    "locate",
    "read_run_info",
    "recipe_dir",
    "recorded",
    "read_source",
    "read_table",
    "reload_split",
    "run_dialect",
    "sources",
    "stream",
    "transform",
    "weight_key",
]
