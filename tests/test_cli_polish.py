"""CLI details: ``mtl schema``, ``validate --json``, ``--debug`` anywhere, ``-V``, flags shown as flags,
and YAML syntax errors with the source line, a caret and a hint."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from mtlcli.errors import RecipeError

REPO = Path(__file__).resolve().parents[1]


def test_schema_accepts_every_bundled_recipe(cli):
    result = cli("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    for path in sorted((REPO / "recipes").glob("*.yaml")) + [REPO / "mtlcli" / "templates" / "penguins.yaml"]:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_schema_rejects_a_wrong_key_and_an_unknown_strategy(cli):
    schema = json.loads(cli("schema").stdout)
    doc = yaml.safe_load((REPO / "recipes" / "penguins.yaml").read_text())
    doc["train"]["epoch"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)
    del doc["train"]["epoch"]
    doc["train"]["weighting"] = "pcgard"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


def test_validate_json_valid_and_invalid(cli, tmp_path):
    ok = cli("validate", REPO / "recipes" / "penguins.yaml", "--json")
    assert ok.exit_code == 0
    payload = json.loads(ok.stdout)
    assert payload["valid"] is True and payload["tasks"] == ["species", "sex", "body_mass"]
    assert payload["rows"]["train"] > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "seed: -1\ndata: {train: x.csv, inputs: {a: numeric}}\nmodel: {tasks: {t: {type: binary}}}\n"
    )
    res = cli("validate", bad, "--json")
    assert res.exit_code == 2
    payload = json.loads(res.stdout)
    assert payload["valid"] is False and payload["message"] == "1 problem found"
    problems = payload["problems"]
    assert problems[0]["line"] == 1 and problems[0]["path"] == "seed"
    assert "expected a value >= 0" in problems[0]["message"]


def test_debug_is_accepted_after_the_subcommand(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: -1\n")
    with pytest.raises(RecipeError):
        cli("validate", bad, "--debug")


def test_short_version_flag(cli):
    res = cli("-V")
    assert res.exit_code == 0 and res.stdout.startswith("mtl ")


@pytest.mark.parametrize("command", ["validate", "train", "evaluate", "plan", "strategies"])
def test_flags_are_not_shown_as_taking_a_value(cli, command):
    res = cli(command, "--help")
    assert res.exit_code == 0
    assert "<bool>" not in res.output


@pytest.mark.parametrize(
    "text, line, caret_col, hint",
    [
        ("name: x\nseed:\t1\n", 2, 5, "replace the tab"),
        (
            "model:\n  shared: [{dense: {units: 8}\n  tasks: {}\n",
            3,
            2,
            "the '{' opened on line 2 is not closed",
        ),
        (
            "train:\n  epochs:3\n  batch_size: 4\n",
            3,
            12,
            "line 2 reads epochs:3; a key needs a space after its colon",
        ),
        ("name: !!python/object/apply:os.system ['x']\n", 1, 6, "nothing in a recipe may run code"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "train"])
def test_yaml_syntax_error_shows_line_caret_and_hint(cli, tmp_path, command, text, line, caret_col, hint):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    res = cli(command, path, *(["--output", tmp_path / "out"] if command == "train" else []))
    assert res.exit_code == 2
    assert not (tmp_path / "out").exists()
    out = res.output.splitlines()
    assert out[1].startswith(f"  - {path}:{line}: invalid YAML:"), res.output
    assert out[2].strip().startswith(f"{line} | ")
    assert out[3].index("^") - out[3].index("|") - 2 == caret_col, res.output
    assert hint in res.output
