"""CR-MOGM (TorchJD 0.18 ``CRMOGMWeighting``): any gradient-based weighting's weights, smoothed by an EMA.

Golden values: TorchJD's wrapper around ``UPGradWeighting`` and ``ExcessMTLWeighting`` driven over 3-4
successive matrices (``_torchjd_values_h2.py``), float64, every call's direction and the final weights
to 1e-10 relative.  Properties: ``alpha = 0`` is the base, constant base weights stay constant, the EMA
by hand over mtl's own base, permutation equivariance; the base's state and parameters carried under
``base_``; recipe mistakes at their file:line.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtlcli.weighting import REGISTRY, aggregate, check, eager, get, registry, spec_name
from mtlcli.weighting.cr_mogm import CRMOGM

from ._torchjd_values_h2 import VALUES

SEQUENCES = VALUES["sequences"]
GOLDEN = VALUES["cr_mogm"]
INITIAL = [0.6, 0.3, 0.1]  # the generator's initial_weights


def _drive(spec, steps, state=None, params=None, dtype=tf.float64):
    """``update`` over the matrices ``steps``; returns the directions, the weights and the last result."""
    strategy = get(spec)
    T, P = np.asarray(steps[0]).shape
    state = eager.initial_state(strategy, T, dtype, num_params=P) if state is None else state
    params = eager.initial_params(strategy, T, dtype) if params is None else params
    directions, weights, result = [], [], None
    for k, J in enumerate(steps):
        ctx = eager.make_context(T, step=k, dtype=dtype)
        result = strategy.update(tf.ones([T], dtype), tf.constant(J, dtype), params, state, ctx)
        directions.append(result.direction.numpy())
        weights.append(result.weights.numpy())
        state = result.state
    return directions, weights, result


def _rel(actual, expected) -> float:
    expected = np.asarray(expected)
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def _spec(key: str) -> dict:
    _, base, params = key.split("/")
    values = dict(p.split("=") if "=" in p else (p, None) for p in params.split(","))
    spec = {"base": base, "alpha": float(values["alpha"])}
    if "initial_weights" in values:
        spec["initial_weights"] = INITIAL
    return {"cr_mogm": spec}


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_matches_torchjd_call_after_call(key: str) -> None:
    directions, _, last = _drive(_spec(key), SEQUENCES[key.split("/")[0]])
    assert len(directions) == len(GOLDEN[key]["directions"]) >= 3
    for actual, expected in zip(directions, GOLDEN[key]["directions"], strict=True):
        assert _rel(actual, expected) < 1e-10
    assert _rel(last.state["weights"].numpy(), GOLDEN[key]["weights"]) < 1e-10
    if "base_weights" in GOLDEN[key]:  # the base's own state, carried under base_
        assert _rel(last.state["base_weights"].numpy(), GOLDEN[key]["base_weights"]) < 1e-10


@pytest.mark.parametrize("base", ["upgrad", {"mgda": {"normalization": "l2"}}, "excess_mtl", "gradvac"])
def test_alpha_zero_is_the_base(base) -> None:
    steps = SEQUENCES["mixed_norms_4x5"]
    wrapped, w_wrapped, _ = _drive({"cr_mogm": {"base": base, "alpha": 0.0}}, steps)
    plain, w_plain, _ = _drive(base, steps)
    for a, b, wa, wb in zip(wrapped, plain, w_wrapped, w_plain, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(wa, wb)


def test_the_ema_by_hand_over_mgda_l2() -> None:
    # lambda_1 = w_1 (no initial_weights), lambda_k = 0.6 lambda_{k-1} + 0.4 w_k, d_k = lambda_k @ J_k,
    # with w_k the weights MGDA (l2) gives each J_k alone (it is stateless)
    steps = [np.asarray(J) for J in SEQUENCES["normal_3x6"]]
    base = {"mgda": {"normalization": "l2"}}
    directions, weights, _ = _drive({"cr_mogm": {"base": base, "alpha": 0.6}}, steps)
    lam = None
    for J, d, w in zip(steps, directions, weights, strict=True):
        own = _drive(base, [J])[1][0]
        lam = own if lam is None else 0.6 * lam + 0.4 * own
        np.testing.assert_allclose(w, lam, rtol=1e-14)
        np.testing.assert_allclose(d, lam @ J, rtol=1e-13)
    assert np.max(np.abs(weights[-1] - _drive(base, [steps[-1]])[1][0])) > 0.01  # it did smooth


def test_constant_weights_stay_constant_and_alpha_one_freezes_the_initial_weights() -> None:
    J = np.asarray(SEQUENCES["normal_3x6"][0])
    _, weights, _ = _drive({"cr_mogm": {"base": "upgrad", "alpha": 0.9}}, [J] * 4)
    for w in weights[1:]:
        np.testing.assert_allclose(w, weights[0], rtol=1e-14)
    frozen = {"cr_mogm": {"base": "upgrad", "alpha": 1.0, "initial_weights": INITIAL}}
    directions, weights, _ = _drive(frozen, SEQUENCES["normal_3x6"])
    for J_k, d, w in zip(SEQUENCES["normal_3x6"], directions, weights, strict=True):
        np.testing.assert_array_equal(w, INITIAL)
        np.testing.assert_allclose(d, np.asarray(INITIAL) @ np.asarray(J_k), rtol=1e-14)


def test_permutation_equivariant() -> None:
    steps = [np.asarray(J) for J in SEQUENCES["mixed_norms_4x5"]]
    perm = np.array([3, 1, 0, 2])
    spec = {"cr_mogm": {"base": "excess_mtl", "alpha": 0.5}}
    d_ref, w_ref, _ = _drive(spec, steps)
    d_perm, w_perm, _ = _drive(spec, [J[perm] for J in steps])
    for a, b, wa, wb in zip(d_ref, d_perm, w_ref, w_perm, strict=True):
        assert _rel(b, a) < 1e-12
        np.testing.assert_allclose(wb, wa[perm], rtol=1e-10, atol=1e-300)


def test_the_bases_state_and_parameters_are_carried_under_a_prefix() -> None:
    wrapper = get({"cr_mogm": {"base": "excess_mtl"}})
    assert wrapper.state_spec(3) == {
        "step": ((), 0.0),
        "weights": ((3,), 0.0),
        "base_step": ((), 0.0),
        "base_weights": ((3,), 1 / 3),
        "base_baseline": ((3,), 0.0),
    }
    assert wrapper.sized_state_spec(3, 7) == {"base_sq_grad_sum": ((3, 7), 0.0)}
    gradnorm = get({"cr_mogm": {"base": {"gradnorm": {"alpha": 1.0}}}})
    assert gradnorm.param_spec(3) == {"base_logits": get("gradnorm").param_spec(3)["logits"]}
    J, losses = np.asarray(SEQUENCES["normal_3x6"][0]), tf.constant([0.5, 1.0, 2.0], tf.float64)
    plain = get({"gradnorm": {"alpha": 1.0}})
    params = {"logits": tf.constant([0.1, -0.2, 0.3], tf.float64)}
    expected = plain.update(
        losses, tf.constant(J), params, eager.initial_state(plain, 3), eager.make_context(3)
    )
    result = gradnorm.update(
        losses,
        tf.constant(J),
        {"base_logits": params["logits"]},
        eager.initial_state(gradnorm, 3),
        eager.make_context(3),
    )
    assert set(result.param_grads) == {"base_logits"}
    np.testing.assert_array_equal(
        result.param_grads["base_logits"].numpy(), expected.param_grads["logits"].numpy()
    )
    for key, value in expected.state.items():
        np.testing.assert_array_equal(np.asarray(result.state[f"base_{key}"]), np.asarray(value))


def test_resumed_state_continues_exactly_through_the_public_aggregate() -> None:
    steps = SEQUENCES["two_tasks_2x4"]
    spec = {"cr_mogm": {"base": {"excess_mtl": {"n_warmup_steps": 1}}, "alpha": 0.8}}
    straight, _, _ = _drive(spec, steps)
    state = None
    for k, J in enumerate(steps):
        d, state = aggregate(spec, J, step=k, state=state, return_state=True)
        np.testing.assert_array_equal(d, straight[k])
    assert state["step"] == len(steps) and state["base_step"] == len(steps)


def test_float32_in_tf_function_matches_float64() -> None:
    steps = SEQUENCES["normal_3x6"]
    spec = {"cr_mogm": {"base": "excess_mtl", "alpha": 0.7}}
    expected, _, _ = _drive(spec, steps)
    strategy = get(spec)
    state = eager.initial_state(strategy, 3, tf.float32, num_params=6)

    @tf.function(autograph=False)
    def step(J, state, ctx):
        return strategy.update(tf.ones([3]), J, {}, state, ctx)

    for k, J in enumerate(steps):
        result = step(tf.constant(J, tf.float32), state, eager.make_context(3, step=k, dtype=tf.float32))
        assert result.direction.dtype == tf.float32
        assert _rel(result.direction.numpy(), expected[k]) < 1e-5
        state = result.state


def test_declarations_names_and_labels() -> None:
    assert REGISTRY["cr_mogm"] is CRMOGM and CRMOGM.needs == "gradients" and CRMOGM.weighting
    assert CRMOGM.paper and CRMOGM.summary and CRMOGM.wraps == "base"
    default = get("cr_mogm")
    assert default.inner.name == "upgrad" and default.alpha == 0.9 and default.on == "parameters"
    assert get({"cr_mogm": {"base": {"mgda": {"on": "representation"}}}}).on == "representation"
    assert default.get_config() == {"base": "upgrad", "alpha": 0.9, "initial_weights": None}
    nested = {"cr_mogm": {"base": {"mgda": {"normalization": "l2"}}, "alpha": 0.5}}
    assert spec_name(nested) == "cr_mogm" and spec_name("cr_mogm") == "cr_mogm"
    assert (
        registry.display_name(nested) == "cr_mogm(mgda)"
        and registry.display_name("cr_mogm") == "cr_mogm(upgrad)"
    )
    assert (
        registry.display_name({"cr_mogm": {"base": {"cr_mogm": {"base": "imtl_g"}}}})
        == "cr_mogm(cr_mogm(imtl_g))"
    )
    assert (
        registry.display_name(get(nested)) == "cr_mogm(mgda)" and registry.display_name("pcgrad") == "pcgrad"
    )
    assert registry.label(nested) == "cr_mogm(base=mgda(normalization=l2), alpha=0.5)"
    assert registry.every({"cr_mogm": {"base": "upgrad", "every": 3}}) == 3


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        (
            {"base": "upgrd"},
            ("cr_mogm", "base"),
            "unknown strategy 'upgrd'; did you mean 'upgrad'? (cr_mogm can wrap: ",
        ),
        (
            {"base": "static"},
            ("cr_mogm", "base"),
            "static cannot be the base: cr_mogm smooths the task weights a gradient-based weighting computes "
            "from the task gradients; static is loss-based (it never sees the gradients)",
        ),
        (
            {"base": "db_mtl"},
            ("cr_mogm", "base"),
            "db_mtl cannot be the base: cr_mogm smooths task weights, and db_mtl is not a weighting",
        ),
        (
            {"base": {"mgda": {"normalization": "l3"}}},
            ("cr_mogm", "base", "mgda", "normalization"),
            "expected one of 'none', 'l2', 'loss', 'loss+', received 'l3'",
        ),
        (
            {"base": {"upgrad": {"every": 2}}},
            ("cr_mogm", "base", "upgrad", "every"),
            "put every on cr_mogm, which schedules the whole step: {cr_mogm: {base: upgrad, every: 2}}",
        ),
        (
            {"base": "pcgrad", "every": 4},
            ("cr_mogm", "every"),
            "every: 4 is not available for cr_mogm(pcgrad): pcgrad is gradient surgery",
        ),
        ({"alpha": 1.5}, ("cr_mogm",), "`alpha` must be in [0, 1], received 1.5"),
        ({"alpha": "high"}, ("cr_mogm", "alpha"), "expected a number, received 'high'"),
        ({"bse": "mgda"}, ("cr_mogm", "bse"), "unknown parameter 'bse'; did you mean 'base'?"),
        ({"base": 3}, ("cr_mogm", "base"), "expected a strategy name or {name: {parameters}}, received 3"),
    ],
)
def test_recipe_checks(spec, path, message) -> None:
    [problem] = check({"cr_mogm": spec})
    assert problem.path == path and problem.message.startswith(message), problem


def test_accepted_specs() -> None:
    assert check("cr_mogm") == []
    assert check({"cr_mogm": {"base": {"mgda": {"normalization": "l2"}}, "alpha": 0.9, "every": 4}}) == []
    assert check({"cr_mogm": {"base": "excess_mtl", "initial_weights": [0.5, 0.5]}}) == []
    with pytest.raises(ValueError, match="cr_mogm.base: unknown strategy 'upgrd'; did you mean 'upgrad'"):
        get({"cr_mogm": {"base": "upgrd"}})


BLOCK = "weighting:\n    cr_mogm:\n      alpha: {alpha}\n      base: {base}"


@pytest.mark.parametrize(
    ("alpha", "base", "key", "message"),
    [
        (
            "0.5",
            "upgrd",
            "base",
            "train.weighting.cr_mogm.base: unknown strategy 'upgrd'; did you mean 'upgrad'?",
        ),
        ("0.5", "uncertainty", "base", "train.weighting.cr_mogm.base: uncertainty cannot be the base"),
        (
            "0.5",
            "{mgda: {normalisation: l2}}",
            "base",
            "train.weighting.cr_mogm.base.mgda.normalisation: unknown parameter 'normalisation'; "
            "did you mean 'normalization'?",
        ),
        ("-1", "upgrad", "cr_mogm", "train.weighting.cr_mogm: `alpha` must be in [0, 1], received -1"),
    ],
)
def test_recipe_mistakes_name_the_file_and_line(cli, tiny_project, alpha, base, key, message):
    text = tiny_project.read_text().replace("weighting: static", BLOCK.format(alpha=alpha, base=base))
    tiny_project.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.strip().startswith(f"{key}:"))
    result = cli("validate", tiny_project)
    assert result.exit_code == 2
    assert f"{tiny_project}:{line} {message}" in " ".join(result.output.split())


def test_the_bases_task_count_problems_are_placed_at_the_base(cli, tiny_project):
    assert check({"cr_mogm": {"base": {"krum": {"n_byzantine": 5}}}}, 3) == [
        registry.SpecProblem(
            ("cr_mogm", "base", "krum", "n_byzantine"),
            "krum needs at least n_byzantine + 3 = 8 tasks (n_byzantine = 5), received 3",
        )
    ]
    block = "weighting:\n    cr_mogm:\n      base:\n        upgrad: {pref_vector: [1, 2]}"
    text = tiny_project.read_text().replace("weighting: static", block)
    tiny_project.write_text(text)
    line = text.splitlines().index("        upgrad: {pref_vector: [1, 2]}") + 1
    result = cli("validate", tiny_project)
    assert result.exit_code == 2
    assert (
        f"{tiny_project}:{line} train.weighting.cr_mogm.base.upgrad.pref_vector: upgrad.pref_vector needs one "
        "preference per task: expected 3 entries, received 2"
    ) in " ".join(result.output.split())


def test_initial_weights_need_one_entry_per_task(cli, tiny_project):
    text = tiny_project.read_text().replace(
        "weighting: static", "weighting: {cr_mogm: {initial_weights: [1, 0]}}"
    )
    tiny_project.write_text(text)
    result = cli("validate", tiny_project)
    assert result.exit_code == 2
    assert (
        "train.weighting.cr_mogm.initial_weights: expected 3 weights (one per task), received 2"
        in " ".join(result.output.split())
    )
