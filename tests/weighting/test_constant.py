"""Constant: TorchJD 0.18 values, linearity in ``J``, the recipe's weights as the default, and the
length check (at aggregation and in the recipe, before training)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mtlcli import recipe as R
from mtlcli.errors import RecipeError
from mtlcli.weighting import aggregate, eager, get, registry

from . import _asserts, _inputs
from ._torchjd_values_h1 import CONSTANT

CASES = dict(_inputs.ALL)


def test_matches_torchjd():
    for name, case in CONSTANT.items():
        J = CASES[name]
        d = aggregate({"constant": {"weights": case["weights"]}}, J)
        _asserts.assert_close_scaled(d, np.array(case["d"]), J, rtol=1e-14)


def test_hand_checkable():
    J = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]])
    np.testing.assert_array_equal(aggregate({"constant": {"weights": [2, -1, 0.5]}}, J), [-1.0, 7.0])
    # without weights: the recipe's task weights, raw (static would normalise them to [0.5, 0.25, 0.25])
    np.testing.assert_array_equal(aggregate("constant", J, task_weights=[2.0, 1.0, 1.0]), [5.0, 7.0])
    np.testing.assert_array_equal(aggregate("constant", J), J.sum(axis=0))


def test_reported_weights_are_the_given_ones():
    import tensorflow as tf

    J = CASES["normal_3x10"]
    ctx = eager.make_context(3, task_weights=[3.0, 1.0, 0.0])
    for spec, expected in [
        ({"constant": {"weights": [0.2, 0.3, 0.5]}}, [0.2, 0.3, 0.5]),
        ("constant", [3, 1, 0]),
    ]:
        _, result = eager.run(get(spec), tf.constant(J), tf.ones([3], tf.float64), {}, {}, ctx)
        np.testing.assert_allclose(result.weights.numpy(), expected, rtol=1e-15)


@pytest.mark.parametrize("name", ["normal_3x10", "conflicting_4x9", "tall_6x3", "mixed_norms_3x5"])
def test_linear_in_J(name):
    J = CASES[name]
    other = np.random.default_rng(5).standard_normal(J.shape)
    spec = {"constant": {"weights": list(np.linspace(-1.0, 2.0, J.shape[0]))}}
    fn = lambda M: aggregate(spec, M)  # noqa: E731
    _asserts.assert_close_scaled(fn(J + other), fn(J) + fn(other), J + other, rtol=1e-13)
    _asserts.assert_close_scaled(fn(-2.5 * J), -2.5 * fn(J), J, rtol=1e-14)
    _asserts.assert_linear_under_scaling(fn, J, rtol=1e-14)


def test_permuting_tasks_and_weights_together_changes_nothing():
    J = CASES["normal_5x12"]
    weights = np.array([0.1, 2.0, -0.3, 1.0, 0.5])
    d = aggregate({"constant": {"weights": weights.tolist()}}, J)
    for perm in ([4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        _asserts.assert_close_scaled(
            aggregate({"constant": {"weights": weights[perm].tolist()}}, J[perm]), d, J
        )


def test_graph_float32_matches_eager():
    _asserts.assert_graph_matches_eager({"constant": {"weights": [1.0, -0.5, 2.0]}}, CASES["normal_3x10"])
    _asserts.assert_graph_matches_eager("constant", CASES["normal_3x10"])


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([], "`weights` must be a non-empty list of finite numbers (one per task), received []"),
        (
            [1.0, float("nan")],
            "`weights` must be a non-empty list of finite numbers (one per task), received [1.0, nan]",
        ),
        ([True, 1.0], "expected a list or null, received [True, 1.0]"),  # the recipe's type check
    ],
)
def test_bad_weights_are_refused_with_the_value(weights, message):
    spec = {"constant": {"weights": weights}}
    with pytest.raises(ValueError, match=re.escape(message)):
        get(spec)
    assert [p.message for p in registry.check(spec)] == [message]


def test_wrong_length_is_refused_with_expected_and_received():
    spec = {"constant": {"weights": [1.0, 2.0]}}
    message = "constant.weights needs one weight per task: expected 3 weights, received 2 ([1.0, 2.0])"
    with pytest.raises(ValueError, match=re.escape(message)):
        aggregate(spec, CASES["normal_3x10"])
    assert registry.check(spec, num_tasks=3) == [registry.SpecProblem(("constant", "weights"), message)]
    assert registry.check(spec, num_tasks=2) == []


def test_recipe_with_wrong_length_is_refused_at_the_weights_line(tiny_project):
    text = tiny_project.read_text().replace(
        "weighting: static", "weighting:\n    constant:\n      weights: [1, 2]"
    )
    with pytest.raises(RecipeError) as info:
        R.loads(text, file="r.yaml", base_dir=tiny_project.parent)
    line = text.splitlines().index("      weights: [1, 2]") + 1
    assert f"r.yaml:{line}" in str(info.value)
    assert "expected 3 weights, received 2" in str(info.value)
    # the right length loads
    R.loads(text.replace("[1, 2]", "[1, 2, 0.5]"), file="r.yaml", base_dir=tiny_project.parent)


def test_recipe_with_a_bad_value_gives_one_clean_message(tiny_project):
    text = tiny_project.read_text().replace(
        "weighting: static", "weighting: {constant: {weights: [1, .nan, 2]}}"
    )
    with pytest.raises(RecipeError) as info:
        R.loads(text, file="r.yaml", base_dir=tiny_project.parent)
    assert "r.yaml:" in str(info.value) and "Traceback" not in str(info.value)


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_other_per_task_lists_are_checked_when_the_recipe_loads(name, tiny_project):
    # the same check covers upgrad / dualproj's pref_vector (three tasks, two entries)
    text = tiny_project.read_text().replace(
        "weighting: static", f"weighting: {{{name}: {{pref_vector: [1, 2]}}}}"
    )
    with pytest.raises(RecipeError) as info:
        R.loads(text, file="r.yaml", base_dir=tiny_project.parent)
    assert (
        f"train.weighting.{name}.pref_vector: {name}.pref_vector needs one preference per task: expected 3 "
        in (str(info.value))
    )
