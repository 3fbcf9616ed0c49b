"""--set KEY=VALUE: parsed as YAML, checked by the recipe's schema (errors name the --set), the source
of every value (resolved.yaml, mtl config), and a resume compares the recipe with its overrides."""

from __future__ import annotations

import json

import pytest
import yaml

from mtlcli import recipe as R
from mtlcli.errors import RecipeError
from mtlcli.recipe import overrides as O

# ------------------------------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("train.weighting=pcgrad", ("train", "weighting"), "pcgrad"),
        ("train.optimizer.adam.learning_rate=3e-4", ("train", "optimizer", "adam", "learning_rate"), 3e-4),
        ("model.shared.0.dense.units=16", ("model", "shared", 0, "dense", "units"), 16),
        ("model.shared=[{dense: {units: 8}}]", ("model", "shared"), [{"dense": {"units": 8}}]),
        ("train.early_stopping=", ("train", "early_stopping"), None),
        ("name=a=b", ("name",), "a=b"),  # the first '=' splits
        ("train.jit_compile=false", ("train", "jit_compile"), False),
    ],
)
def test_parse_set_reads_the_path_and_a_yaml_value(text, path, value):
    assert R.parse_set(text) == (path, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train.epochs", "--set train.epochs: expected KEY=VALUE, such as --set train.weighting=pcgrad"),
        ("=3", "--set =3: expected KEY=VALUE, such as --set train.weighting=pcgrad"),
        (
            "train..epochs=1",
            "--set train..epochs=1: the key 'train..epochs' has an empty part; expected names joined by "
            "dots, such as --set train.weighting=pcgrad",
        ),
        (
            "train.epochs=[1",
            "--set train.epochs=[1: the value is not valid YAML: while parsing a flow sequence expected ',' "
            "or ']', but got '<stream end>'",
        ),
        (
            "model.shared=!!python/object:os.system x",
            "--set model.shared=!!python/object:os.system x: the value is not valid YAML: could not determine "
            "a constructor for the tag 'tag:yaml.org,2002:python/object:os.system'",
        ),
    ],
)
def test_a_malformed_set_is_an_error_naming_it(text, message):
    with pytest.raises(RecipeError) as exc:
        R.parse_set(text)
    assert [p.render() for p in exc.value.problems] == [message]


@pytest.mark.parametrize(
    "value",
    [3e-4, 1e-7, 0.5, 16, "pcgrad", "on", "3e-4", "a: b", "x # y", None, True, [1, "two"], {"a": [1]}],
)
def test_format_set_reads_back_as_the_same_value(value):
    text = O.format_set(("train", "x"), value)
    assert R.parse_set(text) == (("train", "x"), value)


# ------------------------------------------------------------------------------------------------
# applying and checking


def _load(tiny_project, *sets):
    return R.load(tiny_project, overrides=sets)


def _problems(tiny_project, *sets) -> list[str]:
    with pytest.raises(RecipeError) as exc:
        _load(tiny_project, *sets)
    return [p.render() for p in exc.value.problems]


def test_overrides_set_values_make_mappings_and_expand_shorthands(tiny_project):
    text = tiny_project.read_text().replace("  weighting: static", "  weighting: static\n  optimizer: adam")
    tiny_project.write_text(text)
    r = _load(
        tiny_project,
        "train.weighting=pcgrad",
        "model.tasks.flag.weight=0.5",
        "train.optimizer.adam.learning_rate=3e-4",  # optimizer: adam is {adam: {}}
        "train.early_stopping.patience=3",  # not in the file: made
        "model.shared.0.dense.units=12",
        "data.inputs.a.missing=zero",  # a: numeric is {kind: numeric}
        "train.epochs=2",
        "train.epochs=5",  # the last one wins
    ).recipe
    assert r.train.weighting == "pcgrad"
    assert r.model.tasks["flag"].weight == 0.5
    assert r.train.optimizer.adam.learning_rate == pytest.approx(3e-4)
    assert r.train.early_stopping.patience == 3 and r.train.early_stopping.monitor == "val_loss"
    assert r.model.shared == [{"dense": {"units": 12, "activation": "relu"}}]
    assert (r.data.inputs["a"].kind, r.data.inputs["a"].missing) == ("numeric", "zero")
    assert r.train.epochs == 5


def test_a_whole_value_can_be_set_and_a_later_set_goes_inside_it(tiny_project):
    loaded = _load(tiny_project, "model.shared=[{dense: {units: 8}}]", "model.shared.0.dense.activation=tanh")
    assert loaded.recipe.model.shared == [{"dense": {"units": 8, "activation": "tanh"}}]
    res = loaded.resolved()
    assert res.sources[("model", "shared", 0, "dense", "units")] == "--set"
    assert res.sources[("model", "shared", 0, "dense", "activation")] == "--set"


def test_schema_errors_name_the_set_with_did_you_mean(tiny_project):
    assert _problems(tiny_project, "train.weighting=pcgard")[0].startswith(
        "--set train.weighting=pcgard: unknown strategy 'pcgard'; did you mean 'pcgrad'?"
    )
    assert _problems(tiny_project, "train.optimiser.adam.learning_rate=3e-4") == [
        "--set train.optimiser.adam.learning_rate=3e-4 train.optimiser: unknown key 'optimiser'; "
        "did you mean 'optimizer'?"
    ]
    assert _problems(tiny_project, "train.optimizer.adam.learning_rte=1") == [
        "--set train.optimizer.adam.learning_rte=1: unknown key 'learning_rte'; did you mean 'learning_rate'?"
    ]
    assert _problems(tiny_project, "train.batch_size=abc") == [
        "--set train.batch_size=abc: expected an integer, received text ('abc')"
    ]
    assert _problems(tiny_project, "train.batch_size=0") == [
        "--set train.batch_size=0: expected a value >= 1, received 0"
    ]
    assert _problems(tiny_project, "model.architecture=mmoee") == [
        "--set model.architecture=mmoee: expected one of hard_sharing, mmoe, cgc, ple, cross_stitch, aitm; "
        "received text ('mmoee'); did you mean 'mmoe'?"
    ]


def test_paths_through_names_and_lists_are_checked(tiny_project):
    assert _problems(tiny_project, "model.tasks.flg.weight=0.5") == [
        "--set model.tasks.flg.weight=0.5: there is no task 'flg'; did you mean 'flag'? "
        "(a new task is set whole: --set model.tasks.flg='{...}')"
    ]
    assert _problems(tiny_project, "data.inputs.zzz.missing=zero") == [
        "--set data.inputs.zzz.missing=zero: there is no input 'zzz'; the inputs are: a, b, color "
        "(a new input is set whole: --set data.inputs.zzz='{...}')"
    ]
    assert _problems(tiny_project, "model.shared.3.dense.units=16") == [
        "--set model.shared.3.dense.units=16: model.shared has 1 item (indices 0 to 0); received index 3"
    ]
    assert _problems(tiny_project, "model.shared.first.dense.units=16") == [
        "--set model.shared.first.dense.units=16: model.shared is a list: name an item by its index "
        "(model.shared.0...)"
    ]
    # a new task set whole is checked like one in the file
    assert _problems(tiny_project, "model.tasks.extra={type: regresion}")[0] == (
        "--set model.tasks.extra={type: regresion} model.tasks.extra.type: expected one of classification, "
        "binary, regression, multilabel; received text ('regresion'); did you mean 'regression'?"
    )


def test_a_problem_in_the_file_keeps_its_line_and_one_under_a_set_goes_to_it(tiny_project):
    tiny_project.write_text(tiny_project.read_text().replace("batch_size: 32", "batch_size: -1"))
    assert _problems(tiny_project, "model.shared=[{dense: {unit: 8}}]") == [
        "--set model.shared=[{dense: {unit: 8}}] model.shared[0].dense: Dense needs the argument 'units'",
        "--set model.shared=[{dense: {unit: 8}}] model.shared[0].dense.unit: Dense has no argument 'unit'; "
        "did you mean 'units'?",
        f"{tiny_project}:19 train.batch_size: expected a value >= 1, received -1",
    ]
    # the --set replaces the file's bad value: no problem is left
    assert _load(tiny_project, "train.batch_size=8").recipe.train.batch_size == 8


def test_cli_validate_exit_2_names_the_set_and_json_carries_it(cli, tiny_project):
    result = cli("validate", tiny_project, "--no-data", "--set", "train.weighting=pcgard")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0] == "error: 1 problem found"
    assert lines[1].startswith(
        "  - --set train.weighting=pcgard: unknown strategy 'pcgard'; did you mean 'pcgrad'?"
    )
    assert "Traceback" not in result.output
    result = cli("validate", tiny_project, "--no-data", "--json", "--set", "train.epochs")
    assert result.exit_code == 2
    payload = json.loads(result.output)
    assert payload["valid"] is False
    assert payload["problems"][0]["file"] == "--set train.epochs"
    result = cli(
        "validate", tiny_project, "--set", "train.weighting=pcgrad", "--set", "model.tasks.value.weight=2"
    )
    assert result.exit_code == 0, result.output
    assert "weighting pcgrad" in result.output


def test_a_column_an_override_names_is_reported_at_the_set(tiny_project):
    from tests.conftest import data_errors

    assert data_errors(_load(tiny_project, "model.tasks.value.target=nope")) == [
        "--set model.tasks.value.target=nope: target column 'nope' not found in "
        f"{tiny_project.parent / 'tiny.csv'} (columns: 'a', 'b', 'color', 'kind', 'flag', 'value')"
    ]


# ------------------------------------------------------------------------------------------------
# provenance


def test_sources_are_the_file_line_the_set_or_default(tiny_project):
    res = _load(tiny_project, "train.early_stopping.patience=3", "seed=9").resolved(file="recipe.yaml")
    s = res.sources
    assert s[("name",)] == "recipe.yaml:1"
    assert s[("seed",)] == "--set"
    assert s[("data", "inputs", "a", "kind")] == "recipe.yaml:7"  # a: numeric
    assert s[("data", "inputs", "a", "column")] == "default"
    assert s[("model", "shared", 0, "dense", "units")] == "recipe.yaml:12"
    assert s[("model", "tasks", "value", "metrics", 0)] == "recipe.yaml:16"
    assert s[("model", "tasks", "kind", "loss")] == "default"
    assert s[("train", "early_stopping", "patience")] == "--set"
    assert s[("train", "early_stopping", "monitor")] == "default"
    assert s[("train", "optimizer", "adam", "learning_rate")] == "default"
    assert set(s) == {path for path, _ in O.leaves(res)}
    res = _load(tiny_project).resolved(seed=4, epochs=1)
    assert (res["seed"], res.sources[("seed",)]) == (4, "--seed")
    assert (res["train"]["epochs"], res.sources[("train", "epochs")]) == (1, "--epochs")
    assert res.sources[("train", "batch_size")] == f"{tiny_project}:19"


def test_annotated_yaml_is_the_same_data_with_sources_as_comments():
    data = {
        "on": "yes",
        "text": "a # not a comment",
        "lines": "one\ntwo",
        "empty": {},
        "none": [],
        "nested": [[1, 2], [{"a": None}], "x"],
        "small": 1e-7,
        "uni": "über",
        "quote": "it's",
    }
    res = O.Resolved(data)
    res.sources = {path: f"src{i}" for i, (path, _) in enumerate(O.leaves(data))}
    text = O.annotated_yaml(res, "two\nlines")
    assert yaml.safe_load(text) == data
    assert text.startswith("# two\n# lines\n")
    assert "'on': 'yes'  # src0\n" in text
    assert "text: 'a # not a comment'  # src1\n" in text
    assert "empty: {}  # src3\n" in text
    assert "  - - 1  # src5\n" in text
    assert "small: 1.0e-07  # src9\n" in text


def test_mtl_config_plain_lines_and_json(cli, tiny_project):
    result = cli(
        "config", tiny_project, "--set", "train.weighting=pcgrad", "--set", "train.early_stopping.patience=3"
    )
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert "train.weighting = pcgrad # --set" in lines
    assert "train.early_stopping.patience = 3 # --set" in lines
    assert "train.early_stopping.monitor = val_loss # default" in lines
    assert f"model.shared[0].dense.units = 16 # {tiny_project}:12" in lines
    assert f"model.tasks.value.metrics[0] = mae # {tiny_project}:16" in lines
    assert "model.tasks.kind.head = [] # default" in lines
    result = cli("config", tiny_project, "--json", "--set", "model.tasks.flag.weight=0.5")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {"key": "model.tasks.flag.weight", "value": 0.5, "source": "--set"} in rows
    assert {"key": "train.batch_size", "value": 32, "source": f"{tiny_project}:19"} in rows
    assert {"key": "seed", "value": 3, "source": f"{tiny_project}:2"} in rows
    assert rows[0]["key"] == "name"
    result = cli("config", tiny_project, "--set", "train.optimiser.adam.learning_rate=1")
    assert result.exit_code == 2
    assert "did you mean 'optimizer'?" in result.output


# ------------------------------------------------------------------------------------------------
# training and resuming with overrides


@pytest.mark.slow
def test_train_records_overrides_and_resume_compares_them(cli, tiny_project, tmp_path):
    run = tmp_path / "run"
    sets = ["--set", "train.weighting=pcgrad", "--set", "train.optimizer.adam.learning_rate=3e-4"]
    sets += ["--set", "train.early_stopping.patience=3"]
    result = cli("train", tiny_project, "-o", run, "--epochs", "1", *sets)
    assert result.exit_code == 0, result.output
    text = (run / "resolved.yaml").read_text()
    resolved = yaml.safe_load(text)
    expected = R.load(tiny_project, overrides=sets[1::2]).recipe.resolved()
    expected["train"]["epochs"] = 1
    assert resolved == expected
    for line in (
        "      learning_rate: 0.0003  # --set",
        "  weighting: pcgrad  # --set",
        "    patience: 3  # --set",
        "    monitor: val_loss  # default",
        "  epochs: 1  # --epochs",
        "  batch_size: 32  # recipe.yaml:19",
        "        units: 16  # recipe.yaml:12",
    ):
        assert line in text.splitlines()
    env = json.loads((run / "env.json").read_text())
    assert env["overrides"] == sets[1::2]

    # a --set of a key a resume cannot change is refused like a recipe change, naming the key
    result = cli("train", "--resume", run, "--epochs", "2", "--set", "train.batch_size=8")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[:2] == [
        f"error: the recipe differs from the one {run} was trained with in ways that break the run:",
        "  - train.batch_size: 32 -> 8",
    ]
    assert lines[-1] == (
        "the run was trained with --set train.weighting=pcgrad --set train.optimizer.adam.learning_rate=3e-4 "
        "--set train.early_stopping.patience=3: give them again, or leave RECIPE out to continue with the "
        "run's own recipe and overrides"
    )
    # the recipe file without the run's overrides is a change too
    result = cli("train", tiny_project, "--resume", run, "--epochs", "2")
    assert result.exit_code == 2
    assert '  - train.weighting: "pcgrad" -> "static"' in result.output.splitlines()
    assert "  - train.optimizer.adam.learning_rate: 0.0003 -> 0.001" in result.output.splitlines()

    # the run's own recipe (its overrides applied) plus a change a resume accepts
    result = cli("train", "--resume", run, "--epochs", "2", "--set", "train.early_stopping.patience=4")
    assert result.exit_code == 0, result.output
    assert "  changed: train.early_stopping.patience: 3 -> 4" in result.output.splitlines()
    text = (run / "resolved.yaml").read_text()
    assert "    patience: 4  # --set" in text.splitlines()
    assert "  weighting: pcgrad  # --set" in text.splitlines()
    assert yaml.safe_load(text)["train"]["epochs"] == 2
    env = json.loads((run / "env.json").read_text())
    assert env["overrides"] == [*sets[1::2], "train.early_stopping.patience=4"]
