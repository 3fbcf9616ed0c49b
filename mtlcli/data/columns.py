"""The columns a recipe reads, the check that a source has them, and reading a recipe's source.

Used by in-memory and streamed preparation alike (a streamed source is checked from its header).
"""

from __future__ import annotations

from mtlcli.data import csvfiles, sources
from mtlcli.data.sources import Table
from mtlcli.data.values import preview
from mtlcli.errors import DataError, Problem, did_you_mean
from mtlcli.recipe import LoadedRecipe
from mtlcli.recipe.data_checks import target_columns, when_conditions


def needed_columns(loaded: LoadedRecipe, need_targets: bool, split_too: bool) -> list[tuple[str, str, tuple]]:
    """(column, what, recipe path) for every column the recipe reads: inputs, targets and ``when:``
    columns (``need_targets``), ``data.group_by`` and, with ``split_too``, the ``data.split`` column."""
    recipe = loaded.recipe
    out = [(spec.column or name, "", ("data", "inputs", name)) for name, spec in recipe.data.inputs.items()]
    if need_targets:
        for task, spec in recipe.model.tasks.items():
            for c in target_columns(spec, task):
                out.append((c, "target ", ("model", "tasks", task, "target")))
            for i, cond in enumerate(when_conditions(spec.when)):
                path = ("model", "tasks", task, "when") + ((i,) if isinstance(spec.when, list) else ())
                out.append((cond["column"], "when ", path))
    if recipe.data.group_by:
        out.append((recipe.data.group_by, "group_by ", ("data", "group_by")))
    if split_too and recipe.data.split:
        out.append((recipe.data.split["column"], "split ", ("data", "split", "column")))
    return out


def check_columns(
    loaded: LoadedRecipe, table: Table, need_targets: bool = True, split_too: bool = False
) -> list[Problem]:
    """A problem, located in the recipe, for every column it reads that ``table`` lacks."""
    problems = []
    seen = set()
    hint = _separator_hint(table)
    for column, what, path in needed_columns(loaded, need_targets, split_too):
        if column in table.columns or (column, path) in seen:
            continue
        seen.add((column, path))
        kind = "array" if table.is_npz else "column"
        problems.append(  # at the path's line (or its closest ancestor's), or at the --set that gave it
            loaded.problem(
                f"{what}{kind} {column!r} not found in {table.file}"
                f"{did_you_mean(column, table.columns)} ({kind}s: "
                f"{preview(list(table.columns), 12)}){'' if problems else hint}",
                path,
            )
        )
    return problems


def _separator_hint(table: Table) -> str:
    """A hint when a CSV file's header is one column that holds another separator (a ';' file read
    with ',')."""
    if table.is_npz:
        return ""
    return csvfiles.separator_hint(list(table.columns), "")


def read_recipe_source(loaded: LoadedRecipe, key: str) -> Table:
    """Read ``data.<key>`` of a recipe; its problems name the source as the recipe gives it."""
    value = getattr(loaded.recipe.data, key)
    try:
        return sources.read_source(value, loaded.base_dir, loaded.recipe.data.csv)
    except DataError as exc:
        shown = (
            value if isinstance(value, str) else "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
        )
        raise DataError(
            problems=[
                Problem(p.message + f" (data.{key}: {shown!r})", p.path, p.file, p.line) for p in exc.problems
            ]
        ) from None
