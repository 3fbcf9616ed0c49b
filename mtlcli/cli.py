"""The ``mtl`` command line. Thin: parses arguments, calls the library, renders with rich.

TensorFlow is imported only inside the commands that train or load models, so ``mtl --help``,
``mtl init``, ``mtl validate`` and ``mtl strategies`` start fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from mtlcli import __version__, runs_view, study_cli
from mtlcli.errors import MtlError, UsageError
from mtlcli.options import SetOption
from mtlcli.views import TrainView, interactive, render_plan, results_table


class _FlagsMixin:
    """Show flags as flags: typer labels every boolean option ``<bool>``, as if it took a value."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        return params


class _Command(_FlagsMixin, TyperCommand):
    """Every ``mtl`` subcommand."""


class _Group(_FlagsMixin, TyperGroup):
    """The ``mtl`` group: ``--debug`` works anywhere on the line (``mtl train r.yaml --debug``)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[1:end]:
            args = ["--debug"] + [a for i, a in enumerate(args) if not (a == "--debug" and i < end)]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_Group,
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


def strategy_label(spec) -> str:
    """``pcgrad``, ``cagrad(c=0.4)``: imported here so ``mtl --help`` loads no strategy (nor numpy)."""
    from mtlcli.weighting.registry import label

    return label(spec)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mtl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for errors (anywhere on the line).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            metavar="",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    _state["debug"] = debug


# ------------------------------------------------------------------------------------------------
# validate


@app.command(cls=_Command)
def validate(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML file.")],
    no_data: Annotated[bool, typer.Option("--no-data", help="Check the recipe only, not its data.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (valid, problems, tasks, rows).")
    ] = False,
    sets: SetOption = None,
) -> None:
    """Check a recipe (and its data) without training. Exit 0 when valid, 2 otherwise."""
    from mtlcli import data as data_mod
    from mtlcli import recipe as recipe_mod
    from mtlcli.model import size

    try:
        loaded = recipe_mod.load(recipe, overrides=sets or ())
        if loaded.recipe.model.init_from is not None:  # the warm start's source must exist, as for train
            from mtlcli.model.warmstart import source_model_path

            source_model_path(loaded)
        prepared = None if no_data else data_mod.prepare(loaded)
        if prepared is not None:  # the input widths come from the data
            size.check(loaded, prepared.prep)
    except MtlError as exc:
        if not as_json or _state["debug"]:
            with _user_errors():
                raise
        problems = [dataclasses.asdict(p) for p in exc.problems] or [{"message": exc.message}]
        payload = {"valid": False, "message": exc.lines()[0], "problems": problems}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        raise typer.Exit(exc.exit_code) from None
    r = loaded.recipe
    info = prepared.info if prepared is not None else {}
    if as_json:
        payload = {"valid": True, "recipe": str(recipe), "tasks": list(r.model.tasks)}
        payload["weighting"] = strategy_label(r.train.weighting)
        payload["primary"] = r.train.primary
        payload.update(rows=info.get("split_rows"), coverage=info.get("coverage", {}).get("train"))
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    out = _console()
    out.print(
        f"[green]✓[/] {escape(str(recipe))} is valid: {len(r.model.tasks)} task(s) "
        f"({', '.join(r.model.tasks)}), weighting {escape(strategy_label(r.train.weighting))}"
        + (f", primary task {escape(r.train.primary)}" if r.train.primary else "")
    )
    if prepared is not None:
        rows, cov = info["split_rows"], info["coverage"]["train"]
        out.print("  rows: " + ", ".join(f"{k} {v}" for k, v in rows.items()))
        n = rows["train"]
        out.print("  label coverage (train): " + ", ".join(f"{t} {c}/{n}" for t, c in cov.items()))


@app.command(cls=_Command)
def schema() -> None:
    """Print the JSON Schema of recipes (editors use it to complete and check recipe.yaml)."""
    from mtlcli import recipe as recipe_mod

    sys.stdout.write(json.dumps(recipe_mod.json_schema(), indent=2) + "\n")


# ------------------------------------------------------------------------------------------------
# train


RecipeOrResume = Annotated[
    Path | None,
    typer.Argument(help="The recipe YAML file (optional with --resume: the run's own recipe is used)."),
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write the run here instead of runs/<name>/<N>.")
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Allow a non-empty --output (or --fork) directory.")
]
SeedOption = Annotated[
    int | None, typer.Option("--seed", min=0, max=2**32 - 1, help="Override the recipe's seed.")
]
EpochsOption = Annotated[
    int | None, typer.Option("--epochs", min=1, max=2**31 - 1, help="Override train.epochs.")
]
ResumeOption = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="Continue RUN_DIR from its last checkpoint (with --fork: a run or checkpoint to start from).",
        metavar="RUN_DIR",
    ),
]
ForkOption = Annotated[
    Path | None,
    typer.Option(
        "--fork",
        help="With --resume: start a new run in NEW_DIR from the checkpoint; the train section may change.",
        metavar="NEW_DIR",
    ),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show TensorFlow's own log lines.")]


@app.command(cls=_Command)
def train(
    recipe: RecipeOrResume = None,
    output: OutputOption = None,
    force: ForceOption = False,
    seed: SeedOption = None,
    epochs: EpochsOption = None,
    resume: ResumeOption = None,
    fork: ForkOption = None,
    verbose: VerboseOption = False,
    sets: SetOption = None,
) -> None:
    """Train the multi-task model described by RECIPE and save a run directory.

    Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a checkpoint, prints the command that
    resumes the run and exits with 130 (143 for SIGTERM).
    """
    from mtlcli import recipe as recipe_mod

    out = _console()
    with _user_errors():
        if recipe is None and resume is None:
            raise UsageError("missing RECIPE: give a recipe file (or --resume RUN_DIR)")
        loaded = recipe_mod.load(recipe, overrides=sets or ()) if recipe is not None else None
        if loaded is None and sets:  # --resume RUN --set ...: the run's own recipe, overridden
            from mtlcli.run import resume as resuming

            loaded = resuming.run_recipe(resume, sets, forking=fork is not None)
        options = dict(output=output, force=force, seed=seed, epochs=epochs, resume=resume, fork=fork)
        view = TrainView(out)
        result = _train_in_view(view, loaded, options, verbose)
    if not result.chief:  # train.distribute: multi_worker; the chief prints and writes the run
        out.print(
            f"{result.task}: done (the chief writes the run directory)", soft_wrap=True, highlight=False
        )
        return
    view.summary(result)
    out.print(str(result.run_dir), soft_wrap=True, highlight=False)


def _train_in_view(view: TrainView, loaded, options: dict, verbose: bool):
    """Run the training with ``view`` receiving its events; an interruption exits with its code."""
    from mtlcli.run import runner
    from mtlcli.run.signals import Interrupted

    try:
        return runner.train(loaded, on_event=view.handle, verbose=verbose, **options)
    except Interrupted as exc:
        view.close()
        err = _console(stderr=True)
        for line in str(exc).splitlines():
            err.print(line, soft_wrap=True, highlight=False, markup=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once (the last checkpoint is intact)
        view.close()
        _console(stderr=True).print(
            "interrupted at once; a run that had written a checkpoint resumes with mtl train --resume "
            "RUN_DIR (its last checkpoint is intact); one stopped before its first checkpoint left no run "
            "directory",
            soft_wrap=True,
            markup=False,
        )
        raise typer.Exit(130) from None
    finally:
        view.close()


# ------------------------------------------------------------------------------------------------
# evaluate


@app.command(cls=_Command)
def evaluate(
    target: Annotated[
        Path, typer.Argument(help="A run directory, or a model.keras file (then --data is needed).")
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Evaluate on this data instead: a CSV, CSV.gz, Parquet or NPZ file, a glob of such files, "
            "or an image folder (one sub-folder per class).",
        ),
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
        from mtlcli.run import evaluate as run_eval

        result = run_eval.evaluate(target, data_path=data, split=split)
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
        results_table(result.results, f"{result.source} ({result.results['n']} rows)", interactive(out))
    )


# ------------------------------------------------------------------------------------------------
# predict


@app.command(cls=_Command)
def predict(
    run: Annotated[Path, typer.Argument(help="A run directory, its model.keras, or a checkpoint's.")],
    data: Annotated[str, typer.Argument(help="The rows: any source data.train accepts (no labels needed).")],
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="A .csv, .parquet or .jsonl file (- : CSV to stdout).", metavar="FILE"
        ),
    ] = None,
    keep: Annotated[
        str | None, typer.Option(help="Columns of DATA to copy first (an id).", metavar="COL,...")
    ] = None,
    with_labels: Annotated[bool, typer.Option("--with-labels", help="Add the label column(s) too.")] = False,
    proba: Annotated[bool, typer.Option("--proba", help="Add a probability per class or label.")] = False,
    threshold: Annotated[
        list[str] | None, typer.Option(help="A binary or multilabel task's threshold.", metavar="TASK=P")
    ] = None,
    tasks: Annotated[str | None, typer.Option(help="Predict only these tasks.", metavar="A,B")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per model call.", metavar="N")] = 4096,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Predict every row of DATA with a trained run, in the original label values and units.

    Tabular files stream in chunks (bounded memory); the output file is written atomically (Ctrl-C
    leaves none). Without -o the rows are shown as a table.
    """
    from mtlcli.views import PredictView, predict_payload, show_predictions

    err = _console(stderr=True)
    view = PredictView(err)
    with _user_errors():
        from mtlcli.run import predict as run_predict

        options = dict(tasks=run_predict.names(tasks), keep=run_predict.names(keep) or (), verbose=verbose)
        options.update(with_labels=with_labels, proba=proba, batch_size=batch_size)
        options["thresholds"] = run_predict.parse_thresholds(threshold or [])
        target = sys.stdout if output == "-" else output
        try:
            result = run_predict.predict(run, data, output=target, on_event=view.handle, **options)
        except KeyboardInterrupt:
            view.close()
            err.print("interrupted: no output file written", soft_wrap=True, markup=False)
            raise typer.Exit(130) from None
        finally:
            view.close()
    if as_json:
        sys.stdout.write(json.dumps(predict_payload(result), indent=2, default=str) + "\n")
        return
    show_predictions(err if output == "-" else _console(), result)


# ------------------------------------------------------------------------------------------------
# export


@app.command(cls=_Command)
def export(
    run: Annotated[Path, typer.Argument(help="A run directory, or a model.keras file.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="saved_model or tflite.")] = "saved_model",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Dir (RUN/export/FORMAT)")] = None,
    th: Annotated[list[str] | None, typer.Option("--threshold", help="TASK=P (repeatable).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty output directory.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Export a run for serving raw features (preprocessing and decoding inside) with export.json."""
    from mtlcli.export_view import render_export
    from mtlcli.run import export as run_export

    with _user_errors():
        done = run_export.export(run, fmt=fmt, output=output, thresholds=th, force=force, verbose=verbose)
    render_export(_console(), done.manifest, done.path)


# ------------------------------------------------------------------------------------------------
# init


TEMPLATES = ("penguins",)


@app.command(cls=_Command)
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


@app.command(cls=_Command)
def plan(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    seed: SeedOption = None,
    sets: SetOption = None,
) -> None:
    """Show what RECIPE builds, without training: the model graph, the parameters shared and per task,
    and the objective with its resolved weights."""
    from mtlcli import recipe as recipe_mod
    from mtlcli.run import plan as plan_mod

    with _user_errors():
        loaded = recipe_mod.load(recipe, overrides=sets or ())
        p = plan_mod.plan(loaded, seed=seed)
    if as_json:
        sys.stdout.write(json.dumps(p.to_dict(), indent=2, default=str) + "\n")
        return
    train = loaded.recipe.train
    primary = f", primary task {train.primary}" if train.primary else ""
    render_plan(_console(), p, strategy_label(train.weighting) + primary)


# ------------------------------------------------------------------------------------------------
# config


@app.command(cls=_Command)
def config(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML file.")],
    sets: SetOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of {key, value, source}.")
    ] = False,
) -> None:
    """Show the resolved recipe: every key with its value and where it came from (FILE:LINE, --set or
    default). Checks the recipe, not its data."""
    from mtlcli import recipe as recipe_mod
    from mtlcli.config_view import render_config
    from mtlcli.recipe import overrides

    with _user_errors():
        rows = overrides.table(recipe_mod.load(recipe, overrides=sets or ()).resolved())
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    out = _console()
    render_config(out, rows, str(recipe), interactive(out))


# ------------------------------------------------------------------------------------------------
# strategies


@app.command(cls=_Command)
def strategies(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the task-weighting strategies, their papers, what they need, their cost and parameters."""
    import dataclasses

    from mtlcli import weighting

    rows = []
    for name in weighting.available():
        cls = weighting.REGISTRY[name]
        params = {
            f.name: (f.default if f.default is not dataclasses.MISSING else None)
            for f in dataclasses.fields(cls)
            if not (cls.needs_primary and f.name == weighting.registry.PRIMARY)  # from train.primary
        }
        needs = "losses" if cls.needs == "losses" else "per-task gradients"
        rows.append(
            {"name": name, "needs": needs, "cost": weighting.registry.step_cost(cls), "paper": cls.paper}
            | {"summary": cls.summary, "params": params}
            | ({"needs_primary": True} if cls.needs_primary else {})
            | ({"batches": cls.batches} if cls.batches > 1 else {})  # modo, sdmgrad: two half-batches
            | ({"needs_validation": True} if cls.needs_validation else {})  # auto_lambda
        )
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    out = _console()
    table = Table(show_lines=False, header_style="bold")
    for col in ("name", "needs", "cost per step", "parameters (defaults)", "paper"):
        table.add_column(col)
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        if r.get("needs_primary"):
            params += "; needs train.primary"
        if r.get("batches"):
            params += "; gradients of the batch's two halves"
        if r.get("needs_validation"):
            params += "; a validation batch every step"
        table.add_row(r["name"], r["needs"], r["cost"], params, r["paper"])
    out.print(table)


runs_view.register(app, _Command, _user_errors, _console)  # mtl runs, mtl plot (mtlcli/runs_view.py)
study_cli.register(app, _Command, _user_errors, _console)  # mtl compare, mtl sweep (mtlcli/study_cli.py)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app()


if __name__ == "__main__":
    main()
