"""Recipe parsing, defaults, round trip and every kind of recipe error (exact text)."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from mtlcli import recipe as R
from mtlcli.errors import RecipeError

from .conftest import REPO, TINY_RECIPE


def problems(text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        R.loads(textwrap.dedent(text), file="r.yaml")
    return [p.render() for p in info.value.problems]


def test_defaults_are_filled_in():
    loaded = R.loads(TINY_RECIPE, file="r.yaml")
    r = loaded.recipe
    assert r.train.optimizer.adam.learning_rate == 0.001
    assert r.train.optimizer.adam.beta_1 == 0.9 and r.train.optimizer.adam.beta_2 == 0.999
    assert r.train.optimizer.adam.epsilon == 1e-7
    assert r.data.test is None
    assert r.loss("kind") == "sparse_categorical_crossentropy"
    assert r.loss("flag") == "binary_crossentropy"
    assert r.loss("value") == "mse"
    assert r.metrics("flag") == ["accuracy", "auc"]
    assert r.metrics("value") == ["mae"]
    assert r.target("value") == "value"
    assert r.model.tasks["kind"].weight == 1.0
    assert r.train.early_stopping is None


def test_resolved_round_trip():
    r = R.loads(TINY_RECIPE, file="r.yaml").recipe
    dumped = yaml.safe_dump(r.resolved(), sort_keys=False)
    again = R.loads(dumped, file="resolved.yaml").recipe
    assert again == r.model_validate(r.resolved()) and again.resolved() == r.resolved()


def test_bundled_recipes_validate():
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        R.load(path)
    R.load(REPO / "mtlcli" / "templates" / "penguins.yaml")


def test_shorthands():
    r = R.loads(
        TINY_RECIPE.replace(
            "weighting: static", "weighting: static\n  optimizer: adam\n  early_stopping: true"
        ),
        file="r.yaml",
    ).recipe
    assert r.train.optimizer.adam.learning_rate == 0.001
    assert r.train.early_stopping.monitor == "val_loss" and r.train.early_stopping.patience == 10


def test_yaml_on_key_is_a_name_not_a_boolean():
    r = R.loads(
        TINY_RECIPE.replace("weighting: static", "weighting: {mgda: {on: representation}}"), file="r.yaml"
    ).recipe
    assert r.train.weighting == {"mgda": {"on": "representation"}}


def test_all_problems_at_once_with_lines_and_suggestions():
    got = problems(
        """\
        seed: seven
        data:
          train: tiny.csv
          validaton: 0.2
          inputs:
            a: numerc
        model:
          shared:
            - dense: {unit: 16}
            - lambda: {}
          tasks:
            kind: {type: clasification}
            flag: {type: binary, loss: mse, metrics: [acuracy]}
            value: {type: regression, weight: -1}
        train:
          epochs: 0
          batch_size: 32.5
          optimizer: {adam: {beta1: 0.9}}
          weighting: {cagrad: {c: high, cc: 1}}
          early_stopping: {monitor: val_flag_acc}
          extra: 1
        """
    )
    assert got == [
        "r.yaml:1 seed: expected an integer, received text ('seven')",
        "r.yaml:4 data.validaton: unknown key 'validaton'; did you mean 'validation'?",
        "r.yaml:6 data.inputs.a.kind: expected one of numeric, categorical, image, array, text; received text ('numerc'); "
        "did you mean 'numeric'?",
        "r.yaml:9 model.shared[0].dense: Dense needs the argument 'units'",
        "r.yaml:9 model.shared[0].dense.unit: Dense has no argument 'unit'; did you mean 'units'?",
        "r.yaml:10 model.shared[1].lambda: unknown layer 'lambda'; Lambda layers are not allowed "
        "(they would run code from a recipe)",
        "r.yaml:12 model.tasks.kind.type: expected one of classification, binary, regression, multilabel; "
        "received text ('clasification'); did you mean 'classification'?",
        "r.yaml:13 model.tasks.flag.loss: loss 'mse' does not fit a binary task; expected one of "
        "binary_crossentropy, binary_focal_crossentropy",
        "r.yaml:13 model.tasks.flag.metrics[0]: unknown metric 'acuracy'; did you mean 'accuracy'? "
        "(for binary: accuracy, crossentropy, auc, precision, recall)",
        "r.yaml:14 model.tasks.value.weight: expected a value >= 0.0, received -1",
        "r.yaml:16 train.epochs: expected a value >= 1, received 0",
        "r.yaml:17 train.batch_size: expected an integer, received a number (32.5)",
        "r.yaml:18 train.optimizer.adam.beta1: unknown key 'beta1'; did you mean 'beta_1'?",
        "r.yaml:19 train.weighting.cagrad.c: expected a number, received 'high'",
        "r.yaml:19 train.weighting.cagrad.cc: unknown parameter 'cc'; did you mean 'c'?",
        "r.yaml:20 train.early_stopping.monitor: unknown metric 'val_flag_acc'; did you mean 'val_flag_loss'? "
        "(available: loss, kind_loss, flag_loss, value_loss, value_mae, value_rmse, val_loss, val_kind_loss, "
        "val_flag_loss, val_value_loss, val_value_mae, val_value_rmse)",
        "r.yaml:21 train.extra: unknown key 'extra'; expected one of: epochs, batch_size, optimizer, weighting, primary, "
        "early_stopping, checkpoint_every, on_nan, distribute, devices, jit_compile, mixed_precision, tensorboard",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a: [1\n",
            "r.yaml:2: invalid YAML: while parsing a flow sequence expected ',' or ']', but got "
            "'<stream end>'",
        ),
        ("a: 1\na: 2\n", "r.yaml:2 a: duplicate key 'a' (first defined on line 1)"),
        ("", "r.yaml:1: the recipe is empty; expected a mapping with data, model, train"),
        ("[1, 2]\n", "r.yaml:1: expected a mapping at the top level, received a list"),
        (
            "a: &x [1, 2]\nb: &y [*x, *x, *x, *x, *x, *x, *x, *x, *x, *x]\nc: &z [*y, *y, *y, *y, *y, *y, *y, *y, *y, *y]\n"
            "d: &w [*z, *z, *z, *z, *z, *z, *z, *z, *z, *z]\ne: &v [*w, *w, *w, *w, *w, *w, *w, *w, *w, *w]\n"
            "f: [*v, *v, *v, *v, *v, *v, *v, *v, *v, *v]\n",
            "r.yaml: invalid YAML: the document expands to more than 200,000 values (aliases?)",
        ),
        (
            "x: !!python/object/apply:os.system ['echo hi']\n",
            "r.yaml:1: invalid YAML: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
    ],
)
def test_yaml_level_errors(text, expected):
    assert problems(text) == [expected]


def test_missing_sections():
    assert problems("name: x\n") == [
        "r.yaml:1 data: required key is missing",
        "r.yaml:1 model: required key is missing",
    ]


def test_unknown_strategy_suggests():
    got = problems(TINY_RECIPE.replace("weighting: static", "weighting: pcgard"))
    assert got[0].startswith(
        "r.yaml:20 train.weighting: unknown strategy 'pcgard'; did you mean 'pcgrad'? (available: "
    )


def test_target_that_is_also_an_input():
    got = problems(
        TINY_RECIPE.replace("value: {type: regression, metrics: [mae]}", "a2: {type: regression, target: a}")
    )
    assert got == [
        "r.yaml:16 model.tasks.a2.target: the target 'a' is also listed as an input (data.inputs.a): "
        "the model would see the answer"
    ]


def test_validation_must_not_be_a_boolean():
    got = problems(TINY_RECIPE.replace("validation: 0.25", "validation: yes"))
    assert got == [
        "r.yaml:5 data.validation: expected a fraction between 0 and 1 (exclusive) or a path, "
        "received a boolean (true)"
    ]


def test_validation_fraction_range():
    got = problems(TINY_RECIPE.replace("validation: 0.25", "validation: 1.5"))
    assert got == [
        "r.yaml:5 data.validation: expected a fraction between 0 and 1 (exclusive) or a path, received 1.5"
    ]


def test_monitor_mode():
    assert R.monitor_mode("val_species_accuracy") == "max"
    assert R.monitor_mode("val_loss") == "min"
    assert R.monitor_mode("val_body_mass_mae") == "min"
    assert R.monitor_mode("val_x_r2") == "max"


def test_a_misspelt_key_in_any_nested_mapping_gets_did_you_mean():
    """The keys a mapping allows come from walking the schema, so newer nested sections (warm starts,
    gates, AITM, per-input settings) suggest the key that was meant."""
    got = problems(
        """\
        data:
          train: tiny.csv
          inputs:
            a: {kind: numeric, missng: mean}
        model:
          architecture: aitm
          aitm: {order: [kind, flag], calibrator_weigth: 0.5}
          init_from: {run: ../a, freeze_epoch: 2}
          tasks:
            kind: {type: binary, wieght: 2}
            flag: {type: binary}
        """
    )
    assert got == [
        "r.yaml:4 data.inputs.a.missng: unknown key 'missng'; did you mean 'missing'?",
        "r.yaml:7 model.aitm.calibrator_weigth: unknown key 'calibrator_weigth'; did you mean 'calibrator_weight'?",
        "r.yaml:8 model.init_from.freeze_epoch: unknown key 'freeze_epoch'; did you mean 'freeze_epochs'?",
        "r.yaml:10 model.tasks.kind.wieght: unknown key 'wieght'; did you mean 'weight'?",
    ]
