"""A run directory written by mtl 0.1.0 (before the redesign) still evaluates and resumes.

The fixture under ``tests/fixtures/run-0.1.0/`` was trained once with the 0.1.0 code (4 epochs of the
recipe beside it, weighting ``uncertainty``); the expected numbers below are what 0.1.0 itself printed
for ``mtl evaluate`` and for ``--resume --epochs 6``. The run was made in ``/tmp/fx``, so the test
places a copy there-relative: it rewrites the recorded absolute data path to the copy (the sha256 is
unchanged, so the run's data check still applies).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtlcli.cli import app

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"

EVAL_4 = {
    "cls": {"loss": 1.1042534112930298, "accuracy": 0.4166666567325592},
    "flag": {"loss": 0.761601448059082, "accuracy": 0.4166666567325592, "auc": 0.3854166567325592},
    "y": {"loss": 2.218585252761841, "mae": 4.971808910369873, "rmse": 6.0958099365234375},
}
EVAL_6 = {
    "cls": {"loss": 1.0918883085250854, "accuracy": 0.4166666567325592},
    "flag": {"loss": 0.7525299191474915, "accuracy": 0.4166666567325592, "auc": 0.4027777910232544},
    "y": {"loss": 2.0466277599334717, "mae": 4.749955654144287, "rmse": 5.854809761047363},
}


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(FIXTURE, root)
    info_path = root / "run" / "data.json"
    info = json.loads(info_path.read_text())
    for entry in info["files"].values():
        entry["path"] = entry["source"] = str(root / "data.csv")
    info_path.write_text(json.dumps(info))
    return root


def _evaluate(run: Path) -> dict:
    res = CliRunner().invoke(app, ["evaluate", str(run), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["tasks"]


def _close(got: dict, want: dict, rel: float) -> None:
    for task, metrics in want.items():
        assert got[task]["n"] == 24
        for name, value in metrics.items():
            assert got[task][name] == pytest.approx(value, rel=rel), (task, name)


def test_legacy_run_evaluates_to_its_recorded_numbers(legacy):
    _close(_evaluate(legacy / "run"), EVAL_4, rel=1e-5)


@pytest.mark.slow
def test_legacy_run_resumes_exactly(legacy):
    res = CliRunner().invoke(
        app, ["train", str(legacy / "recipe.yaml"), "--resume", str(legacy / "run"), "--epochs", "6"]
    )
    assert res.exit_code == 0, res.output
    _close(_evaluate(legacy / "run"), EVAL_6, rel=1e-4)
