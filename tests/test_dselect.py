"""DSelect-k gates: the smooth step, weights that sum to 1, at most k experts once saturated, the
recipe keys (exact text), a safe_mode round trip, and training through mmoe / ple."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from mtlcli import recipe as R
from mtlcli.errors import RecipeError

BASE = """\
data: {train: x.csv, inputs: {a: numeric}}
model:
%s
  tasks:
    click: {type: binary}
    buy: {type: binary}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        R.loads(textwrap.dedent(text), file="r.yaml")
    return [p.render() for p in info.value.problems]


def test_gate_in_the_resolved_recipe():
    r = R.loads(
        BASE % "  architecture: cgc\n  experts: {count: 3, layers: [flatten]}\n  gate: {dselect_k: {k: 2}}",
        file="r.yaml",
    ).recipe
    assert r.model.architecture_spec()["gate"] == {"dselect_k": {"k": 2, "gamma": 1.0}}
    assert r.resolved()["model"]["gate"] == {"dselect_k": {"k": 2, "gamma": 1.0}}


def test_gate_recipe_errors():
    assert problems(BASE % "  gate: {dselect_k: {k: 2}}") == [
        "r.yaml:3 model.gate: gate applies to the mmoe, cgc and ple architectures only; the architecture "
        "is 'hard_sharing'"
    ]
    assert problems(
        BASE % "  architecture: mmoe\n  experts: {count: 3, layers: [flatten]}\n  gate: {dselect_k: {k: 4}}"
    ) == [
        "r.yaml:5 model.gate.dselect_k.k: dselect_k selects k of the 3 experts a task's gate mixes: "
        "expected k <= 3, received 4"
    ]


def test_smooth_step_values():
    from mtlcli.model.gates import smooth_step

    t = np.array([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 2.0], np.float32)
    # gamma = 1: -2 t^3 + 1.5 t + 0.5 inside [-0.5, 0.5]; -0.25 -> 0.03125 + -0.375 + 0.5 = 0.15625
    np.testing.assert_allclose(
        np.asarray(smooth_step(t, 1.0)), [0.0, 0.0, 0.15625, 0.5, 0.84375, 1.0, 1.0], atol=1e-7
    )


@pytest.mark.parametrize("experts", [2, 3, 4, 5, 8])
def test_weights_sum_to_one_and_saturate_to_k(experts):
    import keras

    from mtlcli.model.gates import DSelectGate

    gate = DSelectGate(experts, k=2, gamma=1.0)
    gate.build([(None, 6), (None, experts, 4)])
    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    w = np.asarray(gate.weights_for(x))
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)
    assert (w >= 0).all()
    if experts > 2:  # smooth at first: more than k experts get weight
        assert (w > 1e-6).sum(axis=1).max() > 2
    # saturated codes (|z| >= gamma/2): each selector is one-hot, so at most k experts are nonzero
    gate.codes.kernel.assign(keras.ops.zeros_like(gate.codes.kernel))
    gate.codes.bias.assign(
        np.array([3.0, -3.0, 3.0, -3.0, 3.0, -3.0][: gate.codes.bias.shape[0]], np.float32)
    )
    w = np.asarray(gate.weights_for(x))
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)
    assert (w > 0).sum(axis=1).max() <= 2


def test_round_trip_safe_mode(tmp_path):
    import keras

    from mtlcli.model.gates import DSelectGate

    x = keras.Input((6,))
    stacked = keras.Input((3, 4))
    out = DSelectGate(3, k=2, gamma=0.5, name="g")([x, stacked])
    model = keras.Model([x, stacked], out)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    rng = np.random.default_rng(1)
    args = [rng.normal(size=(5, 6)).astype(np.float32), rng.normal(size=(5, 3, 4)).astype(np.float32)]
    np.testing.assert_allclose(np.asarray(loaded(args)), np.asarray(model(args)), atol=1e-6)
    assert loaded.get_layer("g").get_config()["k"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mmoe", "ple"])
def test_trains_and_reloads(tmp_path, cli, arch):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "recipes"
    run = tmp_path / "run"
    result = cli(
        "train", root / "esmm.yaml", "-o", run, "--set", "train.epochs=2",
        "--set", f"model.architecture={arch}",
        "--set", "model.experts={count: 3, layers: [{dense: {units: 8, activation: relu}}]}",
        "--set", "model.gate={dselect_k: {k: 2, gamma: 0.5}}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "nan" not in result.output.lower()
    result = cli("evaluate", run)  # loads model.keras with safe_mode=True
    assert result.exit_code == 0, result.output
