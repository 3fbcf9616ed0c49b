"""The bundled demo recipe reaches the promised held-out quality, and evaluate reproduces it."""

from __future__ import annotations

import json

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_penguins_demo_quality_and_reproducible_evaluation(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("train", REPO / "recipes" / "penguins.yaml", "-o", out)
    assert result.exit_code == 0, result.output
    test = json.loads((out / "metrics.json").read_text())["splits"]["test"]["tasks"]
    assert test["species"]["accuracy"] >= 0.95
    assert test["sex"]["accuracy"] >= 0.80
    assert test["body_mass"]["mae"] <= 400
    evaluated = json.loads(cli("evaluate", out, "--json").output)["tasks"]
    for task, row in test.items():
        for key, value in row.items():
            assert evaluated[task][key] == pytest.approx(value, rel=1e-5)
