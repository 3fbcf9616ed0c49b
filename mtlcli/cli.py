"""The ``mtl`` command line. Thin: parses arguments, calls the library, renders with rich.

TensorFlow is imported only inside the commands that train or load models, so ``mtl --help``,
``mtl init``, ``mtl validate`` and ``mtl strategies`` start fast.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

from mtlcli import __version__
from mtlcli.errors import MtlError, UsageError

app = typer.Typer(
    name="mtl",
    help="Multi-task deep learning from one YAML recipe (Keras 3 / TensorFlow).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=not sys.stdout.isatty())


def _interactive(console: Console) -> bool:
    return console.is_terminal and not console.is_dumb_terminal


@contextlib.contextmanager
def _user_errors():
    """Report MtlError as a message and exit code (traceback only with --debug)."""
    try:
        yield
    except MtlError as exc:
        if _state["debug"]:
            raise
        err = _console(stderr=True)
        lines = exc.lines()
        err.print(f"[bold red]error:[/] {escape(lines[0])}", soft_wrap=True)
        for line in lines[1:]:
            err.print(escape(line), soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mtl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug


# ------------------------------------------------------------------------------------------------
# validate


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML file.")],
    no_data: Annotated[bool, typer.Option("--no-data", help="Check the recipe only, not its data.")] = False,
) -> None:
    """Check a recipe (and its data) without training. Exit 0 when valid, 2 otherwise."""
    from mtlcli import recipe as recipe_mod
    from mtlcli.data import preprocess as data_mod

    out = _console()
    with _user_errors():
        loaded = recipe_mod.load(recipe)
        if not no_data:
            prepared = data_mod.prepare(loaded)
    r = loaded.recipe
    out.print(
        f"[green]✓[/] {escape(str(recipe))} is valid: {len(r.model.tasks)} task(s) "
        f"({', '.join(r.model.tasks)}), weighting {escape(_weighting_label(r.train.weighting))}"
    )
    if not no_data:
        rows = prepared.info["split_rows"]
        out.print("  rows: " + ", ".join(f"{k} {v}" for k, v in rows.items()))
        cov = prepared.info["coverage"]["train"]
        n = rows["train"]
        out.print("  label coverage (train): " + ", ".join(f"{t} {c}/{n}" for t, c in cov.items()))


def _weighting_label(spec: Any) -> str:
    if isinstance(spec, dict):
        ((name, params),) = spec.items()
        inner = ", ".join(f"{k}={v}" for k, v in (params or {}).items())
        return f"{name}({inner})" if inner else str(name)
    return str(spec)


# ------------------------------------------------------------------------------------------------
# train


@app.command()
def train(
    recipe: Annotated[
        Path | None,
        typer.Argument(help="The recipe YAML file (optional with --resume: the run's own recipe is used)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the run here instead of runs/<name>/<N>.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Allow a non-empty --output (or --fork) directory.")
    ] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Override the recipe's seed.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Override train.epochs.")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue RUN_DIR from its last checkpoint (with --fork: a run or checkpoint to start from).",
            metavar="RUN_DIR",
        ),
    ] = None,
    fork: Annotated[
        Path | None,
        typer.Option(
            "--fork",
            help="With --resume: start a new run in NEW_DIR from the checkpoint; the train section may change.",
            metavar="NEW_DIR",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show TensorFlow's own log lines.")
    ] = False,
) -> None:
    """Train the multi-task model described by RECIPE and save a run directory.

    Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a checkpoint, prints the command that
    resumes the run and exits with 130 (143 for SIGTERM).
    """
    from mtlcli import recipe as recipe_mod
    from mtlcli.run.checkpoint import Interrupted

    out = _console()
    stopped: Interrupted | None = None
    with _user_errors():
        if recipe is None and resume is None:
            raise UsageError("missing RECIPE: give a recipe file (or --resume RUN_DIR)")
        loaded = recipe_mod.load(recipe) if recipe is not None else None
        from mtlcli.run import runner

        view = TrainView(out)
        try:
            result = runner.train(
                loaded,
                output=output,
                force=force,
                seed=seed,
                epochs=epochs,
                on_event=view.handle,
                verbose=verbose,
                resume=resume,
                fork=fork,
            )
        except Interrupted as exc:
            stopped = exc
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once (the last checkpoint is intact)
            view.close()
            _console(stderr=True).print(
                "interrupted; the last checkpoint written is intact: mtl train --resume RUN_DIR",
                soft_wrap=True,
                markup=False,
            )
            raise typer.Exit(130) from None
        finally:
            view.close()
    if stopped is not None:
        err = _console(stderr=True)
        for line in str(stopped).splitlines():
            err.print(line, soft_wrap=True, highlight=False, markup=False)
        raise typer.Exit(stopped.exit_code)
    if not result.chief:  # train.distribute: multi_worker; the chief prints and writes the run
        out.print(
            f"{result.task}: done (the chief writes the run directory)", soft_wrap=True, highlight=False
        )
        return
    view.summary(result)
    out.print(str(result.run_dir), soft_wrap=True, highlight=False)


class TrainView:
    """Live rendering of training events: a progress bar and a per-task table (or plain lines)."""

    def __init__(self, console: Console):
        self.console = console
        self.live_mode = _interactive(console)
        self.live = None  # rich.live.Live while a terminal view runs
        self.progress = None  # rich.progress.Progress
        self.bar = None
        self.started = None
        self.last: dict[str, float] = {}

    def handle(self, event) -> None:
        from mtlcli import events

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
        elif isinstance(event, events.EpochEnd):
            self.last = event.logs
            if self.live is not None:
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

    def _print_start(self, ev) -> None:
        c = self.console
        rows = ", ".join(f"{k} {v}" for k, v in ev.rows.items())
        c.print(
            f"run {ev.run_dir}  |  rows: {rows}  |  weighting: {ev.weighting}  |  seed {ev.seed}",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
        n = ev.rows.get("train", 0)
        cov = ev.coverage.get("train", {})
        c.print(
            "label coverage (train): " + ", ".join(f"{t} {cov.get(t, 0)}/{n}" for t in ev.tasks),
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
        shared = ev.params.get("shared", 0)
        heads = ", ".join(f"{t} {ev.params.get(t, 0):,}" for t in ev.tasks)
        c.print(
            f"parameters: shared {shared:,}; heads {heads}", soft_wrap=True, markup=False, highlight=False
        )

    def _print_resumed(self, ev) -> None:
        where = f"epoch {ev.epoch + 1}, step {ev.step}/{ev.steps}" if ev.step else f"epoch {ev.epoch + 1}"
        verb = "forked from" if ev.fork else "resuming from"
        lines = [f"{verb} {ev.source} at {where} of {ev.epochs}"]
        lines += [f"  changed: {c}" for c in ev.applied]
        lines += [f"  note: {n}" for n in ev.notes]
        for line in lines:
            self.console.print(line, soft_wrap=True, markup=False, highlight=False)
        if self.progress is not None:
            self.progress.update(self.bar, epoch=min(ev.epoch + 1, ev.epochs), completed=ev.step)

    def _task_rows(self, logs: dict[str, float]) -> list[list[str]]:
        tasks = self.started.tasks
        contrib = {t: logs.get(f"{t}_weight", math.nan) * logs.get(f"{t}_loss", math.nan) for t in tasks}
        total = sum(v for v in contrib.values() if math.isfinite(v))
        rows = []
        for t, info in tasks.items():
            main = info["main"]
            rows.append(
                [
                    t,
                    _fmt(logs.get(f"{t}_loss")),
                    _fmt(logs.get(f"val_{t}_loss")),
                    main.removeprefix(f"{t}_"),
                    _fmt(logs.get(main)),
                    _fmt(logs.get(f"val_{main}")),
                    _fmt(logs.get(f"{t}_weight")),
                    f"{100 * contrib[t] / total:.0f}%" if total > 0 and math.isfinite(contrib[t]) else "-",
                ]
            )
            if self._gradient_diagnostics(logs):
                rows[-1].append(_fmt(_min_cosine(logs, t, list(tasks))))
        return rows

    @staticmethod
    def _gradient_diagnostics(logs: dict[str, float]) -> bool:
        return any(k.startswith("cos_") for k in logs)

    def _render(self):
        table = Table(title=None, expand=False, show_edge=False, header_style="bold")
        columns = ["task", "loss", "val loss", "metric", "train", "val", "weight", "share"]
        if self.last and self._gradient_diagnostics(self.last):
            columns.append("min cos")  # most conflicting gradient pair involving the task (< 0: conflict)
        for col in columns:
            table.add_column(col, justify="left" if col in ("task", "metric") else "right")
        if self.last:
            for row in self._task_rows(self.last):
                table.add_row(*row)
        return Group(table, self.progress)

    def _plain_line(self, ev) -> str:
        logs = ev.logs
        parts = [f"epoch {ev.epoch}/{ev.epochs}", f"{ev.seconds:.1f}s", f"loss={_fmt(logs.get('loss'))}"]
        if "val_loss" in logs:
            parts.append(f"val_loss={_fmt(logs.get('val_loss'))}")
        for t, info in self.started.tasks.items():
            bits = [f"loss={_fmt(logs.get(f'{t}_loss'))}"]
            if f"val_{t}_loss" in logs:
                bits.append(f"val_loss={_fmt(logs.get(f'val_{t}_loss'))}")
            main = info["main"]
            name = main.removeprefix(f"{t}_")
            if main in logs:
                bits.append(f"{name}={_fmt(logs.get(main))}")
            if f"val_{main}" in logs:
                bits.append(f"val_{name}={_fmt(logs.get(f'val_{main}'))}")
            bits.append(f"w={_fmt(logs.get(f'{t}_weight'))}")
            if self._gradient_diagnostics(logs):
                bits.append(f"min_cos={_fmt(_min_cosine(logs, t, list(self.started.tasks)))}")
            parts.append(f"| {t}: " + " ".join(bits))
        return " ".join(parts)

    def summary(self, result) -> None:
        splits = result.results.get("splits", {})
        for split, res in splits.items():
            self.console.print(_results_table(res, f"{split} ({res['n']} rows)", self.live_mode))


def _min_cosine(logs: dict[str, float], task: str, tasks: list[str]) -> float | None:
    """The smallest cosine between ``task``'s shared-layer gradient and another task's."""
    values = [logs.get(f"cos_{a}_{b}") for a in tasks for b in tasks if task in (a, b) and a != b]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if abs(v) >= 1e4 or abs(v) < 1e-3 and v != 0 else f"{v:.4f}"


def _results_table(res: dict, title: str, fancy: bool) -> Table:
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
        table.add_row(
            task, _fmt(row.get("loss")), *(_fmt(row.get(m)) for m in metrics), str(row.get("n", ""))
        )
    return table


# ------------------------------------------------------------------------------------------------
# evaluate


@app.command()
def evaluate(
    target: Annotated[
        Path, typer.Argument(help="A run directory, or a model.keras file (then --data is needed).")
    ],
    data: Annotated[
        Path | None, typer.Option("--data", help="Evaluate on this CSV/NPZ file instead.")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split", help="validation or test (default: test if the run has one, else validation)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Evaluate a trained run: loss, metrics and support n per task."""
    out = _console()
    with _user_errors():
        if split is not None and split not in ("validation", "test"):
            raise UsageError(f"--split: expected validation or test, received {split!r}")
        from mtlcli.run import runner

        result = runner.evaluate(target, data_path=data, split=split)
    if as_json:
        payload = {
            "tasks": result.results["tasks"],
            "loss": result.results["loss"],
            "n": result.results["n"],
            "source": result.source,
            "model": str(result.model_path),
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    out.print(
        _results_table(result.results, f"{result.source} ({result.results['n']} rows)", _interactive(out))
    )


# ------------------------------------------------------------------------------------------------
# init


TEMPLATES = ("penguins",)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the project.")],
    template: Annotated[str, typer.Option("--template", "-t", help="Project template.")] = "penguins",
) -> None:
    """Scaffold a working project: a recipe, the data it needs and a short README."""
    from mtlcli import scaffold

    out = _console()
    with _user_errors():
        written = scaffold.init(directory, template)
    for path in written:
        out.print(f"  created {path}", soft_wrap=True, highlight=False, markup=False)
    cd = f"cd {directory} && " if str(directory) not in (".", "") else ""
    out.print(f"next: {cd}mtl train recipe.yaml", soft_wrap=True, highlight=False, markup=False)


# ------------------------------------------------------------------------------------------------
# plan


@app.command()
def plan(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Override the recipe's seed.")] = None,
) -> None:
    """Show what RECIPE builds, without training: the model graph, the parameters shared and per task,
    and the objective with its resolved weights."""
    from mtlcli import recipe as recipe_mod
    from mtlcli.run import plan as plan_mod

    with _user_errors():
        loaded = recipe_mod.load(recipe)
        p = plan_mod.plan(loaded, seed=seed)
    if as_json:
        sys.stdout.write(json.dumps(p.to_dict(), indent=2, default=str) + "\n")
        return
    out = _console()

    def line(text: str) -> None:
        out.print(text, soft_wrap=True, markup=False, highlight=False)

    a = p.architecture
    extra = ", ".join(f"{k} {v}" for k, v in a.items() if k not in ("name", "experts"))
    if "experts" in a:
        extra = ", ".join(x for x in (f"{a['experts']['count']} shared experts per level", extra) if x)
    line(
        f"{p.name}: architecture {a['name']}{f' ({extra})' if extra else ''}; {len(p.tasks)} task(s); "
        f"weighting {_weighting_label(loaded.recipe.train.weighting)}"
    )
    joined = f" -> {sum(p.inputs.values())} features" if len(p.inputs) > 1 else ""
    line("inputs: " + ", ".join(f"{k} {v}" for k, v in p.inputs.items()) + joined)
    line("rows: " + ", ".join(f"{k} {v}" for k, v in p.rows.items()))
    table = Table(header_style="bold", show_edge=False, box=box.SIMPLE_HEAD)
    for col in ("part", "layer", "what", "params"):
        table.add_column(col, justify="right" if col == "params" else "left", overflow="fold")
    for b in p.blocks:
        table.add_row(b.part, b.name, b.what, f"{b.params:,}")
    out.print(table)
    line(f"shared representation z: {p.representation:,} features per example")
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


# ------------------------------------------------------------------------------------------------
# strategies


@app.command()
def strategies(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the task-weighting strategies, their papers, what they need and their parameters."""
    import dataclasses

    from mtlcli import weighting

    rows = []
    for name in weighting.available():
        cls = weighting.REGISTRY[name]
        params = {
            f.name: (f.default if f.default is not dataclasses.MISSING else None)
            for f in dataclasses.fields(cls)
        }
        needs = "losses" if cls.needs == "losses" else "per-task gradients"
        rows.append(
            {"name": name, "needs": needs, "paper": cls.paper, "summary": cls.summary, "params": params}
        )
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    out = _console()
    table = Table(show_lines=False, header_style="bold")
    for col in ("name", "needs", "parameters (defaults)", "paper"):
        table.add_column(col)
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        table.add_row(r["name"], r["needs"], params, r["paper"])
    out.print(table)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app()


if __name__ == "__main__":
    main()
