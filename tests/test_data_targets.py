"""Feature kinds, target kinds, when: conditions and class weights (data side, no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from mtlcli import data
from mtlcli.errors import RecipeError

from .conftest import data_errors, load_recipe

load = load_recipe
errors = data_errors


def recipe_errors(tmp_path, text) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load(tmp_path, text)
    return [p.render() for p in info.value.problems]


def write(tmp_path, name, header, rows):
    (tmp_path / name).write_text(header + "\n" + "\n".join(rows) + "\n")
    return tmp_path / name


CLICK = """\
data:
  train: ads.csv
  validation: null
  inputs: {x: numeric}
model:
  tasks:
    click: {type: binary}
    buy: {type: binary, when: {column: click, equals: 1}}
"""


def ads(tmp_path, n=40):
    rows = [f"{i},{int(i % 2 == 0)},{int(i % 4 == 0)}" for i in range(n)]
    return write(tmp_path, "ads.csv", "x,click,buy", rows)


# ------------------------------------------------------------------------------------------------
# when:


def test_when_masks_rows_outside_the_condition(tmp_path):
    ads(tmp_path)
    prepared = data.prepare(load(tmp_path, CLICK))
    assert prepared.info["coverage"]["train"] == {"click": 40, "buy": 20}
    train = prepared.splits["train"]
    assert train.mask["buy"].tolist() == [float(i % 2 == 0) for i in range(40)]
    assert prepared.prep.targets["buy"].when == [{"column": "click", "equals": 1}]


@pytest.mark.parametrize(
    ("cond", "count"),
    [
        ("{column: click, not_equals: 1}", 20),
        ("{column: x, in: [1, 2, 3]}", 3),
        ("{column: x, not_in: [1, 2, 3]}", 37),
        ("{column: x, greater_than: 29.5}", 10),
        ("{column: x, less_than: 10}", 10),
        ("{column: note, present: true}", 14),
        ("[{column: click, equals: 1}, {column: x, less_than: 20}]", 10),
    ],
)
def test_when_operators(tmp_path, cond, count):
    rows = [f"{i},{int(i % 2 == 0)},{int(i % 4 == 0)},{'n' if i % 3 == 0 else ''}" for i in range(40)]
    write(tmp_path, "ads.csv", "x,click,buy,note", rows)
    text = CLICK.replace("{column: click, equals: 1}", cond)
    assert data.prepare(load(tmp_path, text)).info["coverage"]["train"]["buy"] == count


def test_when_string_and_boolean_values(tmp_path):
    rows = [f"{i},{'yes' if i % 2 else 'no'},{'true' if i % 4 == 0 else 'false'}" for i in range(20)]
    write(tmp_path, "ads.csv", "x,click,buy", rows)
    text = CLICK.replace("{column: click, equals: 1}", "{column: click, equals: 'yes'}")
    assert data.prepare(load(tmp_path, text)).info["coverage"]["train"]["buy"] == 10


def test_when_errors(tmp_path):
    ads(tmp_path)
    got = errors(load(tmp_path, CLICK.replace("column: click, equals", "column: clik, equals")))
    assert got == [
        f"{tmp_path / 'recipe.yaml'}:8 model.tasks.buy.when: when column 'clik' not found in "
        f"{tmp_path / 'ads.csv'}; did you mean 'click'? (columns: 'x', 'click', 'buy')"
    ]
    rows = [f"{i},{i % 2},{i % 3 == 0},{'a' if i == 3 else i}" for i in range(10)]
    write(tmp_path, "ads.csv", "x,click,buy,seg", rows)
    got = errors(load(tmp_path, CLICK.replace("column: click, equals: 1", "column: seg, greater_than: 1")))
    assert got == [
        f"{tmp_path / 'ads.csv'}:5 column 'seg': model.tasks.buy.when compares with greater_than, but the "
        "column holds 'a'; expected numbers"
    ]


def test_when_recipe_errors(tmp_path):
    text = CLICK.replace("{column: click, equals: 1}", "{column: click, equal: 1, in: 3}")
    assert recipe_errors(tmp_path, text) == [
        f"{tmp_path / 'recipe.yaml'}:8 model.tasks.buy.when.equal: unknown key 'equal'; did you mean 'equals'?; "
        "a condition has a column and one of equals, not_equals, in, not_in, greater_than, less_than, present",
        f"{tmp_path / 'recipe.yaml'}:8 model.tasks.buy.when.in: expected a non-empty list of values, received "
        "a number (3)",
    ]
    text = CLICK.replace("{column: click, equals: 1}", "click == 1")
    assert recipe_errors(tmp_path, text) == [
        f"{tmp_path / 'recipe.yaml'}:8 model.tasks.buy.when: expected a condition {{column: name, <operator>: "
        "value}, e.g. when: {column: click, equals: 1}; received text ('click == 1')"
    ]


# ------------------------------------------------------------------------------------------------
# class_weight


def test_class_weight_balanced_and_map(tmp_path):
    ads(tmp_path)
    text = CLICK.replace("buy: {type: binary,", "buy: {type: binary, class_weight: balanced,")
    prepared = data.prepare(load(tmp_path, text))
    st = prepared.prep.targets["buy"]
    assert st.class_weights == [pytest.approx(20 / (2 * 10)), pytest.approx(20 / (2 * 10))]
    text = CLICK.replace(
        "buy: {type: binary, when: {column: click, equals: 1}}", "buy: {type: binary, class_weight: balanced}"
    )
    prepared = data.prepare(load(tmp_path, text))
    assert prepared.prep.targets["buy"].class_weights == [pytest.approx(40 / 60), pytest.approx(40 / 20)]
    w = prepared.splits["train"].weight["buy"]
    assert w[0] == pytest.approx(2.0) and w[1] == pytest.approx(40 / 60)
    text = CLICK.replace(
        "buy: {type: binary, when: {column: click, equals: 1}}", "buy: {type: binary, class_weight: {1: 5}}"
    )
    prepared = data.prepare(load(tmp_path, text))
    assert prepared.prep.targets["buy"].class_weights == [1.0, 5.0]
    assert set(prepared.splits["train"].weight) == {"buy"}


def test_class_weight_string_labels_and_unknown_label(tmp_path):
    rows = [f"{i},{['cat', 'dog', 'eel'][i % 3]}" for i in range(30)]
    write(tmp_path, "pets.csv", "x,pet", rows)
    text = """\
data: {train: pets.csv, inputs: {x: numeric}}
model:
  tasks:
    pet: {type: classification, class_weight: {dog: 2.0, cta: 3}}
"""
    assert errors(load(tmp_path, text)) == [
        f"{tmp_path / 'recipe.yaml'}:4 model.tasks.pet.class_weight.cta: class_weight names label 'cta', which "
        "is not one of the task's classes ('cat', 'dog', 'eel'); did you mean 'cat'?"
    ]
    prepared = data.prepare(load(tmp_path, text.replace(", cta: 3", "")))
    assert prepared.prep.targets["pet"].class_weights == [1.0, 2.0, 1.0]


def test_class_weight_recipe_errors(tmp_path):
    text = """\
data: {train: pets.csv, inputs: {x: numeric}}
model:
  tasks:
    a: {type: regression, class_weight: balanced}
    b: {type: binary, class_weight: balance}
    c: {type: binary, class_weight: {1: -2}}
"""
    assert recipe_errors(tmp_path, text) == [
        f"{tmp_path / 'recipe.yaml'}:4 model.tasks.a.class_weight: class_weight applies to classification and "
        "binary tasks, not regression",
        f"{tmp_path / 'recipe.yaml'}:5 model.tasks.b.class_weight: expected balanced or a mapping {{label: "
        "weight}, received 'balance'",
        f"{tmp_path / 'recipe.yaml'}:6 model.tasks.c.class_weight.1: expected a finite weight >= 0, received a "
        "number (-2)",
    ]


# ------------------------------------------------------------------------------------------------
# Targets


def test_multilabel_from_columns(tmp_path):
    rows = [f"{i},{i % 2},{int(i % 3 == 0)},{'' if i == 5 else int(i % 5 == 0)}" for i in range(30)]
    write(tmp_path, "ml.csv", "x,l1,l2,l3", rows)
    text = """\
data: {train: ml.csv, validation: null, inputs: {x: numeric}}
model: {tasks: {tags: {type: multilabel, target: [l1, l2, l3]}}}
"""
    prepared = data.prepare(load(tmp_path, text))
    st = prepared.prep.targets["tags"]
    assert st.classes == ["l1", "l2", "l3"] and st.units == 3
    y = prepared.splits["train"].y["tags"]
    assert y.shape == (30, 3) and y[0].tolist() == [0, 1, 1] and y[3].tolist() == [1, 1, 0]
    assert prepared.info["coverage"]["train"]["tags"] == 29  # row 5 lacks l3
    write(tmp_path, "ml.csv", "x,l1,l2,l3", [*rows[:4], "4,1,2,0", *rows[5:]])
    assert errors(load(tmp_path, text)) == [
        f"{tmp_path / 'ml.csv'}:6 column 'l2': a multilabel target column holds 0/1 values, received 2"
    ]


def test_multilabel_from_a_delimited_column(tmp_path):
    tags = ["a|b", "b", "", "c|a", "a"] * 4
    write(tmp_path, "ml.csv", "x,tags", [f"{i},{t}" for i, t in enumerate(tags)])
    text = """\
data: {train: ml.csv, validation: null, inputs: {x: numeric}}
model: {tasks: {tags: {type: multilabel, separator: '|'}}}
"""
    prepared = data.prepare(load(tmp_path, text))
    assert prepared.prep.targets["tags"].classes == ["a", "b", "c"]
    y = prepared.splits["train"].y["tags"]
    assert y[0].tolist() == [1, 1, 0] and y[3].tolist() == [1, 0, 1]
    assert prepared.info["coverage"]["train"]["tags"] == 16  # empty cells are missing labels
    (tmp_path / "val.csv").write_text("x,tags\n1,a|z\n")
    assert errors(load(tmp_path, text.replace("validation: null", "validation: val.csv"))) == [
        f"{tmp_path / 'val.csv'}:2 column 'tags': label 'z' is not one of the task's labels ('a', 'b', 'c')"
    ]


def test_multilabel_and_target_list_recipe_errors(tmp_path):
    text = """\
data: {train: ml.csv, inputs: {x: numeric}}
model:
  tasks:
    a: {type: multilabel}
    b: {type: binary, target: [p, q]}
    c: {type: regression, separator: ','}
    d: {type: multilabel, target: [p]}
"""
    assert recipe_errors(tmp_path, text) == [
        f"{tmp_path / 'recipe.yaml'}:4 model.tasks.a: a multilabel task needs several 0/1 target columns "
        "(target: [a, b, c]) or one column of labels joined by a separator (separator: '|')",
        f"{tmp_path / 'recipe.yaml'}:5 model.tasks.b.target: several target columns need type: multilabel or "
        "type: regression",
        f"{tmp_path / 'recipe.yaml'}:6 model.tasks.c.separator: separator applies to multilabel tasks only",
        f"{tmp_path / 'recipe.yaml'}:7 model.tasks.d.target: expected at least 2 columns in a target list (or "
        "one column name)",
    ]


def test_regression_with_several_columns(tmp_path):
    rows = [f"{i},{i * 2.0},{100 + i},{'' if i == 7 else -i}" for i in range(20)]
    write(tmp_path, "m.csv", "x,water,fat,protein", rows)
    text = """\
data: {train: m.csv, validation: null, inputs: {x: numeric}}
model: {tasks: {meat: {type: regression, target: [water, fat, protein]}}}
"""
    prepared = data.prepare(load(tmp_path, text))
    st = prepared.prep.targets["meat"]
    assert st.units == 3 and len(st.mean) == 3 and st.mean[1] == pytest.approx(109.5, abs=0.6)
    y = prepared.splits["train"].y["meat"]
    labelled = prepared.splits["train"].mask["meat"] == 1
    assert y.shape == (20, 3) and abs(float(y[labelled, 0].mean())) < 1e-5
    assert prepared.info["coverage"]["train"]["meat"] == 19


# ------------------------------------------------------------------------------------------------
# Inputs


NUM = """\
data:
  train: n.csv
  validation: null
  inputs:
    a: {kind: numeric, missing: MODE, flag: true}
model: {tasks: {t: {type: regression}}}
"""


def test_numeric_missing_flag_and_modes(tmp_path):
    write(tmp_path, "n.csv", "a,t", ["1,1", "3,2", ",3", "5,4"])
    prepared = data.prepare(load(tmp_path, NUM.replace("MODE", "mean")))
    x = prepared.splits["train"].x["a"]
    assert x.shape == (4, 2) and x[2].tolist() == [0.0, 1.0] and x[0, 1] == 0.0
    st = prepared.prep.inputs["a"]
    prepared = data.prepare(load(tmp_path, NUM.replace("MODE", "zero")))
    assert prepared.splits["train"].x["a"][2, 0] == pytest.approx((0 - st.mean) / st.std)
    assert errors(load(tmp_path, NUM.replace("MODE", "error"))) == [
        f"{tmp_path / 'n.csv'}:4 column 'a': missing value (1 in all); the input has missing: error (use "
        "missing: mean or zero to impute)"
    ]


def test_numeric_infinite_values_are_errors(tmp_path):
    write(tmp_path, "n.csv", "a,t", ["1,1", "inf,2", "2,3"])
    assert errors(load(tmp_path, NUM.replace("MODE", "mean"))) == [
        f"{tmp_path / 'n.csv'}:3 column 'a': infinite value"
    ]


def test_input_option_recipe_errors(tmp_path):
    text = """\
data:
  train: n.csv
  inputs:
    c: {kind: categorical, flag: true}
    i: {kind: image, shape: [8, 8, 2]}
model: {tasks: {t: {type: regression}}}
"""
    assert recipe_errors(tmp_path, text) == [
        f"{tmp_path / 'recipe.yaml'}:4 data.inputs.c.flag: flag applies to numeric inputs only",
        f"{tmp_path / 'recipe.yaml'}:5 data.inputs.i.shape: an image has 1, 3 or 4 channels (the last size), "
        "received 2",
    ]


def test_raw_array_input_and_nan_rows(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(20, 3, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", feats=feats, t=rng.normal(size=20))
    text = "data: {train: d.npz, validation: null, inputs: {feats: {kind: array}}}\n" + (
        "model: {tasks: {t: {type: regression}}}\n"
    )
    prepared = data.prepare(load(tmp_path, text))
    assert prepared.prep.inputs["feats"].shape == [3, 4]
    assert np.array_equal(prepared.splits["train"].x["feats"], feats)  # raw: no scaling
    feats[6, 1, 2] = np.nan
    np.savez(tmp_path / "d.npz", feats=feats, t=rng.normal(size=20))
    assert errors(load(tmp_path, text)) == [
        f"{tmp_path / 'd.npz'} array 'feats': NaN or infinite value in sample 6 (of 1 such samples); array "
        "inputs allow none"
    ]


def test_nan_in_npz_images_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", img=np.zeros((4, 2, 2), np.float32) + np.nan, t=np.arange(4.0))
    text = "data: {train: d.npz, validation: null, inputs: {img: {kind: image, shape: [2, 2, 1]}}}\n" + (
        "model: {tasks: {t: {type: regression}}}\n"
    )
    assert errors(load(tmp_path, text)) == [
        f"{tmp_path / 'd.npz'} array 'img': NaN or infinite value in sample 0 (of 4 such samples); image inputs "
        "allow none"
    ]
