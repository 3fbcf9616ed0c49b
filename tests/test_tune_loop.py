"""mtl tune's trial loop with fake children (no TensorFlow, a second each): pruning stops a child and
tells PRUNED, a failed child is a FAIL with its error while the study goes on, and --trials is the
study's total."""

from __future__ import annotations

import sys

from mtlcli.sweep import jobs as jobs_mod
from mtlcli.tune import TuneSpec, prepare, run, summary

FAKE = r"""
import json, sys, time
from pathlib import Path
run_dir, sets = Path(sys.argv[1]), sys.argv[2:]
run_dir.mkdir(parents=True, exist_ok=True)
weighting = next(s.split("=", 1)[1] for s in sets if s.startswith("train.weighting="))
if weighting == "mean":
    print("error: boom, the child failed")
    sys.exit(1)
value = {"static": 1.0, "upgrad": 5.0}[weighting]
rows = ["epoch,val_loss"]
for epoch in range(1, 5):
    rows.append(f"{epoch},{value}")
    (run_dir / "history.csv").write_text("\n".join(rows) + "\n")
    time.sleep(0.25)
(run_dir / "metrics.json").write_text(json.dumps({"splits": {"validation": {"loss": value, "tasks": {}}}}))
(run_dir / "model.keras").write_text("")
(run_dir / "resolved.yaml").write_text("{}")
"""


def fake_command(self, python=sys.executable):
    self.mode = "start"
    return [python, "-c", FAKE, str(self.run_dir), *self.sets]


def test_prune_fail_and_total(tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project.parent)
    monkeypatch.setattr(jobs_mod.Job, "command", fake_command)
    spec = TuneSpec(
        tiny_project,
        ["train.weighting=static,upgrad,mean"],
        trials=8,
        objectives="loss",
        sampler="random",
        seed=1,
    )
    p = prepare(spec)
    events = []
    outcome = run(p, lambda kind, item: events.append(kind), poll=0.05)
    assert outcome.signum is None and len(outcome.trained) == 8
    doc = summary(p)
    by_value = {}
    for t in doc["trials"]:
        by_value.setdefault(t["params"]["train.weighting"], set()).add(t["state"])
    assert by_value["static"] == {"complete"}
    assert by_value["mean"] == {"failed"}
    assert "pruned" in by_value["upgrad"], by_value
    failed = [t for t in doc["trials"] if t["state"] == "failed"]
    assert all(t["error"] == "exit 1: boom, the child failed" for t in failed)
    pruned = [t for t in doc["trials"] if t["state"] == "pruned"]
    assert all(t["pruned_at_epoch"] < 4 for t in pruned)
    assert (
        doc["pareto"]
        == [
            t["number"] for t in doc["trials"] if t["state"] == "complete" and t["values"]["loss"] == 1.0
        ]  # ties all optimal
    )
    assert {"start", "epoch", "end", "tick"} <= set(events)
    # the same request again: the study already holds 8 trials, nothing is trained
    again = run(prepare(spec), lambda *a: None, poll=0.05)
    assert again.trained == []


def test_ctrl_c_marks_running_trials_interrupted_and_uncounted(tiny_project, monkeypatch):
    import os
    import signal
    import threading

    from mtlcli.tune.study import counted

    monkeypatch.chdir(tiny_project.parent)
    monkeypatch.setattr(jobs_mod.Job, "command", fake_command)
    spec = TuneSpec(
        tiny_project, ["train.weighting=static,upgrad"], trials=4, objectives="loss", name="c", prune=False
    )
    p = prepare(spec)
    timer = threading.Timer(0.6, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    outcome = run(p, lambda *a: None, jobs=2, threads=1, poll=0.05)
    timer.join()
    assert outcome.signum == signal.SIGINT
    states = [t["state"] for t in summary(p)["trials"]]
    assert states == ["interrupted", "interrupted"]
    assert not any(counted(t) for t in p.study.get_trials())
    again = run(prepare(spec), lambda *a: None, jobs=2, threads=1, poll=0.05)  # replaced, to 4 in all
    assert [t.state for t in again.trained] == ["complete"] * 4
