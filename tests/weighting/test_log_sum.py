"""``log_sum``: the scale-invariant objective ``sum_i log L_i``, weights ``1 / L_i``.

Golden values: LibMTL has no ``log_sum`` weighting; its STCH trains with exactly this objective during
warm-up, so the warm-up steps of ``_libmtl_values.py`` (LibMTL's ``dC/dL_i``) are the reference
(float64, 1e-10 relative: closed form).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import aggregate, check, eager, get

from ._libmtl_values import VALUES


def _update(losses):
    strategy = get("log_sum")
    ctx = eager.make_context(len(losses))
    return strategy.update(tf.constant(losses, tf.float64), None, {}, {}, ctx)


@pytest.mark.parametrize("key", sorted(VALUES["stch"]))
def test_matches_libmtl_stch_warm_up(key: str) -> None:
    for step in VALUES["stch"][key]["steps"]:
        if step["epoch"] <= 1:  # warmup_epoch: 1
            grads = _update(step["losses"]).loss_grads.numpy()
            np.testing.assert_allclose(grads, step["loss_grads"], rtol=1e-10)


def test_hand_values() -> None:
    result = _update([1.0, 2.0, 4.0])
    np.testing.assert_allclose(result.loss.numpy(), np.log(8.0), rtol=1e-14)
    np.testing.assert_allclose(result.weights.numpy(), [1.0, 0.5, 0.25], rtol=1e-14)
    np.testing.assert_allclose(result.loss_grads.numpy(), [1.0, 0.5, 0.25], rtol=1e-14)


def test_invariant_to_scaling_one_task_loss() -> None:
    # L_k -> c L_k scales g_k by c: the shared gradient sum_i g_i / L_i does not change
    J = np.random.default_rng(3).standard_normal((3, 5))
    losses = np.array([0.7, 1.9, 0.4])
    d = aggregate("log_sum", J, losses=losses)
    for c in (1e-3, 7.0, 1e4):
        scale = np.array([1.0, c, 1.0])
        np.testing.assert_allclose(
            aggregate("log_sum", J * scale[:, None], losses=losses * scale), d, rtol=1e-12
        )


def test_permutation_equivariant_and_zero_loss_finite() -> None:
    losses = np.array([0.7, 1.9, 0.4])
    perm = [2, 0, 1]
    np.testing.assert_allclose(_update(losses[perm]).weights.numpy(), _update(losses).weights.numpy()[perm])
    assert np.all(np.isfinite(_update([0.0, 1.0]).weights.numpy()))


def test_float32_in_tf_function() -> None:
    strategy = get("log_sum")
    ctx = eager.make_context(2, dtype=tf.float32)
    result = tf.function(lambda x: strategy.update(x, None, {}, {}, ctx), autograph=False)(
        tf.constant([0.5, 4.0], tf.float32)
    )
    assert result.loss.dtype == tf.float32
    np.testing.assert_allclose(result.loss_grads.numpy(), [2.0, 0.25], rtol=1e-6)


def test_recipe_checks() -> None:
    assert check("log_sum") == []
    [problem] = check({"log_sum": {"eps": 1e-8}})
    assert problem.message == "unknown parameter 'eps'; log_sum takes no parameters"
    cls = type(get("log_sum"))
    assert cls.needs == "losses" and cls.paper and cls.summary
