"""train.mixed_precision and train.jit_compile: the model trains, keeps float32 outputs and variables,
and round-trips through model.keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.model.build import build_model
from mtlcli.run import evaluate as run_eval
from mtlcli.run import runner


def _loaded(tiny_project, extra: str):
    text = tiny_project.read_text().replace("weighting: static", f"weighting: static\n  {extra}")
    return R.loads(text, file="r.yaml", base_dir=tiny_project.parent)


def test_bfloat16_computes_in_bf16_with_float32_variables_and_outputs(tiny_project, tmp_path):
    loaded = _loaded(tiny_project, "mixed_precision: bfloat16")
    prepared = data.prepare(loaded)
    model = build_model(loaded, prepared, seed=3)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert model.trunk[0].compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    out = model(prepared.splits["validation"].x)
    assert all(str(o.dtype) == "<dtype: 'float32'>" for o in out.values())
    result = runner.train(loaded, output=tmp_path / "run", epochs=2)
    assert all(np.isfinite(result.history[-1][f"{t}_loss"]) for t in ("kind", "flag", "value"))
    again = run_eval.load_model(tmp_path / "run" / "model.keras")
    assert again.trunk[0].compute_dtype == "bfloat16"


def test_jit_compile_option_trains(tiny_project, tmp_path):
    loaded = _loaded(tiny_project, "jit_compile: true")
    assert loaded.recipe.train.jit_compile is True
    result = runner.train(loaded, output=tmp_path / "run", epochs=1)
    assert np.isfinite(result.history[-1]["loss"])


def test_unknown_precision_is_a_recipe_error(tiny_project):
    from mtlcli.errors import RecipeError

    with pytest.raises(RecipeError) as info:
        _loaded(tiny_project, "mixed_precision: float8")
    assert [p.render() for p in info.value.problems] == [
        "r.yaml:21 train.mixed_precision: expected one of bfloat16; received text ('float8'); did you mean 'bfloat16'?"
    ]
