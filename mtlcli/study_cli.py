"""The ``mtl compare``, ``mtl sweep`` and ``mtl tune`` commands: argument parsing only; the work is in
:mod:`mtlcli.compare`, :mod:`mtlcli.sweep` and :mod:`mtlcli.tune`, the rendering in ``compare_view``,
``sweep_view`` and ``tune_view``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mtlcli.options import SetOption


def register(
    app: typer.Typer, command_cls: Any, user_errors: Callable, console: Callable[..., Console]
) -> None:
    """Add ``compare``, ``sweep`` and ``tune`` to ``app`` (with the app's command class and error handling)."""

    @app.command("compare", cls=command_cls)
    def compare(
        paths: Annotated[list[Path], typer.Argument(help="Runs, folders of runs, sweeps.", metavar="PATH")],
        split: Annotated[
            str | None,
            typer.Option("--split", help="test or validation (default: test if every run has it)."),
        ] = None,
        baseline: Annotated[
            str | None,
            typer.Option(
                "--baseline", help="Δm against this group (name, number or a run).", metavar="GROUP"
            ),
        ] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print one JSON object instead of tables.")
        ] = False,
        plot: Annotated[Path | None, typer.Option("--plot", help="Also draw it into this PNG file.")] = None,
    ) -> None:
        """Compare finished runs over seeds: per-task mean ± sd and 95% CI per configuration, Welch's
        t-tests against the best, Δm% against single-task baselines, the Pareto front (no TensorFlow)."""
        from mtlcli import compare_view
        from mtlcli.compare import compare as compare_runs

        with user_errors():
            result = compare_runs(paths, split=split, baseline=baseline)
            if plot is not None:
                compare_view.plot(result, plot)
        if as_json:
            sys.stdout.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        else:
            compare_view.render(console(), result)
        if plot is not None:
            console(stderr=as_json).print(f"plot: {plot}", soft_wrap=True, markup=False, highlight=False)

    @app.command("sweep", cls=command_cls)
    def sweep(
        target: Annotated[
            Path, typer.Argument(help="A recipe or a sweep file (recipe: grid:).", metavar="FILE")
        ],
        grid: Annotated[list[str] | None, typer.Option("--grid", metavar="KEY=V1,V2", help="Values.")] = None,
        seeds: Annotated[
            int | None, typer.Option("--seeds", min=1, help="Seeds per point (seed + k).")
        ] = None,
        single_task: Annotated[bool, typer.Option("--single-task", help="Add a run per task alone.")] = False,
        pareto: Annotated[int | None, typer.Option("--pareto", min=2, help="Add K simplex points.")] = None,
        jobs: Annotated[
            int | None, typer.Option("--jobs", "-j", min=1, help="Runs at once (default 1).")
        ] = None,
        threads: Annotated[int | None, typer.Option("--threads", min=1, help="Threads per run.")] = None,
        plan: Annotated[bool, typer.Option("--plan", help="Print one mtl train command per run.")] = False,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Dir (runs/NAME/sweeps/ID).")
        ] = None,
        sets: SetOption = None,
    ) -> None:
        """Train every grid point x seed (N at once, resumable; docs/sweeps.md), then mtl compare them."""
        from mtlcli import sweep_view

        opts = dict(
            grid=grid, seeds=seeds, single_task=single_task, pareto=pareto, jobs=jobs, threads=threads
        )
        with user_errors():
            code = sweep_view.run_command(target, {**opts, "output": output, "sets": sets}, plan)
        raise typer.Exit(code)

    register_tune(app, command_cls, user_errors)


def register_tune(app: typer.Typer, command_cls: Any, user_errors: Callable) -> None:
    """Add ``tune`` to ``app``."""

    @app.command("tune", cls=command_cls)
    def tune(
        recipe: Annotated[
            Path | None,
            typer.Argument(help="A recipe or a tune file (none with --join --storage).", metavar="FILE"),
        ] = None,
        search: Annotated[
            list[str] | None,
            typer.Option("--search", metavar="KEY=SPEC", help="log:LO:HI, LO:HI, int:LO:HI, a,b,c."),
        ] = None,
        trials: Annotated[
            int | None, typer.Option("--trials", min=1, help="The study's total trials (default 20).")
        ] = None,
        objectives: Annotated[
            str | None, typer.Option("--objectives", help="per-task (default), loss or TASK.METRIC,...")
        ] = None,
        jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Trials at once.")] = None,
        threads: Annotated[int | None, typer.Option("--threads", min=1, help="Threads per trial.")] = None,
        name: Annotated[
            str | None, typer.Option("--name", help="Study name (default: the recipe's).")
        ] = None,
        storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL.")] = None,
        join: Annotated[
            str | None, typer.Option("--join", metavar="STUDY", help="Work on this study.")
        ] = None,
        sampler: Annotated[str | None, typer.Option("--sampler", help="tpe, nsga2 or random.")] = None,
        seed: Annotated[int | None, typer.Option("--seed", help="Sampler seed (default: recipe's).")] = None,
        prune: Annotated[
            bool | None, typer.Option("--prune/--no-prune", help="Median pruning (single objective).")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the study as JSON.")] = False,
        sets: SetOption = None,
    ) -> None:
        """Search hyper-parameters with Optuna: one objective per task by default, each trial an ordinary
        run; the result is the Pareto-optimal trials. --trials is the study's total: the same command
        again continues the study (docs/tune.md)."""
        options = dict(
            search=search,
            trials=trials,
            objectives=objectives,
            jobs=jobs,
            threads=threads,
            name=name,
            storage=storage,
            join=join,
            sampler=sampler,
            seed=seed,
            prune=prune,
            sets=sets,
        )
        with user_errors():
            from mtlcli import tune, tune_view

            code = tune_view.run_command(tune.request(recipe, options), as_json)
        raise typer.Exit(code)
