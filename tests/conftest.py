"""Shared fixtures: a tiny multi-task CSV and recipe, a CLI runner, a wide non-TTY console."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["COLUMNS"] = "200"  # rich: no wrapping in captured output

REPO = Path(__file__).resolve().parents[1]
PENGUINS = REPO / "mtlcli" / "data" / "penguins.csv"


def write_tiny_csv(path: Path, n: int = 120, seed: int = 0) -> Path:
    """Two numeric inputs and a categorical one; a 3-class, a binary and a regression target that are
    learnable from them; a few missing labels."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    kind = np.where(a > 0.5, "x", np.where(a < -0.5, "z", "y"))
    flag = np.where(b + (color == "red") > 0.3, "yes", "no")
    value = 3.0 * a - 2.0 * b + rng.normal(scale=0.1, size=n) + 10
    lines = ["a,b,color,kind,flag,value"]
    for i in range(n):
        f = "" if i % 17 == 3 else flag[i]
        lines.append(f"{a[i]:.4f},{b[i]:.4f},{color[i]},{kind[i]},{f},{value[i]:.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


TINY_RECIPE = textwrap.dedent(
    """\
    name: tiny
    seed: 3
    data:
      train: tiny.csv
      validation: 0.25
      inputs:
        a: numeric
        b: numeric
        color: categorical
    model:
      shared:
        - dense: {units: 16, activation: relu}
      tasks:
        kind: {type: classification}
        flag: {type: binary, head: [{dense: {units: 8, activation: relu}}]}
        value: {type: regression, metrics: [mae]}
    train:
      epochs: 3
      batch_size: 32
      weighting: static
    """
)


def add_primary(text: str, spec, task: str = "kind") -> str:
    """A recipe's text with ``train.primary: TASK`` added when ``spec``'s strategy needs a primary task
    (``needs_primary``, PCD), so the registry-driven tests cover it like any other strategy."""
    import yaml

    from mtlcli import weighting

    value = yaml.safe_load(spec) if isinstance(spec, str) else spec
    name = value if isinstance(value, str) else next(iter(value))
    cls = weighting.REGISTRY.get(name)
    if cls is None or not cls.needs_primary:
        return text
    return text.replace("\n  weighting:", f"\n  primary: {task}\n  weighting:", 1)


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    """A directory with tiny.csv and recipe.yaml; returns the recipe path."""
    write_tiny_csv(tmp_path / "tiny.csv")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(TINY_RECIPE)
    return recipe


@pytest.fixture
def cli():
    from typer.testing import CliRunner

    from mtlcli.cli import app

    runner = CliRunner()

    def invoke(*args: str, **kwargs):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


def load_recipe(tmp_path: Path, text: str):
    """Write ``text`` as tmp_path/recipe.yaml and load it."""
    from mtlcli import recipe as R

    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return R.load(path)


def data_errors(loaded) -> list[str]:
    """The rendered problems of the DataError that preparing ``loaded``'s data raises."""
    from mtlcli import data
    from mtlcli.errors import DataError

    with pytest.raises(DataError) as info:
        data.prepare(loaded)
    return [p.render() for p in info.value.problems]
