"""The ``mtl runs`` and ``mtl plot`` commands: what they show (a rich table on a terminal, aligned
plain lines off one, ``--json``) and their registration on the ``mtl`` app (:func:`register`, called
once by :mod:`mtlcli.cli`). The reading is :mod:`mtlcli.runlist`, the figures :mod:`mtlcli.plots`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtlcli.views import fmt, interactive

if TYPE_CHECKING:  # the reading (and mtlcli.compare's scipy) loads only when a command runs
    from mtlcli.runlist import RunInfo

COLUMNS = ("started", "status", "epochs", "best", "strategy", "architecture", "name", "path")
STYLES = {"finished": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}


def cells(r: RunInfo) -> dict[str, str]:
    """A run's row as text: ``38/150`` epochs, ``val_loss 0.2245 @13`` best."""
    started = (r.started or "-").replace("T", " ")[:16]
    epochs = f"{'-' if r.epochs is None else r.epochs}/{'-' if r.planned is None else r.planned}"
    best = "-"
    if r.best is not None:
        best = f"{r.monitor or '?'} {fmt(r.best)}" + (f" @{r.best_epoch}" if r.best_epoch is not None else "")
    return {
        "started": started,
        "status": r.status,
        "epochs": epochs,
        "best": best,
        "strategy": r.strategy or "-",
        "architecture": r.architecture or "-",
        "name": r.name,
        "path": r.path,
    }


def plain_lines(rows: list[RunInfo]) -> list[str]:
    """A header and one line per run, columns padded with spaces (the path last, unpadded)."""
    table = [dict(zip(COLUMNS, COLUMNS, strict=True))] + [cells(r) for r in rows]
    widths = {c: max(len(t[c]) for t in table) for c in COLUMNS[:-1]}
    return ["  ".join([*(t[c].ljust(widths[c]) for c in COLUMNS[:-1]), t["path"]]) for t in table]


def rich_table(rows: list[RunInfo]) -> Table:
    out = Table(header_style="bold", box=box.HEAVY_HEAD)
    for c in COLUMNS:
        out.add_column(c, justify="right" if c == "epochs" else "left")
    for r in rows:
        text = cells(r)
        text["status"] = f"[{STYLES.get(r.status, '')}]{r.status}[/]"
        out.add_row(*(text[c] if c == "status" else escape(text[c]) for c in COLUMNS))
    return out


def render(out: Console, rows: list[RunInfo], paths: list[Path]) -> None:
    """The table, then one line counting the runs by status."""
    if not rows:
        where = ", ".join(str(p) for p in paths)
        out.print(f"no runs under {where}", soft_wrap=True, markup=False, highlight=False)
        return
    if interactive(out):
        out.print(rich_table(rows))
    else:
        for line in plain_lines(rows):
            out.print(line, soft_wrap=True, markup=False, highlight=False)
    counts = {s: sum(r.status == s for r in rows) for s in STYLES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    out.print(f"{len(rows)} run(s): {summary}", soft_wrap=True, markup=False, highlight=False)


def runs_command(paths: list[Path] | None, as_json: bool, console: Console, user_errors) -> None:
    """``mtl runs``: list, then print."""
    from mtlcli.runlist import list_runs

    paths = paths or [Path("runs")]
    with user_errors():
        rows = list_runs(paths)
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
    else:
        render(console, rows, paths)


def plot_command(target: Path, output: Path | None, console: Console, user_errors) -> None:
    """``mtl plot``: draw, then name the file."""
    from mtlcli import plots

    with user_errors():
        path, kind = plots.plot(target, output)
    what = "training curves" if kind == "run" else "Pareto front"
    console.print(f"{what}: {path}", soft_wrap=True, markup=False, highlight=False)


def register(
    app: typer.Typer, command_cls: Any, user_errors: Callable, console: Callable[[], Console]
) -> None:
    """Add ``runs`` and ``plot`` to ``app`` (with the app's command class and error handling)."""

    @app.command("runs", cls=command_cls)
    def runs(
        paths: Annotated[
            list[Path] | None, typer.Argument(help="Where to look (default: runs/).", metavar="[DIR]...")
        ] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print a JSON list instead of a table.")
        ] = False,
    ) -> None:
        """List the run directories under DIR: status (finished, running, interrupted, failed), epochs
        run/planned, best monitor value, strategy, architecture, start date; oldest first."""
        runs_command(paths, as_json, console(), user_errors)

    @app.command("plot", cls=command_cls)
    def plot(
        target: Annotated[
            Path, typer.Argument(help="A run directory, or a directory of runs (sweep).", metavar="RUN")
        ],
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="The PNG to write (default: RUN/plot.png).")
        ] = None,
    ) -> None:
        """Draw a run's curves (per-task loss and headline metric, task weights, gradient cosines, best
        epoch) or, for a directory of runs, the Pareto front of their validation metrics, into a PNG."""
        plot_command(target, output, console(), user_errors)
