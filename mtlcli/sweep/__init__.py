"""``mtl sweep``: one run directory per grid point and seed, trained in child processes, resumable.

The public face of the package: :func:`request` (a recipe or sweep file plus the options as a
:class:`SweepSpec`), :func:`prepare` (every point checked, the runs laid out), :func:`plan` (one
``mtl train`` command per run) and :func:`run` (train what is not done yet). Nothing here imports
TensorFlow: the children do. docs/sweeps.md describes the command, the layout and the states.
"""

from pathlib import Path

from mtlcli.errors import RecipeError
from mtlcli.sweep.runner import Outcome, Prepared, plan, prepare, run
from mtlcli.sweep.spec import Axis, SweepSpec, is_sweep_file, load_sweep_file, merged, parse_grid


def request(target: Path, options: dict) -> SweepSpec:
    """The sweep ``target`` asks for (a sweep file, or a recipe) with the command-line ``options``
    (``grid`` as ``--grid`` texts, ``seeds``, ``single_task``, ``pareto``, ``jobs``, ``threads``,
    ``output``, ``sets``) applied."""
    options, problems, axes = dict(options), [], []
    for text in options.get("grid") or []:
        try:
            axes.append(parse_grid(text))
        except RecipeError as exc:
            problems += exc.problems
    if problems:
        raise RecipeError(problems=problems)
    options["grid"] = axes
    if is_sweep_file(target):
        return merged(load_sweep_file(target), None, options)
    return merged(None, target, options)


__all__ = [
    "Axis",
    "Outcome",
    "Prepared",
    "SweepSpec",
    "plan",
    "prepare",
    "request",
    "run",
]
