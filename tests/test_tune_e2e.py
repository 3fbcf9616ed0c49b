"""mtl tune end to end on the tiny recipe (slow): 6 trials, the Pareto set recomputed from the trial
directories' metrics, every trial a valid run, a second invocation continuing to 8, and two processes
sharing one SQLite study with --join."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtlcli.tune import objectives as O

pytestmark = pytest.mark.slow

SEARCH = [
    "--search",
    "train.optimizer.adam.learning_rate=log:1e-3:5e-2",
    "--search",
    "train.weighting=static,uncertainty",
]
OBJECTIVES = [
    O.Objective("kind", "accuracy", True),
    O.Objective("flag", "accuracy", True),
    O.Objective("value", "mae", False),
]


def tune(cwd: Path, *args: str, wait: bool = True):
    cmd = [sys.executable, "-m", "mtlcli", "tune", *args, "--set", "train.epochs=2", "--threads", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if not wait:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_six_trials_pareto_valid_runs_and_continue(tiny_project):
    cwd = tiny_project.parent
    root = cwd / "runs" / "tiny" / "studies" / "tiny"
    r = tune(cwd, "recipe.yaml", *SEARCH, "--trials", "6", "--jobs", "2", "--json")
    doc = json.loads(r.stdout)
    assert doc == json.loads((root / "study.json").read_text())
    assert [t["state"] for t in doc["trials"]] == ["complete"] * 6
    values = {}
    for t in doc["trials"]:
        d = cwd / t["dir"]
        assert (
            (d / "resolved.yaml").is_file()
            and (d / "model.keras").is_file()
            and (d / "metrics.json").is_file()
        )
        values[t["number"]] = O.read_values(d, OBJECTIVES)  # recomputed from the run, not from Optuna
        assert list(t["values"].values()) == pytest.approx(values[t["number"]])
    numbers = sorted(values)
    mask = O.pareto([values[n] for n in numbers], OBJECTIVES)
    assert doc["pareto"] == [n for n, m in zip(numbers, mask, strict=True) if m]
    assert doc["pareto"]
    r = tune(cwd, "recipe.yaml", *SEARCH, "--trials", "8", "--jobs", "2")
    doc = json.loads((root / "study.json").read_text())
    assert sorted(t["number"] for t in doc["trials"]) == list(range(8))
    assert doc["counts"]["complete"] == 8
    assert "this run: 2 trial(s)" in r.stdout
    compare = subprocess.run(
        [sys.executable, "-m", "mtlcli", "compare", str(root), "--json"],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    assert compare.returncode == 0, compare.stderr
    assert "learning_rate" in compare.stdout
    plot = subprocess.run(
        [sys.executable, "-m", "mtlcli", "plot", str(root), "-o", "front.png"],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    assert plot.returncode == 0, plot.stderr
    assert (cwd / "front.png").stat().st_size > 10_000


def test_two_workers_share_one_sqlite_study(tiny_project):
    cwd = tiny_project.parent
    root = cwd / "runs" / "tiny" / "studies" / "shared"
    first = tune(cwd, "recipe.yaml", *SEARCH, "--trials", "4", "--name", "shared", wait=False)
    deadline = time.monotonic() + 120
    while not (root / "logs").is_dir():  # the study and its attributes exist once a trial started
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()[0]
        time.sleep(0.2)
    url = f"sqlite:///{root / 'study.db'}"
    second = tune(cwd, "--join", "shared", "--storage", url, "--trials", "4", wait=False)
    outs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    import optuna

    trials = optuna.load_study(study_name="shared", storage=url).get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 4 and len({t.number for t in done}) == 4
    assert all("this run: 0 trial(s)" not in o for o in outs)  # both workers trained
    assert len({t.user_attrs["pid"] for t in done}) == 2
