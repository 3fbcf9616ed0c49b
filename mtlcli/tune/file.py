"""The tune file: ``mtl tune tune.yaml`` with the command's options in a YAML mapping (safe_load,
checked by a pydantic model, each problem at its file and line)::

    recipe: recipes/penguins.yaml     # relative to this file
    search:
      train.optimizer.adam.learning_rate: log:1e-4:1e-2
      train.weighting: [static, uncertainty, upgrad]   # a list is categorical
      model.tasks.body_mass.weight: "0.1:2"
    trials: 40
    objectives: per-task
    set: {train.epochs: 30}

Options given on the command line win over the file (a ``--search`` of a key the file has replaces it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mtlcli.errors import Problem, RecipeError
from mtlcli.recipe import format_set
from mtlcli.recipe.yamlio import Located, describe, load_file
from mtlcli.tune.space import parse_search


class TuneFile(BaseModel):
    """A tune file: the recipe and the settings of ``mtl tune``'s options."""

    model_config = ConfigDict(extra="forbid")

    recipe: str
    search: dict[str, str | float | list[Any]] = Field(default_factory=dict)
    trials: int | None = Field(None, ge=1)
    objectives: str | None = None
    jobs: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    name: str | None = None
    storage: str | None = None
    sampler: str | None = None
    seed: int | None = None
    prune: bool | None = None
    set: dict[str, Any] | list[str] = Field(default_factory=list)


def is_tune_file(path: Path | None) -> bool:
    """Whether ``path`` is a tune file (a mapping with ``recipe:`` and ``search:``), not a recipe."""
    if path is None or not path.is_file():
        return False
    try:
        data = load_file(path).data
    except RecipeError:
        return False
    return isinstance(data, dict) and "recipe" in data and "search" in data and "model" not in data


def _problem(err: dict, src: Located) -> Problem:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        return src.problem(
            f"unknown key {loc[-1]!r}; a tune file has: {', '.join(TuneFile.model_fields)}", loc
        )
    if err["type"] == "missing":
        return src.problem(f"missing key {loc[-1]!r}", loc[:-1])
    msg = str(err["msg"]).replace("Input should be ", "expected ")
    return src.problem(f"{msg}, received {describe(err.get('input'))}", loc[:2])


def search_text(key: str, spec: Any) -> str:
    """A ``search:`` entry as a ``--search`` text (a list's values in YAML flow style)."""
    if isinstance(spec, list):
        return f"{key}=" + ",".join(format_set(key, v).partition("=")[2] for v in spec)
    return f"{key}={spec}"


def load_tune_file(path: Path) -> dict[str, Any]:
    """The tune file ``path`` as ``mtl tune``'s options (``recipe`` resolved against the file)."""
    src = load_file(path)
    try:
        parsed = TuneFile.model_validate(src.data)
    except ValidationError as exc:
        raise RecipeError(problems=[_problem(e, src) for e in exc.errors(include_url=False)]) from None
    search, problems = [], []
    for key, spec in parsed.search.items():
        text = search_text(key, spec)
        try:
            parse_search(text)
        except RecipeError as exc:
            p = exc.problems[0]
            problems.append(src.problem(p.message, ("search", key)))
        search.append(text)
    if problems:
        raise RecipeError(problems=problems)
    recipe = Path(parsed.recipe).expanduser()
    out = parsed.model_dump(exclude={"recipe", "search", "set"})
    sets = parsed.set if isinstance(parsed.set, list) else [format_set(k, v) for k, v in parsed.set.items()]
    return {
        **out,
        "recipe": recipe if recipe.is_absolute() else path.parent / recipe,
        "search": search,
        "sets": sets,
    }
