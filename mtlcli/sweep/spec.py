"""What a sweep is asked to do: ``--grid`` options, a sweep file, and the two merged (no TensorFlow).

A grid axis is ``KEY=V1,V2,...``: a recipe path (as ``--set`` names it) and values read as YAML, split
at the commas that are not inside brackets, braces or quotes (``train.weighting=static,{cagrad: {c:
0.4}}`` is two values). A sweep file is a YAML mapping with ``recipe:`` (relative to the file) and the
same settings as the options (``grid: {KEY: [values]}``, ``seeds``, ``single_task``, ``pareto``,
``jobs``, ``threads``, ``set``); it is checked by a pydantic model, each problem at its file and line.
Options given on the command line win over the file (a ``--grid`` of a key the file has replaces it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mtlcli.errors import Problem, RecipeError, UsageError
from mtlcli.recipe import format_set, parse_set
from mtlcli.recipe.yamlio import Located, describe, load_file

#: the most seeds per point (a typo such as --seeds 300 is refused, not run for days)
MAX_SEEDS = 100


@dataclass(frozen=True)
class Axis:
    """One grid key and its values; ``labels[i]`` names value ``i`` in messages (``--grid
    train.weighting=pcgrad`` or ``sweep.yaml:4``)."""

    key: str
    values: tuple
    labels: tuple[str, ...]

    def sets(self) -> list[str]:
        """The ``KEY=VALUE`` override of every value."""
        return [format_set(self.key, v) for v in self.values]


@dataclass
class SweepSpec:
    """A whole sweep request: the recipe, the base overrides, the grid and how to run it."""

    recipe: Path
    grid: list[Axis] = field(default_factory=list)
    seeds: int = 1
    single_task: bool = False
    pareto: int | None = None
    jobs: int = 1
    threads: int | None = None
    sets: list[str] = field(default_factory=list)
    file: Path | None = None  # the sweep file, when the sweep came from one
    output: Path | None = None


def split_values(text: str) -> list[str]:
    """``"a,[b, c],{d: e}"`` -> ``["a", "[b, c]", "{d: e}"]``: split at top-level commas only."""
    out, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [p.strip() for p in out]


def parse_grid(text: str) -> Axis:
    """``--grid KEY=V1,V2`` as an :class:`Axis`; a malformed one is a RecipeError naming it (exit 2)."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    label = f"--grid {text}"
    if not eq or not key or not raw.strip():
        raise _grid_error(label, "expected KEY=V1,V2,..., such as --grid train.weighting=static,pcgrad")
    values, labels = [], []
    for piece in split_values(raw):
        if not piece:
            raise _grid_error(label, "an empty value (two commas in a row, or one at an end)")
        try:
            path, value = parse_set(f"{key}={piece}")
        except RecipeError as exc:
            raise _grid_error(label, exc.problems[0].message, exc.problems[0].detail) from None
        if value in values:
            raise _grid_error(label, f"the value {piece} appears twice")
        values.append(value)
        labels.append(f"--grid {key}={piece}")
    return Axis(".".join(str(p) for p in path), tuple(values), tuple(labels))


def _grid_error(label: str, message: str, detail: tuple[str, ...] = ()) -> RecipeError:
    return RecipeError(problems=[Problem(message, "", label, None, detail)])


# ------------------------------------------------------------------------------------------------
# The sweep file


class SweepFile(BaseModel):
    """A sweep file: the recipe it sweeps and the settings of ``mtl sweep``'s options."""

    model_config = ConfigDict(extra="forbid")

    recipe: str = Field(description="the recipe file, relative to the sweep file")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="{KEY: [values]}")
    seeds: int = Field(1, ge=1, le=MAX_SEEDS)
    single_task: bool = False
    pareto: int | None = Field(None, ge=2)
    jobs: int = Field(1, ge=1)
    threads: int | None = Field(None, ge=1)
    set: list[str] = Field(default_factory=list, description="overrides of the recipe: KEY=VALUE")

    @field_validator("grid", mode="before")
    @classmethod
    def _scalar_is_one_value(cls, value):
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value

    @field_validator("set", mode="before")
    @classmethod
    def _mapping_of_sets(cls, value):
        if isinstance(value, dict):
            return [format_set(str(k), v) for k, v in value.items()]
        return value


def is_sweep_file(path: Path) -> bool:
    """Whether ``path`` is a sweep file (a mapping with ``recipe:``) rather than a recipe."""
    try:
        data = load_file(path).data
    except RecipeError:
        return False
    return isinstance(data, dict) and "recipe" in data and "model" not in data


def load_sweep_file(path: Path) -> SweepSpec:
    """The sweep file ``path`` as a :class:`SweepSpec`; RecipeError names every problem at its line."""
    src = load_file(path)
    if not isinstance(src.data, dict):
        raise RecipeError(problems=[Problem("expected a mapping with recipe: and grid:", "", src.file, 1)])
    try:
        parsed = SweepFile.model_validate(src.data)
    except ValidationError as exc:
        problems = [_problem(err, src) for err in exc.errors(include_url=False)]
        raise RecipeError(problems=problems) from None
    axes, problems = [], []
    for key, values in parsed.grid.items():
        try:
            axes.append(_file_axis(src, key, values))
        except RecipeError as exc:
            problems += exc.problems
    if problems:
        raise RecipeError(problems=problems)
    recipe = Path(parsed.recipe).expanduser()
    if not recipe.is_absolute():
        recipe = path.parent / recipe
    fields = parsed.model_dump(exclude={"recipe", "grid", "set"})
    return SweepSpec(recipe=recipe, grid=axes, sets=list(parsed.set), file=path, **fields)


def _file_axis(src: Located, key: str, values: list[Any]) -> Axis:
    """A ``grid:`` entry of a sweep file; its values are labelled by their lines."""
    where = f"{src.file}:{src.line(('grid', key)) or '?'}"
    if not values:
        raise RecipeError(
            problems=[src.problem("expected a list of values, received an empty list", ("grid", key))]
        )
    try:
        path, _ = parse_set(f"{key}=0")
    except RecipeError as exc:
        raise RecipeError(problems=[src.problem(exc.problems[0].message, ("grid", key))]) from None
    labels = []
    for i, _value in enumerate(values):
        line = src.line(("grid", key, i))
        labels.append(f"{src.file}:{line} grid.{key}[{i}]" if line else f"{where} grid.{key}[{i}]")
    for i, v in enumerate(values):
        if v in values[:i]:
            raise RecipeError(
                problems=[src.problem(f"the value {describe(v)} appears twice", ("grid", key, i))]
            )
    return Axis(".".join(str(p) for p in path), tuple(values), tuple(labels))


def _problem(err: dict, src: Located) -> Problem:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        names = ", ".join(SweepFile.model_fields)
        return src.problem(f"unknown key {loc[-1]!r}; a sweep file has: {names}", loc)
    if err["type"] == "missing":
        return src.problem(f"missing key {loc[-1]!r} (the recipe file to sweep)", loc[:-1])
    msg = str(err["msg"])
    msg = "expected " + msg.removeprefix("Input should be ") if msg.startswith("Input should be ") else msg
    return src.problem(f"{msg}, received {describe(err.get('input'))}", loc)


def merged(base: SweepSpec | None, recipe: Path | None, options: dict[str, Any]) -> SweepSpec:
    """The sweep file's spec (or a recipe's) with the command-line options that were given applied:
    ``grid`` (a list of :class:`Axis`; one of a key the file has replaces it), ``seeds``, ``pareto``,
    ``jobs``, ``threads``, ``output`` when not None, ``single_task`` when true, ``sets`` appended."""
    spec = base or SweepSpec(recipe=recipe or Path("recipe.yaml"))
    given = list(options.get("grid") or [])
    keys = [a.key for a in given]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise UsageError(f"--grid {dupes[0]} is given twice; give all its values in one --grid")
    grid = [a for a in spec.grid if a.key not in keys] + given
    changes: dict[str, Any] = {"grid": grid, "sets": [*spec.sets, *(options.get("sets") or [])]}
    for name in ("seeds", "pareto", "jobs", "threads", "output"):
        if options.get(name) is not None:
            changes[name] = options[name]
    if options.get("single_task"):
        changes["single_task"] = True
    out = replace(spec, **changes)
    if not 1 <= out.seeds <= MAX_SEEDS:
        raise UsageError(f"--seeds: expected 1 to {MAX_SEEDS}, received {out.seeds}")
    return out
