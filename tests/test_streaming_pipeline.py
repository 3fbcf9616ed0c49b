"""The fast paths of the streamed input pipeline: chunk tables equal sources._from_frame, vectorised label
look-ups equal the per-row ones, and the tf.data datasets give exactly the Python batches (resume
included)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.data import pipeline, sources
from mtlcli.data.values import class_ids, labels

from .test_streaming import project


def test_chunk_table_equals_from_frame():
    csv = 'a,b,c,d,e\n1, x ,,"  ",true\n2,,y,"",false\n3,NA,  ,q,true\n4,  z,w," ",false\n'
    frame = pd.read_csv(
        io.StringIO(csv), na_values=sources.NA_VALUES, skipinitialspace=True, keep_default_na=True
    )
    fast = sources.chunk_table(frame, ["e", "a", "b", "c", "d"], "f.csv")
    slow = sources._from_frame(frame, "f.csv", first_row=0)
    assert list(fast.columns) == ["e", "a", "b", "c", "d"]
    for name, values in fast.columns.items():
        assert values.dtype == slow.columns[name].dtype, name
        assert values.tolist() == slow.columns[name].tolist(), name
    assert fast.columns["d"].tolist() == [None, None, "q", None]  # blank and whitespace-only: missing


def test_class_ids_and_present_match_the_per_row_definitions():
    raw = np.array(["b", None, "a", float("nan"), "  ", "c", "a"], dtype=object)
    present, _ = labels(raw)
    assert present.tolist() == [not sources.missing(v) for v in raw]
    ids, bad = class_ids(raw, present, ["a", "b"])
    assert ids.tolist()[:3] == [1, 0, 0] and bad == 5
    numbers = np.array([1.0, 0.0, np.nan, 1.0])
    ids, bad = class_ids(numbers, ~np.isnan(numbers), [0, 1])
    assert ids.tolist() == [1, 0, 0, 1] and bad is None
    mixed = np.array([np.float64(2.0), 1, "x"], dtype=object)  # summary tables hold numpy scalars
    ids, bad = class_ids(mixed, np.ones(3, bool), [1, 2])
    assert ids.tolist() == [1, 0, 0] and bad == 2


def test_tf_datasets_equal_the_python_batches_and_resume(tmp_path):
    import tensorflow as tf

    path = project(tmp_path, split="validation: null", stream="stream: {chunk_rows: 7, shuffle_buffer: 20}")
    split = data.prepare(R.load(path)).splits["train"]

    def rows(batches):
        return [np.asarray(b[0]["a"])[:, 0].round(6).tolist() for b in batches]

    for first_epoch, first_step in ((0, 0), (1, 3)):
        python = rows(split.epoch_batches(16, 3, first_epoch, first_step, 2))
        ds = pipeline.train_stream(tf, split, 16, 3, first_epoch, first_step, 2)
        assert int(ds.cardinality()) == len(python)
        assert rows(ds) == python  # 120 rows: 7 full batches and one of 8 an epoch
    files = rows(pipeline.dataset(tf, split, 16))
    assert files == rows(split.batches(16)) and [len(b) for b in files] == [16] * 7 + [8]
