"""Name -> strategy class registry, and parsing of the recipe's ``weighting:`` value (no TensorFlow).

Besides a strategy's own parameters, a ``weighting:`` value may carry the train step's schedule key
``every: K`` (:data:`EVERY`): the per-task gradients and new weights only on every K-th step, the steps
between train on ``sum_i w_i L_i`` with the last weights.  It is not a field of the strategy:
:func:`get` leaves it out, :func:`every` reads it, :func:`check` refuses it (with the reason) for the
strategies it cannot apply to (:func:`every_refusal`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from mtlcli.errors import did_you_mean
from mtlcli.weighting.base import Strategy

REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available under ``cls.name``."""
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"strategy name {cls.name!r} is empty or already registered")
    REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    return sorted(REGISTRY)


#: The schedule key accepted next to any strategy's parameters (``{upgrad: {every: 4}}``).
EVERY = "every"

#: Gradient-based strategies with ``weighting = True`` whose weights still must not be reused.
_EVERY_REFUSED = {
    "pcgrad": "pcgrad is gradient surgery: its coefficients project each step's gradients off each "
    "other in a random order drawn that step, so reused on other gradients they project nothing",
    "cagrad": "cagrad corrects each step's mean gradient within a ball around it: its coefficients are "
    "tied to that step's gradients, so reused on other gradients they bound no conflict",
    "gradnorm": "gradnorm learns its weights with the optimizer from every step's gradient norms; "
    "steps without them would still move the weights (Adam momentum)",
}


def every_refusal(cls: type[Strategy]) -> str | None:
    """Why ``every: K`` (K > 1) cannot apply to a strategy class, or None when it can: it must be
    gradient-based and a weighting (``direction == weights @ J``) whose weights are worth reusing."""
    if cls.needs != "gradients":
        return (
            f"{cls.name} is loss-based: it already trains with one backward pass per step, there are no "
            f"per-task gradients to skip"
        )
    if not cls.weighting:
        return (
            f"{cls.name} is not a weighting: its direction is not a weighted sum of the task gradients, "
            f"so there are no weights to reuse"
        )
    return _EVERY_REFUSED.get(cls.name)


class SpecProblem(typing.NamedTuple):
    """One problem in a ``weighting:`` value. ``path`` is relative to the weighting key."""

    path: tuple[str, ...]
    message: str


def _split(spec: Any) -> tuple[str | None, Any, list[SpecProblem]]:
    if isinstance(spec, str):
        return spec, {}, []
    if isinstance(spec, Mapping) and len(spec) == 1:
        ((name, params),) = spec.items()
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            return (
                None,
                None,
                [SpecProblem((str(name),), f"expected a mapping of parameters, received {params!r}")],
            )
        return str(name), dict(params), []
    return (
        None,
        None,
        [SpecProblem((), f"expected a strategy name or {{name: {{parameters}}}}, received {spec!r}")],
    )


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple) or annotation in (list, tuple):
        args = typing.get_args(annotation)
        return (
            isinstance(value, (list, tuple)) and all(_type_ok(v, args[0]) for v in value)
            if args
            else isinstance(value, (list, tuple))
        )
    return True


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    names = {float: "a number", int: "an integer", bool: "true or false", str: "text", list: "a list"}
    if annotation in names:
        return names[annotation]
    if typing.get_origin(annotation) in (list, tuple):
        return "a list"
    return getattr(annotation, "__name__", str(annotation))


def check(spec: Any) -> list[SpecProblem]:
    """Every problem in a ``weighting:`` value, without constructing anything heavy."""
    name, params, problems = _split(spec)
    if problems:
        return problems
    if name not in REGISTRY:
        return [
            SpecProblem(
                (),
                f"unknown strategy {name!r}{did_you_mean(name, available())} "
                f"(available: {', '.join(available())})",
            )
        ]
    cls = REGISTRY[name]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    params, out = dict(params), []
    if EVERY in params:
        out.extend(_check_every(cls, params.pop(EVERY)))
    for key, value in params.items():
        if key not in fields:
            known = sorted(fields) + ([EVERY] if every_refusal(cls) is None else [])
            hint = did_you_mean(key, known) or (
                f"; {name} takes {', '.join(known)}" if known else f"; {name} takes no parameters"
            )
            out.append(SpecProblem((name, str(key)), f"unknown parameter {key!r}{hint}"))
        elif not _type_ok(value, hints[key]):
            out.append(SpecProblem((name, str(key)), f"expected {_describe(hints[key])}, received {value!r}"))
    if not any(p.path[-1:] != (EVERY,) for p in out):
        try:
            cls(**params)
        except (ValueError, TypeError) as exc:
            out.append(SpecProblem((name,), str(exc)))
    return out


def _check_every(cls: type[Strategy], value: Any) -> list[SpecProblem]:
    path = (cls.name, EVERY)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return [
            SpecProblem(path, f"expected an integer >= 1 (steps between weight updates), received {value!r}")
        ]
    reason = every_refusal(cls)
    if value > 1 and reason is not None:
        return [SpecProblem(path, f"every: {value} is not available for {cls.name}: {reason}")]
    return []


def every(spec: Any) -> int:
    """The ``every: K`` of a ``weighting:`` value (1 when absent): the train step computes the task
    gradients and new weights on steps ``0, K, 2K, ...`` only."""
    _, params, _ = _split(spec)
    value = (params or {}).get(EVERY, 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def get(spec: Any) -> Strategy:
    """Build a strategy from a recipe value: ``"pcgrad"``, ``{"cagrad": {"c": 0.5}}`` or an instance."""
    if isinstance(spec, Strategy):
        return spec
    problems = check(spec)
    if problems:
        raise ValueError("; ".join((".".join(p.path) + ": " if p.path else "") + p.message for p in problems))
    name, params, _ = _split(spec)
    return REGISTRY[name](**{k: v for k, v in params.items() if k != EVERY})


def spec_name(spec: Any) -> str:
    name, _, _ = _split(spec)
    return name or "?"


def label(spec: Any) -> str:
    """A strategy spec for display: ``pcgrad``, ``cagrad(c=0.4)``."""
    name, params, _ = _split(spec)
    inner = ", ".join(f"{k}={v}" for k, v in (params or {}).items()) if isinstance(params, dict) else ""
    return f"{name}({inner})" if inner else str(name or spec)

#: The field a strategy with ``needs_primary`` keeps the primary task's index in.
PRIMARY = "primary"


def with_primary(spec: Any, index: int) -> Any:
    """A ``weighting:`` value with ``primary: index`` added when its strategy ``needs_primary`` (PCD),
    unchanged otherwise: what the model spec holds, so the saved model rebuilds the same strategy."""
    name, params, problems = _split(spec)
    if problems or name not in REGISTRY or not REGISTRY[name].needs_primary:
        return spec
    return {name: {**params, PRIMARY: int(index)}}
