"""``sweep.json``: the grid, the points and the state of every run, and the rules that move a run from
one state to the next (pure functions; the file is written atomically with :mod:`mtlcli.fsio`).

A run is ``pending`` (not started), ``running`` (a child trains it; its ``pid`` is recorded), ``done``,
``failed`` (with the child's ``error``) or ``interrupted`` (stopped by a signal, or found ``running``
with no process left: the sweep was killed). What happens to a run when the sweep starts is decided
by its directory alone (:func:`action`): ``metrics.json`` and ``model.keras`` -> done, nothing to do;
a checkpoint -> ``resume`` (``mtl train --resume DIR``); a non-empty directory without a checkpoint
-> ``restart`` (``--output DIR --force``); nothing -> ``start``. So a failed or interrupted run is
tried again by the next ``mtl sweep``, and a finished one is never touched.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtlcli import fsio

STATES = ("pending", "running", "done", "failed", "interrupted")
#: the moves a run can make (anything else is a bug, refused by :func:`transition`)
MOVES = {
    "pending": {"running", "done"},
    "running": {"done", "failed", "interrupted"},
    "failed": {"running", "done"},
    "interrupted": {"running", "done"},
    "done": {"pending"},  # only when its directory no longer holds the finished run
}
VERSION = 1


@dataclass
class Entry:
    """One run of the sweep: ``dir`` relative to ``sweep.json`` (``<point>/seed-<k>``)."""

    dir: str
    point: str
    seed: int
    seed_index: int
    single_task: str | None = None
    state: str = "pending"
    error: str | None = None
    pid: int | None = None
    started: float | None = None
    finished: float | None = None
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["single_task"] is None:
            del out["single_task"]  # mtl compare reads the key's presence
        return out


def transition(entry: Entry, state: str, *, error: str | None = None, pid: int | None = None) -> Entry:
    """``entry`` moved to ``state`` (in place, returned); a move :data:`MOVES` does not allow is a
    ValueError. Starting records the pid and the time; every end records the time and clears the pid."""
    if state not in MOVES.get(entry.state, ()):
        raise ValueError(f"{entry.dir}: a run cannot go from {entry.state} to {state}")
    entry.state = state
    now = time.time()
    if state == "running":
        entry.pid, entry.started, entry.finished, entry.error = pid, now, None, None
        entry.attempts += 1
    elif state == "pending":
        entry.pid, entry.started, entry.finished, entry.error = None, None, None, None
    else:
        entry.pid, entry.finished = None, now
        entry.error = error if state == "failed" else None
    return entry


@dataclass(frozen=True)
class Facts:
    """What a run directory holds."""

    exists: bool
    finished: bool  # metrics.json and model.keras
    checkpoint: bool  # checkpoints/last (or the .last.old a kill between two renames leaves)
    empty: bool


def facts(run_dir: Path) -> Facts:
    if not run_dir.is_dir():
        return Facts(False, False, False, True)
    finished = (run_dir / "metrics.json").is_file() and (run_dir / "model.keras").is_file()
    ckpt = run_dir / "checkpoints"
    checkpoint = any((ckpt / name / "state.json").is_file() for name in ("last", ".last.old"))
    return Facts(True, finished, checkpoint, not any(run_dir.iterdir()))


def action(f: Facts) -> str:
    """``skip`` (finished), ``resume`` (a checkpoint), ``restart`` (files, no checkpoint) or ``start``."""
    if f.finished:
        return "skip"
    if f.checkpoint:
        return "resume"
    return "restart" if f.exists and not f.empty else "start"


def outcome(returncode: int, f: Facts, stopping: bool) -> str:
    """The state a run ends in after its child exited with ``returncode``: ``done`` when it finished;
    ``interrupted`` for a signal's exit (130, 143, or killed) or when the sweep was stopping;
    ``failed`` otherwise."""
    if returncode == 0 and f.finished:
        return "done"
    if returncode in (130, 143) or returncode < 0 or stopping:
        return "interrupted"
    return "failed"


def reconcile(entries: list[Entry], alive) -> list[Entry]:
    """Runs recorded ``running`` whose process ``alive(pid)`` says is gone become ``interrupted``."""
    for e in entries:
        if e.state == "running" and not (e.pid and alive(e.pid)):
            transition(e, "interrupted")
    return entries


@dataclass
class Document:
    """What ``sweep.json`` holds."""

    id: str
    recipe: str
    sets: list[str]
    grid: list[dict[str, Any]]
    seeds: int
    single_task: bool
    pareto: int | None
    points: list[dict[str, Any]]
    runs: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "runs"}
        out["version"] = VERSION
        out["runs"] = [e.to_dict() for e in self.runs]
        out["counts"] = counts(self.runs)
        return out


def counts(entries: list[Entry]) -> dict[str, int]:
    return {s: sum(e.state == s for e in entries) for s in STATES}


def save(path: Path, doc: Document) -> None:
    fsio.atomic_write(path, json.dumps(doc.to_dict(), indent=2) + "\n")


def read_entries(path: Path) -> dict[str, Entry]:
    """The runs an existing ``sweep.json`` records, by ``dir`` (``{}`` when there is none or it is
    unreadable: the run directories say what is done)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    names = set(Entry.__dataclass_fields__)
    for item in raw.get("runs") or [] if isinstance(raw, dict) else []:
        if isinstance(item, dict) and isinstance(item.get("dir"), str) and item.get("state") in STATES:
            try:
                out[item["dir"]] = Entry(**{k: v for k, v in item.items() if k in names})
            except TypeError:
                continue
    return out


def merge(fresh: list[Entry], old: dict[str, Entry]) -> list[Entry]:
    """The runs of this invocation, keeping the recorded state, error, pid and times of those an
    earlier invocation recorded (its other runs, e.g. seeds no longer asked for, are left out)."""
    out = []
    for e in fresh:
        prior = old.get(e.dir)
        if prior is not None:
            e.state, e.error, e.pid = prior.state, prior.error, prior.pid
            e.started, e.finished, e.attempts = prior.started, prior.finished, prior.attempts
        out.append(e)
    return out
