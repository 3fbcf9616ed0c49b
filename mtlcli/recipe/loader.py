"""Load a recipe: YAML with lines -> the overrides (``--set``) -> the schema -> every check, all
problems at once.

:class:`LoadedRecipe` is what the other stages receive: the validated :class:`~mtlcli.recipe.spec.Recipe`
plus where it came from (its directory, for data paths; its lines and overrides, for messages and
provenance). pydantic's errors are translated here into mtl's (recipe path, line or ``--set``, expected
vs received, did-you-mean).
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel, ValidationError

from mtlcli.errors import Problem, RecipeError, did_you_mean
from mtlcli.recipe import overrides as overriding
from mtlcli.recipe.checks import recipe_problems
from mtlcli.recipe.spec import (
    Recipe,
)
from mtlcli.recipe.yamlio import Located, describe, load_file, load_text


class LoadedRecipe:
    """A validated recipe plus where it came from (for data paths and error lines).

    ``source`` is the document the recipe was validated from: the file's, with the ``overrides``
    (``--set``) applied (:class:`~mtlcli.recipe.overrides.Overridden`); its ``text`` is the file's.
    """

    def __init__(self, recipe: Recipe, source: Located, path: Path | None, overrides=()):
        self.recipe = recipe
        self.source = source
        self.path = path
        self.overrides: tuple[overriding.Override, ...] = tuple(overrides)
        self.base_dir = path.parent if path else Path.cwd()
        self.name = recipe.name or (path.stem if path else "recipe")

    def problem(self, message: str, path: tuple) -> Problem:
        return self.source.problem(message, path)

    def resolved(self, seed: int | None = None, epochs: int | None = None, file: str | None = None):
        """The resolved recipe and each leaf's source (:func:`mtlcli.recipe.overrides.resolved`)."""
        return overriding.resolved(self, seed, epochs, file)

    def resolve_path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


def load(path: str | Path, overrides=()) -> LoadedRecipe:
    """The recipe file ``path`` with ``overrides`` (``--set`` texts such as ``"train.epochs=3"``, or
    :class:`~mtlcli.recipe.overrides.Override`) applied in order; RecipeError names every problem."""
    path = Path(path)
    items = overriding.parse(overrides)  # a malformed --set is reported before the file is read
    return from_located(load_file(path), path, items)


def loads(text: str, file: str = "<recipe>", base_dir: Path | None = None, overrides=()) -> LoadedRecipe:
    items = overriding.parse(overrides)
    located = load_text(text, file)
    loaded = from_located(located, None, items)
    if base_dir is not None:
        loaded.base_dir = base_dir
    return loaded


def from_located(src: Located, path: Path | None, overrides=()) -> LoadedRecipe:
    items = overriding.parse(overrides)
    src = overriding.apply(src, items)
    data = src.data
    if data is None:
        raise RecipeError(
            problems=[
                Problem("the recipe is empty; expected a mapping with data, model, train", "", src.file, 1)
            ]
        )
    if not isinstance(data, dict):
        raise RecipeError(
            problems=[
                Problem(f"expected a mapping at the top level, received {describe(data)}", "", src.file, 1)
            ]
        )
    problems: list[Problem] = []
    recipe = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, src))
    problems.extend(recipe_problems(data, src))
    # One message per location: keep the first for each path+message pair.
    seen, unique = set(), []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            unique.append(p)
    if unique:
        unique.sort(key=lambda p: (p.line or 0, p.path))
        raise RecipeError(problems=unique)
    assert recipe is not None
    return LoadedRecipe(recipe, src, path, items)


_EXPECT = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


# Fields of each schema model, to suggest the right key for an unknown one.
def _model_in(annotation) -> type[BaseModel] | None:
    """The schema model an annotation holds (``Spec``, ``Spec | None``, a union with one model)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    found = [m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None]
    return found[0] if len(found) == 1 else None


def _step(annotation, part):
    """The annotation one path step below ``annotation``: a model's field, a mapping's or list's item."""
    model = _model_in(annotation)
    if model is not None:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        return None if field is None else field.annotation
    for member in (annotation, *typing.get_args(annotation)):
        origin, args = typing.get_origin(member), typing.get_args(member)
        if origin is dict and len(args) == 2 and isinstance(part, str):
            return args[1]
        if origin is list and args and isinstance(part, int):
            return args[0]
    return None


def _fields_at(path: tuple) -> list[str]:
    """The keys the schema allows at ``path`` (for "did you mean"), found by walking the models."""
    annotation = Recipe
    for part in path:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    model = _model_in(annotation)
    return list(model.model_fields) if model is not None else []


def _pydantic_problems(exc: ValidationError, src: Located) -> list[Problem]:
    out = []
    unions: dict[tuple, list] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # Union members report as an extra loc element such as 'float' or 'str': group them.
        clean = tuple(
            p
            for p in loc
            if not (
                isinstance(p, str)
                and (p in {"float", "str", "int", "bool"} or p.startswith(("function-", "dict[", "list[")))
            )
        )
        if clean != loc:
            unions.setdefault(clean, []).append(err)
            continue
        out.append(_one_problem(err, loc, src))
    for loc, errs in unions.items():
        value = errs[0].get("input")
        expected = " or ".join(dict.fromkeys(_EXPECT.get(e["type"], e["msg"].lower()) for e in errs))
        if any(e["type"] == "float_type" for e in errs) and any(e["type"] == "string_type" for e in errs):
            expected = "a number or a path"
        if any(e["type"] == "none_required" for e in errs):
            expected += " or null"
        out.append(src.problem(f"expected {expected}, received {describe(value)}", loc))
    return out


def _one_problem(err: dict, loc: tuple, src: Located) -> Problem:
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        key = loc[-1]
        fields = _fields_at(loc[:-1])
        hint = did_you_mean(key, fields) or (f"; expected one of: {', '.join(fields)}" if fields else "")
        return src.problem(f"unknown key {key!r}{hint}", loc)
    if kind == "missing":  # placed at the mapping that lacks it (the key itself has no line)
        return src.problem("required key is missing", loc)
    if kind in ("literal_error", "enum"):
        choices = err.get("ctx", {}).get("expected", "")
        options = re.findall(r"'([^']*)'", choices)
        return src.problem(
            f"expected one of {', '.join(options)}; received {describe(value)}{did_you_mean(value, options)}",
            loc,
        )
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        ctx = err.get("ctx", {})
        bound = {
            "greater_than": "> {gt}",
            "greater_than_equal": ">= {ge}",
            "less_than": "< {lt}",
            "less_than_equal": "<= {le}",
        }[kind].format(**ctx)
        return src.problem(f"expected a value {bound}, received {value!r}", loc)
    expected = _EXPECT.get(kind)
    if expected:
        return src.problem(f"expected {expected}, received {describe(value)}", loc)
    return src.problem(f"{err['msg']}, received {describe(value)}", loc)
