"""Name -> strategy class registry, and parsing of the recipe's ``weighting:`` value (no TensorFlow)."""

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
    out = []
    for key, value in params.items():
        if key not in fields:
            known = sorted(fields)
            hint = did_you_mean(key, known) or (
                f"; {name} takes {', '.join(known)}" if known else f"; {name} takes no parameters"
            )
            out.append(SpecProblem((name, str(key)), f"unknown parameter {key!r}{hint}"))
        elif not _type_ok(value, hints[key]):
            out.append(SpecProblem((name, str(key)), f"expected {_describe(hints[key])}, received {value!r}"))
    if not out:
        try:
            cls(**params)
        except (ValueError, TypeError) as exc:
            out.append(SpecProblem((name,), str(exc)))
    return out


def get(spec: Any) -> Strategy:
    """Build a strategy from a recipe value: ``"pcgrad"``, ``{"cagrad": {"c": 0.5}}`` or an instance."""
    if isinstance(spec, Strategy):
        return spec
    problems = check(spec)
    if problems:
        raise ValueError("; ".join((".".join(p.path) + ": " if p.path else "") + p.message for p in problems))
    name, params, _ = _split(spec)
    return REGISTRY[name](**params)


def spec_name(spec: Any) -> str:
    name, _, _ = _split(spec)
    return name or "?"


def label(spec: Any) -> str:
    """A strategy spec for display: ``pcgrad``, ``cagrad(c=0.4)``."""
    name, params, _ = _split(spec)
    inner = ", ".join(f"{k}={v}" for k, v in (params or {}).items()) if isinstance(params, dict) else ""
    return f"{name}({inner})" if inner else str(name or spec)
