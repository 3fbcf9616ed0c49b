"""Safe YAML loading that remembers where every value came from (file and line).

Only ``yaml.SafeLoader`` is used: a recipe can never construct Python objects. Duplicate keys are an
error (YAML's "last one wins" silently hides typos).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mtlcli.errors import Problem, RecipeError

Path_ = tuple  # a recipe path: tuple of str keys and int indices


class Located:
    """A loaded YAML document plus the line of every path in it."""

    def __init__(self, data: Any, lines: dict[tuple, int], file: str, text: str | None = None):
        self.data = data
        self.lines = lines
        self.file = file
        self.text = text  # the document as written (None when it was made from data)

    def line(self, path: tuple) -> int | None:
        """The line of ``path``, or of its closest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def problem(self, message: str, path: tuple) -> Problem:
        """A problem at recipe ``path``, placed at its line (or its closest ancestor's) in this file."""
        return Problem(message, dotted(path), self.file, self.line(path))

    def source_of(self, path: tuple, value: Any = None, file: str | None = None) -> str:
        """Where the resolved ``value`` at ``path`` came from: ``FILE:LINE`` when this document holds
        it (``file`` names the document instead of its own name), else ``default``.

        A shorthand counts as the document's (``a: numeric`` is ``a: {kind: numeric}``): a path the
        document does not hold, whose closest held ancestor is a text equal to ``value``."""
        path, label = tuple(path), file or self.file
        if path in self.lines:
            return f"{label}:{self.lines[path]}"
        for n in range(len(path) - 1, 0, -1):
            if path[:n] in self.lines:
                held = _at(self.data, path[:n])
                if isinstance(held, str) and held == value:
                    return f"{label}:{self.lines[path[:n]]}"
                break
        return "default"


def _at(data: Any, path: tuple) -> Any:
    """The value at ``path`` in plain data (None when there is none)."""
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


def dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


MAX_NODES = 200_000  # aliases can make a small file expand exponentially ("billion laughs")
MAX_DEPTH = 64  # recipes nest a handful of levels; deeper documents are hostile or broken
MAX_BYTES = 1 << 20  # a recipe is a few KB; larger files are not recipes
_STANDARD = {yaml.MappingNode: "tag:yaml.org,2002:map", yaml.SequenceNode: "tag:yaml.org,2002:seq"}


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_NODES


def _build(
    node: yaml.Node,
    path: tuple,
    lines: dict,
    ctor: yaml.SafeLoader,
    problems: list,
    file: str,
    budget: _Budget | None = None,
) -> Any:
    budget = budget or _Budget()
    budget.left -= 1
    if budget.left < 0:
        raise yaml.YAMLError(f"the document expands to more than {MAX_NODES:,} values (aliases?)")
    if len(path) > MAX_DEPTH:
        raise yaml.YAMLError(f"the document is nested more than {MAX_DEPTH} levels deep")
    lines[path] = node.start_mark.line + 1
    if type(node) in _STANDARD and node.tag != _STANDARD[type(node)]:
        raise yaml.constructor.ConstructorError(
            None, None, f"could not determine a constructor for the tag {node.tag!r}", node.start_mark
        )
    if isinstance(node, yaml.MappingNode):
        ctor.flatten_mapping(node)  # resolves merge keys (<<) safely
        out: dict = {}
        for key_node, value_node in node.value:
            key = ctor.construct_object(key_node, deep=True)
            if isinstance(key, bool) and isinstance(key_node, yaml.ScalarNode):
                # YAML 1.1 reads on/off/yes/no as booleans; as keys (`on: representation`) they are names.
                key = key_node.value
            if not isinstance(key, (str, int, float, bool)) or key is None:
                problems.append(
                    Problem(
                        f"mapping keys must be plain text, received {key!r}",
                        dotted(path),
                        file,
                        key_node.start_mark.line + 1,
                    )
                )
                continue
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                problems.append(
                    Problem(
                        f"duplicate key {key!r} (first defined on line {lines[(*path, key)]})",
                        dotted((*path, key)),
                        file,
                        key_node.start_mark.line + 1,
                    )
                )
                continue
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _build(value_node, (*path, key), lines, ctor, problems, file, budget)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), lines, ctor, problems, file, budget) for i, item in enumerate(node.value)
        ]
    return ctor.construct_object(node, deep=True)


def load_text(text: str, file: str) -> Located:
    """Parse YAML text into plain Python data with line numbers; raise RecipeError on any problem."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            problems: list[Problem] = []
            lines: dict[tuple, int] = {}
            data = None if node is None else _build(node, (), lines, loader, problems, file)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        raise RecipeError(problems=[syntax_problem(exc, text, file)]) from None
    except yaml.reader.ReaderError as exc:  # control characters (NUL, ...) in the text
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        line = text.count("\n", 0, exc.position) + 1
        raise RecipeError(
            problems=[
                Problem(f"invalid YAML: the control character #x{char:04x} is not allowed", "", file, line)
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise RecipeError(problems=[Problem(f"invalid YAML: {exc}", "", file)]) from None
    except RecursionError:
        raise RecipeError(
            problems=[Problem("invalid YAML: the document is nested too deeply", "", file)]
        ) from None
    if problems:
        raise RecipeError(problems=problems)
    return Located(data, lines, file, text)


_GLUED = re.compile(r"^\s*(?:-\s+)?([A-Za-z_][\w.-]*):([^\s:#'\"][^#]*?)\s*$")


def _glued_colon(text: str, upto: int) -> tuple[int, str, str] | None:
    """The nearest line at or above ``upto`` written ``key:value`` (no space: YAML reads one string)."""
    lines = text.splitlines()
    for i in range(min(upto, len(lines) - 1), -1, -1):
        m = _GLUED.match(lines[i])
        if m and "://" not in lines[i]:
            return i + 1, m.group(1), m.group(2)
    return None


def _hint(exc: yaml.MarkedYAMLError, text: str) -> str | None:
    """The usual cause of a YAML syntax error, in words."""
    problem, context = str(exc.problem or ""), str(exc.context or "")
    if "could not determine a constructor for the tag" in problem:
        return "hint: YAML tags (!!python/..., !custom) are not allowed: nothing in a recipe may run code"
    if "'\\t'" in problem or "\t" in problem:
        return "hint: YAML indents with spaces only; replace the tab on this line with spaces"
    if "flow mapping" in context or "flow sequence" in context:
        opener = "{" if "mapping" in context else "["
        closer = "}" if opener == "{" else "]"
        where = f" on line {exc.context_mark.line + 1}" if exc.context_mark else ""
        return f"hint: the {opener!r} opened{where} is not closed: add the missing {closer!r}"
    if "could not find expected ':'" in problem or "mapping values are not allowed" in problem:
        glued = _glued_colon(text, exc.problem_mark.line if exc.problem_mark else 0)
        if glued:
            n, key, value = glued
            return f"hint: line {n} reads {key}:{value}; a key needs a space after its colon ({key}: {value})"
        return (
            "hint: a key needs a space after its colon (key: value), and a value that contains ': ' "
            "needs quotes"
        )
    return None


def syntax_problem(exc: yaml.MarkedYAMLError, text: str, file: str) -> Problem:
    """A YAML syntax error as one problem: the line, the source line with a caret, and a hint."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    message = " ".join(str(x) for x in (exc.context, exc.problem) if x)
    detail: list[str] = []
    source = text.splitlines()
    if mark is not None and mark.line < len(source):
        shown = source[mark.line].replace("\t", " ")  # a tab would move the caret
        detail += [f"{line:>4} | {shown}", f"     | {' ' * mark.column}^"]
    hint = _hint(exc, text)
    if hint:
        detail.append(hint)
    return Problem(f"invalid YAML: {message}", "", file, line, tuple(detail))


def load_file(path: str | Path) -> Located:
    path = Path(path)
    if not path.exists():
        raise RecipeError(problems=[Problem("file not found", "", str(path))])
    if path.is_dir():
        raise RecipeError(problems=[Problem("is a directory, expected a YAML recipe file", "", str(path))])
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise RecipeError(
            problems=[
                Problem(f"the file is {size:,} bytes; a recipe is at most {MAX_BYTES:,} bytes", "", str(path))
            ]
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(
            problems=[Problem(f"not UTF-8 text (invalid byte at offset {exc.start})", "", str(path))]
        ) from None
    return load_text(text, str(path))


def describe(value: Any) -> str:
    """What a YAML value is, for messages: ``text ('x')``, ``a number (3)``, ``a list``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"text ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
