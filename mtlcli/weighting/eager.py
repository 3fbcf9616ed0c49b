"""``aggregate``: run any strategy on a plain matrix (numpy in, numpy out), the library's public API.

The train step drives strategies with tensors inside ``tf.function``; this module is the other door:
eager, float64, on arrays, for tests, notebooks and comparisons with TorchJD. TensorFlow is imported
on the first call, through :func:`mtlcli.tfutil.import_tf` (as the CLI does): a library user's stderr
gets none of TensorFlow's C++ start-up logs, and importing :mod:`mtlcli.weighting` stays cheap.

>>> import numpy as np
>>> aggregate("sum", np.array([[1.0, 2.0], [3.0, 4.0]]))
array([4., 6.])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtlcli.tfutil import import_tf
from mtlcli.weighting.base import Context, Result, Strategy
from mtlcli.weighting.registry import get


def _check_matrix(J: Any, batches: int = 1) -> np.ndarray:
    """``J`` as float64: ``(T, P)``, or ``(2, T, P)`` for a strategy that reads two batches."""
    try:
        arr = np.asarray(J, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`J` must be a 2-D array of numbers, received {type(J).__name__}: {exc}") from None
    if batches == 2:
        if arr.ndim != 3 or arr.shape[0] != 2:
            raise ValueError(
                "`J` must be 3-D (2, tasks, params): the task gradients of two independent mini-batches, "
                f"received shape {arr.shape}"
            )
    elif arr.ndim != 2:
        raise ValueError(f"`J` must be 2-D (tasks, params), received shape {arr.shape}")
    if arr.shape[-2] < 1 or arr.shape[-1] < 1:
        raise ValueError(f"`J` must have at least one row and one column, received shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("`J` must be finite, received NaN or infinite entries")
    return arr


def _check_vector(name: str, value: Any, num_tasks: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`{name}` must be a 1-D array of numbers: {exc}") from None
    if arr.shape != (num_tasks,):
        raise ValueError(f"`{name}` must have shape ({num_tasks},) to match `J`, received shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite, received {arr.tolist()}")
    return arr


def initial_state(
    strategy: Strategy, num_tasks: int, dtype: Any = "float64", num_params: int | None = None
) -> dict:
    """Fresh state tensors from :meth:`Strategy.state_spec` (what the train step's variables hold), and,
    when ``num_params`` (the columns ``P`` of ``J``) is given, from :meth:`Strategy.sized_state_spec`."""
    tf = import_tf(keras=False)

    spec = dict(strategy.state_spec(num_tasks))
    if num_params is not None:
        spec.update(strategy.sized_state_spec(num_tasks, num_params))
    return {k: tf.fill(shape, tf.constant(v, dtype)) for k, (shape, v) in spec.items()}


def initial_params(strategy: Strategy, num_tasks: int, dtype: Any = "float64") -> dict:
    """Initial learnable-parameter tensors from :meth:`Strategy.param_spec`."""
    tf = import_tf(keras=False)

    return {
        k: tf.fill(shape, tf.constant(v, dtype)) for k, (shape, v) in strategy.param_spec(num_tasks).items()
    }


def make_context(
    num_tasks: int,
    *,
    seed: int = 0,
    step: int = 0,
    epoch: int = 0,
    new_epoch: bool = False,
    task_weights: Any = None,
    dtype: Any = "float64",
) -> Context:
    """A :class:`Context` of tensors; the per-step seed is ``(seed, step)``."""
    tf = import_tf(keras=False)

    tw = np.ones(num_tasks) if task_weights is None else task_weights
    return Context(
        step=tf.constant(step, tf.int64),
        epoch=tf.constant(epoch, tf.int64),
        seed=tf.constant([seed, step], tf.int64),
        task_weights=tf.constant(tw, dtype),
        new_epoch=tf.constant(bool(new_epoch)),
    )


def run(
    strategy: Strategy,
    J: Any,
    losses: Any,
    params: dict,
    state: dict,
    ctx: Context,
) -> tuple[Any, Result]:
    """One :meth:`Strategy.update` on tensors; returns ``(d, result)``, with ``d = weights @ J`` for
    loss-based strategies (their weights are what they report, their objective is not applied here)."""
    from mtlcli.weighting.base import combine_rows

    result = strategy.update(losses, J, params, state, ctx)
    if strategy.needs == "losses":
        return combine_rows(result.weights, J), result
    return result.direction, result


def aggregate(
    spec: Any,
    J: Any,
    *,
    losses: Any = None,
    task_weights: Any = None,
    seed: int = 0,
    step: int = 0,
    epoch: int = 0,
    new_epoch: bool = False,
    state: dict | None = None,
    params: dict | None = None,
    return_state: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Combine the rows of ``J`` (tasks x params) into one direction with a strategy, in float64.

    Args:
        spec: a strategy name (``"upgrad"``), ``{name: {param: value}}`` as in a recipe, or an instance.
        J: ``(T, P)`` array-like of per-task gradients (rows); must be finite with at least one row. For
            a strategy with ``batches == 2`` (MoDo, SDMGrad) ``(2, T, P)``: the task gradients of two
            independent mini-batches.
        losses: ``(T,)`` per-task losses (loss-based strategies, GradNorm, MGDA ``loss`` scaling);
            defaults to ones.
        task_weights: ``(T,)`` recipe task weights (``static``); defaults to ones.
        seed: integer seed; the strategy's randomness comes from ``(seed, step)``.
        step: optimizer step (0 for the first), epoch / new_epoch: as in :class:`Context`.
        state: strategy state (``name -> array``) from a previous call; defaults to the initial state.
        params: learnable strategy parameters (``name -> array``); defaults to their initial values.
        return_state: also return the new state as a dict of numpy arrays.

    Returns:
        ``d`` as a float64 numpy array of shape ``(P,)`` (and the new state when ``return_state``).
        For loss-based strategies ``d = weights @ J`` with the weights :meth:`Strategy.combine` reports.
    """
    tf = import_tf(keras=False)

    strategy = get(spec)
    arr = _check_matrix(J, strategy.batches)
    num_tasks = arr.shape[-2]
    loss_arr = np.ones(num_tasks) if losses is None else _check_vector("losses", losses, num_tasks)
    tw = (
        np.ones(num_tasks) if task_weights is None else _check_vector("task_weights", task_weights, num_tasks)
    )

    full_state = initial_state(strategy, num_tasks, num_params=arr.shape[-1])
    for key, value in (state or {}).items():
        if key not in full_state:
            raise ValueError(f"`state` has unknown key {key!r}; {strategy.name} keeps {sorted(full_state)}")
        full_state[key] = tf.constant(np.asarray(value, np.float64).reshape(full_state[key].shape))
    full_params = initial_params(strategy, num_tasks)
    for key, value in (params or {}).items():
        if key not in full_params:
            raise ValueError(
                f"`params` has unknown key {key!r}; {strategy.name} learns {sorted(full_params)}"
            )
        full_params[key] = tf.constant(np.asarray(value, np.float64).reshape(full_params[key].shape))

    ctx = make_context(num_tasks, seed=seed, step=step, epoch=epoch, new_epoch=new_epoch, task_weights=tw)
    d, result = run(strategy, tf.constant(arr), tf.constant(loss_arr), full_params, full_state, ctx)
    out = np.asarray(d.numpy(), dtype=np.float64)
    if return_state:
        return out, {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in result.state.items()}
    return out
