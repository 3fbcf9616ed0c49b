"""Property asserts shared by every strategy test (TorchJD ``_asserts.py`` style).

Functions taking ``fn`` expect ``fn(J: np.ndarray) -> np.ndarray`` returning the direction ``d``
(float64), e.g. ``lambda J: aggregate("pcgrad", J)``.  Tolerances are relative to the scale of ``J``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mtlcli.weighting import eager, get

Fn = Callable[[np.ndarray], np.ndarray]

PERMUTATIONS_SEED = 12345


def assert_expected_structure(d: np.ndarray, J: np.ndarray) -> None:
    """``d`` is a finite float vector of shape ``(P,)``."""
    d = np.asarray(d)
    assert d.shape == (J.shape[1],), f"expected shape {(J.shape[1],)}, got {d.shape}"
    assert np.all(np.isfinite(d)), f"non-finite output {d}"


def _scale(J: np.ndarray) -> float:
    return float(np.max(np.abs(J))) if J.size else 0.0


def assert_close_scaled(actual: np.ndarray, expected: np.ndarray, J: np.ndarray, rtol: float = 1e-9) -> None:
    """``actual == expected`` up to ``rtol`` times the largest entry of ``J`` (and of ``expected``)."""
    scale = max(_scale(J), float(np.max(np.abs(expected))) if np.size(expected) else 0.0, 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def _permutations(m: int, n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(PERMUTATIONS_SEED)
    perms = [np.arange(m)[::-1].copy()]
    perms += [rng.permutation(m) for _ in range(n - 1)]
    return perms


def assert_permutation_equivariant(fn: Fn, J: np.ndarray, rtol: float = 1e-7) -> None:
    """Permuting the rows (tasks) of ``J`` leaves ``d`` unchanged."""
    d = fn(J)
    for perm in _permutations(J.shape[0]):
        assert_close_scaled(fn(J[perm]), d, J, rtol)


def assert_weights_permutation_equivariant(weights_fn: Fn, J: np.ndarray, rtol: float = 1e-7) -> None:
    """``weights_fn(J[perm]) == weights_fn(J)[perm]`` (weights follow their task)."""
    w = np.asarray(weights_fn(J))
    for perm in _permutations(J.shape[0]):
        np.testing.assert_allclose(
            weights_fn(J[perm]), w[perm], rtol=0, atol=rtol * max(1.0, np.max(np.abs(w)))
        )


def assert_non_conflicting(d: np.ndarray, J: np.ndarray, tol: float = 1e-9, atol: float = 1e-10) -> None:
    """``g_i . d >= -tol ||g_i|| ||d|| - atol max_j ||g_j||^2`` for every task (no loss increases).

    ``tol`` bounds the cosine; ``atol`` (relative to the largest squared row norm) absorbs round-off when
    ``d`` is (nearly) zero.
    """
    products = J @ d
    norms = np.linalg.norm(J, axis=1)
    bound = -tol * norms * np.linalg.norm(d) - atol * float(np.max(norms, initial=0.0)) ** 2 - 1e-300
    assert np.all(products >= bound), f"conflicting direction: J @ d = {products}"


def assert_linear_under_scaling(
    fn: Fn, J: np.ndarray, scales: tuple[float, ...] = (1e-3, 0.5, 7.0), rtol: float = 1e-7
) -> None:
    """``fn(c J) == c fn(J)`` for positive ``c``."""
    d = fn(J)
    for c in scales:
        assert_close_scaled(fn(c * J), c * d, c * J, rtol)


def assert_finite_on(fn: Fn, J: np.ndarray) -> np.ndarray:
    """Runs ``fn`` and checks the structure; returns ``d`` for further checks."""
    d = fn(J)
    assert_expected_structure(d, J)
    return d


def _to_numpy_state(state: dict) -> dict:
    return {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in state.items()}


def assert_state_round_trip(spec: Any, J: np.ndarray, steps: int = 3, **kwargs: Any) -> list[dict]:
    """Feeding the state of call ``k`` into call ``k+1`` equals a fresh call given that same state.

    Also checks the returned state has exactly the keys/shapes of ``state_spec`` and is finite.
    Returns the list of states (for strategy-specific checks).
    """
    strategy = get(spec)
    spec_shapes = {k: tuple(shape) for k, (shape, _) in strategy.state_spec(J.shape[0]).items()}
    state = None
    states = []
    for step in range(steps):
        d, new_state = eager.aggregate(strategy, J, state=state, step=step, return_state=True, **kwargs)
        assert set(new_state) == set(spec_shapes), f"state keys {sorted(new_state)} != {sorted(spec_shapes)}"
        for key, value in new_state.items():
            assert value.shape == spec_shapes[key], f"state {key!r} shape {value.shape} != {spec_shapes[key]}"
            assert np.all(np.isfinite(value)), f"state {key!r} not finite: {value}"
        # a fresh call from a copy of the same input state must reproduce both outputs exactly
        copied = None if state is None else {k: np.array(v, copy=True) for k, v in state.items()}
        d2, new_state2 = eager.aggregate(strategy, J, state=copied, step=step, return_state=True, **kwargs)
        np.testing.assert_array_equal(d, d2)
        for key in new_state:
            np.testing.assert_array_equal(new_state[key], new_state2[key])
        states.append(new_state)
        state = new_state
    return states


def assert_graph_matches_eager(
    spec: Any,
    J: np.ndarray,
    losses: np.ndarray | None = None,
    *,
    step: int = 0,
    seed: int = 0,
    rtol: float = 1e-4,
    state: dict | None = None,
) -> None:
    """``tf.function`` (float32, traced) gives the same ``d``, weights and state as eager float32."""
    import tensorflow as tf

    strategy = get(spec)
    T = J.shape[0]
    losses = np.ones(T) if losses is None else losses
    J32 = tf.constant(J, tf.float32)
    L32 = tf.constant(losses, tf.float32)
    params = eager.initial_params(strategy, T, tf.float32)
    base_state = eager.initial_state(strategy, T, tf.float32)
    if state is not None:
        base_state = {k: tf.constant(np.asarray(state[k]), tf.float32) for k in base_state}
    ctx = eager.make_context(T, seed=seed, step=step, dtype=tf.float32)

    def call(J_, L_, params_, state_, ctx_):
        d, result = eager.run(strategy, J_, L_, params_, state_, ctx_)
        return d, result.weights, result.state

    d_e, w_e, s_e = call(J32, L32, params, base_state, ctx)
    # autograph=False: strategies must not rely on Python control flow over tensors (brief), and it avoids
    # converting (and caching) the whole call tree
    d_g, w_g, s_g = tf.function(call, autograph=False)(J32, L32, params, base_state, ctx)
    assert d_g.dtype == tf.float32, f"graph output dtype {d_g.dtype}"
    scale = max(_scale(J), float(np.max(np.abs(d_e.numpy()))), 1e-30)
    np.testing.assert_allclose(d_g.numpy(), d_e.numpy(), rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(w_g.numpy(), w_e.numpy(), rtol=rtol, atol=rtol)
    for key in s_e:
        np.testing.assert_allclose(_to_numpy_state(s_g)[key], _to_numpy_state(s_e)[key], rtol=rtol, atol=rtol)
