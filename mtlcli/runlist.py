"""What ``mtl runs`` and ``mtl plot`` read from run directories: every run under some paths with its
status, epochs, best monitor value, strategy, architecture and start date, and one run's
``history.csv`` with the recipe's tasks and headline metrics (no TensorFlow, no printing).

A run directory is a directory holding ``resolved.yaml`` (the layout is :mod:`mtlcli.run.rundir`'s;
``mtl compare``'s :mod:`mtlcli.compare.runs` finds the same ones). Its status, first rule that holds:

- ``running``: a checkpoint being written by a live process (``checkpoints/.<name>.new-<pid>/``), or a
  file the training writes (``history.csv``, ``checkpoints/last/state.json``, ``env.json``,
  ``resolved.yaml``) modified less than :data:`RECENT_SECONDS` ago; when ``metrics.json`` is there,
  only a ``history.csv`` or ``state.json`` newer than it counts (a resumed run, after its first new
  epoch). mtl writes no pid or lock file, so a run killed a moment ago still reads ``running`` until
  that time has passed.
- ``finished``: ``metrics.json`` is there.
- ``failed``: training ended without results: ``model.keras`` without ``metrics.json`` (it failed while
  evaluating), or a last checkpoint at the planned epoch count or with early stopping triggered; or
  there is no checkpoint at all (the process died before its first one; a run that *fails* that early
  removes its directory). mtl records no failure marker: a non-finite loss or an out-of-memory error
  after the first checkpoint leaves the same files as an interruption, and reads ``interrupted``.
- ``interrupted``: a checkpoint and no ``metrics.json`` (Ctrl-C, SIGTERM, SIGKILL, a failure after the
  first checkpoint): ``mtl train --resume RUN`` continues it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from mtlcli.compare.runs import SKIP_DIRS, natural_key
from mtlcli.errors import UsageError
from mtlcli.run import checkpoint
from mtlcli.weighting.registry import display_name

#: a run whose files changed less than this long ago (and no metrics.json after them) is running
RECENT_SECONDS = 600
STATUSES = ("running", "finished", "failed", "interrupted")


@dataclass
class RunInfo:
    """One row of ``mtl runs``."""

    name: str
    path: str
    status: str
    why: str  # the rule that gave the status
    epochs: int | None
    planned: int | None
    monitor: str | None
    best: float | None
    best_epoch: int | None
    strategy: str | None
    architecture: str | None
    tasks: list[str] = field(default_factory=list)
    started: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``{}`` when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_resolved(run_dir: Path) -> dict[str, Any]:
    """``resolved.yaml`` (its ``# source`` comments ignored); ``{}`` when unreadable."""
    try:
        value = yaml.safe_load((run_dir / "resolved.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


def run_dirs(root: Path) -> list[Path]:
    """The run directories at or under ``root`` (not inside another run, ``checkpoints`` or dot
    directories), in natural path order."""
    if (root / "resolved.yaml").is_file():
        return [root]
    found = []
    for marker in root.rglob("resolved.yaml"):
        parts = marker.parent.relative_to(root).parts
        if any(p.startswith(".") or p in SKIP_DIRS for p in parts):
            continue
        found.append(marker.parent)
    found.sort(key=natural_key)
    out: list[Path] = []
    for d in found:  # parents sort before their children
        if not any(d.is_relative_to(o) for o in out):
            out.append(d)
    return out


def strategy_name(weighting: Any) -> str | None:
    """``pcgrad`` for ``weighting: pcgrad`` and for ``weighting: {pcgrad: {...}}``; a wrapper with its
    base, ``cr_mogm(upgrad)``."""
    if isinstance(weighting, str):
        return weighting
    if isinstance(weighting, dict) and len(weighting) == 1:
        return display_name(weighting)
    if isinstance(weighting, dict) and weighting:
        return ",".join(str(k) for k in weighting)
    return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _latest(run_dir: Path, names: tuple[str, ...]) -> float | None:
    times = [t for t in (_mtime(run_dir / n) for n in names) if t is not None]
    return max(times, default=None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _writing(run_dir: Path) -> bool:
    """A ``checkpoints/.<name>.new-<pid>`` directory of a live process."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return False
    for tmp in root.glob(".*.new-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and _alive(int(pid)):
            return True
    return False


def _checkpoint_state(run_dir: Path) -> dict[str, Any]:
    """The last checkpoint's ``state.json`` (not checked against its files: only read for display)."""
    ckpt = checkpoint.find(run_dir, "last")
    return read_json(ckpt / "state.json") if ckpt is not None else {}


def status(run_dir: Path, planned: int | None, now: float | None = None) -> tuple[str, str]:
    """``(status, why)`` by the rules of this module's docstring."""
    now = time.time() if now is None else now
    finished_at = _mtime(run_dir / "metrics.json")
    if _writing(run_dir):
        return "running", "a checkpoint is being written by a live process"
    training = _latest(run_dir, ("history.csv", "checkpoints/last/state.json"))
    latest = _latest(run_dir, ("history.csv", "checkpoints/last/state.json", "env.json", "resolved.yaml"))
    if finished_at is not None:  # a resumed run: new epochs after metrics.json
        latest = training if training is not None and training > finished_at else None
    if latest is not None and now - latest < RECENT_SECONDS:
        return "running", f"files changed {now - latest:.0f} s ago" + (
            " (after metrics.json)" if finished_at is not None else ", no metrics.json"
        )
    if finished_at is not None:
        return "finished", "metrics.json"
    if (run_dir / "model.keras").is_file():
        return "failed", "model.keras but no metrics.json (it failed while evaluating)"
    state = _checkpoint_state(run_dir)
    if not state:
        return "failed", "no checkpoint and no metrics.json (it stopped before its first checkpoint)"
    selection = state.get("selection") or {}
    if selection.get("stopped") or (planned is not None and state.get("epoch", 0) >= planned):
        return "failed", "training ended (last checkpoint) but no metrics.json"
    return "interrupted", f"a checkpoint (epoch {state.get('epoch')}) and no metrics.json"


def history_rows(path: Path) -> list[dict[str, str]]:
    """``history.csv`` as rows of strings; ``[]`` when it is missing or unreadable."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _started(env: dict[str, Any], run_dir: Path) -> str | None:
    """env.json's ``started`` as ISO 8601; the time resolved.yaml was written when it has none."""
    text = env.get("started")
    if isinstance(text, str):
        try:
            return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").isoformat()
        except ValueError:
            return text
    t = _mtime(run_dir / "resolved.yaml")
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds") if t is not None else None


def read_info(run_dir: Path, now: float | None = None) -> RunInfo:
    """One run directory as a row of ``mtl runs``."""
    resolved = read_resolved(run_dir)
    train = resolved.get("train") if isinstance(resolved.get("train"), dict) else {}
    model = resolved.get("model") if isinstance(resolved.get("model"), dict) else {}
    metrics = read_json(run_dir / "metrics.json")
    env = read_json(run_dir / "env.json")
    planned = _int(train.get("epochs"))
    state, why = status(run_dir, planned, now)
    ckpt = _checkpoint_state(run_dir) if state != "finished" else {}
    epochs = _int(metrics.get("epochs_run")) if state == "finished" else None
    if epochs is None:
        rows = history_rows(run_dir / "history.csv")
        epochs = len(rows) if rows else _int(ckpt.get("epoch"))
    best = metrics.get("best") if isinstance(metrics.get("best"), dict) else {}
    if not best and isinstance(ckpt.get("selection"), dict):  # the best so far of an unfinished run
        sel = ckpt["selection"]
        best = {"monitor": sel.get("monitor"), "value": sel.get("best"), "epoch": sel.get("best_epoch")}
    tasks = model.get("tasks") if isinstance(model.get("tasks"), dict) else {}
    return RunInfo(
        name=str(resolved.get("name") or run_dir.name),
        path=str(run_dir),
        status=state,
        why=why,
        epochs=epochs,
        planned=planned,
        monitor=best.get("monitor") if isinstance(best.get("monitor"), str) else None,
        best=_number(best.get("value")),
        best_epoch=_int(best.get("epoch")),
        strategy=strategy_name(train.get("weighting")),
        architecture=model.get("architecture") if isinstance(model.get("architecture"), str) else None,
        tasks=[str(t) for t in tasks],
        started=_started(env, run_dir),
    )


def list_runs(paths: list[Path], now: float | None = None) -> list[RunInfo]:
    """Every run directory at or under ``paths`` (each once), oldest start first.

    Raises :class:`UsageError` for a path that does not exist or is a file; a directory without runs
    gives ``[]`` (the command says so).
    """
    seen: dict[Path, RunInfo] = {}
    for root in paths:
        if not root.exists():
            raise UsageError(f"{root}: no such directory")
        if not root.is_dir():
            raise UsageError(f"{root}: expected a run directory or a directory of runs, received a file")
        for d in run_dirs(root):
            if d.resolve() not in seen:
                seen[d.resolve()] = read_info(d, now)
    return sorted(seen.values(), key=lambda r: (_sort_time(r.started), natural_key(Path(r.path))))


def _sort_time(started: str | None) -> float:
    if started is None:
        return math.inf
    try:
        return datetime.fromisoformat(started).timestamp()
    except ValueError:
        return math.inf
