"""``mtl tune``'s search space: ``--search KEY=SPEC`` texts parsed into :class:`Param` and checked
against the recipe schema before any trial starts (no TensorFlow, no Optuna at import).

SPEC forms: ``log:1e-4:1e-2`` (log-uniform float), ``1e-4:1e-2`` (uniform float), ``int:1:8`` and
``int:log:1:64`` (integers), ``a,b,c`` (categorical; each value read as YAML, kept as its text so any
value ``--set`` accepts can be searched). A range is checked at both ends, a categorical at every value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlcli.errors import Problem, RecipeError, did_you_mean
from mtlcli.recipe import load, parse_set
from mtlcli.sweep.spec import split_values

KINDS = ("float", "int", "categorical")
PREFIXES = ("log", "int")


@dataclass(frozen=True)
class Param:
    """One searched key: ``kind`` float/int (``low``..``high``, ``log``) or categorical (``choices``,
    the YAML texts of the values)."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[str, ...] = ()
    text: str = ""

    def to_set(self, value: Any) -> str:
        """The ``--set KEY=VALUE`` text of a sampled value."""
        return f"{self.key}={value}"

    def ends(self) -> list[str]:
        """The values checked against the schema: both ends of a range, every categorical value."""
        if self.kind == "categorical":
            return list(self.choices)
        lo, hi = (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)
        return [repr(lo), repr(hi)]


def _fail(text: str, message: str, detail: tuple[str, ...] = ()) -> RecipeError:
    return RecipeError(problems=[Problem(message, "", f"--search {text}", None, detail)])


def _number(text: str, raw: str, as_int: bool) -> float:
    try:
        return int(raw) if as_int else float(raw)
    except ValueError:
        kind = "an integer" if as_int else "a number"
        raise _fail(text, f"expected {kind}, received {raw!r}") from None


def _range(text: str, key: str, raw: str) -> Param:
    parts = raw.split(":")
    head = parts[0].strip()
    as_int = head == "int"
    if as_int:
        parts = parts[1:]
    log = bool(parts) and parts[0].strip() == "log"
    if log:
        parts = parts[1:]
    if len(parts) != 2:
        hint = did_you_mean(head, PREFIXES) if head and not _is_number(head) else ""
        raise _fail(
            text,
            f"expected LOW:HIGH, log:LOW:HIGH, int:LOW:HIGH or int:log:LOW:HIGH{hint}",
            ("such as --search train.optimizer.adam.learning_rate=log:1e-4:1e-2",),
        )
    low, high = (_number(text, p.strip(), as_int) for p in parts)
    if not low < high:
        raise _fail(text, f"the low end ({low}) must be below the high end ({high})")
    if log and low <= 0:
        raise _fail(text, f"a log range needs a positive low end, received {low}")
    return Param(key, "int" if as_int else "float", low, high, log, (), text)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def parse_search(text: str) -> Param:
    """``KEY=SPEC`` as a :class:`Param`; a malformed one is a RecipeError naming it (exit 2)."""
    key, eq, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not eq or not key or not raw:
        raise _fail(text, "expected KEY=SPEC, such as --search train.weighting=static,upgrad")
    if ":" in raw and "," not in raw and not raw.startswith(("{", "[", "'", '"')):
        param = _range(text, key, raw)
    else:
        pieces = split_values(raw)
        if any(not p for p in pieces):
            raise _fail(text, "an empty value (two commas in a row, or one at an end)")
        if len(set(pieces)) != len(pieces):
            raise _fail(text, "a value appears twice")
        if len(pieces) < 2:
            raise _fail(text, "one value is not a search: give two or more (a,b) or a range (LOW:HIGH)")
        param = Param(key, "categorical", choices=tuple(pieces), text=text)
    try:
        path, _ = parse_set(f"{key}=0")
    except RecipeError as exc:
        raise _fail(text, exc.problems[0].message, exc.problems[0].detail) from None
    return Param(
        ".".join(str(p) for p in path), param.kind, param.low, param.high, param.log, param.choices, text
    )


def parse_all(texts: list[str]) -> list[Param]:
    """Every ``--search`` text parsed; all problems at once; a key searched twice is refused."""
    params, problems = [], []
    for text in texts:
        try:
            params.append(parse_search(text))
        except RecipeError as exc:
            problems += exc.problems
    seen: set[str] = set()
    for p in params:
        if p.key in seen:
            problems.append(Problem(f"{p.key} is searched twice", "", f"--search {p.text}", None, ()))
        seen.add(p.key)
    if problems:
        raise RecipeError(problems=problems)
    return params


def check(recipe: Path, params: list[Param], sets: list[str]) -> None:
    """Load the recipe with each range end and each categorical value (one at a time, the other keys
    at their first value): every schema problem of every value at once, RecipeError (exit 2)."""
    problems: list[Problem] = []
    first = [p.to_set(p.ends()[0]) for p in params]
    for i, p in enumerate(params):
        for value in p.ends():
            trial = [*first[:i], p.to_set(value), *first[i + 1 :]]
            try:
                load(recipe, overrides=[*sets, *trial])
            except RecipeError as exc:
                for prob in exc.problems:
                    if prob.file == f"--set {p.to_set(value)}":
                        prob = Problem(
                            prob.message, prob.path, f"--search {p.text} (value {value})", None, prob.detail
                        )
                    others = {f"--set {t}" for j, t in enumerate(first) if j != i}
                    if prob not in problems and prob.file not in others:
                        problems.append(prob)
    if problems:
        raise RecipeError(problems=problems)


def distributions(params: list[Param]) -> dict[str, Any]:
    """The Optuna distributions of ``params`` (imports optuna)."""
    from optuna import distributions as d

    out: dict[str, Any] = {}
    for p in params:
        if p.kind == "categorical":
            out[p.key] = d.CategoricalDistribution(list(p.choices))
        elif p.kind == "int":
            out[p.key] = d.IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[p.key] = d.FloatDistribution(p.low, p.high, log=p.log)
    return out
