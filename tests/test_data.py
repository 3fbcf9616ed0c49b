"""Reading, splitting and preprocessing data; data errors name the file, column and row."""

from __future__ import annotations

import numpy as np
import pytest

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.errors import DataError

from .conftest import PENGUINS, TINY_RECIPE


def load(tmp_path, text=TINY_RECIPE):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return R.load(path)


def test_split_sizes_are_seeded_and_disjoint(tiny_project):
    loaded = R.load(tiny_project)
    a = data.prepare(loaded)
    b = data.prepare(loaded)
    assert a.info["split_rows"] == {"train": 90, "validation": 30}
    assert a.info["fraction_indices"] == b.info["fraction_indices"]
    c = data.prepare(loaded, seed=99)
    assert c.info["fraction_indices"] != a.info["fraction_indices"]


def test_standardisation_uses_training_statistics(tiny_project):
    prepared = data.prepare(R.load(tiny_project))
    x = prepared.splits["train"].x["a"][:, 0]
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-4
    v = prepared.splits["validation"].x["a"][:, 0]
    assert abs(v.mean()) > 1e-4  # validation is transformed with the training statistics, not its own


def test_categorical_one_hot_with_unknown_bucket(tiny_project):
    prepared = data.prepare(R.load(tiny_project))
    st = prepared.prep.inputs["color"]
    assert st.vocabulary == ["blue", "green", "red"]
    table = data.Table(
        {
            "a": np.array([0.0]),
            "b": np.array([0.0]),
            "color": np.array(["purple"], dtype=object),
            "kind": np.array(["x"], dtype=object),
            "flag": np.array(["no"], dtype=object),
            "value": np.array([1.0]),
        },
        1,
        "new.csv",
    )
    arrays = data.transform(prepared.prep, table)
    assert arrays.x["color"].tolist() == [[1.0, 0.0, 0.0, 0.0]]  # index 0 = out of vocabulary


def test_missing_labels_are_masked_not_dropped(tiny_project):
    prepared = data.prepare(R.load(tiny_project))
    total = sum(s.n for s in prepared.splits.values())
    assert total == 120  # no row was dropped
    flag_labels = sum(int(s.mask["flag"].sum()) for s in prepared.splits.values())
    assert flag_labels == 120 - len(range(3, 120, 17))
    assert all(s.mask["kind"].all() for s in prepared.splits.values())


def test_regression_targets_standardised_with_stats_kept(tiny_project):
    prepared = data.prepare(R.load(tiny_project))
    st = prepared.prep.targets["value"]
    y = prepared.splits["train"].y["value"][:, 0]
    assert abs(y.mean()) < 1e-5
    assert 9 < st.mean < 11 and st.std > 1


def test_preprocessing_round_trip(tiny_project):
    prep = data.prepare(R.load(tiny_project)).prep
    assert data.Preprocessing.from_dict(prep.to_dict()) == prep


def test_penguins_classes_and_coverage():
    text = R.load(PENGUINS.parents[2] / "recipes" / "penguins.yaml")
    prepared = data.prepare(text)
    assert prepared.prep.targets["species"].classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert prepared.prep.targets["sex"].classes == ["female", "male"]
    assert sum(s.n for s in prepared.splits.values()) == 344


def test_npz_source_with_image_input(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", image=images, left=rng.integers(0, 3, 40), right=rng.integers(0, 2, 40))
    loaded = load(
        tmp_path,
        """\
data:
  train: d.npz
  inputs: {image: {kind: image, shape: [8, 8, 1]}}
model:
  tasks: {left: {type: classification}, right: {type: binary}}
""",
    )
    prepared = data.prepare(loaded)
    x = prepared.splits["train"].x["image"]
    assert x.shape[1:] == (8, 8, 1) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    assert prepared.prep.targets["left"].classes == [0, 1, 2]


def errors(loaded) -> list[str]:
    with pytest.raises(DataError) as info:
        data.prepare(loaded)
    return [p.render() for p in info.value.problems]


def test_missing_file(tmp_path):
    loaded = load(tmp_path)
    assert errors(loaded) == [f"{tmp_path / 'tiny.csv'}: file not found (data.train: 'tiny.csv')"]


def test_missing_columns_name_the_recipe_line(tiny_project):
    text = TINY_RECIPE.replace("b: numeric", "bb: numeric").replace(
        "value: {type:", "value: {target: valu, type:"
    )
    tiny_project.write_text(text)
    got = errors(R.load(tiny_project))
    csv = tiny_project.parent / "tiny.csv"
    assert got == [
        f"{tiny_project}:8 data.inputs.bb: column 'bb' not found in {csv}; did you mean 'b'? "
        "(columns: 'a', 'b', 'color', 'kind', 'flag', 'value')",
        f"{tiny_project}:16 model.tasks.value.target: target column 'valu' not found in {csv}; did you mean "
        "'value'? (columns: 'a', 'b', 'color', 'kind', 'flag', 'value')",
    ]


def test_non_numeric_value_names_row(tiny_project):
    csv = tiny_project.parent / "tiny.csv"
    lines = csv.read_text().splitlines()
    parts = lines[5].split(",")
    parts[0] = "abc"
    lines[5] = ",".join(parts)
    csv.write_text("\n".join(lines) + "\n")
    got = errors(R.load(tiny_project))
    assert got == [f"{csv}:6 column 'a': expected a number, received 'abc'"]


def test_binary_with_three_labels(tiny_project):
    tiny_project.write_text(TINY_RECIPE.replace("kind: {type: classification}", "kind: {type: binary}"))
    got = errors(R.load(tiny_project))
    assert got == [
        f"{tiny_project.parent / 'tiny.csv'} column 'kind': a binary task needs 2 distinct labels, "
        "found 3: 'x', 'y', 'z'; use type: classification"
    ]


def test_output_units_must_match_classes(tiny_project):
    tiny_project.write_text(
        TINY_RECIPE.replace(
            "kind: {type: classification}", "kind: {type: classification, output: {dense: {units: 2}}}"
        )
    )
    got = errors(R.load(tiny_project))
    assert got == [
        f"{tiny_project.parent / 'tiny.csv'} column 'kind': the output layer of task 'kind' has 2 units "
        "but the data has 3 classes ('x', 'y', 'z'); set units: 3 or drop model.tasks.kind.output"
    ]


def test_unseen_label_in_validation_file(tiny_project):
    csv = tiny_project.parent / "other.csv"
    csv.write_text("a,b,color,kind,flag,value\n1,2,red,x,yes,3\n1,2,red,w,yes,3\n")
    tiny_project.write_text(TINY_RECIPE.replace("validation: 0.25", "validation: other.csv"))
    got = errors(R.load(tiny_project))
    assert got == [f"{csv}:3 column 'kind': label 'w' is not one of the task's classes ('x', 'y', 'z')"]


def test_npz_length_mismatch(tmp_path):
    np.savez(tmp_path / "d.npz", a=np.zeros(5), t=np.zeros(4))
    loaded = load(
        tmp_path, "data: {train: d.npz, inputs: {a: numeric}}\nmodel: {tasks: {t: {type: regression}}}\n"
    )
    assert errors(loaded) == [
        f"{tmp_path / 'd.npz'}: arrays have different lengths (a: 5, t: 4); expected one row "
        "per sample in every array (data.train: 'd.npz')"
    ]


def test_class_count_declared_too_small(tiny_project):
    tiny_project.write_text(
        TINY_RECIPE.replace("kind: {type: classification}", "kind: {type: classification, classes: 2}")
    )
    got = errors(R.load(tiny_project))
    assert got == [
        f"{tiny_project.parent / 'tiny.csv'} column 'kind': found 3 distinct labels but "
        "model.tasks.kind.classes is 2 (labels: 'x', 'y', 'z'); with labels that are not the integers 0..1, "
        "leave classes out"
    ]


def test_class_count_declared_too_large_for_string_labels(tiny_project):
    tiny_project.write_text(
        TINY_RECIPE.replace("kind: {type: classification}", "kind: {type: classification, classes: 5}")
    )
    got = errors(R.load(tiny_project))
    assert got == [
        f"{tiny_project.parent / 'tiny.csv'} column 'kind': found 3 distinct labels but "
        "model.tasks.kind.classes is 5 (labels: 'x', 'y', 'z'); with labels that are not the integers 0..4, "
        "leave classes out"
    ]
