"""Interrupting a training process: SIGINT/SIGTERM write a checkpoint, print the resume command and exit
130/143; SIGKILL at random instants always leaves a checkpoint that ``--resume`` continues from."""

from __future__ import annotations

import csv
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtlcli.run import checkpoint
from tests.conftest import TINY_RECIPE, write_tiny_csv

pytestmark = pytest.mark.slow

EPOCHS = 2


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_tiny_csv(tmp_path / "tiny.csv", n=1600)  # 1200 training rows: 150 steps of 8 per epoch
    text = TINY_RECIPE.replace("batch_size: 32", "batch_size: 8\n  checkpoint_every: 20")
    text = text.replace("epochs: 3", f"epochs: {EPOCHS}")
    (tmp_path / "recipe.yaml").write_text(text)
    return tmp_path


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "COLUMNS": "200"}


def _start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mtlcli", "train", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _resume(cwd: Path, command: str) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    assert argv[:3] == ["mtl", "train", "--resume"]
    return subprocess.run(
        [sys.executable, "-m", "mtlcli", *argv[1:]],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _epochs_in_history(run: Path) -> list[str]:
    with open(run / "history.csv") as fh:
        return [row["epoch"] for row in csv.DictReader(fh)]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_prints_the_resume_command_and_exits(project, sig, code):
    proc = _start(project, "recipe.yaml", "-o", "run")
    _wait_for(project / "run" / "checkpoints" / "last", proc)  # training is under way
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (out, err)
    lines = err.strip().splitlines()
    assert "Traceback" not in out + err
    assert lines[-1] == "resume with: mtl train --resume run"
    assert lines[-2].startswith(f"{signal.Signals(sig).name}: stopped at epoch ")
    assert lines[-2].endswith("; checkpoint saved in run/checkpoints/last")
    state = checkpoint.read_state(project / "run" / "checkpoints" / "last")
    assert state["epoch"] < EPOCHS
    assert not (project / "run" / "model.keras").exists()

    done = _resume(project, lines[-1].removeprefix("resume with: "))
    assert done.returncode == 0, done.stderr
    assert _epochs_in_history(project / "run") == [str(e + 1) for e in range(EPOCHS)]
    assert (project / "run" / "model.keras").exists()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_instant_always_leaves_a_resumable_checkpoint(project, seed):
    proc = _start(project, "recipe.yaml", "-o", "run")
    _wait_for(project / "run" / "checkpoints" / "last", proc)
    time.sleep(random.Random(seed).uniform(0.0, 1.5))
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode in (-signal.SIGKILL, 0)  # 0: it had already finished
    found = checkpoint.find(project / "run")
    assert found is not None
    checkpoint.read_state(found)  # complete, and every file matches its sha256
    leftovers = [p.name for p in (project / "run" / "checkpoints").iterdir() if p.name.startswith(".")]
    assert all(name.startswith((".last.", ".best.")) for name in leftovers)

    finished = (project / "run" / "model.keras").exists() and (project / "run" / "metrics.json").exists()
    done = _resume(project, "mtl train --resume run")
    if finished:  # killed (or exited) after the run had written its final artifacts
        assert done.returncode == 2 and "has already finished" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    assert _epochs_in_history(project / "run") == [str(e + 1) for e in range(EPOCHS)]
    assert not [p for p in (project / "run" / "checkpoints").iterdir() if p.name.startswith(".")]
