"""Name -> strategy class registry, and parsing of the recipe's ``weighting:`` value (no TensorFlow).

Besides a strategy's own parameters, a ``weighting:`` value may carry the train step's schedule key
``every: K`` (:data:`EVERY`): the per-task gradients and new weights only on every K-th step, the steps
between train on ``sum_i w_i L_i`` with the last weights.  It is not a field of the strategy:
:func:`get` leaves it out, :func:`every` reads it, :func:`check` refuses it (with the reason) for the
strategies it cannot apply to (:func:`every_refusal`).

A wrapper strategy (CR-MOGM) names the field that holds the spec of the strategy it wraps in its class
attribute ``wraps`` (``{cr_mogm: {base: {mgda: {normalization: l2}}, alpha: 0.9}}``).  :func:`check`
checks that spec as a ``weighting:`` value of its own, reporting its problems under the field's path
(``cr_mogm.base.mgda.normalization``), and refuses a base that is not a gradient-based weighting
(:func:`wrap_refusal`); :func:`display_name` and :func:`label` show it (``cr_mogm(upgrad)``).
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


def wrapped_field(cls: type[Strategy]) -> str | None:
    """The field of a wrapper strategy that holds the wrapped strategy's spec (``base``), else None."""
    return getattr(cls, "wraps", None)


def wrap_refusal(wrapper: str, cls: type[Strategy]) -> str | None:
    """Why a strategy class cannot be wrapped by ``wrapper`` (which smooths or reuses the task weights it
    computes from this step's gradients), or None when it can: it must be gradient-based, a weighting
    (``direction == weights @ J``) and read one mini-batch's gradients."""
    if cls.needs != "gradients":
        return (
            f"{wrapper} smooths the task weights a gradient-based weighting computes from the task gradients; "
            f"{cls.name} is loss-based (it never sees the gradients)"
        )
    if not cls.weighting:
        return (
            f"{wrapper} smooths task weights, and {cls.name} is not a weighting: its direction is not a "
            f"weighted sum of the task gradients"
        )
    if getattr(cls, "needs_primary", False):
        return (
            f"{cls.name} takes its primary task from train.primary, which only a top-level strategy receives"
        )
    if getattr(cls, "batches", 1) != 1:
        return f"{cls.name} reads the gradients of {cls.batches} mini-batches; {wrapper} wraps one-batch weightings"
    return None


def step_cost(cls: type[Strategy]) -> str:
    """What one training step costs with a strategy, in backward passes (``T``: the number of tasks):
    what ``mtl strategies`` shows in its cost column (measured ratios: docs/performance.md)."""
    if cls.needs_validation:
        return "3 backward + 2 forward (virtual step, validation gradient, finite difference) + a validation batch"
    if cls.needs == "losses":
        return (
            "1 backward + 1 forward (losses after the step)" if cls.needs_losses_after_step else "1 backward"
        )
    names = {f.name for f in dataclasses.fields(cls)}
    if cls.batches == 2:
        cost = "T backward on each half-batch (about T on the whole batch)"
    else:
        cost = "T backward" + (" (1 with on: representation)" if "on" in names else "")
    if every_refusal(cls) is None:
        cost += "; every: K: 1 on the steps between"
    return cost


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


def check(spec: Any, num_tasks: int | None = None) -> list[SpecProblem]:
    """Every problem in a ``weighting:`` value, without constructing anything heavy; given the recipe's
    ``num_tasks``, also the parameters that cannot run with that many tasks
    (:meth:`~mtlcli.weighting.base.Strategy.task_count_problem`, placed at the parameter)."""
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
    wrapped = wrapped_field(cls)
    base = _wrapped_spec(name, params)
    if wrapped is not None:
        out.extend(_check_wrapped(cls, wrapped, base, num_tasks))
    if EVERY in params:
        out.extend(_check_every(cls, params.pop(EVERY), base))
    for key, value in params.items():
        if key == wrapped:
            continue
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
            strategy = cls(**params)
        except (ValueError, TypeError) as exc:
            out.append(SpecProblem((name,), str(exc)))
        else:
            problem = None if num_tasks is None else strategy.task_count_problem(num_tasks)
            if problem is not None:
                out.append(SpecProblem((name, problem[0]), problem[1]))
    return out


def _check_wrapped(
    cls: type[Strategy], field: str, spec: Any, num_tasks: int | None = None
) -> list[SpecProblem]:
    """The problems of a wrapper's ``field`` (``base``): those of the spec itself under its path, then
    whether ``cls`` can wrap that strategy, and no ``every`` inside it (the schedule is the wrapper's)."""
    path = (cls.name, field)
    if isinstance(spec, Strategy):
        reason = wrap_refusal(cls.name, type(spec))
        return [] if reason is None else [SpecProblem(path, f"{spec.name} cannot be the {field}: {reason}")]
    name = _split(spec)[0]
    if name is not None and name not in REGISTRY:  # did you mean, among the strategies it can wrap
        can = [n for n in available() if wrap_refusal(cls.name, REGISTRY[n]) is None]
        return [
            SpecProblem(
                path,
                f"unknown strategy {name!r}{did_you_mean(name, can)} ({cls.name} can wrap: {', '.join(can)})",
            )
        ]
    inner = check(spec, num_tasks)
    if inner:
        return [SpecProblem(path + p.path, p.message) for p in inner]
    name, params, _ = _split(spec)
    reason = wrap_refusal(cls.name, REGISTRY[name])
    if reason is not None:
        return [SpecProblem(path, f"{name} cannot be the {field}: {reason}")]
    if EVERY in params:
        return [
            SpecProblem(
                path + (name, EVERY),
                f"put every on {cls.name}, which schedules the whole step: {{{cls.name}: {{{field}: {name}, "
                f"every: {params[EVERY]}}}}}",
            )
        ]
    return []


def _check_every(cls: type[Strategy], value: Any, wrapped: Any = None) -> list[SpecProblem]:
    path = (cls.name, EVERY)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return [
            SpecProblem(path, f"expected an integer >= 1 (steps between weight updates), received {value!r}")
        ]
    reason = every_refusal(cls)
    if reason is None and wrapped is not None:  # a wrapper reuses its base's weights: the base's reason
        base = type(wrapped) if isinstance(wrapped, Strategy) else REGISTRY.get(_split(wrapped)[0] or "")
        reason = None if base is None else every_refusal(base)
    if value > 1 and reason is not None:
        return [
            SpecProblem(
                path, f"every: {value} is not available for {label_name(cls.name, wrapped)}: {reason}"
            )
        ]
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


def _wrapped_spec(name: str | None, params: Any) -> Any:
    """The spec a wrapper strategy ``name`` wraps (its field's value or default), else None."""
    cls = REGISTRY.get(name or "")
    field = None if cls is None else wrapped_field(cls)
    if field is None:
        return None
    if isinstance(params, dict) and field in params:
        return params[field]
    return {f.name: f.default for f in dataclasses.fields(cls)}.get(field)


def label_name(name: str | None, wrapped: Any) -> str:
    """``cr_mogm(upgrad)`` for a wrapper, else the name."""
    if wrapped is None:
        return str(name)
    return f"{name}({display_name(wrapped)})"


def spec_name(spec: Any) -> str:
    """The registry name of a spec's strategy: ``pcgrad`` for ``{pcgrad: {...}}``, ``cr_mogm`` for a
    wrapper (``?`` for a malformed spec)."""
    if isinstance(spec, Strategy):
        return spec.name
    name, _, _ = _split(spec)
    return name or "?"


def display_name(spec: Any) -> str:
    """:func:`spec_name`, a wrapper's with its base's in brackets (``cr_mogm(upgrad)``,
    ``cr_mogm(cr_mogm(mgda))``): what listings name a run's strategy by."""
    if isinstance(spec, Strategy):
        return label_name(spec.name, getattr(spec, wrapped_field(type(spec)) or "", None))
    name, params, _ = _split(spec)
    if name is None:
        return "?"
    return label_name(name, _wrapped_spec(name, params))


def label(spec: Any) -> str:
    """A strategy spec for display: ``pcgrad``, ``cagrad(c=0.4)``, ``cr_mogm(base=mgda(normalization=l2),
    alpha=0.5)``."""
    name, params, _ = _split(spec)
    if not isinstance(params, dict):
        return str(name or spec)
    field = wrapped_field(REGISTRY[name]) if name in REGISTRY else None
    inner = ", ".join(f"{k}={label(v) if k == field else v}" for k, v in params.items())
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
