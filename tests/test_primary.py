"""``train.primary``: the recipe names the primary task; PCD takes it as its primary objective, and
``mtl evaluate`` / ``mtl compare`` list it first (tables and ``--json``). Without it nothing changes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mtlcli import data
from mtlcli import recipe as R
from mtlcli.model.build import build_model
from mtlcli.recipe.spec import primary_first
from mtlcli.run.evaluate import load_model

from .conftest import TINY_RECIPE

REPO = Path(__file__).resolve().parents[1]
PCD_RECIPE = TINY_RECIPE.replace("weighting: static", "weighting: {pcd: {tau: 0.1}}\n  primary: flag")


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_pcd_without_train_primary_is_refused_naming_the_key(cli, tiny_project):
    text = TINY_RECIPE.replace("weighting: static", "weighting: pcd")
    tiny_project.write_text(text)
    result = cli("validate", tiny_project)
    assert result.exit_code == 2
    assert (
        f"{tiny_project}:{_line(text, 'weighting: pcd')} train.weighting: pcd needs a primary task: add "
        "primary: <task> under train (e.g. train.primary: kind; tasks: kind, flag, value)"
    ) in result.output
    # --set supplies it
    assert cli("validate", tiny_project, "--set", "train.primary=value").exit_code == 0


def test_validate_names_the_primary_task(cli, tiny_project):
    tiny_project.write_text(PCD_RECIPE)
    result = cli("validate", tiny_project)
    assert result.exit_code == 0 and "weighting pcd(tau=0.1), primary task flag" in result.output
    assert json.loads(cli("validate", tiny_project, "--json").stdout)["primary"] == "flag"


def test_plan_names_the_primary_task(cli, tiny_project):
    tiny_project.write_text(PCD_RECIPE)
    result = cli("plan", tiny_project)
    assert result.exit_code == 0
    assert "; 3 task(s); weighting pcd(tau=0.1), primary task flag" in result.output.splitlines()[0]


def test_an_unknown_primary_task_gets_file_line_and_did_you_mean(cli, tiny_project):
    text = TINY_RECIPE.replace("weighting: static", "weighting: static\n  primary: flg")
    tiny_project.write_text(text)
    result = cli("validate", tiny_project)
    assert result.exit_code == 2
    assert (
        f"{tiny_project}:{_line(text, 'primary: flg')} train.primary: unknown task 'flg'; did you mean "
        "'flag'? (tasks: kind, flag, value)"
    ) in result.output
    result = cli("validate", tiny_project, "--set", "train.primary=vale")
    assert result.exit_code == 2 and "unknown task 'vale'; did you mean 'value'?" in result.output


def test_pcd_takes_its_primary_from_train_primary_only(cli, tiny_project):
    text = TINY_RECIPE.replace("weighting: static", "weighting: {pcd: {primary: 1}}\n  primary: flag")
    tiny_project.write_text(text)
    result = cli("validate", tiny_project)
    assert result.exit_code == 2
    assert (
        "train.weighting.pcd.primary: pcd's primary task comes from train.primary (a task name), not from "
        "a primary parameter: remove it and write train.primary: kind"
    ) in result.output


def test_a_tau_list_has_one_value_per_auxiliary(cli, tiny_project):
    text = TINY_RECIPE.replace(
        "weighting: static", "weighting: {pcd: {tau: [0.1, 0.2, 0.3]}}\n  primary: flag"
    )
    tiny_project.write_text(text)
    result = cli("validate", tiny_project)
    assert result.exit_code == 2
    assert (
        f"{tiny_project}:{_line(text, 'tau: [0.1')} train.weighting.pcd.tau: expected one value per auxiliary "
        "task (3 tasks, one of them train.primary: 2 values, in task order without the primary), received 3"
    ) in result.output
    tiny_project.write_text(text.replace("[0.1, 0.2, 0.3]", "[0.1, 0.2]"))
    assert cli("validate", tiny_project).exit_code == 0


def test_train_primary_is_in_the_schema_and_the_config(cli, tiny_project):
    schema = json.loads(cli("schema").stdout)
    prop = schema["$defs"]["TrainSpec"]["properties"]["primary"]
    assert prop["anyOf"] == [{"type": "string"}, {"type": "null"}] and "primary" in prop["description"]
    tiny_project.write_text(PCD_RECIPE)
    result = cli("config", tiny_project, "--json")
    assert result.exit_code == 0
    [row] = [r for r in json.loads(result.stdout) if r["key"] == "train.primary"]
    assert row["value"] == "flag" and row["source"].endswith(f":{_line(PCD_RECIPE, 'primary: flag')}")


def test_the_model_strategy_gets_the_primary_index_and_keeps_it_when_loaded(tiny_project, tmp_path):
    tiny_project.write_text(PCD_RECIPE)
    loaded = R.load(tiny_project)
    model = build_model(loaded, data.prepare(loaded), seed=0)
    assert model.spec["weighting"] == {"pcd": {"tau": 0.1, "primary": 1}}
    assert model.spec["primary"] == "flag"
    assert model.strategy.primary == 1 and model.strategy.tau == 0.1
    model.save(tmp_path / "m.keras")
    again = load_model(tmp_path / "m.keras")
    assert again.strategy.primary == 1 and again.spec["primary"] == "flag"
    # the recipe keeps what the user wrote
    assert loaded.recipe.resolved()["train"]["weighting"] == {"pcd": {"tau": 0.1}}


def test_without_primary_the_model_spec_is_unchanged(tiny_project):
    loaded = R.load(tiny_project)
    assert loaded.recipe.model_weighting() == "static" and loaded.recipe.train.primary is None
    text = TINY_RECIPE.replace("weighting: static", "weighting: upgrad\n  primary: value")
    loaded = R.loads(text, file="r.yaml", base_dir=tiny_project.parent)
    assert loaded.recipe.model_weighting() == "upgrad"  # a strategy without a primary is left alone


def test_primary_first():
    assert primary_first(["a", "b", "c"], "c") == ["c", "a", "b"]
    assert primary_first(["a", "b", "c"], None) == ["a", "b", "c"]
    assert primary_first(["a", "b"], "z") == ["a", "b"]


def _rows(output: str, names: list[str]) -> list[str]:
    """The table rows' first words that are task names, in printed order."""
    return [line.split()[0] for line in output.splitlines() if line.split() and line.split()[0] in names]


@pytest.fixture
def two_runs(cli, tiny_project, tmp_path):
    """Two seeds of the PCD recipe (primary ``flag``) and one run of the plain tiny recipe."""
    tiny_project.write_text(PCD_RECIPE)
    runs = [tmp_path / "runs" / f"pcd{s}" for s in (1, 2)]
    for seed, run in zip((1, 2), runs, strict=True):
        assert cli("train", tiny_project, "-o", run, "--epochs", "1", "--seed", str(seed)).exit_code == 0
    plain = tmp_path / "plain.yaml"
    plain.write_text(TINY_RECIPE)
    assert cli("train", plain, "-o", tmp_path / "plain", "--epochs", "1").exit_code == 0
    return runs, tmp_path / "plain"


def test_evaluate_and_compare_list_the_primary_task_first(cli, two_runs, tiny_project):
    runs, plain = two_runs
    tasks = ["kind", "flag", "value"]
    result = cli("evaluate", runs[0])
    assert result.exit_code == 0 and _rows(result.output, tasks) == ["flag", "kind", "value"]
    assert list(json.loads(cli("evaluate", runs[0], "--json").stdout)["tasks"]) == ["flag", "kind", "value"]
    # on a data file that lacks a task's labels (that task gets n = 0 and a note): the order stays
    csv = tiny_project.parent / "tiny.csv"
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, c in enumerate(header) if c != "kind"]
    (tiny_project.parent / "nokind.csv").write_text(
        "\n".join(",".join(row.split(",")[i] for i in keep) for row in lines) + "\n"
    )
    out = json.loads(cli("evaluate", runs[0], "--data", tiny_project.parent / "nokind.csv", "--json").stdout)
    assert list(out["tasks"]) == ["flag", "kind", "value"] and out["tasks"]["kind"]["n"] == 0
    # metrics.json, written by the run, follows the same order
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert list(metrics["splits"]["validation"]["tasks"]) == ["flag", "kind", "value"]
    # without train.primary: the recipe's order
    assert list(json.loads(cli("evaluate", plain, "--json").stdout)["tasks"]) == tasks

    result = cli("compare", *runs)
    assert result.exit_code == 0
    titles = [line.split()[0] for line in result.output.splitlines() if "(validation; headline" in line]
    assert titles == ["flag", "kind", "value"]
    report = json.loads(cli("compare", *runs, "--json").stdout)
    assert list(report["tasks"]) == ["flag", "kind", "value"]
    assert list(report["groups"][0]["tasks"]) == ["flag", "kind", "value"]
    assert list(json.loads(cli("compare", plain, "--json").stdout)["tasks"]) == tasks


def test_a_changed_primary_is_a_recipe_change_for_resume(cli, two_runs, tiny_project):
    runs, _ = two_runs
    result = cli("train", "--resume", runs[0], "--epochs", "2", "--set", "train.primary=value")
    assert result.exit_code == 2 and '  - train.primary: "flag" -> "value"' in result.output.splitlines()
    # a fork may change it: the EMA of PCD's state is kept in task order, so it stays meaningful
    fork = runs[0].parent / "fork"
    result = cli(
        "train", "--resume", runs[0], "--fork", fork, "--epochs", "2", "--set", "train.primary=value"
    )
    assert result.exit_code == 0, result.output
    assert list(json.loads(cli("evaluate", fork, "--json").stdout)["tasks"]) == ["value", "kind", "flag"]


def test_mtl_strategies_shows_pcd_needs_train_primary_not_a_primary_parameter(cli):
    rows = json.loads(cli("strategies", "--json").stdout)
    [pcd] = [r for r in rows if r["name"] == "pcd"]
    assert pcd["params"] == {"tau": 0.02, "beta": 0.999, "eps": 1e-08, "on": "parameters"}
    assert pcd["needs_primary"] is True
    assert all("needs_primary" not in r for r in rows if r["name"] != "pcd")
    table = cli("strategies").output.replace("│", " ")
    assert re.search(r"needs\s+train\.primary", table)


@pytest.mark.slow
def test_one_mirrored_pcd_step_equals_the_single_device_step(tiny_project):
    """tests/test_distribute.py's check for pcd with a primary that is not the first task: one SGD step
    under ``mirrored`` over 2 logical CPU devices equals the single-device step, state included."""
    weightings = [
        "{pcd: {tau: 0.3}}\n  primary: value",
        "{pcd: {tau: 0.3, on: representation}}\n  primary: value",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.distribute_job", "step", str(tiny_project), *weightings],
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if k != "TF_CONFIG"}, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["weighting"] for r in rows] == weightings
    for row in rows:  # on: representation: the strategy sees a (T, T) factor of the global Gramian
        assert row["replicas"] == 2 and row["update_norm"] > 1e-3, row
        assert row["update_rel"] <= 1e-5 and row["state_diff"] <= 1e-5 and row["logs_diff"] <= 1e-5, row
