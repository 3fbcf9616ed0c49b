"""What the CLI shows: the live training view, result tables and the plan, rendered with rich.

Library code reports :mod:`mtlcli.events`; this module turns them into a live progress bar with a
per-task table on a terminal, or short plain lines off a TTY. Only the CLI layer imports it.
"""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

from mtlcli import events


def interactive(console: Console) -> bool:
    """A real terminal (live view, coloured tables), not a pipe or a dumb terminal."""
    return console.is_terminal and not console.is_dumb_terminal


class TrainView:
    """Live rendering of training events: a progress bar and a per-task table (or plain lines)."""

    def __init__(self, console: Console):
        self.console = console
        self.live_mode = interactive(console)
        self.live = None  # rich.live.Live while a terminal view runs
        self.progress = None  # rich.progress.Progress
        self.bar = None
        self.started = None
        self.last: dict[str, float] = {}

    def handle(self, event) -> None:
        if isinstance(event, events.Started):
            self.started = event
            self._print_start(event)
            if self.live_mode:
                # imported here: only a training run in a terminal needs them (faster --help/validate)
                from rich.live import Live
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )

                self.progress = Progress(
                    TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    TimeRemainingColumn(),
                    TextColumn("{task.fields[loss]}"),
                    console=self.console,
                )
                self.bar = self.progress.add_task(
                    "train", total=event.steps_per_epoch, epoch=1, epochs=event.epochs, loss=""
                )
                self.live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False)
                self.live.start()
        elif isinstance(event, events.BatchEnd) and self.progress is not None:
            self.progress.update(
                self.bar,
                completed=event.step,
                epoch=event.epoch,
                loss=f"loss {event.logs.get('loss', math.nan):.4f}",
            )
        elif isinstance(event, events.Resumed):
            self._print_resumed(event)
        elif isinstance(event, events.Notice):
            self.console.print(event.message, soft_wrap=True, markup=False, highlight=False)
        elif isinstance(event, events.EarlyStopped):
            self.close()  # the live view ends on the last epoch's table; the message goes below it
            self._say(early_stop_message(event))
        elif isinstance(event, events.EpochEnd):
            self.last = event.logs
            if self.live is not None and event.final:
                # the last epoch: the bar stays full (no next epoch at 0/N) and the live view ends
                self.progress.update(self.bar, completed=self.started.steps_per_epoch, epoch=event.epoch)
                self.live.update(self._render())
                self.close()
            elif self.live is not None:
                # reset() replaces the task's fields: pass all of them
                self.progress.reset(
                    self.bar,
                    total=self.started.steps_per_epoch,
                    epoch=min(event.epoch + 1, event.epochs),
                    epochs=event.epochs,
                    loss="",
                )
                self.live.update(self._render())
            else:
                self.console.print(self._plain_line(event), soft_wrap=True, markup=False, highlight=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _say(self, text: str) -> None:
        """One message: wrapped at word boundaries on a terminal, one unbroken line off it (logs)."""
        self.console.print(text, soft_wrap=not self.live_mode, markup=False, highlight=False)

    @property
    def digits(self) -> int:
        """Decimals in the live table: fewer on narrow terminals, so numbers shorten instead of being cut."""
        width = self.console.width
        return 4 if width >= 120 or not self.live_mode else 3 if width >= 90 else 2

    def _print_start(self, ev) -> None:
        rows = ", ".join(f"{k} {v}" for k, v in ev.rows.items())
        self._say(f"run {ev.run_dir}  |  rows: {rows}  |  weighting: {ev.weighting}  |  seed {ev.seed}")
        n = ev.rows.get("train", 0)
        cov = ev.coverage.get("train", {})
        self._say("label coverage (train): " + ", ".join(f"{t} {cov.get(t, 0)}/{n}" for t in ev.tasks))
        shared = ev.params.get("shared", 0)
        heads = ", ".join(f"{t} {ev.params.get(t, 0):,}" for t in ev.tasks)
        self._say(f"parameters: shared {shared:,}; heads {heads}")

    def _print_resumed(self, ev) -> None:
        where = f"epoch {ev.epoch + 1}, step {ev.step}/{ev.steps}" if ev.step else f"epoch {ev.epoch + 1}"
        verb = "forked from" if ev.fork else "resuming from"
        lines = [f"{verb} {ev.source} at {where} of {ev.epochs}"]
        lines += [f"  changed: {c}" for c in ev.applied]
        lines += [f"  note: {n}" for n in ev.notes]
        for line in lines:
            self._say(line)
        if self.progress is not None:
            self.progress.update(self.bar, epoch=min(ev.epoch + 1, ev.epochs), completed=ev.step)

    def _task_rows(self, logs: dict[str, float]) -> list[list[str]]:
        tasks = self.started.tasks
        d = self.digits
        contrib = {t: logs.get(f"{t}_weight", math.nan) * logs.get(f"{t}_loss", math.nan) for t in tasks}
        total = sum(v for v in contrib.values() if math.isfinite(v))
        rows = []
        for t, info in tasks.items():
            main = info["main"]
            rows.append(
                [
                    t,
                    fmt(logs.get(f"{t}_loss"), d),
                    fmt(logs.get(f"val_{t}_loss"), d),
                    main.removeprefix(f"{t}_"),
                    fmt(logs.get(main), d),
                    fmt(logs.get(f"val_{main}"), d),
                    fmt(logs.get(f"{t}_weight"), d),
                    f"{100 * contrib[t] / total:.0f}%" if total > 0 and math.isfinite(contrib[t]) else "-",
                ]
            )
            if self._gradient_diagnostics(logs):
                rows[-1].append(fmt(_min_cosine(logs, t, list(tasks)), d))
        return rows

    @staticmethod
    def _gradient_diagnostics(logs: dict[str, float]) -> bool:
        return any(k.startswith("cos_") for k in logs)

    def _render(self):
        table = Table(title=None, expand=False, show_edge=False, header_style="bold")
        columns = ["task", "loss", "val loss", "metric", "train", "val", "weight", "share"]
        if self.last and self._gradient_diagnostics(self.last):
            columns.append("min cos")  # most conflicting gradient pair involving the task (< 0: conflict)
        for col in columns:  # numbers never cut with an ellipsis: fewer digits (self.digits), then fold
            left = col in ("task", "metric")
            table.add_column(col, justify="left" if left else "right", overflow="fold", no_wrap=not left)
        if self.last:
            for row in self._task_rows(self.last):
                table.add_row(*row)
        return Group(table, self.progress)

    def _plain_line(self, ev) -> str:
        """The epoch off a terminal: a head line, then one short line per task (each well under 160)."""
        logs = ev.logs
        parts = [f"epoch {ev.epoch}/{ev.epochs}", f"{ev.seconds:.1f}s", f"loss={fmt(logs.get('loss'))}"]
        if "val_loss" in logs:
            parts.append(f"val_loss={fmt(logs.get('val_loss'))}")
        lines = [" ".join(parts)]
        for t, info in self.started.tasks.items():
            bits = [f"loss={fmt(logs.get(f'{t}_loss'))}"]
            if f"val_{t}_loss" in logs:
                bits.append(f"val_loss={fmt(logs.get(f'val_{t}_loss'))}")
            main = info["main"]
            name = main.removeprefix(f"{t}_")
            if main in logs:
                bits.append(f"{name}={fmt(logs.get(main))}")
            if f"val_{main}" in logs:
                bits.append(f"val_{name}={fmt(logs.get(f'val_{main}'))}")
            bits.append(f"w={fmt(logs.get(f'{t}_weight'))}")
            if self._gradient_diagnostics(logs):
                bits.append(f"min_cos={fmt(_min_cosine(logs, t, list(self.started.tasks)))}")
            lines.append(f"  {t}: " + " ".join(bits))
        return "\n".join(lines)

    def summary(self, result) -> None:
        """The final tables, each titled with the epoch whose weights it evaluates (the best epoch
        under ``restore_best``: the last live row may show a later one)."""
        splits = result.results.get("splits", {})
        weights = f" — weights of epoch {result.weights_epoch}" if result.weights_epoch else ""
        for split, res in splits.items():
            self.console.print(results_table(res, f"{split} ({res['n']} rows){weights}", self.live_mode))


def early_stop_message(ev) -> str:
    """``stopped at epoch 38: val_loss did not improve for 25 epochs; restored the weights of epoch 13``"""
    by = f" by more than {ev.min_delta:g}" if ev.min_delta else ""
    text = f"stopped at epoch {ev.epoch}: {ev.monitor} did not improve{by} for {ev.waited} epoch"
    text += "" if ev.waited == 1 else "s"
    if ev.restored and ev.best_epoch is not None:
        text += f"; restored the weights of epoch {ev.best_epoch}"
    return text


def _min_cosine(logs: dict[str, float], task: str, tasks: list[str]) -> float | None:
    """The smallest cosine between ``task``'s shared-layer gradient and another task's."""
    values = [logs.get(f"cos_{a}_{b}") for a in tasks for b in tasks if task in (a, b) and a != b]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def fmt(v: Any, digits: int = 4) -> str:
    """A number with ``digits`` decimals (``digits`` significant digits when large or tiny); ``-`` for none."""
    if v is None:
        return "-"
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}g}" if abs(v) >= 1e4 or abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"


def results_table(res: dict, title: str, fancy: bool) -> Table:
    """One row per task: loss, every metric any task reports, and the support n."""
    metrics: list[str] = []
    for row in res["tasks"].values():
        metrics.extend(k for k in row if k not in ("loss", "n", "note") and k not in metrics)
    table = Table(
        title=title,
        title_justify="left",
        header_style="bold" if fancy else "",
        box=box.HEAVY_HEAD if fancy else box.SIMPLE,
        show_edge=fancy,
    )
    table.add_column("task")
    table.add_column("loss", justify="right")
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_column("n", justify="right")
    for task, row in res["tasks"].items():
        table.add_row(task, fmt(row.get("loss")), *(fmt(row.get(m)) for m in metrics), str(row.get("n", "")))
    return table


def render_plan(out: Console, p, weighting: str) -> None:
    """``mtl plan``'s text: the architecture, inputs, a table of blocks, parameters and the objective."""

    def line(text: str) -> None:
        out.print(text, soft_wrap=True, markup=False, highlight=False)

    a = p.architecture
    extra = ", ".join(f"{k} {v}" for k, v in a.items() if k not in ("name", "experts"))
    if "experts" in a:
        extra = ", ".join(x for x in (f"{a['experts']['count']} shared experts per level", extra) if x)
    line(
        f"{p.name}: architecture {a['name']}{f' ({extra})' if extra else ''}; {len(p.tasks)} task(s); "
        f"weighting {weighting}"
    )
    fused = p.fused if p.fused is not None else sum(p.inputs.values())
    encoded = " after their encoders" if p.fused is not None and fused != sum(p.inputs.values()) else ""
    joined = f" -> {fused} features{encoded}" if len(p.inputs) > 1 else ""
    line("inputs: " + ", ".join(f"{k} {v}" for k, v in p.inputs.items()) + joined)
    line("rows: " + ", ".join(f"{k} {v}" for k, v in p.rows.items()))
    table = Table(header_style="bold", show_edge=False, box=box.SIMPLE_HEAD)
    for col in ("part", "layer", "what", "params"):
        table.add_column(col, justify="right" if col == "params" else "left", overflow="fold")
    for b in p.blocks:
        table.add_row(b.part, b.name, b.what, f"{b.params:,}")
    out.print(table)
    line(f"shared representation z: {p.representation:,} features per example")
    if p.warm_start:
        _warm_start_lines(line, p.warm_start)
    for t, info in p.tasks.items():
        if info["inputs_from"]:
            outputs = [d for d in info["inputs_from"] if "." not in d]
            hidden = [d.partition(".")[0] for d in info["inputs_from"] if "." in d]
            reads = [f"the output of {', '.join(outputs)}"] if outputs else []
            reads += [f"the last hidden layer of {', '.join(hidden)}"] if hidden else []
            line(f"{t} also reads {' and '.join(reads)}")
    line("parameters: " + "; ".join(f"{k} {v:,}" for k, v in p.params.items()))
    line(f"objective: {p.objective}")
    line(f"validation loss: {p.eval_objective}")
    line(
        f"initial loss on the first batch ({p.batch} rows): "
        + ", ".join(f"{t} {v:.4g}" for t, v in p.initial_losses.items())
    )
    for note in p.notes:
        line(f"note: {note}")
    for warning in p.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)


def _warm_start_lines(line, w: dict) -> None:
    """``mtl plan``'s lines for ``model.init_from``: the source run, the layers it starts, how they train."""
    resolved = f" (resolved: {w['resolved']})" if w["resolved"] != w["run"] else ""
    line(f"warm start: from run {w['run']}{resolved}; {w['training']}")
    for name, label in zip(w["layers"], w["copied"], strict=True):
        line(f"  {name} ({label}) starts from {w['run']}: {w['training']}")


class PredictView:
    """``mtl predict``'s progress: a rich bar (rows done, rows/s, the total when known) on a terminal,
    a short plain line per chunk (at most one every 2 s) off it."""

    def __init__(self, console: Console):
        self.console = console
        self.live_mode = interactive(console)
        self.progress = None
        self.bar = None
        self.said = -math.inf

    def handle(self, event) -> None:
        if isinstance(event, events.PredictStarted):
            if self.live_mode:
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self.progress = Progress(
                    TextColumn("predict"),
                    BarColumn(),
                    TextColumn("{task.fields[done]}"),
                    TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(),
                    console=self.console,
                    transient=True,
                )
                self.bar = self.progress.add_task("predict", total=event.total, done="0 rows", rate="")
                self.progress.start()
        elif isinstance(event, events.PredictProgress):
            rate = f"{event.rows / event.seconds:,.0f} rows/s" if event.seconds > 0 else ""
            done = f"{event.rows:,}" + (f"/{event.total:,}" if event.total is not None else "") + " rows"
            if self.progress is not None:
                self.progress.update(self.bar, completed=event.rows, done=done, rate=rate)
            elif event.seconds - self.said >= 2.0 or event.rows == event.total:
                self.said = event.seconds
                self.console.print(f"predict: {done} ({rate})", soft_wrap=True, markup=False, highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


#: ``mtl predict`` without -o shows every row when there are at most this many, else the first PREDICT_HEAD
PREDICT_SHOWN, PREDICT_HEAD = 50, 20


def predictions_table(result, limit: int, fancy: bool) -> Table:
    """The first ``limit`` predicted rows of ``mtl predict`` without ``-o`` (numbers with 4 decimals)."""
    table = Table(header_style="bold" if fancy else "", box=box.HEAVY_HEAD if fancy else box.SIMPLE)
    for name in result.columns:
        table.add_column(name, justify="left", overflow="fold")
    for i in range(min(limit, result.rows)):
        table.add_row(*(_cell(result.preview[name][i]) for name in result.columns))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return fmt(value) if math.isfinite(value) else ""
    return escape(str(value))


def show_predictions(out: Console, result) -> None:
    """What ``mtl predict`` prints at the end: the rows when none were written (a table, the first 20
    when there are more than 50), the rows and file written, unseen categories per column."""

    def line(text: str) -> None:
        out.print(text, soft_wrap=True, markup=False, highlight=False)

    if not result.output:
        shown = result.rows if result.rows <= PREDICT_SHOWN else PREDICT_HEAD
        out.print(predictions_table(result, shown, interactive(out)))
        if result.rows > shown:
            line(
                f"... {result.rows - shown:,} more rows ({result.rows:,} in all); write them all with "
                f"-o FILE (.csv, .parquet or .jsonl)"
            )
    else:
        where = "standard output" if result.output == "-" else result.output
        line(f"wrote {result.rows:,} rows to {where} ({result.seconds:.1f}s)")
    unseen = {c: n for c, n in result.unseen.items() if n}
    if unseen:
        counts = ", ".join(f"{c!r} {n:,}" for c, n in unseen.items())
        line(f"categories not seen in training (predicted as unknown): {counts}")


def predict_payload(result) -> dict[str, Any]:
    """``mtl predict --json``: rows, output, columns, unseen counts, source, tasks, model and seconds;
    without -o also ``predictions``, the first 50 rows as objects."""
    payload = {k: getattr(result, k) for k in ("rows", "output", "columns", "unseen", "source", "tasks")}
    payload.update(model=str(result.model_path), seconds=round(result.seconds, 3))
    if not result.output:
        n = len(result.preview[result.columns[0]]) if result.columns else 0
        payload["predictions"] = [{c: result.preview[c][i] for c in result.columns} for i in range(n)]
    return payload
