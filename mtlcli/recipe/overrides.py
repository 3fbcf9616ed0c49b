"""Recipe overrides (``--set KEY=VALUE``) and the provenance of every resolved value.

An override names a recipe path with dots (``train.optimizer.adam.learning_rate``, a list item by its
index: ``model.shared.0.dense.units``) and gives a YAML value (``3e-4``, ``pcgrad``,
``'[{dense: {units: 8}}]'``). :func:`apply` sets the overrides on the file's data, in order, making
the mappings a path needs; the result is validated by the same schema and checks as the file, and a
problem at an overridden path is placed at its ``--set`` (:class:`Overridden`), not at a file line.

:func:`resolved` gives the resolved recipe as a :class:`Resolved`: the data of ``resolved.yaml`` plus
the source of each leaf (``FILE:LINE``, ``--set``, ``--seed``/``--epochs`` or ``default``);
:func:`annotated_yaml` writes it with each source as a trailing comment, still a loadable recipe.

The public API (``mtl train``, ``mtl config``, and sweeps that make one run per point):
:func:`parse_set`, :func:`parse`, :func:`format_set`, :func:`apply`, :func:`resolved`, :func:`leaves`,
:func:`annotated_yaml`. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from mtlcli.errors import Problem, RecipeError, did_you_mean
from mtlcli.recipe.yamlio import Located, dotted, load_text

#: Mappings whose keys are the user's names (tasks, inputs): a ``--set`` through a name that is not
#: there is a typo, not a new entry (a new entry is set whole: ``--set model.tasks.t='{type: binary}'``).
NAMED = {("model", "tasks"): "task", ("data", "inputs"): "input"}

#: ``3e-4``: YAML 1.1 (PyYAML) reads an exponent without a dot as text; on a command line it is a number.
_EXPONENT = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")
_EXAMPLE = "such as --set train.weighting=pcgrad"


@dataclass(frozen=True)
class Override:
    """One ``--set``: the text as given, the recipe path it names and the value it sets."""

    text: str
    path: tuple
    value: Any

    @property
    def label(self) -> str:
        """How messages and sources name it: ``--set train.weighting=pcgrad``."""
        return f"--set {self.text}"

    @property
    def key(self) -> str:
        return dotted(self.path)


def _fail(text: str, message: str, detail: tuple[str, ...] = ()) -> RecipeError:
    return RecipeError(problems=[Problem(message, "", f"--set {text}", None, detail)])


def parse_set(text: str) -> tuple[tuple, Any]:
    """``"a.b.0=1"`` -> ``(("a", "b", 0), 1)``: the path (a number names a list index) and the value
    read as YAML (``null`` for an empty value). A malformed one is a RecipeError naming it (exit 2)."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise _fail(text, f"expected KEY=VALUE, {_EXAMPLE}")
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise _fail(text, f"the key {key!r} has an empty part; expected names joined by dots, {_EXAMPLE}")
    path = tuple(int(p) if p.isdigit() else p.strip() for p in parts)
    if _EXPONENT.match(raw.strip()):
        return path, float(raw)
    try:
        value = load_text(raw, f"--set {text}").data
    except RecipeError as exc:
        first = exc.problems[0]
        message = first.message.replace("invalid YAML", "the value is not valid YAML", 1)
        raise _fail(text, message, tuple(d for d in first.detail if d.startswith("hint:"))) from None
    return path, value


def parse(items: Iterable[str | Override]) -> list[Override]:
    """The ``--set`` texts (or Overrides, kept as they are) as :class:`Override`, in order."""
    out = []
    for item in items or ():
        if isinstance(item, Override):
            out.append(item)
        else:
            path, value = parse_set(item)
            out.append(Override(item, path, value))
    return out


def format_set(path: tuple | str, value: Any) -> str:
    """The ``KEY=VALUE`` text that :func:`parse_set` reads back as ``(path, value)``."""
    key = path if isinstance(path, str) else ".".join(str(p) for p in path)
    text = flow(value)
    return f"{key}={json.dumps(value) if _EXPONENT.match(text) and isinstance(value, str) else text}"


def flow(value: Any) -> str:
    """``value`` as one line of YAML (a string that YAML would read as something else is quoted)."""
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        text = repr(value)
        if "e" in text and "." not in text:  # 3e-04: YAML 1.1 wants a dot in the mantissa
            mantissa, _, exp = text.partition("e")
            text = f"{mantissa}.0e{exp}"
        return text
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), allow_unicode=True)
    text = text.removesuffix("\n").removesuffix("\n...")
    if "\n" in text:
        text = json.dumps(value, ensure_ascii=False)
    return text


# ------------------------------------------------------------------------------------------------
# Applying overrides


class Overridden(Located):
    """The file's document with the overrides set: what the schema and checks read.

    ``owners`` maps every path an override set (or a mapping it made on the way) to that override; the
    file's lines under a replaced path are dropped. :meth:`problem` places a problem at or under an
    overridden path at its ``--set`` (the recipe path is left out when it is the one the ``--set``
    names); :meth:`source_of` says ``--set`` for the values an override gave.
    """

    def __init__(self, base: Located, data: Any, overrides: list[Override], owners, set_by):
        self.base = base
        self.overrides = overrides
        self.owners: dict[tuple, Override] = owners
        self.set_by: dict[tuple, Override] = set_by
        lines = {p: n for p, n in base.lines.items() if not any(p[: len(q)] == q for q in set_by)}
        super().__init__(data, lines, base.file, base.text)

    def owner(self, path: tuple) -> Override | None:
        """The override that gave ``path`` (or the closest ancestor the file does not hold)."""
        path = tuple(path)
        for n in range(len(path), -1, -1):
            if path[:n] in self.owners:
                return self.owners[path[:n]]
            if path[:n] in self.lines:
                return None
        return None

    def line(self, path: tuple) -> int | None:
        return None if self.owner(path) is not None else super().line(path)

    def problem(self, message: str, path: tuple) -> Problem:
        o = self.owner(path)
        if o is None:
            return super().problem(message, path)
        return Problem(message, "" if tuple(path) == o.path else dotted(path), o.label, None)

    def source_of(self, path: tuple, value: Any = None, file: str | None = None) -> str:
        path = tuple(path)
        if any(path[:n] in self.set_by for n in range(len(path), 0, -1)):
            return "--set"
        return self.base.source_of(path, value, file or self.file)


def apply(base: Located, overrides: Iterable[str | Override]) -> Located:
    """The document ``base`` with ``overrides`` set in order (``base`` itself when there are none).

    Intermediate mappings are made as needed (``train.early_stopping.patience=3`` in a recipe without
    ``early_stopping``); a text shorthand on the way is expanded (``optimizer: adam`` for
    ``train.optimizer.adam.learning_rate``) and any other plain value there is replaced by a mapping.
    A list is indexed by number only, within its length; a path through a task or input name that the
    recipe does not have is refused with the names it has (did you mean)."""
    items = parse(overrides)
    if not items:
        return base
    data = _copy(base.data) if base.data is not None else {}
    if not isinstance(data, dict):
        return base  # the loader reports a document that is not a mapping
    owners: dict[tuple, Override] = {}
    set_by: dict[tuple, Override] = {}
    for o in items:
        for path in [p for p in owners if p[: len(o.path)] == o.path]:
            del owners[path]  # what an earlier override set under this path is gone
        for path in [p for p in set_by if p[: len(o.path)] == o.path]:
            del set_by[path]
        made = _set(data, o)
        for path in made:
            owners.setdefault(path, o)
        owners[o.path] = set_by[o.path] = o
    return Overridden(base, data, items, owners, set_by)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _set(data: dict, o: Override) -> list[tuple]:
    """Set ``o`` in ``data``; the paths of the mappings made on the way."""
    made: list[tuple] = []
    node: Any = data
    for i, part in enumerate(o.path[:-1]):
        here, nxt = o.path[:i], o.path[i + 1]
        child = _child(node, part, here, o)
        if child is _MISSING or not isinstance(child, (dict, list)):
            _check_name(node, part, here, o)
            child = _expanded(child, o.path[: i + 1], nxt)
            node[_key(node, part)] = child
            made.append(o.path[: i + 1])
        node = child
    _child(node, o.path[-1], o.path[:-1], o, leaf=True)
    node[_key(node, o.path[-1])] = _copy(o.value)
    return made


_MISSING = object()


def _expanded(value: Any, path: tuple, nxt: Any) -> dict:
    """The mapping a plain value on an override's way stands for: ``adam`` under ``optimizer`` is
    ``{adam: {}}``, an input's ``numeric`` is ``{kind: numeric}``; anything else is replaced."""
    if isinstance(value, str) and value == nxt:
        return {value: {}}
    if isinstance(value, str) and len(path) == 3 and path[:2] == ("data", "inputs"):
        return {"kind": value}
    return {}


def _key(node: Any, part: Any) -> Any:
    return part if isinstance(node, list) else str(part)


def _child(node: Any, part: Any, here: tuple, o: Override, leaf: bool = False) -> Any:
    """``node[part]`` (``_MISSING`` when a mapping has no such key); a bad list index is refused."""
    if isinstance(node, dict):
        return node.get(str(part), _MISSING)
    where = dotted(here) or "the recipe"
    if not isinstance(part, int):
        raise _fail(o.text, f"{where} is a list: name an item by its index ({dotted(here)}.0...)")
    if not 0 <= part < len(node):
        n = len(node)
        span = f"indices 0 to {n - 1}" if n else "no items"
        raise _fail(o.text, f"{where} has {n} item{'s' if n != 1 else ''} ({span}); received index {part}")
    return node[part]


def _check_name(node: dict, part: Any, here: tuple, o: Override) -> None:
    """A path through a task or input that is not in the recipe is a typo: name the ones there are."""
    what = NAMED.get(here)
    if what is None or str(part) in node:
        return
    names = [str(k) for k in node]
    hint = did_you_mean(part, names) or (f"; the {what}s are: {', '.join(names)}" if names else "")
    raise _fail(
        o.text,
        f"there is no {what} {str(part)!r}{hint} (a new {what} is set whole: "
        f"--set {dotted((*here, part))}='{{...}}')",
    )


# ------------------------------------------------------------------------------------------------
# The resolved recipe and where each value came from


class Resolved(dict):
    """The resolved recipe (plain data, what ``resolved.yaml`` holds) with ``sources``: recipe path
    (a tuple) -> where that leaf's value came from (``recipe.yaml:14``, ``--set``, ``default``...), and
    ``overrides``: the ``--set`` texts applied to the recipe file to make it."""

    sources: dict[tuple, str]
    overrides: list[str]


def resolved(loaded, seed: int | None = None, epochs: int | None = None, file: str | None = None) -> Resolved:
    """``loaded``'s recipe with every default filled in, its name, the seed and epochs used (``None``:
    the recipe's), and the source of every leaf (``file`` names the recipe file in the sources)."""
    recipe = loaded.recipe
    out = Resolved(recipe.resolved())
    out["name"] = loaded.name
    out["seed"] = recipe.seed if seed is None else seed
    out["train"]["epochs"] = recipe.train.epochs if epochs is None else epochs
    out.overrides = [o.text for o in loaded.overrides]
    src: Located = loaded.source
    out.sources = {path: src.source_of(path, value, file) for path, value in leaves(out)}
    if seed is not None and seed != recipe.seed:
        out.sources[("seed",)] = "--seed"
    if epochs is not None and epochs != recipe.train.epochs:
        out.sources[("train", "epochs")] = "--epochs"
    if recipe.name is None:
        out.sources[("name",)] = "default"
    return out


def leaves(value: Any, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """``(path, value)`` for every leaf, in document order; an empty mapping or list is a leaf."""
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in leaves(v, (*prefix, k))]
    if isinstance(value, list) and value:
        return [leaf for i, v in enumerate(value) for leaf in leaves(v, (*prefix, i))]
    return [(prefix, value)]


def table(res: Resolved) -> list[dict[str, Any]]:
    """``[{key, value, source}]`` for every leaf (``mtl config --json``)."""
    sources = getattr(res, "sources", {})
    return [
        {"key": dotted(path), "value": value, "source": sources.get(path, "default")}
        for path, value in leaves(res)
    ]


def annotated_yaml(res: Resolved | dict, header: str = "") -> str:
    """``res`` as block YAML with each leaf's source as a trailing comment (``units: 64  # recipe.yaml:14``).

    ``yaml.safe_load`` of the text equals ``res``; should it not (a value this writer cannot put on one
    line), the text is plain ``yaml.safe_dump`` without the comments."""
    sources = getattr(res, "sources", {})
    body = "\n".join(_lines(dict(res), (), 0, sources)) + "\n"
    if yaml.safe_load(body) != dict(res):
        body = yaml.safe_dump(dict(res), sort_keys=False, allow_unicode=True)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body


def _lines(value: Any, path: tuple, indent: int, sources: dict) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict) and value:
        for k, v in value.items():
            out += _item(f"{pad}{_key_text(k)}:", v, (*path, k), indent, sources)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            if isinstance(v, (dict, list)) and v:
                inner = _lines(v, (*path, i), indent + 2, sources)
                out += [f"{pad}- {inner[0][indent + 2 :]}", *inner[1:]]
            else:
                out.append(_leaf(f"{pad}-", v, (*path, i), sources))
    return out


def _item(head: str, value: Any, path: tuple, indent: int, sources: dict) -> list[str]:
    if isinstance(value, (dict, list)) and value:
        return [head, *_lines(value, path, indent + 2, sources)]
    return [_leaf(head, value, path, sources)]


def _leaf(head: str, value: Any, path: tuple, sources: dict) -> str:
    source = sources.get(path)
    return f"{head} {flow(value)}" + (f"  # {source}" if source else "")


def _key_text(key: Any) -> str:
    text = flow(key)
    return text if yaml.safe_load(f"{text}: 0") == {key: 0} else json.dumps(str(key))
