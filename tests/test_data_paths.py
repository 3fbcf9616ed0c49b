"""In-memory and streamed preparation are one data path: the same small CSV, prepared in memory and
streamed in chunks of 7 rows (a shuffle buffer larger than the split), gives the same statistics, the
same batches and the same first-epoch losses."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlcli import data
from mtlcli.data import pipeline
from mtlcli.data import stream as streaming

from .test_streaming import both, close


def test_both_paths_give_the_same_statistics(tmp_path):
    mem, streamed = both(tmp_path)
    a, b = data.prepare(mem), data.prepare(streamed)
    assert isinstance(a.splits["train"], data.Arrays)
    assert isinstance(b.splits["train"], streaming.StreamSplit)
    assert close(a.prep.to_dict(), b.prep.to_dict())  # moments merged over 7-row chunks: rounding only
    assert a.prep.inputs["color"].vocabulary == b.prep.inputs["color"].vocabulary
    assert a.prep.targets["kind"].classes == b.prep.targets["kind"].classes
    assert a.prep.targets["flag"].class_weights == pytest.approx(b.prep.targets["flag"].class_weights)
    assert a.info["split_rows"] == b.info["split_rows"] and a.info["coverage"] == b.info["coverage"]


def test_both_paths_give_the_same_batches_and_first_epoch_losses(tmp_path):
    from mtlcli.model.build import build_model

    mem, streamed = both(tmp_path)
    a, b = data.prepare(mem), data.prepare(streamed)
    batch, seed = 16, 3
    # a buffer as large as the split: the streamed order is the in-memory one, batch for batch
    ds_a = pipeline.train_stream(tf, a.splits["train"], batch, seed, 0, 0, 1)
    ds_b = pipeline.train_stream(tf, b.splits["train"], batch, seed, 0, 0, 1)
    for (xa, ya, ma), (xb, yb, mb) in zip(ds_a, ds_b, strict=True):
        for part_a, part_b in ((xa, xb), (ya, yb), (ma, mb)):
            assert set(part_a) == set(part_b)
            for k in part_a:
                np.testing.assert_allclose(part_a[k].numpy(), part_b[k].numpy(), rtol=1e-6, atol=1e-7)
    losses = []
    for prepared, loaded in ((a, mem), (b, streamed)):
        keras.utils.set_random_seed(seed)
        model = build_model(loaded, prepared, seed)
        train = prepared.splits["train"]
        steps = -(-train.n // batch)
        history = model.fit(
            pipeline.train_stream(tf, train, batch, seed, 0, 0, 1),
            epochs=1,
            steps_per_epoch=steps,
            verbose=0,
            shuffle=False,
        )
        losses.append({k: v[0] for k, v in history.history.items()})
    assert set(losses[0]) == set(losses[1]) and "loss" in losses[0]
    for k, v in losses[0].items():
        assert losses[1][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
