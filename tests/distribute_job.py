"""Subprocess jobs for tests/test_distribute.py (logical devices and collectives are process-global).

``python -m tests.distribute_job step RECIPE WEIGHTING...``: for each weighting, one SGD step of the same
model from the same weights on the same global batch, on one device and under ``mirrored`` over 2
logical CPU devices; prints one JSON line per weighting with the relative difference of the updates.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def _recipe(path: str, weighting: str, distribute: str = "none", devices: int | None = None):
    from pathlib import Path

    from mtlcli import recipe as R

    text = Path(path).read_text().replace("weighting: static", f"weighting: {weighting}")
    if distribute != "none":
        text += f"  distribute: {distribute}\n" + (f"  devices: {devices}\n" if devices else "")
    return R.loads(text, file="recipe.yaml", base_dir=Path(path).parent)


def one_step(path: str, weightings: list[str]) -> None:
    from mtlcli import data, distribute
    from mtlcli.model.build import build_model
    from mtlcli.tfutil import import_tf

    tf = import_tf()
    import keras

    dist = distribute.setup(_recipe(path, "static", "mirrored", 2).recipe.train, tf)
    assert dist.replicas == 2, dist.replicas
    for weighting in weightings:
        loaded = _recipe(path, weighting)
        prepared = data.prepare(loaded)
        arr = prepared.splits["train"]
        idx = np.arange(31)  # an odd global batch: the replicas get 16 and 15 rows
        batch = (
            {k: v[idx] for k, v in arr.x.items()},
            {k: v[idx] for k, v in arr.y.items()},
            {k: v[idx] for k, v in arr.mask.items()},
        )

        def make(scope, loaded=loaded, prepared=prepared):
            with scope:
                model = build_model(loaded, prepared, seed=3)
                model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
                model.optimizer.build(model.trainable_variables)
            return model

        single = make(distribute.Setup().scope())
        mirrored = make(dist.scope())
        mirrored.set_weights(single.get_weights())
        before = [v.numpy().copy() for v in single.trainable_variables]
        for model in (single, mirrored):
            ds = tf.data.Dataset.from_tensors(batch)
            model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
        a = np.concatenate(
            [(v.numpy() - b).ravel() for v, b in zip(single.trainable_variables, before, strict=True)]
        )
        b = np.concatenate(
            [(v.numpy() - w).ravel() for v, w in zip(mirrored.trainable_variables, before, strict=True)]
        )
        wa = np.concatenate([v.numpy().ravel() for v in single.trainable_variables])
        wb = np.concatenate([v.numpy().ravel() for v in mirrored.trainable_variables])
        state_a = {k: v.numpy().tolist() for k, v in single.strategy_state.items()}
        state_b = {k: v.numpy().tolist() for k, v in mirrored.strategy_state.items()}
        logs_a = {k: float(v) for k, v in single.get_metrics_result().items()}
        logs_b = {k: float(v) for k, v in mirrored.get_metrics_result().items()}
        print(
            json.dumps(
                {
                    "weighting": weighting,
                    "replicas": int(mirrored.distribute_strategy.num_replicas_in_sync),
                    "update_norm": float(np.linalg.norm(a)),
                    "update_rel": float(np.linalg.norm(a - b) / np.linalg.norm(a)),
                    "weights_rel": float(np.max(np.abs(wa - wb) / (np.abs(wa) + 1e-3))),
                    "state_diff": max(
                        [float(np.max(np.abs(np.subtract(state_a[k], state_b[k])))) for k in state_a] or [0.0]
                    ),
                    "logs_diff": max(abs(logs_a[k] - logs_b[k]) for k in logs_a),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1] == "step":
        one_step(sys.argv[2], sys.argv[3:])
