"""Krum and TrimmedMean: TorchJD 0.18 values, hand-checkable cases, the robustness the papers state,
and the task-count checks (at aggregation and in the recipe, before training)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mtlcli import recipe as R
from mtlcli.errors import RecipeError
from mtlcli.weighting import aggregate, eager, get, registry

from . import _asserts, _inputs
from ._torchjd_values_h1 import KRUM, TRIMMED_MEAN

CASES = dict(_inputs.ALL)
#: Krum's scores tie here (f = 2 of 5 rows: each row's score is its nearest distance, and rows 3 and 4
#: are each other's nearest): tf.math.top_k selects row 3, torch.topk row 4 (see the docstring)
KRUM_TIES = {"normal_5x12@2,1": (3, 4)}


def _weights(spec, J: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    T = J.shape[0]
    _, result = eager.run(get(spec), tf.constant(J), tf.ones([T], tf.float64), {}, {}, eager.make_context(T))
    return result.weights.numpy()


def _krum(key: str) -> tuple[dict, np.ndarray]:
    name, params = key.split("@")
    f, k = (int(v) for v in params.split(","))
    return {"krum": {"n_byzantine": f, "n_selected": k}}, CASES[name]


# --- Krum --------------------------------------------------------------------------------------------
def test_krum_matches_torchjd():
    for key, expected in KRUM.items():
        spec, J = _krum(key)
        d = aggregate(spec, J)
        if key in KRUM_TIES:
            # torch picked the other tied row; ours is the lower index of the tie
            np.testing.assert_array_equal(expected, J[KRUM_TIES[key][1]])
            np.testing.assert_array_equal(d, J[KRUM_TIES[key][0]])
            continue
        _asserts.assert_close_scaled(d, np.array(expected), J, rtol=1e-14)


def test_krum_hand_checkable():
    # rows 0..2 close together, row 3 far: f = 1 -> each score is the sum of the 2 nearest distances
    # (row 0: 1 + 1 = 2; row 1: 1 + 2 = 3; row 2: 1 + 2 = 3; row 3: >= 98), so Krum selects row 0
    J = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    spec = {"krum": {"n_byzantine": 1}}
    np.testing.assert_array_equal(aggregate(spec, J), [0.0, 0.0])
    np.testing.assert_array_equal(_weights(spec, J), [1.0, 0.0, 0.0, 0.0])
    # Multi-Krum with n_selected = 3: the mean of the three lowest scores, the outlier left out
    spec = {"krum": {"n_byzantine": 1, "n_selected": 3}}
    np.testing.assert_allclose(aggregate(spec, J), [1 / 3, 1 / 3], rtol=1e-15)
    np.testing.assert_allclose(_weights(spec, J), [1 / 3, 1 / 3, 1 / 3, 0.0], rtol=1e-15)


@pytest.mark.parametrize("name", ["normal_5x12", "conflicting_4x9", "tall_6x3"])
def test_krum_ignores_one_outlier_row(name):
    # the paper's guarantee: a single arbitrary row (n_byzantine = 1) is never what Krum selects alone
    J = CASES[name].copy()
    for outlier in (1e3, -1e6):
        K = J.copy()
        K[0] = outlier * np.ones(J.shape[1])
        for k in range(1, J.shape[0] - 1):
            w = _weights({"krum": {"n_byzantine": 1, "n_selected": k}}, K)
            assert w[0] == 0, (outlier, k, w)
            np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-15)


@pytest.mark.parametrize("name", ["normal_3x10", "conflicting_4x9", "tall_6x3", "mixed_norms_3x5"])
def test_krum_permutation_equivariant(name):
    J = CASES[name]
    fn = lambda M: aggregate({"krum": {"n_selected": 2}}, M)  # noqa: E731
    _asserts.assert_permutation_equivariant(fn, J, rtol=1e-14)


def test_krum_graph_float32_matches_eager():
    _asserts.assert_graph_matches_eager({"krum": {"n_byzantine": 1, "n_selected": 2}}, CASES["normal_5x12"])


# --- TrimmedMean -------------------------------------------------------------------------------------
def test_trimmed_mean_matches_torchjd():
    for key, expected in TRIMMED_MEAN.items():
        name, trim = key.split("@")
        J = CASES[name]
        d = aggregate({"trimmed_mean": {"trim_number": int(trim)}}, J)
        _asserts.assert_close_scaled(d, np.array(expected), J, rtol=1e-14)


def test_trimmed_mean_hand_checkable():
    # column 0: sorted 1, 2, 3, 100 -> trim 1 -> mean(2, 3) = 2.5; column 1: -5, 0, 1, 2 -> 0.5
    J = np.array([[100.0, 0.0], [1.0, -5.0], [3.0, 2.0], [2.0, 1.0]])
    np.testing.assert_allclose(aggregate("trimmed_mean", J), [2.5, 0.5], rtol=1e-15)
    # trim_number 0 is the mean of the rows
    np.testing.assert_allclose(aggregate({"trimmed_mean": {"trim_number": 0}}, J), J.mean(axis=0), rtol=1e-15)
    # weights report (d . g_i) / ||g_i||^2 (not a weighting)
    d = np.array([2.5, 0.5])
    np.testing.assert_allclose(_weights("trimmed_mean", J), (J @ d) / (J * J).sum(axis=1), rtol=1e-14)


@pytest.mark.parametrize(
    "name", ["normal_3x10", "normal_5x12", "tall_6x3", "mixed_norms_3x5", "zero_row_3x5"]
)
def test_trimmed_mean_maximally_trimmed_is_the_coordinatewise_median(name):
    J = CASES[name]
    trim = (J.shape[0] - 1) // 2
    d = aggregate({"trimmed_mean": {"trim_number": trim}}, J)
    if J.shape[0] % 2:
        np.testing.assert_array_equal(d, np.median(J, axis=0))
    else:  # an even count keeps the two middle values: their mean is numpy's median too
        np.testing.assert_allclose(d, np.median(J, axis=0), rtol=1e-15)


@pytest.mark.parametrize("name", ["normal_3x10", "conflicting_4x9", "tall_6x3"])
def test_trimmed_mean_permutation_invariant_and_robust(name):
    J = CASES[name]
    _asserts.assert_permutation_equivariant(lambda M: aggregate("trimmed_mean", M), J, rtol=1e-14)
    # one row moved arbitrarily far moves d by at most the spread of the other rows (coordinate-wise)
    K = J.copy()
    K[0] = 1e9
    d = aggregate("trimmed_mean", K)
    assert np.all(d <= J[1:].max(axis=0) + 1e-12) and np.all(d >= J[1:].min(axis=0) - 1e-12)


def test_trimmed_mean_graph_float32_matches_eager():
    _asserts.assert_graph_matches_eager({"trimmed_mean": {"trim_number": 2}}, CASES["normal_5x12"])


# --- parameters and task counts ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"krum": {"n_byzantine": -1}}, "`n_byzantine` must be an integer >= 0, received -1"),
        ({"krum": {"n_selected": 0}}, "`n_selected` must be an integer >= 1, received 0"),
        ({"trimmed_mean": {"trim_number": -2}}, "`trim_number` must be an integer >= 0, received -2"),
    ],
)
def test_bad_values_are_refused_with_the_value(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get(spec)
    assert [p.message for p in registry.check(spec)] == [message]


@pytest.mark.parametrize(
    ("spec", "rows", "path", "message"),
    [
        ({"krum": {"n_byzantine": 1}}, 3, "n_byzantine", "krum needs at least n_byzantine + 3 = 4 tasks"),
        (
            "krum",
            2,
            "n_byzantine",
            "krum needs at least n_byzantine + 3 = 3 tasks (n_byzantine = 0), received 2",
        ),
        ({"krum": {"n_selected": 5}}, 4, "n_selected", "n_selected = 5 tasks: expected at least that many"),
        (
            "trimmed_mean",
            2,
            "trim_number",
            "needs at least 2·trim_number + 1 = 3 tasks (trim_number = 1), received 2",
        ),
        ({"trimmed_mean": {"trim_number": 2}}, 4, "trim_number", "2·trim_number + 1 = 5 tasks"),
    ],
)
def test_too_few_tasks_are_refused_with_expected_and_received(spec, rows, path, message):
    J = CASES["normal_5x12"][:rows]
    with pytest.raises(ValueError, match=re.escape(message)):
        aggregate(spec, J)
    (problem,) = registry.check(spec, num_tasks=rows)
    assert problem.path == (registry.spec_name(spec), path)
    assert message in problem.message
    assert registry.check(spec) == []  # without a task count, nothing to refuse
    assert registry.check(spec, num_tasks=7) == []


def test_recipe_with_too_few_tasks_is_refused_at_the_parameter_line(tiny_project):
    # the tiny recipe has three tasks (kind, flag, value): krum with n_byzantine 1 needs four
    text = tiny_project.read_text().replace("weighting: static", "weighting: {krum: {n_byzantine: 1}}")
    with pytest.raises(RecipeError) as info:
        R.loads(text, file="r.yaml", base_dir=tiny_project.parent)
    line = text.splitlines().index("  weighting: {krum: {n_byzantine: 1}}") + 1
    assert f"r.yaml:{line}" in str(info.value)
    assert "train.weighting.krum.n_byzantine" in str(info.value)
    assert "krum needs at least n_byzantine + 3 = 4 tasks (n_byzantine = 1), received 3" in str(info.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "{trimmed_mean: {trim_number: 2}}",
            "train.weighting.trimmed_mean.trim_number: trimmed_mean needs at least 2·trim_number + 1 = 5 "
            "tasks (trim_number = 2), received 3",
        ),
        ("{krum: {n_selected: 0}}", "train.weighting.krum: `n_selected` must be an integer >= 1, received 0"),
        (
            "{krum: {n_byzantine: one}}",
            "train.weighting.krum.n_byzantine: expected an integer, received 'one'",
        ),
    ],
)
def test_validate_exits_2_with_the_file_line_and_one_message(cli, tiny_project, spec, message):
    tiny_project.write_text(tiny_project.read_text().replace("weighting: static", f"weighting: {spec}"))
    result = cli("validate", tiny_project)
    assert result.exit_code == 2
    line = tiny_project.read_text().splitlines().index(f"  weighting: {spec}") + 1
    assert f"recipe.yaml:{line} {message}" in " ".join(result.output.split())
    assert "Traceback" not in result.output
