"""ESMM (``product_of``): the log-space product is exact and finite, the recipe checks (exact text),
and a run on synthetic impressions whose true pCTR, pCVR and pCTCVR are known."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mtlcli import recipe as R
from mtlcli.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("make_esmm", ROOT / "recipes" / "data" / "make_esmm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def problems(tasks: str) -> list[str]:
    text = "data: {train: x.csv, inputs: {a: numeric}}\nmodel:\n  tasks:\n" + textwrap.indent(
        textwrap.dedent(tasks), "    "
    )
    with pytest.raises(RecipeError) as info:
        R.loads(text, file="r.yaml")
    return [p.render() for p in info.value.problems]


# ------------------------------------------------------------------------------------------------
# Recipe (no TensorFlow)


def test_product_of_is_accepted():
    r = R.loads(
        "data: {train: x.csv, inputs: {a: numeric}}\nmodel:\n  tasks:\n"
        "    ctr: {type: binary}\n    cvr: {type: binary, weight: 0}\n"
        "    ctcvr: {type: binary, product_of: [ctr, cvr]}\n",
        file="r.yaml",
    )
    assert r.recipe.model.tasks["ctcvr"].product_of == ["ctr", "cvr"]


def test_unknown_factor_did_you_mean():
    assert problems(
        """\
        ctr: {type: binary}
        cvr: {type: binary}
        ctcvr: {type: binary, product_of: [ctr, cvrr]}
        """
    ) == [
        "r.yaml:6 model.tasks.ctcvr.product_of[1]: unknown task 'cvrr'; did you mean 'cvr'? "
        "(tasks: ctr, cvr, ctcvr)"
    ]


def test_non_binary_factor_and_product_and_layers():
    assert problems(
        """\
        ctr: {type: binary}
        price: {type: regression}
        ctcvr: {type: regression, head: [{dense: {units: 4}}], product_of: [ctr, price, ctr]}
        """
    ) == [
        "r.yaml:6 model.tasks.ctcvr.head: a task with product_of has no layers of its own: remove head",
        "r.yaml:6 model.tasks.ctcvr.product_of[1]: product_of multiplies binary tasks' probabilities: "
        "'price' is a regression task",
        "r.yaml:6 model.tasks.ctcvr.product_of[2]: task 'ctr' is listed twice",
        "r.yaml:6 model.tasks.ctcvr.type: a task with product_of is binary (its probability is the "
        "product of its factors'), received type regression",
    ]


def test_cycle_self_and_too_few():
    assert problems(
        """\
        p: {type: binary}
        b: {type: binary, product_of: [p, c]}
        c: {type: binary, product_of: [p, b]}
        d: {type: binary, product_of: [d]}
        """
    ) == [
        "r.yaml:5 model.tasks.b: tasks are products of each other in a cycle: b -> c -> b",
        "r.yaml:7 model.tasks.d.product_of: expected at least two tasks in product_of, received 1",
        "r.yaml:7 model.tasks.d.product_of[0]: task 'd' cannot be a product of itself",
    ]


def test_inputs_from_a_product_is_refused():
    assert problems(
        """\
        ctr: {type: binary}
        cvr: {type: binary}
        ctcvr: {type: binary, product_of: [ctr, cvr]}
        gmv: {type: regression, inputs_from: [ctcvr]}
        """
    ) == [
        "r.yaml:7 model.tasks.gmv.inputs_from[0]: 'ctcvr' is a product of other tasks and has no layers "
        "to read: read its factors (ctr, cvr) instead"
    ]


def test_validate_exits_2(tmp_path, cli):
    path = tmp_path / "r.yaml"
    path.write_text(
        "data: {train: x.csv, inputs: {a: numeric}}\nmodel:\n  tasks:\n"
        "    ctr: {type: binary}\n    ctcvr: {type: binary, product_of: [ctr, cvx]}\n"
    )
    result = cli("validate", path)
    assert result.exit_code == 2
    assert "unknown task 'cvx'" in result.output


# ------------------------------------------------------------------------------------------------
# The product (TensorFlow)


def test_product_logit_is_exact_and_finite():
    import tensorflow as tf

    from mtlcli.model.esmm import product_logit

    a = tf.constant([-60.0, -5.0, 0.0, 3.0, 40.0, 90.0, 17.0])
    b = tf.constant([30.0, 2.0, 0.0, -1.0, 40.0, 90.0, -80.0])
    c = tf.constant([0.5, 0.0, 1.0, 2.0, 40.0, 90.0, 1.0])
    with tf.GradientTape() as tape:
        tape.watch([a, b, c])
        z = product_logit([a, b, c])
        loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(z), logits=z))
    grads = tape.gradient(loss, [a, b, c])
    assert np.isfinite(z.numpy()).all()
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    expected = 1 / (1 + np.exp(-a.numpy().astype(np.float64)))
    expected *= (
        1 / (1 + np.exp(-b.numpy().astype(np.float64))) * 1 / (1 + np.exp(-c.numpy().astype(np.float64)))
    )
    np.testing.assert_allclose(tf.sigmoid(z).numpy(), expected, rtol=1e-5, atol=1e-7)
    # log p == sum log sigmoid, exactly what BCE on the product needs for label 1
    np.testing.assert_allclose(-loss.numpy(), np.sum(np.log(expected)), rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# A run on synthetic impressions


def _write(path: Path, cols: dict, names: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        w.writerows(zip(*(cols[k] for k in names), strict=True))


@pytest.mark.slow
def test_esmm_recovers_the_true_probabilities(tmp_path, cli):
    gen = _generator()
    (tmp_path / "data").mkdir()
    names = [*gen.FEATURES, "click", "buy"]
    _write(tmp_path / "data" / "esmm.csv", gen.generate(20000, seed=0), names)
    held_out = gen.generate(2000, seed=1)
    _write(tmp_path / "held_out.csv", held_out, names)
    shutil.copy(ROOT / "recipes" / "esmm.yaml", tmp_path / "esmm.yaml")
    run = tmp_path / "run"
    result = cli(
        "train",
        tmp_path / "esmm.yaml",
        "-o",
        run,
        "--set",
        "train.epochs=10",
        "--set",
        "train.batch_size=256",
    )
    assert result.exit_code == 0, result.output
    result = cli("predict", run, tmp_path / "held_out.csv", "-o", tmp_path / "pred.csv")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "pred.csv") as fh:
        rows = list(csv.DictReader(fh))
    pred = {t: np.array([float(r[f"{t}:p"]) for r in rows]) for t in ("ctr", "cvr", "ctcvr")}
    # the product is exact on the model's outputs
    np.testing.assert_allclose(pred["ctcvr"], pred["ctr"] * pred["cvr"], rtol=1e-5, atol=1e-6)
    # each probability is close to the truth (measured, 10 epochs: cvr 0.031, ctcvr 0.023 mean absolute error)
    for t in ("ctr", "cvr", "ctcvr"):
        err = np.mean(np.abs(pred[t] - held_out[f"p_{t}"]))
        assert err < 0.04, (t, err)
    # the saved model loads with safe_mode=True and predicts the same (mtl predict loads it that way)
    result = cli("evaluate", run)
    assert result.exit_code == 0, result.output
    assert "cvr" in result.output


def test_init_template_esmm_validates(tmp_path, cli):
    result = cli("init", tmp_path / "p", "--template", "esmm")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        ".gitignore", "README.md", "esmm.csv", "recipe.schema.json", "recipe.yaml",
    ]  # fmt: skip
    result = cli("validate", tmp_path / "p" / "recipe.yaml")
    assert result.exit_code == 0, result.output
    assert "ctcvr" in result.output
