"""What ``mtl sweep`` shows: the ``--plan`` commands, a live table of every run (state, epoch, headline
metric, ETA) in a terminal or one plain line per event elsewhere, and the closing summary with the
``mtl compare`` (or continue) command. The command's work is :mod:`mtlcli.sweep`'s."""

from __future__ import annotations

import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from mtlcli import sweep
from mtlcli.sweep.jobs import Job
from mtlcli.views import interactive

STYLE = {"pending": "dim", "running": "cyan", "done": "green", "failed": "red", "interrupted": "yellow"}


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=not sys.stdout.isatty())


def _plain(console: Console, text: str) -> None:
    console.print(text, soft_wrap=True, highlight=False, markup=False)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def continue_command(target: Path, options: dict[str, Any]) -> str:
    """The ``mtl sweep`` command line that continues this sweep (the same options, without --plan)."""
    parts = ["mtl", "sweep", str(target)]
    for text in options.get("grid") or []:
        parts += ["--grid", text]
    for name in ("seeds", "pareto", "jobs", "threads", "output"):
        if options.get(name) is not None:
            parts += [f"--{name}", str(options[name])]
    if options.get("single_task"):
        parts.append("--single-task")
    for text in options.get("sets") or []:
        parts += ["--set", text]
    return shlex.join(parts)


class SweepView:
    """Receives the scheduler's ``(kind, job)`` calls and shows them."""

    def __init__(self, console: Console, jobs: list[Job]):
        self.console = console
        self.jobs = jobs
        self.live: Live | None = None
        self.interactive = interactive(console)

    def handle(self, kind: str, item) -> None:
        if kind == "note":
            _plain(self.console, f"note: {item}")
            return
        if self.interactive:
            if self.live is None:
                self.live = Live(self.table(), console=self.console, refresh_per_second=4, transient=False)
                self.live.start()
            self.live.update(self.table())
        elif kind != "tick":
            _plain(self.console, self.line(kind, item))

    def line(self, kind: str, job: Job) -> str:
        e = job.entry
        if kind == "start":
            how = {"resume": "resumed", "restart": "restarted"}.get(job.mode, "started")
            return f"{e.dir}: {how} (seed {e.seed}, {job.epochs} epochs)"
        if kind == "epoch":
            value = f", {job.headline} {job.value:.4g}" if job.value is not None else ""
            return f"{e.dir}: epoch {job.epoch}/{job.epochs}{value}"
        took = _duration(e.finished - e.started) if e.finished and e.started else "-"
        if e.state == "failed":
            return f"{e.dir}: failed after {took}: {e.error}"
        value = f", {job.headline} {job.value:.4g}" if job.value is not None else ""
        return f"{e.dir}: {e.state} after {took}{value}"

    def table(self) -> Table:
        table = Table(header_style="bold", title="sweep", title_justify="left")
        for col, justify in (
            ("run", "left"),
            ("state", "left"),
            ("epoch", "right"),
            ("metric", "left"),
            ("ETA", "right"),
        ):
            table.add_column(col, justify=justify)
        for job in self.jobs:
            e = job.entry
            metric = f"{job.headline} {job.value:.4g}" if job.value is not None else "-"
            epoch = f"{job.epoch}/{job.epochs}" if e.state in ("running", "done", "interrupted") else "-"
            eta = _duration(job.eta()) if e.state == "running" else "-"
            table.add_row(escape(e.dir), f"[{STYLE[e.state]}]{e.state}[/]", epoch, escape(metric), eta)
        return table

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self.table())
            self.live.stop()
            self.live = None


def render_plan(console: Console, prepared: sweep.Prepared) -> None:
    """One ``mtl train`` command per run, then where the results go and the compare command."""
    for note in prepared.notes:
        _plain(console, f"# note: {note}")
    for line in sweep.plan(prepared):
        _plain(console, line)
    _plain(console, f"# then: mtl compare {shlex.quote(str(prepared.root))}")


def summary(
    console: Console, err: Console, prepared: sweep.Prepared, outcome: sweep.Outcome, again: str
) -> int:
    """The closing lines; returns the exit code (130/143 when stopped, 1 when a run failed, else 0)."""
    n = len(outcome.entries)
    counts = {s: outcome.count(s) for s in ("done", "failed", "interrupted", "pending")}
    text = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    already = f" ({outcome.skipped} already done before, not trained again)" if outcome.skipped else ""
    _plain(console, f"sweep {prepared.doc.id}: {n} runs: {text}{already}")
    for e in outcome.entries:
        if e.state == "failed":
            _plain(err, f"failed: {e.dir}: {e.error} (log: {prepared.root / 'logs' / e.dir}.log)")
    _plain(console, f"sweep.json: {prepared.json_path}")
    if outcome.signum is not None:
        name = signal.Signals(outcome.signum).name
        _plain(err, f"{name}: the sweep stopped; the runs it interrupted saved checkpoints")
        _plain(err, f"continue with: {again}")
        return 128 + int(outcome.signum)
    if counts["done"]:
        _plain(console, f"compare with: mtl compare {shlex.quote(str(prepared.root))}")
    if counts["failed"]:
        _plain(err, f"{counts['failed']} run(s) failed; run the same command again to retry them: {again}")
        return 1
    return 0


def run_command(target: Path, options: dict[str, Any], plan_only: bool) -> int:
    """``mtl sweep``: check every point, then print the plan or train; returns the exit code."""
    console, err = _console(), _console(stderr=True)
    spec = sweep.request(target, options)
    prepared = sweep.prepare(spec)
    if plan_only:
        render_plan(console, prepared)
        return 0
    for note in prepared.notes:
        _plain(console, f"note: {note}")
    n_points, n_runs = len(prepared.points), len(prepared.jobs)
    _plain(
        console,
        f"sweep {prepared.doc.id}: {n_points} points x {spec.seeds} seed(s) = {n_runs} runs in {prepared.root}",
    )
    view = SweepView(console, prepared.jobs)
    started = time.monotonic()
    try:
        outcome = sweep.run(prepared, view.handle, jobs=spec.jobs, threads=spec.threads)
    finally:
        view.close()
    _plain(console, f"wall time {_duration(time.monotonic() - started)}")
    return summary(console, err, prepared, outcome, continue_command(target, options))
