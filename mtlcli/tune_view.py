"""What ``mtl tune`` shows: a live table of trials (number, state, epoch, params, objective values)
in a terminal or one plain line per event elsewhere, then the Pareto-optimal trials with their
params and per-task validation metrics, or ``--json``. The work is :mod:`mtlcli.tune`'s."""

from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from mtlcli import tune
from mtlcli.views import interactive

STYLE = {"running": "cyan", "complete": "green", "pruned": "yellow", "failed": "red", "interrupted": "yellow"}


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=not sys.stdout.isatty())


def _plain(console: Console, text: str) -> None:
    console.print(text, soft_wrap=True, highlight=False, markup=False)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k.rsplit('.', 1)[-1]}={fmt(v)}" for k, v in params.items())


class TuneView:
    """Receives the tune loop's ``(kind, item)`` calls and shows them."""

    def __init__(self, console: Console, prepared: tune.Prepared):
        self.console = console
        self.prepared = prepared
        self.trials: list[tune.TrialJob] = []
        self.live: Live | None = None
        self.interactive = interactive(console)

    def handle(self, kind: str, item) -> None:
        if kind == "note":
            _plain(self.console, f"note: {item}")
            return
        if kind == "start":
            self.trials.append(item)
        if self.interactive:
            if self.live is None:
                self.live = Live(self.table(), console=self.console, refresh_per_second=4)
                self.live.start()
            self.live.update(self.table())
        elif kind != "tick":
            _plain(self.console, self.line(kind, item))

    def values(self, tj: tune.TrialJob) -> str:
        names = [o.name for o in self.prepared.objectives]
        if tj.values is not None:
            return " ".join(f"{n} {fmt(v)}" for n, v in zip(names, tj.values, strict=False))
        return f"{tj.job.headline} {fmt(tj.job.value)}" if tj.job.value is not None else "-"

    def line(self, kind: str, tj: tune.TrialJob) -> str:
        head = f"trial {tj.number}"
        if kind == "start":
            return f"{head}: started ({params_text(tj.params)})"
        if kind == "epoch":
            return f"{head}: epoch {tj.job.epoch}/{tj.job.epochs}, {self.values(tj)}"
        if tj.state == "failed":
            return f"{head}: failed: {tj.error} (log: {tj.job.log})"
        if tj.state == "pruned":
            return f"{head}: pruned at epoch {tj.job.epoch}, {self.values(tj)}"
        return f"{head}: {tj.state}, {self.values(tj)}"

    def table(self) -> Table:
        table = Table(
            header_style="bold", title=f"study {self.prepared.study.study_name}", title_justify="left"
        )
        for col in ("trial", "state", "epoch", "params", "values"):
            table.add_column(col, justify="right" if col in ("trial", "epoch") else "left")
        for tj in self.trials:
            table.add_row(
                str(tj.number),
                f"[{STYLE.get(tj.state, 'dim')}]{tj.state}[/]",
                f"{tj.job.epoch}/{tj.job.epochs}",
                escape(params_text(tj.params)),
                escape(self.values(tj)),
            )
        return table

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self.table())
            self.live.stop()
            self.live = None


def _headline(metrics: dict[str, Any]) -> tuple[str, Any]:
    """A task's headline: its first metric other than the loss (the loss when it has no other)."""
    names = [m for m in metrics if m != "loss"] or list(metrics)
    return (names[0], metrics[names[0]]) if names else ("-", None)


def pareto_table(doc: dict[str, Any]) -> Table:
    """The Pareto-optimal trials: params, then every task's headline validation metric (``study.json``
    and ``--json`` hold all of them)."""
    table = Table(header_style="bold", title="Pareto-optimal trials", title_justify="left")
    best = [t for t in doc["trials"] if t["number"] in doc["pareto"]]
    keys = list(dict.fromkeys(k for t in best for k in t["params"]))
    tasks = list(dict.fromkeys(k for t in best for k in (t.get("metrics") or {})))
    table.add_column("trial", justify="right")
    for k in keys:
        table.add_column(k.rsplit(".", 1)[-1])
    heads = {task: _headline((best[0].get("metrics") or {}).get(task) or {})[0] for task in tasks}
    for task in tasks:
        table.add_column(f"{task} {heads[task]}", justify="right")
    if doc["objectives"][0]["name"] == "loss":
        table.add_column("val loss", justify="right")
    for t in best:
        metrics = t.get("metrics") or {}
        cells = [fmt((metrics.get(task) or {}).get(heads[task], "-")) for task in tasks]
        if doc["objectives"][0]["name"] == "loss":
            cells.append(fmt((t.get("values") or {}).get("loss", "-")))
        table.add_row(str(t["number"]), *(escape(fmt(t["params"].get(k))) for k in keys), *map(escape, cells))
    return table


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def run_command(spec: tune.TuneSpec, as_json: bool) -> int:
    """``mtl tune``: check, train trials until the study holds ``--trials``, show the Pareto set."""
    out, err = _console(stderr=as_json), _console(stderr=True)
    prepared = tune.prepare(spec)
    objectives = ", ".join(f"{o.name} ({o.direction})" for o in prepared.objectives)
    _plain(
        out,
        f"study {prepared.study.study_name} in {prepared.root}: {objectives}; {spec.trials} trials in all",
    )
    view = TuneView(out, prepared)
    started = time.monotonic()
    try:
        outcome = tune.run(prepared, view.handle, jobs=spec.jobs, threads=spec.threads)
    finally:
        view.close()
    doc = tune.summary(prepared)
    path = tune.save(prepared)
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    elif doc["pareto"]:
        out.print(pareto_table(doc))
    counts = ", ".join(f"{v} {k}" for k, v in doc["counts"].items() if v)
    _plain(
        out,
        f"this run: {len(outcome.trained)} trial(s) in {_duration(time.monotonic() - started)}; study: {counts}",
    )
    _plain(out, f"study.json: {path}")
    _plain(out, f"compare with: mtl compare {shlex.quote(str(prepared.root))}")
    if outcome.signum is not None:
        _plain(
            err, f"{signal.Signals(outcome.signum).name}: stopped; run the same command to continue the study"
        )
        return 128 + int(outcome.signum)
    return 1 if outcome.count("failed") and not outcome.count("complete") else 0
