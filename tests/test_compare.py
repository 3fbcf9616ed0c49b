"""``mtl compare``: statistics against hand computations, grouping of fake run directories, the CLI
(tables, --json, --plot, errors) and one end-to-end comparison of real trainings (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtlcli.compare import compare, find_runs, stats
from mtlcli.compare.report import differing_keys, group_runs, name_groups
from mtlcli.errors import UsageError

# ------------------------------------------------------------------------------------------------
# fake run directories


def fake_run(
    path: Path,
    results: dict[str, dict[str, float]],
    *,
    seed: int = 0,
    weighting: str = "static",
    architecture: str = "hard_sharing",
    recipe_tasks: list[str] | None = None,
    split: str = "test",
    env: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """A run directory with resolved.yaml and metrics.json (no model), as mtl train writes them."""
    path.mkdir(parents=True, exist_ok=True)
    tasks = recipe_tasks or list(results)
    resolved = {
        "name": "fake",
        "seed": seed,
        "model": {"architecture": architecture, "tasks": {t: {"weight": 1.0} for t in tasks}},
        "train": {"epochs": 2, "weighting": weighting, **(extra or {})},
    }
    (path / "resolved.yaml").write_text("# resolved\n" + yaml.safe_dump(resolved, sort_keys=False))
    splits = {split: {"tasks": {t: {**m, "n": 10} for t, m in results.items()}}}
    (path / "metrics.json").write_text(json.dumps({"splits": splits}))
    if env is not None:
        (path / "env.json").write_text(json.dumps(env))
    return path


def two_strategies(root: Path) -> Path:
    """static and pcgrad × seeds 0, 1, 2 on tasks a (accuracy ↑) and b (mae ↓), plus single-task runs."""
    acc = {"static": [0.80, 0.82, 0.84], "pcgrad": [0.90, 0.91, 0.92]}
    mae = {"static": [2.0, 2.2, 2.4], "pcgrad": [3.0, 3.1, 3.2]}
    for w in acc:
        for s in range(3):
            fake_run(
                root / w / f"seed-{s}",
                {"a": {"loss": 0.5, "accuracy": acc[w][s]}, "b": {"loss": 1.0, "mae": mae[w][s]}},
                seed=s,
                weighting=w,
            )
    for s, (x, y) in enumerate([(0.78, 2.4), (0.80, 2.5), (0.82, 2.6)]):
        fake_run(root / "single-a" / f"seed-{s}", {"a": {"loss": 0.6, "accuracy": x}}, seed=s)
        fake_run(root / "single-b" / f"seed-{s}", {"b": {"loss": 1.2, "mae": y}}, seed=s)
    return root


# ------------------------------------------------------------------------------------------------
# statistics


def test_summary_of_1_2_3():
    s = stats.summarize([1, 2, 3])
    assert s.mean == 2 and s.sd == 1 and s.n == 3
    assert s.half_width == pytest.approx(4.302653 * 1 / math.sqrt(3), abs=1e-5)  # t(0.975, 2) · sd/√n
    assert s.ci == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-5)


def test_summary_of_one_value_has_no_spread():
    s = stats.summarize([0.5])
    assert (s.mean, s.sd, s.ci, s.n) == (0.5, None, None, 1)


def test_welch_against_a_hand_computation():
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0, 10.0]
    # var a = 1, var b = 20/3; se² = 1/3 + 5/3 = 2; t = (2 - 7)/√2; Welch–Satterthwaite df:
    se2 = 1 / 3 + (20 / 3) / 4
    df = se2**2 / ((1 / 3) ** 2 / 2 + ((20 / 3) / 4) ** 2 / 3)
    from scipy.stats import t as student

    expected = 2 * student.sf(abs((2 - 7) / math.sqrt(se2)), df)
    assert stats.welch_p(a, b) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.023377, abs=1e-6)
    assert df == pytest.approx(216 / 53)  # 2² / (1/18 + 25/27)
    assert stats.welch_p([1.0], b) is None
    assert stats.welch_p([1, 1], [1, 1]) == 1.0 and stats.welch_p([1, 1], [2, 2]) == 0.0


def test_delta_m_against_a_hand_computation():
    # task a: accuracy 0.90 vs 0.80 (higher is better): +12.5%
    # task b: mae 3.0 vs 2.5 (lower is better): -20%; rmse 4.0 vs 5.0: +20%  -> task b mean 0%
    # Δm = (12.5 + 0) / 2 = 6.25
    value = {"a": {"accuracy": 0.90}, "b": {"mae": 3.0, "rmse": 4.0}}
    base = {"a": {"accuracy": 0.80}, "b": {"mae": 2.5, "rmse": 5.0}}
    higher = {"accuracy": True, "mae": False, "rmse": False}
    dm, notes = stats.delta_m(value, base, higher)
    assert dm == pytest.approx(6.25) and notes == []
    # LibMTL's docstring example: base {'A': [96, 98], 'B': [0.2]}, new {'A': [93, 99], 'B': [0.5]},
    # weight {'A': [1, 0], 'B': [1]} (1 = higher is better) -> its count_improvement gives (as a %)
    # A: (-3/96 - 1/98) / 2 = -0.020727; B: 0.3/0.2 = 1.5; (1.5 - 0.020727) / 2 = 0.739636
    lib = ((-(96 - 93) / 96 + (98 - 99) / 98) / 2 + (-(0.2 - 0.5) / 0.2)) / 2 * 100
    dm2, _ = stats.delta_m(
        {"A": {"x": 93, "y": 99}, "B": {"x": 0.5}},
        {"A": {"x": 96, "y": 98}, "B": {"x": 0.2}},
        {"x": True, "y": False},
    )
    assert dm2 == pytest.approx(lib) and lib == pytest.approx(73.96, abs=0.01)


def test_delta_m_leaves_out_zero_baselines_and_missing_tasks():
    dm, notes = stats.delta_m({"a": {"r2": 0.5}, "c": {"mae": 1.0}}, {"a": {"r2": 0.0}}, {"r2": True})
    assert dm is None and notes == ["a.r2: baseline is 0, left out of Δm"]


def test_directions_cover_every_recipe_metric():
    from mtlcli.recipe.spec import METRICS

    assert all(stats.higher_is_better(m) is not None for m in METRICS)
    up = [m for m in METRICS if stats.higher_is_better(m)]
    assert up == ["accuracy", "auc", "precision", "recall", "exact_match", "r2"]
    assert stats.higher_is_better("loss") is False and stats.higher_is_better("rmse") is False
    assert stats.higher_is_better("nonsense") is None


def test_pareto_and_hypervolume_on_hand_made_points():
    # maximise both: (1, 3), (2, 2), (3, 1) are the front; (1, 1) is dominated by all of them
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [1.0, 1.0]])
    assert stats.pareto_mask(pts) == [True, True, True, False]
    ref = np.array([0.0, 0.0])
    # union of boxes [0,1]x[0,3], [0,2]x[0,2], [0,3]x[0,1]: 3 + 1·2 + 1·1 = 6
    assert stats.hypervolume(pts, ref) == pytest.approx(6.0)
    assert stats.contributions(pts, ref) == pytest.approx([1.0, 1.0, 1.0, 0.0])
    # 3 objectives: the unit cube and a box [0,2]x[0,0.5]x[0,0.5]: 1 + 1·0.5·0.5
    cube = np.array([[1.0, 1.0, 1.0], [2.0, 0.5, 0.5]])
    assert stats.hypervolume(cube, np.zeros(3)) == pytest.approx(1.25)
    # lower-is-better objectives are negated first
    o = stats.oriented([[0.9, 2.0], [0.8, 1.0]], [True, False])
    assert o.tolist() == [[0.9, -2.0], [0.8, -1.0]] and stats.pareto_mask(o) == [True, True]
    # reference: worst minus 10% of the range per objective
    assert stats.reference_point(pts).tolist() == pytest.approx([0.8, 0.8])


# ------------------------------------------------------------------------------------------------
# finding and grouping runs


def test_grouping_by_differing_keys(tmp_path):
    root = two_strategies(tmp_path / "sweep")
    runs, notes = find_runs([root])
    assert len(runs) == 12 and notes == []
    assert [r.path.relative_to(root).as_posix() for r in runs][:3] == [
        "pcgrad/seed-0",
        "pcgrad/seed-1",
        "pcgrad/seed-2",
    ]
    groups = group_runs(runs)
    keys = name_groups(groups)
    assert keys == ["train.weighting"]
    assert [(g.name, len(g.runs), g.single_task) for g in groups] == [
        ("weighting=pcgrad", 3, None),
        ("single-task a", 3, "a"),
        ("single-task b", 3, "b"),
        ("weighting=static", 3, None),
    ]
    assert differing_keys([{"x": 1, "y": 2}, {"x": 1, "y": 3, "z": None}]) == ["y"]


def test_a_strategy_with_parameters_is_one_key_that_keeps_its_name(tmp_path):
    specs = [
        "static",
        {"cagrad": {"c": 0.5}},
        {"cr_mogm": {"base": {"mgda": {"normalization": "l2"}}, "alpha": 0.5}},
    ]
    for i, w in enumerate(specs):
        fake_run(tmp_path / f"r{i}", {"a": {"accuracy": 0.5}, "b": {"mae": 1.0}}, weighting=w)
    c = compare([tmp_path])
    assert c.keys == ["train.weighting"]
    assert sorted(g.name for g in c.groups) == [
        "weighting=cagrad(c=0.5)",
        "weighting=cr_mogm(base=mgda(normalization=l2), alpha=0.5)",
        "weighting=static",
    ]


def test_name_and_seed_do_not_split_groups_and_short_names_stay_unique(tmp_path):
    for i, (w, lr) in enumerate([("static", 0.1), ("static", 0.01), ("pcgrad", 0.1)]):
        for s in range(2):
            run = fake_run(
                tmp_path / f"r{i}{s}",
                {"a": {"accuracy": 0.5}, "b": {"mae": 1.0}},
                seed=s,
                weighting=w,
                extra={"optimizer": {"adam": {"learning_rate": lr}}},
            )
            text = (run / "resolved.yaml").read_text().replace("name: fake", f"name: other{s}")
            (run / "resolved.yaml").write_text(text)
    c = compare([tmp_path])
    assert c.keys == ["train.weighting", "train.optimizer.adam.learning_rate"]
    assert [g.name for g in c.groups] == [
        "weighting=static,learning_rate=0.1",
        "weighting=static,learning_rate=0.01",
        "weighting=pcgrad,learning_rate=0.1",
    ]
    assert [len(g.runs) for g in c.groups] == [2, 2, 2]


def test_single_task_marker_in_env_json_and_sweep_json(tmp_path):
    both = {"a": {"accuracy": 0.7}, "b": {"mae": 2.0}}
    fake_run(tmp_path / "mt" / "seed-0", both)
    fake_run(tmp_path / "st-a" / "seed-0", both, env={"single_task": "a"})
    fake_run(tmp_path / "st-b" / "seed-0", {"a": {"accuracy": 0.1}, "b": {"mae": 4.0}})
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": [{"dir": "st-b/seed-0", "single_task": "b"}]}))
    c = compare([tmp_path])
    assert [(g.name, g.single_task) for g in c.groups] == [
        ("fake", None),
        ("single-task a", "a"),
        ("single-task b", "b"),
    ]
    assert list(c.groups[1].results) == ["a"] and list(c.groups[2].results) == ["b"]  # only its task
    # a: 0.7 vs 0.7 -> 0; b: mae 2 vs 4 -> +50%; Δm = 25
    assert c.groups[0].delta_m == pytest.approx(25.0)


def test_unfinished_runs_are_skipped_with_a_note(tmp_path):
    two_strategies(tmp_path)
    (tmp_path / "static" / "seed-3").mkdir()
    (tmp_path / "static" / "seed-3" / "resolved.yaml").write_text("name: fake\n")
    c = compare([tmp_path])
    assert c.notes[0] == (
        f"{tmp_path}/static/seed-3: skipped, no metrics.json (still training, interrupted or failed)"
    )
    assert sum(len(g.runs) for g in c.groups) == 12


def test_split_defaults_to_test_else_validation(tmp_path):
    fake_run(tmp_path / "x", {"a": {"accuracy": 0.5}}, split="validation")
    assert compare([tmp_path]).split == "validation"
    with pytest.raises(UsageError, match="no run has test results; try --split validation"):
        compare([tmp_path], split="test")


# ------------------------------------------------------------------------------------------------
# the comparison


def test_comparison_numbers(tmp_path):
    c = compare([two_strategies(tmp_path)])
    pc, st = c.groups[0], c.groups[3]
    assert pc.results["a"]["accuracy"].mean == pytest.approx(0.91)
    assert pc.results["a"]["accuracy"].sd == pytest.approx(0.01)
    assert st.results["b"]["mae"].sd == pytest.approx(0.2)
    assert c.tasks["a"].metrics == ["accuracy", "loss"]  # headline first, loss last
    verdict = {v.group: v.verdict for v in c.tasks["a"].verdicts["accuracy"]}
    assert verdict == {"weighting=pcgrad": "best", "single-task a": "worse", "weighting=static": "worse"}
    verdict = {v.group: v.verdict for v in c.tasks["b"].verdicts["mae"]}
    assert verdict["weighting=static"] == "best" and verdict["single-task b"] == "indistinguishable"
    # Δm of pcgrad: a 0.91 vs 0.80 -> +13.75%; b mae 3.1 vs 2.5 -> -24%; (13.75 - 24) / 2
    assert pc.delta_m == pytest.approx((13.75 - 24.0) / 2)
    # static: a 0.82 vs 0.80 -> +2.5%; b 2.2 vs 2.5 -> +12%
    assert st.delta_m == pytest.approx((2.5 + 12.0) / 2)
    assert c.baselines == {"a": "single-task a", "b": "single-task b"}
    # the two multi-task groups trade off: both Pareto-optimal; the points (maximised) are
    # (0.91, -3.1) and (0.82, -2.2); reference (0.82 - 0.009, -3.1 - 0.09)
    assert c.front.optimal == ["weighting=pcgrad", "weighting=static"]
    assert c.front.reference == pytest.approx({"a": 0.811, "b": 3.19})
    assert c.front.hypervolume == pytest.approx(0.099 * 0.09 + 0.009 * 0.9)
    assert pc.hv_contribution == pytest.approx(0.09 * 0.09)


def test_baseline_option_and_did_you_mean(tmp_path):
    root = two_strategies(tmp_path)
    c = compare([root], baseline="weighting=static")
    # pcgrad vs static: a 0.91 vs 0.82 -> +10.976%; b 3.1 vs 2.2 -> -40.909%
    assert c.groups[0].delta_m == pytest.approx((0.09 / 0.82 - 0.9 / 2.2) / 2 * 100)
    assert c.groups[3].delta_m is None  # the baseline itself
    assert compare([root], baseline="4").baselines == {"a": "weighting=static", "b": "weighting=static"}
    with pytest.raises(UsageError, match=r"no group 'weighting=statc'; did you mean 'weighting=static'\?"):
        compare([root], baseline="weighting=statc")


def test_to_dict_is_json(tmp_path):
    d = json.loads(json.dumps(compare([two_strategies(tmp_path)]).to_dict()))
    assert d["split"] == "test" and d["keys"] == ["train.weighting"]
    assert d["directions"] == {
        "accuracy": "higher is better",
        "loss": "lower is better",
        "mae": "lower is better",
    }
    assert "Δm > 0 is better" in d["delta_m"]["rule"] and "Welch" in d["significance"]
    g = d["groups"][0]
    assert g["tasks"]["a"]["accuracy"]["values"] == [0.9, 0.91, 0.92] and g["seeds"] == [0, 1, 2]


# ------------------------------------------------------------------------------------------------
# the CLI


def test_cli_table(cli, tmp_path):
    result = cli("compare", two_strategies(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "12 run(s) in 4 group(s), split test; groups differ in train.weighting"
    row = next(line for line in lines if "multi-task" in line and "pcgrad" in line)
    assert "0.9100 ± 0.0100 [0.8852, 0.9348] *" in row
    assert any("weighting=static" in line and "+7.25" in line for line in lines)
    assert "Δm > 0 is better than the baseline" in result.output
    assert "p ≥ 0.05 is indistinguishable from the best" in result.output
    assert "directions: accuracy ↑, loss ↓, mae ↓" in result.output
    assert "hypervolume 0.01701, reference point (a 0.811, b 3.19)" in result.output


def test_cli_json_means(cli, tmp_path):
    result = cli("compare", two_strategies(tmp_path / "s"), "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    a = d["groups"][3]["tasks"]["a"]["accuracy"]
    assert (a["mean"], a["n"]) == (pytest.approx(0.82), 3)
    assert a["ci95"] == pytest.approx(
        [0.82 - 4.302653 * 0.02 / math.sqrt(3), 0.82 + 4.302653 * 0.02 / math.sqrt(3)]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{root}/nowhere"], "error: {root}/nowhere: no such file or directory"),
        (
            ["{root}/empty"],
            "error: {root}/empty: no run directory (one with resolved.yaml and metrics.json) in it or below",
        ),
        (
            ["{root}/s", "--split", "tset"],
            "error: --split: expected test or validation, received 'tset'; did you mean 'test'?",
        ),
        (["{root}/s", "--baseline", "pcgard"], "error: --baseline: no group 'pcgard'"),
        (
            ["{root}/unfinished"],
            "error: no finished run: 1 run directory found, none with a readable metrics.json",
        ),
    ],
)
def test_cli_errors(cli, tmp_path, args, message):
    two_strategies(tmp_path / "s")
    (tmp_path / "empty").mkdir()
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "resolved.yaml").write_text("name: x\n")
    result = cli("compare", *(a.format(root=tmp_path) for a in args))
    assert result.exit_code == 2
    assert message.format(root=tmp_path) in result.output
    assert "Traceback" not in result.output


def test_cli_plot(cli, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "compare.png"
    result = cli("compare", two_strategies(tmp_path / "s"), "--plot", out)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"plot: {out}"
    from matplotlib import image

    pixels = image.imread(out)
    assert pixels.shape[:2] == (400, 1350)  # 3 panels (2 tasks + the front) of 4.5 x 4 inches at 100 dpi
    assert float(pixels[..., :3].var()) > 0


def test_cli_plot_without_matplotlib(cli, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = cli("compare", two_strategies(tmp_path / "s"), "--plot", tmp_path / "c.png")
    assert result.exit_code == 2
    assert (
        "error: --plot needs matplotlib, which is not installed: pip install 'mtlcli[plot]'" in result.output
    )
    assert not (tmp_path / "c.png").exists()


# ------------------------------------------------------------------------------------------------
# end to end


@pytest.mark.slow
def test_compare_real_runs(cli, tiny_project, tmp_path):
    """2 strategies × 2 seeds of the tiny recipe, 1 epoch: compare --json's means and standard
    deviations are the ones recomputed from the runs' metrics.json."""
    recipe = tiny_project.read_text()
    runs = tmp_path / "runs"
    for weighting in ("static", "pcgrad"):
        path = tiny_project.parent / f"{weighting}.yaml"
        path.write_text(recipe.replace("weighting: static", f"weighting: {weighting}"))
        for seed in (1, 2):
            out = runs / weighting / f"seed-{seed}"
            result = cli("train", path, "--seed", seed, "--epochs", 1, "--output", out)
            assert result.exit_code == 0, result.output
    result = cli("compare", runs, "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["split"] == "validation" and d["keys"] == ["train.weighting"]
    assert [g["name"] for g in d["groups"]] == ["weighting=pcgrad", "weighting=static"]
    for g, weighting in zip(d["groups"], ("pcgrad", "static"), strict=True):
        metrics = [json.loads((runs / weighting / f"seed-{s}" / "metrics.json").read_text()) for s in (1, 2)]
        for task, results in g["tasks"].items():
            for metric, summary in results.items():
                values = [m["splits"]["validation"]["tasks"][task][metric] for m in metrics]
                assert summary["mean"] == pytest.approx(np.mean(values), rel=1e-12)
                assert summary["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-12, abs=1e-15)
        assert set(g["tasks"]) == {"kind", "flag", "value"}
    assert "Δm: no single-task runs" in d["notes"][0]


def test_compare_does_not_import_tensorflow(tmp_path):
    import subprocess
    import sys

    root = two_strategies(tmp_path / "s")
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mtlcli.cli import app\n"
        f"res = CliRunner().invoke(app, ['compare', {str(root)!r}, '--json'])\n"
        "assert res.exit_code == 0, res.output\n"
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_tasks_and_headline_follow_the_recipe_not_metrics_json_key_order(tmp_path):
    run = fake_run(tmp_path / "r", {"z": {"loss": 1.0, "mae": 2.0, "rmse": 3.0}, "a": {"accuracy": 0.5}})
    resolved = yaml.safe_load((run / "resolved.yaml").read_text())
    resolved["model"]["tasks"] = {"z": {"metrics": ["rmse", "mae"]}, "a": {"metrics": ["accuracy"]}}
    (run / "resolved.yaml").write_text(yaml.safe_dump(resolved))  # sorted keys: a before z
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(metrics, sort_keys=True))
    c = compare([tmp_path])
    assert list(c.tasks) == ["a", "z"]  # the recipe file's order (sorted here)
    assert c.tasks["z"].metrics == ["rmse", "mae", "loss"] and c.tasks["z"].headline == "rmse"


def test_group_names_print_floats_to_four_significant_digits_and_keep_clashes_apart():
    from mtlcli.compare.report import Group

    configs = [
        {"train.optimizer.adam.learning_rate": 0.0011920879262846, "train.weighting": "static"},
        {"train.optimizer.adam.learning_rate": 0.0047778223327945, "train.weighting": "static"},
        {"train.optimizer.adam.learning_rate": 0.0047778223327999, "train.weighting": "static"},
    ]
    groups = [Group(index=i + 1, runs=[], config=c, single_task=None) for i, c in enumerate(configs)]
    name_groups(groups)
    assert [g.name for g in groups] == [
        "learning_rate=0.001192",
        "learning_rate=0.004778",
        "learning_rate=0.004778#3",
    ]


def test_the_default_fusion_is_a_value_not_null_in_a_comparison(tmp_path):
    """resolved.yaml leaves out ``model.fusion: concat`` (the default); a sweep over model.fusion must
    still label that group concat."""
    from mtlcli.compare.report import differing_keys
    from mtlcli.compare.runs import Run, configuration

    base = {"model": {"shared": [], "tasks": {}}, "train": {"epochs": 1}}
    runs = [
        Run(tmp_path / "a", {}, base),
        Run(tmp_path / "b", {}, {**base, "model": {**base["model"], "fusion": "attention"}}),
    ]
    configs = [configuration(r) for r in runs]
    assert differing_keys(configs) == ["model.fusion"]
    assert [c["model.fusion"] for c in configs] == ["concat", "attention"]
