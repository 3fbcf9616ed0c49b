"""A sweep from request to results: :func:`prepare` checks every point and lays out the runs,
:func:`plan` gives one ``mtl train`` command per run, :func:`run` trains what is not done yet.

Layout: ``runs/<name>/sweeps/<id>/`` (or ``--output DIR``) holds ``sweep.json``, one directory per
point with a run directory per seed (``<point>/seed-<k>/``, an ordinary run) and ``logs/`` (each
child's output). Only one ``mtl sweep`` works in a sweep directory at a time (a lock file,
``.lock``, released by the OS however the sweep ends). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from mtlcli.errors import UsageError
from mtlcli.recipe import LoadedRecipe, load
from mtlcli.sweep import jobs as jobs_mod
from mtlcli.sweep import points as points_mod
from mtlcli.sweep import state as state_mod
from mtlcli.sweep.spec import SweepSpec


@dataclass
class Prepared:
    """A checked sweep: its directory, points, runs (``jobs``) and what ``sweep.json`` will hold."""

    spec: SweepSpec
    root: Path
    doc: state_mod.Document
    points: list[points_mod.Point]
    jobs: list[jobs_mod.Job]
    notes: list[str] = field(default_factory=list)

    @property
    def json_path(self) -> Path:
        return self.root / "sweep.json"


def headline(loaded: LoadedRecipe, task: str | None = None) -> str:
    """The history column the live table shows: ``val_<task>_<first metric>`` of the first task."""
    recipe = loaded.recipe
    task = task or next(iter(recipe.model.tasks))
    metrics = recipe.metrics(task)
    return f"val_{task}_{metrics[0] if metrics else 'loss'}"


def prepare(spec: SweepSpec) -> Prepared:
    """Load and check every point (all problems at once, RecipeError, exit 2) and lay out its runs."""
    if not spec.recipe.is_file():
        where = f" (recipe: in {spec.file})" if spec.file else ""
        raise UsageError(f"{spec.recipe}: no such recipe file{where}")
    base = load(spec.recipe, overrides=spec.sets)
    points, notes = points_mod.expand(spec, base)
    seeds = points_mod.seeds_of(base, spec.seeds)
    loaded = points_mod.check(spec, points, seeds)
    sid = points_mod.sweep_id(spec.recipe.read_bytes(), spec)
    root = spec.output or Path("runs") / base.name / "sweeps" / sid
    entries, todo = [], []
    for p in points:
        for k, seed in enumerate(seeds):
            rel = f"{p.name}/seed-{k}"
            entry = state_mod.Entry(rel, p.name, seed, k, p.single_task)
            entries.append(entry)
            todo.append(
                jobs_mod.Job(
                    entry,
                    root / rel,
                    str(spec.recipe),
                    p.sets(),
                    loaded[p.name].recipe.train.epochs,
                    headline(loaded[p.name], p.single_task),
                    root / "logs" / p.name / f"seed-{k}.log",
                )
            )
    doc = state_mod.Document(
        id=sid,
        recipe=str(spec.recipe),
        sets=list(spec.sets),
        grid=[{"key": a.key, "values": list(a.values), "sets": a.sets()} for a in spec.grid],
        seeds=spec.seeds,
        single_task=spec.single_task,
        pareto=spec.pareto,
        points=[
            {
                "name": p.name,
                "kind": p.kind,
                "overrides": p.sets(),
                **({"single_task": p.single_task} if p.single_task else {}),
            }
            for p in points
        ],
        runs=entries,
        notes=notes,
    )
    return Prepared(spec, root, doc, points, todo, notes)


def plan(prepared: Prepared) -> list[str]:
    """One ``mtl train ... --seed S --output DIR`` shell command per run, in order."""
    return [jobs_mod.plan_line(j.recipe, j.sets, j.entry.seed, str(j.run_dir)) for j in prepared.jobs]


@contextlib.contextmanager
def locked(root: Path):
    """Hold ``root/.lock`` (one ``mtl sweep`` per sweep directory); refused when another holds it."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f"{root}: another mtl sweep is running this sweep") from None
        yield
    finally:
        os.close(fd)


@dataclass
class Outcome:
    """How the sweep ended: the signal that stopped it (or None), and its runs' entries."""

    signum: int | None
    entries: list[state_mod.Entry]
    skipped: int = 0

    def count(self, state: str) -> int:
        return sum(e.state == state for e in self.entries)


def run(prepared: Prepared, on_change, jobs: int = 1, threads: int | None = None) -> Outcome:
    """Train every run of ``prepared`` that is not finished, ``jobs`` at once; returns the outcome.
    ``on_change(kind, job)`` as :func:`mtlcli.sweep.jobs.schedule` calls it; notes (the thread plan,
    runs found still running) come first as ``on_change("note", text)``."""
    doc = prepared.doc
    with locked(prepared.root):
        doc.runs = state_mod.merge(doc.runs, state_mod.read_entries(prepared.json_path))
        for e in doc.runs:
            if e.state == "running" and e.pid and jobs_mod.pid_alive(e.pid):
                on_change("note", f"{e.dir}: a child of an earlier sweep is still running; stopping it")
                jobs_mod.wait_for_orphan(e.pid)
        state_mod.reconcile(doc.runs, jobs_mod.pid_alive)
        todo, skipped = [], 0
        for job in prepared.jobs:
            finished = state_mod.facts(job.run_dir).finished
            if finished and job.entry.state != "done":
                state_mod.transition(job.entry, "done")
            elif not finished and job.entry.state == "done":  # its files were removed: train it again
                state_mod.transition(job.entry, "pending")
            if finished:
                skipped += 1
            else:
                todo.append(job)
        n, per, note = jobs_mod.thread_plan(jobs_mod.cores(), jobs, threads)
        if note:
            on_change("note", note)
        save = lambda: state_mod.save(prepared.json_path, doc)  # noqa: E731
        save()
        signum = jobs_mod.schedule(todo, n, per, on_change, save) if todo else None
        save()
    return Outcome(signum, doc.runs, skipped)
