"""What a study found: every trial's state, values and per-task validation metrics, the Pareto-optimal
trials (Optuna's ``best_trials``) and ``study.json`` (written atomically into the study directory).
Plain dictionaries, so ``--json`` and the view share them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mtlcli import fsio


def _metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` of the run's validation split (empty when it did not finish)."""
    try:
        doc = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    tasks = (((doc.get("splits") or {}).get("validation") or {}).get("tasks")) or {}
    return {t: {k: v for k, v in m.items() if k != "n"} for t, m in tasks.items() if isinstance(m, dict)}


def trial_dict(p, t) -> dict[str, Any]:
    """One trial as plain data: number, state, params, objective values, dir, error, metrics."""
    a = t.user_attrs
    state = t.state.name.lower()
    if state == "fail":
        state = "interrupted" if a.get("interrupted") else ("surplus" if a.get("surplus") else "failed")
    run_dir = p.root / a["dir"] if a.get("dir") else None
    out = {
        "number": t.number,
        "state": state,
        "params": dict(t.params),
        "values": dict(zip([o.name for o in p.objectives], t.values, strict=False)) if t.values else None,
        "dir": str(run_dir) if run_dir else None,
    }
    if a.get("error"):
        out["error"] = a["error"]
    if a.get("pruned_at_epoch") is not None:
        out["pruned_at_epoch"] = a["pruned_at_epoch"]
    if run_dir is not None and t.state.name == "COMPLETE":
        out["metrics"] = _metrics(run_dir)
    return out


def summary(p) -> dict[str, Any]:
    """The whole study: its objectives, search space, trials and Pareto-optimal trial numbers."""
    trials = [trial_dict(p, t) for t in p.study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    try:
        best = sorted(t.number for t in p.study.best_trials)
    except (ValueError, RuntimeError):
        best = []
    return {
        "study": p.study.study_name,
        "dir": str(p.root),
        "recipe": str(p.recipe),
        "objectives": [{"name": o.name, "direction": o.direction} for o in p.objectives],
        "search": [x.text for x in p.params],
        "sets": list(p.sets),
        "trials": trials,
        "pareto": best,
        "counts": {
            s: sum(t["state"] == s for t in trials)
            for s in ("complete", "pruned", "failed", "interrupted", "running")
        },
    }


def save(p) -> Path:
    """Write ``study.json`` atomically; returns its path."""
    path = p.root / "study.json"
    fsio.atomic_write(path, json.dumps(summary(p), indent=2, default=str) + "\n")
    return path
