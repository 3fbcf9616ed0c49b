"""The project's error types. Every user mistake is an :class:`MtlError` with an exit code.

The CLI catches :class:`MtlError` (and only it), prints its message and exits with ``exit_code``:
0 success, 1 a run that failed, 2 a user error (recipe, data, arguments, files).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One problem in a user-supplied file.

    ``path`` is the dotted recipe path (``model.tasks.sex.loss``) or a column name for data problems;
    ``file`` and ``line`` point at the source when known.
    """

    message: str
    path: str = ""
    file: str = ""
    line: int | None = None
    #: lines shown under the message: the source line with a caret under the column, a hint
    detail: tuple[str, ...] = ()

    def render(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "") if self.file else ""
        head = " ".join(part for part in (where, self.path) if part)
        return f"{head}: {self.message}" if head else self.message


class MtlError(Exception):
    """Base of all errors the CLI reports without a traceback."""

    exit_code = 2
    title = "error"

    def __init__(self, message: str = "", problems: list[Problem] | None = None):
        self.problems = list(problems or [])
        super().__init__(message or "\n".join(p.render() for p in self.problems))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def lines(self) -> list[str]:
        """The message as lines: a headline, then one line per problem."""
        if not self.problems:
            return self.message.splitlines() or [self.title]
        head = (
            self.message
            if self.message and self.message != "\n".join(p.render() for p in self.problems)
            else ""
        )
        n = len(self.problems)
        head = head or f"{n} problem{'s' if n != 1 else ''} found"
        out = [head]
        for p in self.problems:
            out += ["  - " + p.render(), *(f"      {d}" for d in p.detail)]
        return out


class RecipeError(MtlError):
    """The recipe is not valid (YAML, schema, names, values)."""


class DataError(MtlError):
    """The data does not fit the recipe (missing file or column, bad values, labels, shapes)."""


class UsageError(MtlError):
    """Bad command-line arguments (existing output directory, unknown run, ...)."""


class CheckpointError(MtlError):
    """A model or run directory that cannot be loaded safely."""


class RunError(MtlError):
    """Training started but failed (non-finite loss, ...)."""

    exit_code = 1


def did_you_mean(word: Any, choices) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to ``word``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
