"""CLI behaviour through typer's CliRunner: exit codes, messages, files written."""

from __future__ import annotations

import csv
import json

import pytest
import yaml


def test_help_lists_commands(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("train", "evaluate", "validate", "init", "strategies"):
        assert command in result.output


def test_validate_ok(cli, tiny_project):
    result = cli("validate", tiny_project)
    assert result.exit_code == 0, result.output
    assert "is valid: 3 task(s) (kind, flag, value), weighting static" in result.output
    assert "label coverage (train): kind 90/90, flag " in result.output


def test_validate_reports_all_problems_exit_2_no_traceback(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {train: x.csv, inputs: {a: numerc}}\nmodel: {tasks: {t: {type: regresion}}}\n")
    result = cli("validate", recipe)
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: 2 problems found",
        f"  - {recipe}:1 data.inputs.a.kind: expected one of numeric, categorical, image, array, text; received text ('numerc'); "
        "did you mean 'numeric'?",
        f"  - {recipe}:2 model.tasks.t.type: expected one of classification, binary, regression, multilabel; received text "
        "('regresion'); did you mean 'regression'?",
    ]
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: [\n")
    from mtlcli.errors import RecipeError

    with pytest.raises(RecipeError):
        cli("--debug", "validate", recipe)


def test_init_scaffolds_and_refuses_to_overwrite(cli, tmp_path):
    target = tmp_path / "proj"
    result = cli("init", target)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in target.iterdir()) == [
        ".gitignore",
        "README.md",
        "new_penguins.csv",
        "penguins.csv",
        "recipe.schema.json",
        "recipe.yaml",
    ]
    assert (
        (target / "recipe.yaml")
        .read_text()
        .startswith("# yaml-language-server: $schema=recipe.schema.json\n")
    )
    assert result.output.strip().splitlines()[-1] == f"next: cd {target} && mtl train recipe.yaml"
    assert cli("validate", target / "recipe.yaml").exit_code == 0
    again = cli("init", target)
    assert again.exit_code == 2
    assert "refusing to overwrite existing files" in again.output


def test_init_unknown_template(cli, tmp_path):
    result = cli("init", tmp_path / "p", "--template", "pengiuns")
    assert result.exit_code == 2
    assert "unknown template 'pengiuns'; did you mean 'penguins'?" in result.output


def test_strategies_lists_every_registered_strategy(cli):
    from mtlcli import weighting

    result = cli("strategies", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == weighting.available()
    assert {r["needs"] for r in rows} == {"losses", "per-task gradients"}
    cost = {r["name"]: r["cost"] for r in rows}
    assert cost["static"] == "1 backward" and cost["famo"] == "1 backward + 1 forward (losses after the step)"
    assert cost["pcgrad"] == "T backward"  # every: K refused for it
    assert cost["mgda"] == "T backward (1 with on: representation); every: K: 1 on the steps between"
    assert cost["modo"].startswith("T backward on each half-batch")
    assert "validation" in cost["auto_lambda"]
    assert "cost per step" in cli("strategies").output


def test_train_then_evaluate_end_to_end(cli, tiny_project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("train", tiny_project, "--epochs", "2")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny" / "1"
    assert result.output.strip().splitlines()[-1] == str(run_dir)
    # a plain line per epoch when stdout is not a terminal
    assert sum(line.startswith("epoch ") for line in result.output.splitlines()) == 2
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == [
        "checkpoints",
        "data.json",
        "env.json",
        "history.csv",
        "metrics.json",
        "model.keras",
        "recipe.yaml",
        "resolved.yaml",
        "tb",
    ]
    assert (run_dir / "recipe.yaml").read_text() == tiny_project.read_text()
    resolved = yaml.safe_load((run_dir / "resolved.yaml").read_text())
    assert (
        resolved["train"]["epochs"] == 2
        and resolved["model"]["tasks"]["flag"]["loss"] == "binary_crossentropy"
    )
    with open(run_dir / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    for column in ("kind_loss", "flag_accuracy", "value_mae", "val_value_mae", "kind_weight"):
        assert column in rows[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    env = json.loads((run_dir / "env.json").read_text())
    assert env["seed"] == 3 and env["epochs_run"] == 2

    evaluated = cli("evaluate", run_dir, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    got = json.loads(evaluated.output)
    assert set(got["tasks"]) == {"kind", "flag", "value"}
    expected = metrics["splits"]["validation"]["tasks"]
    for task, row in got["tasks"].items():
        assert row["n"] == expected[task]["n"]
        for key, value in row.items():
            assert value == pytest.approx(expected[task][key], rel=1e-5), (task, key)

    # a second run never overwrites the first
    second = cli("train", tiny_project, "--epochs", "1")
    assert second.exit_code == 0
    assert (tmp_path / "runs" / "tiny" / "2" / "model.keras").exists()


def test_train_output_dir_refuses_non_empty(cli, tiny_project, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("x")
    result = cli("train", tiny_project, "--output", out)
    assert result.exit_code == 2
    assert f"--output {out} is not empty" in result.output


def test_same_seed_same_result(cli, tiny_project, tmp_path):
    a = cli("train", tiny_project, "--epochs", "2", "-o", tmp_path / "a")
    b = cli("train", tiny_project, "--epochs", "2", "-o", tmp_path / "b")
    assert a.exit_code == b.exit_code == 0
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())["splits"]
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())["splits"]
    assert ma == mb


def test_evaluate_with_data_file_and_errors(cli, tiny_project, tmp_path):
    out = tmp_path / "run"
    assert cli("train", tiny_project, "--epochs", "1", "-o", out).exit_code == 0
    result = cli("evaluate", out / "model.keras", "--data", tiny_project.parent / "tiny.csv", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tasks"]["kind"]["n"] == 120
    missing = cli("evaluate", tmp_path / "nope")
    assert missing.exit_code == 2
    assert f"{tmp_path / 'nope'}: no such run directory or model file" in missing.output
    no_data = cli("evaluate", out / "model.keras")
    assert no_data.exit_code == 2
    assert "evaluating a model file needs --data FILE" in no_data.output
    bad_split = cli("evaluate", out, "--split", "test")
    assert bad_split.exit_code == 2
    assert "has no 'test' split" in bad_split.output
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    junk = cli("evaluate", tmp_path / "junk.keras", "--data", tiny_project.parent / "tiny.csv")
    assert junk.exit_code == 2
    assert "cannot load the model safely" in junk.output
