"""mtl tune without training: the search syntax, the schema checks before any trial, the objectives
and their directions, the Pareto helper, the command's errors and the missing-Optuna message."""

from __future__ import annotations

import sys

import pytest

from mtlcli.errors import RecipeError, UsageError
from mtlcli.recipe import load
from mtlcli.tune import objectives as O
from mtlcli.tune import space as S


def messages(exc: pytest.ExceptionInfo) -> list[str]:
    return [p.render() for p in exc.value.problems]


@pytest.mark.parametrize(
    ("text", "kind", "low", "high", "log", "choices"),
    [
        ("train.optimizer.adam.learning_rate=log:1e-4:1e-2", "float", 1e-4, 1e-2, True, ()),
        ("model.tasks.sex.weight=0.1:2", "float", 0.1, 2.0, False, ()),
        ("train.batch_size=int:8:64", "int", 8, 64, False, ()),
        ("train.batch_size=int:log:8:64", "int", 8, 64, True, ()),
        (
            "train.weighting=static,uncertainty,upgrad",
            "categorical",
            None,
            None,
            False,
            ("static", "uncertainty", "upgrad"),
        ),
        ("train.x=true,false", "categorical", None, None, False, ("true", "false")),
        (
            "train.weighting=static,{cagrad: {c: 0.4}}",
            "categorical",
            None,
            None,
            False,
            ("static", "{cagrad: {c: 0.4}}"),
        ),
    ],
)
def test_every_spec_form(text, kind, low, high, log, choices):
    p = S.parse_search(text)
    assert (p.kind, p.low, p.high, p.log, p.choices) == (kind, low, high, log, choices)
    assert p.key == text.partition("=")[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x=lg:1:2", "did you mean 'log'?"),
        ("x=2:1", "the low end (2.0) must be below the high end (1.0)"),
        ("x=log:0:1", "a log range needs a positive low end"),
        ("x=int:1.5:3", "expected an integer, received '1.5'"),
        ("x=a", "one value is not a search"),
        ("x=a,,b", "an empty value"),
        ("x=a,a", "a value appears twice"),
        ("x", "expected KEY=SPEC"),
        ("x=1:b", "expected a number, received 'b'"),
    ],
)
def test_spec_errors(text, expected):
    with pytest.raises(RecipeError) as exc:
        S.parse_search(text)
    assert expected in messages(exc)[0]
    assert messages(exc)[0].startswith(f"--search {text}")


def test_all_problems_at_once_and_twice_searched():
    with pytest.raises(RecipeError) as exc:
        S.parse_all(["x=2:1", "y=a", "train.epochs=1,2", "train.epochs=int:1:3"])
    got = messages(exc)
    assert len(got) == 3 and "train.epochs is searched twice" in got[2]


def test_schema_check_every_value_and_both_ends(tiny_project):
    params = S.parse_all(
        [
            "train.weighting=static,bogus,upgrad",
            "train.epochs=int:0:3",
            "train.optimizer.adam.learning_rate=log:1e-4:1e-2",
        ]
    )
    with pytest.raises(RecipeError) as exc:
        S.check(tiny_project, params, [])
    got = messages(exc)
    assert len(got) == 2, got
    assert got[0].startswith(
        "--search train.weighting=static,bogus,upgrad (value bogus): unknown strategy 'bogus'"
    )
    assert got[1] == "--search train.epochs=int:0:3 (value 0): expected a value >= 1, received 0"
    S.check(tiny_project, S.parse_all(["train.weighting=static,upgrad", "train.epochs=int:1:3"]), [])


def test_schema_check_unknown_key(tiny_project):
    with pytest.raises(RecipeError) as exc:
        S.check(tiny_project, S.parse_all(["train.epoch=int:1:3"]), [])
    assert "epochs" in " ".join(messages(exc))  # did you mean


def test_objectives_and_directions(tiny_project):
    loaded = load(tiny_project)
    per_task = O.resolve(None, loaded)
    assert [(o.name, o.direction, o.column) for o in per_task] == [
        ("kind.accuracy", "maximize", "val_kind_accuracy"),
        ("flag.accuracy", "maximize", "val_flag_accuracy"),
        ("value.mae", "minimize", "val_value_mae"),
    ]
    assert [(o.name, o.direction, o.column) for o in O.resolve("loss", loaded)] == [
        ("loss", "minimize", "val_loss")
    ]
    assert [o.name for o in O.resolve("flag.auc, value.loss", loaded)] == ["flag.auc", "value.loss"]
    with pytest.raises(RecipeError) as exc:
        O.resolve("knd.accuracy,flag.acuracy,value", loaded)
    got = messages(exc)
    assert "unknown task 'knd'; did you mean 'kind'?" in got[0]
    assert "no metric 'acuracy' (it reports accuracy, auc, loss); did you mean 'accuracy'?" in got[1]
    assert "expected per-task, loss or TASK.METRIC" in got[2]


def test_objective_read():
    doc = {"splits": {"validation": {"loss": 0.5, "tasks": {"a": {"accuracy": 0.9, "loss": 0.2}}}}}
    assert O.Objective(None, "loss", False).read(doc) == 0.5
    assert O.Objective("a", "accuracy", True).read(doc) == 0.9
    assert O.Objective("b", "accuracy", True).read(doc) is None


def test_pareto_directions():
    objs = [O.Objective("a", "accuracy", True), O.Objective("b", "mae", False)]
    values = [[0.9, 2.0], [0.8, 1.0], [0.8, 2.5], [0.9, 2.0], [0.7, 1.0]]
    assert O.pareto(values, objs) == [True, True, False, True, False]
    assert O.pareto([], objs) == []


def test_counted():
    from types import SimpleNamespace as N

    from mtlcli.tune.study import counted

    def t(state, **attrs):
        return N(state=N(name=state), user_attrs=attrs)

    assert [counted(x) for x in (t("COMPLETE"), t("PRUNED"), t("RUNNING"), t("FAIL", error="exit 1"))] == [
        True
    ] * 4
    assert not counted(t("FAIL", interrupted=True)) and not counted(t("FAIL", surplus=True))


def test_cli_errors_exit_2_before_any_trial(cli, tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project.parent)
    r = cli("tune", tiny_project, "--search", "train.weighting=static,bogus", "--objectives", "knd.accuracy")
    assert r.exit_code == 2, r.output
    assert "unknown task 'knd'" in r.output and "unknown strategy 'bogus'" in r.output  # both at once
    assert not (tiny_project.parent / "runs" / "tiny" / "studies" / "tiny" / "trial-0000").exists()
    r = cli("tune", tiny_project)
    assert r.exit_code == 2 and "nothing to search" in r.output
    r = cli("tune", tiny_project, "--search", "train.weighting=static,upgrad", "--sampler", "tp")
    assert r.exit_code == 2 and "did you mean 'tpe'" in r.output
    r = cli("tune", "--join", "nope")
    assert r.exit_code == 2 and "--storage" in r.output


def test_cli_changed_search_space_refused(cli, tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project.parent)
    from mtlcli.tune import TuneSpec, prepare

    prepare(TuneSpec(tiny_project, ["train.weighting=static,upgrad"], trials=1))
    with pytest.raises(UsageError, match="was created with search"):
        prepare(TuneSpec(tiny_project, ["train.weighting=static,pcgrad"], trials=1))


def test_missing_optuna_says_what_to_install(cli, tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project.parent)
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    r = cli("tune", tiny_project, "--search", "train.weighting=static,upgrad")
    assert r.exit_code == 2
    assert 'pip install "mtlcli[tune]"' in r.output


def test_multi_objective_prune_is_a_notice(tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project.parent)
    from mtlcli.tune import TuneSpec, prepare

    p = prepare(TuneSpec(tiny_project, ["train.weighting=static,upgrad"], prune=True))
    assert not p.prune and "single-objective studies only" in p.notes[0]
    p = prepare(TuneSpec(tiny_project, ["train.weighting=static,upgrad"], objectives="loss", name="l"))
    assert p.prune and p.study.directions[0].name == "MINIMIZE"


def test_tune_file(tmp_path, tiny_project, monkeypatch):
    from mtlcli.tune import request

    f = tmp_path / "tune.yaml"
    f.write_text(
        "recipe: recipe.yaml\nsearch:\n  train.weighting: [static, upgrad]\n  train.optimizer.adam.learning_rate: log:1e-3:1e-2\n"
        "trials: 7\nset: {train.epochs: 2}\n"
    )
    spec = request(
        f, {"jobs": 2, "search": ["train.weighting=static,pcgrad"], "sets": ["seed=1"], "trials": None}
    )
    assert spec.recipe == tiny_project and spec.trials == 7 and spec.jobs == 2 and spec.sampler == "tpe"
    assert spec.search == [
        "train.optimizer.adam.learning_rate=log:1e-3:1e-2",
        "train.weighting=static,pcgrad",
    ]
    assert spec.sets == ["train.epochs=2", "seed=1"]
    f.write_text("recipe: recipe.yaml\nsearch:\n  train.weighting: static\n  x: lg:1:2\ntrails: 3\n")
    with pytest.raises(RecipeError) as exc:
        request(f, {})
    got = messages(exc)
    assert got[0].startswith(f"{f}:5") and "unknown key 'trails'" in got[0]
    f.write_text("recipe: recipe.yaml\nsearch:\n  train.weighting: static\n  x: lg:1:2\n")
    with pytest.raises(RecipeError) as exc:
        request(f, {})
    got = messages(exc)
    assert got[0].startswith(f"{f}:3 search.train.weighting: one value is not a search")
    assert got[1].startswith(f"{f}:4 search.x:") and "did you mean 'log'" in got[1]


def test_join_unknown_study(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("tune", "--join", "nope", "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert r.exit_code == 2 and "--join nope: no such study in sqlite:///" in r.output
