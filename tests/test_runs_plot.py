"""``mtl runs`` and ``mtl plot``: fake run directories in every status (the rows, the table text), the
PNGs read back (size, not blank, a different history gives a different image, the front's colours),
the missing-matplotlib message, errors and exit codes, and one real pcgrad training plotted (slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtlcli import plots, runlist

OLD = time.time() - 3600  # older than runlist.RECENT_SECONDS: not running

# ------------------------------------------------------------------------------------------------
# fake run directories


def history_text(tasks: list[str], epochs: int, scale: float = 1.0, cosines: bool = False) -> str:
    """A history.csv as mtl train writes it: loss, <task>_loss, _accuracy, _weight, val_ versions."""
    cols = ["epoch", "loss"]
    for t in tasks:
        cols += [f"{t}_loss", f"{t}_accuracy", f"{t}_weight"]
    if cosines:
        cols += [f"cos_{a}_{b}" for i, a in enumerate(tasks) for b in tasks[i + 1 :]]
    cols += [f"val_{c}" for c in cols[1:] if not c.startswith("cos_")]
    lines = [",".join(cols)]
    for e in range(1, epochs + 1):
        values = [str(e)]
        for k, c in enumerate(cols[1:]):
            if c.endswith("_weight"):
                v = 1.0 + 0.1 * e * (k % 4)
            elif "cos_" in c:
                v = math.cos(e + k)
            elif c.endswith("accuracy"):
                v = 1 - scale / (e + k)
            else:
                v = scale * (2.0 + k) / e
            values.append(f"{v:.6g}")
        lines.append(",".join(values))
    return "\n".join(lines) + "\n"


def make_run(
    path: Path,
    *,
    status: str = "finished",
    tasks: tuple[str, ...] = ("a", "b"),
    epochs: int = 3,
    planned: int = 3,
    started: str = "2026-01-02T10:00:00+0000",
    weighting="static",
    architecture: str = "hard_sharing",
    scale: float = 1.0,
    cosines: bool = False,
    val: dict[str, dict[str, float]] | None = None,
    seed: int = 0,
    best: dict | None = None,
) -> Path:
    """A run directory in ``status`` (finished / interrupted / failed_* / running), its files dated an
    hour ago unless running."""
    path.mkdir(parents=True, exist_ok=True)
    resolved = {
        "name": path.parent.name if path.name.isdigit() or path.name.startswith("seed") else path.name,
        "seed": seed,
        "model": {
            "architecture": architecture,
            "tasks": {t: {"type": "binary", "metrics": ["accuracy"], "weight": 1.0} for t in tasks},
        },
        "train": {"epochs": planned, "weighting": weighting},
    }
    lines = yaml.safe_dump(resolved, sort_keys=False).splitlines()  # with the # source comments
    text = "".join(
        f"{ln}\n" if ln.endswith(":") else f"{ln}  # recipe.yaml:{i + 1}\n" for i, ln in enumerate(lines)
    )
    (path / "resolved.yaml").write_text(text)
    (path / "env.json").write_text(json.dumps({"seed": seed, "started": started}))
    if epochs:
        (path / "history.csv").write_text(history_text(list(tasks), epochs, scale, cosines))
    best = best if best is not None else {"monitor": "val_loss", "value": 0.25, "epoch": 2}
    if status == "finished":
        splits = {}
        if val is not None:
            splits["validation"] = {"tasks": {t: {**m, "n": 10} for t, m in val.items()}}
        metrics = {"splits": splits, "epochs_run": epochs, "best": best}
        (path / "metrics.json").write_text(json.dumps(metrics))
    if status in ("interrupted", "failed_stopped"):
        ckpt = path / "checkpoints" / "last"
        ckpt.mkdir(parents=True)
        selection = {
            "monitor": "val_loss",
            "best": 0.5,
            "best_epoch": 1,
            "stopped": status == "failed_stopped",
        }
        (ckpt / "state.json").write_text(json.dumps({"epoch": epochs, "selection": selection}))
    if status == "failed_model":
        (path / "model.keras").write_bytes(b"PK")
    if status != "running":
        for f in path.rglob("*"):
            os.utime(f, (OLD, OLD))
    return path


@pytest.fixture
def many(tmp_path: Path) -> Path:
    """One run per status under runs/, started in the reverse of their path order."""
    root = tmp_path / "runs"
    make_run(root / "f" / "1", started="2026-01-09T10:00:00+0000", weighting={"pcgrad": {}})
    make_run(root / "i" / "1", status="interrupted", epochs=1, started="2026-01-08T10:00:00+0000")
    make_run(root / "n" / "1", status="failed_none", epochs=0, started="2026-01-07T10:00:00+0000")
    make_run(root / "m" / "1", status="failed_model", started="2026-01-06T10:00:00+0000")
    make_run(root / "s" / "1", status="failed_stopped", epochs=2, started="2026-01-05T10:00:00+0000")
    make_run(
        root / "r" / "1", status="running", epochs=2, started="2026-01-04T10:00:00+0000", architecture="mmoe"
    )
    return root


# ------------------------------------------------------------------------------------------------
# mtl runs


def test_runs_json_rows_for_every_status(cli, many):
    result = cli("runs", many, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    got = [(Path(r["path"]).parent.name, r["status"], r["epochs"], r["planned"]) for r in rows]
    assert got == [  # oldest start first
        ("r", "running", 2, 3),
        ("s", "failed", 2, 3),
        ("m", "failed", 3, 3),
        ("n", "failed", None, 3),
        ("i", "interrupted", 1, 3),
        ("f", "finished", 3, 3),
    ]
    by = {Path(r["path"]).parent.name: r for r in rows}
    assert by["f"]["strategy"] == "pcgrad" and by["f"]["architecture"] == "hard_sharing"
    assert (by["f"]["monitor"], by["f"]["best"], by["f"]["best_epoch"]) == ("val_loss", 0.25, 2)
    assert (by["i"]["monitor"], by["i"]["best"], by["i"]["best_epoch"]) == ("val_loss", 0.5, 1)  # so far
    assert by["r"]["architecture"] == "mmoe" and by["r"]["best"] is None
    assert by["f"]["started"] == "2026-01-09T10:00:00+00:00" and by["f"]["tasks"] == ["a", "b"]
    assert by["n"]["why"].startswith("no checkpoint")
    assert by["m"]["why"].startswith("model.keras but no metrics.json")
    assert by["s"]["why"] == "training ended (last checkpoint) but no metrics.json"


def test_runs_table_text(cli, many):
    result = cli("runs", many)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "started",
        "status",
        "epochs",
        "best",
        "strategy",
        "architecture",
        "name",
        "path",
    ]
    assert lines[-2] == (
        f"2026-01-09 10:00  finished     3/3     val_loss 0.2500 @2  pcgrad    hard_sharing  f     {many}/f/1"
    )
    assert lines[-1] == "6 run(s): 1 finished, 1 running, 1 interrupted, 3 failed"
    assert len(lines) == 8


def test_runs_rich_table_on_a_terminal(many):
    from rich.console import Console

    from mtlcli.runs_view import render

    out = Console(force_terminal=True, width=200, color_system=None, record=True)
    render(out, runlist.list_runs([many]), [many])
    text = out.export_text()
    assert text.startswith("┏━") and "┃ started          ┃ status      ┃ epochs ┃" in text
    assert "│ 2026-01-09 10:00 │ finished    │    3/3 │ val_loss 0.2500 @2 │ pcgrad   │" in text
    assert text.endswith("6 run(s): 1 finished, 1 running, 1 interrupted, 3 failed\n")


def test_a_resumed_finished_run_is_running_again(tmp_path):
    run = make_run(tmp_path / "r")
    now = time.time()
    assert runlist.status(run, 3, now) == ("finished", "metrics.json")
    os.utime(run / "history.csv", (now - 5, now - 5))  # a new epoch after metrics.json
    assert runlist.status(run, 3, now)[0] == "running"
    assert runlist.status(run, 3, now + runlist.RECENT_SECONDS)[0] == "finished"


def test_a_checkpoint_written_by_a_live_process_is_running(tmp_path):
    run = make_run(tmp_path / "r", status="interrupted", epochs=1)
    tmp = run / "checkpoints" / f".last.new-{os.getpid()}"
    tmp.mkdir()
    assert runlist.status(run, 3)[0] == "running"
    tmp.rename(run / "checkpoints" / ".last.new-999999999")  # no such process
    assert runlist.status(run, 3)[0] == "interrupted"


def test_runs_of_a_run_dir_and_nested_dirs_each_once(cli, many):
    result = cli("runs", many / "f" / "1", many, "--json")
    assert [Path(r["path"]).parent.name for r in json.loads(result.stdout)].count("f") == 1
    # a checkpoint's own files and dot directories are not runs
    (many / "f" / "1" / "checkpoints" / "x").mkdir(parents=True)
    (many / "f" / "1" / "checkpoints" / "x" / "resolved.yaml").write_text("name: x\n")
    (many / ".hidden").mkdir()
    (many / ".hidden" / "resolved.yaml").write_text("name: x\n")
    assert len(runlist.run_dirs(many)) == 6


def test_runs_errors_and_empty(cli, tmp_path, monkeypatch):
    result = cli("runs", tmp_path / "nope")
    assert result.exit_code == 2
    assert "error: " in result.output and f"{tmp_path / 'nope'}: no such directory" in result.output
    (tmp_path / "f.txt").write_text("x")
    result = cli("runs", tmp_path / "f.txt")
    assert result.exit_code == 2 and "received a file" in result.output
    (tmp_path / "empty").mkdir()
    result = cli("runs", tmp_path / "empty")
    assert result.exit_code == 0 and result.stdout == f"no runs under {tmp_path / 'empty'}\n"
    assert cli("runs", tmp_path / "empty", "--json").stdout == "[]\n"
    monkeypatch.chdir(tmp_path)  # the default is runs/
    result = cli("runs")
    assert result.exit_code == 2 and "runs: no such directory" in result.output


# ------------------------------------------------------------------------------------------------
# mtl plot: one run


def read_png(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path)


def test_history_headline_and_minimum_cosines(tmp_path):
    run = make_run(tmp_path / "r", tasks=("a", "b_c", "d"), cosines=True, epochs=2)
    h = plots.read_history(run)
    assert h.tasks == {"a": "accuracy", "b_c": "accuracy", "d": "accuracy"}
    ab, ad, bd = h.columns["cos_a_b_c"], h.columns["cos_a_d"], h.columns["cos_b_c_d"]
    assert h.cosines("a") == [min(ab[i], ad[i]) for i in range(2)]
    assert h.cosines("b_c") == [min(ab[i], bd[i]) for i in range(2)]
    assert h.cosines("d") == [min(ad[i], bd[i]) for i in range(2)]
    assert plots.read_history(make_run(tmp_path / "s")).cosines("a") is None


def test_plot_run_png(cli, tmp_path):
    run = make_run(tmp_path / "r", epochs=5, planned=9, cosines=True)
    result = cli("plot", run)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"training curves: {run / 'plot.png'}\n"
    img = read_png(run / "plot.png")
    assert img.shape[:2] == (900, 1100)  # (2 tasks + weights/cosines) x 300 px, 1100 px wide
    assert img[..., :3].var() > 0.001
    other = make_run(tmp_path / "o", epochs=5, planned=9, scale=3.0)
    assert cli("plot", other, "-o", tmp_path / "other.png").exit_code == 0
    assert not np.array_equal(read_png(tmp_path / "other.png"), img)
    assert not (other / "plot.png").exists()


def test_plot_marks_best_and_early_stop(tmp_path):
    run = make_run(tmp_path / "r", status="failed_stopped", epochs=4, planned=9)
    h = plots.read_history(run)
    m = plots.marks(run, h)
    assert (m.best, m.monitor, m.stopped) == (1, "val_loss", 4)
    done = make_run(tmp_path / "f", best={"monitor": "val_a_accuracy", "value": 0.9, "epoch": 3})
    m = plots.marks(done, plots.read_history(done))
    assert (m.best, m.monitor, m.stopped) == (3, "val_a_accuracy", None)


def test_plot_of_a_directory_holding_one_run_plots_that_run(cli, tmp_path):
    run = make_run(tmp_path / "runs" / "x" / "1")
    result = cli("plot", tmp_path / "runs")
    assert result.exit_code == 0 and (run / "plot.png").is_file()


# ------------------------------------------------------------------------------------------------
# mtl plot: the front of several runs


def sweep(root: Path, tasks: tuple[str, ...] = ("a", "b")) -> Path:
    """Three configurations × 2 seeds: lr-1 and lr-2 trade a against b, lr-3 is dominated by lr-1."""
    means = {"lr-1": (0.9, 0.6, 0.5, 0.5), "lr-2": (0.6, 0.9, 0.5, 0.5), "lr-3": (0.8, 0.5, 0.4, 0.4)}
    for name, values in means.items():
        for seed in (0, 1):
            val = {
                t: {"accuracy": v + 0.01 * seed, "loss": 1 - v} for t, v in zip(tasks, values, strict=False)
            }
            make_run(root / name / f"seed-{seed}", tasks=tasks, val=val, seed=seed, weighting=name)
    return root


def colour_count(img: np.ndarray, rgb: tuple[int, int, int]) -> int:
    return int((np.abs(img[..., :3] * 255 - np.array(rgb)).max(axis=-1) < 8).sum())


def test_plot_front_png(cli, tmp_path):
    root = sweep(tmp_path / "sweep")
    result = cli("plot", root)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Pareto front: {root / 'plot.png'}\n"
    img = read_png(root / "plot.png")
    assert img.shape[:2] == (460, 700)
    assert colour_count(img, (214, 39, 40)) > 50  # tab:red, the two optimal ones
    assert colour_count(img, (211, 211, 211)) > 20  # lightgray, the dominated one
    c = __import__("mtlcli.compare", fromlist=["compare"]).compare([root], split="validation")
    assert [(g.name, g.pareto) for g in c.groups] == [
        ("weighting=lr-1", True),
        ("weighting=lr-2", True),
        ("weighting=lr-3", False),
    ]


def test_plot_front_of_three_tasks_has_three_panels(cli, tmp_path):
    root = sweep(tmp_path / "sweep", ("a", "b", "c"))
    assert cli("plot", root, "-o", tmp_path / "f.png").exit_code == 0
    assert read_png(tmp_path / "f.png").shape[:2] == (460, 1500)


def test_plot_front_needs_2_or_3_tasks_and_validation(cli, tmp_path):
    root = sweep(tmp_path / "four", ("a", "b", "c", "d"))
    result = cli("plot", root)
    assert result.exit_code == 2
    assert (
        f"{root}: the front is drawn for 2 or 3 tasks, these runs have 4; see mtl compare {root}"
        in " ".join(result.output.split())
    )
    split = tmp_path / "split"  # two recipes with other tasks: no configuration has both
    make_run(split / "x" / "seed-0", tasks=("a",), val={"a": {"accuracy": 0.5, "loss": 0.5}})
    make_run(split / "x" / "seed-1", tasks=("a",), val={"a": {"accuracy": 0.6, "loss": 0.5}})
    make_run(
        split / "y" / "seed-0", tasks=("b",), val={"b": {"accuracy": 0.5, "loss": 0.5}}, weighting="pcgrad"
    )
    result = cli("plot", split)
    assert result.exit_code == 2
    assert "no Pareto front: no configuration has every task's validation headline metric" in result.output
    make_run(tmp_path / "noval" / "x")
    make_run(tmp_path / "noval" / "y")
    result = cli("plot", tmp_path / "noval")
    assert result.exit_code == 2 and "no run has validation results in metrics.json" in result.output


# ------------------------------------------------------------------------------------------------
# errors


def test_plot_errors(cli, tmp_path):
    result = cli("plot", tmp_path / "nope")
    assert result.exit_code == 2 and f"{tmp_path / 'nope'}: no such directory" in result.output
    (tmp_path / "empty").mkdir()
    result = cli("plot", tmp_path / "empty")
    assert (
        result.exit_code == 2 and "no run directory (one with resolved.yaml) in it or below" in result.output
    )
    run = make_run(tmp_path / "r", status="failed_none", epochs=0)
    result = cli("plot", run)
    assert result.exit_code == 2 and f"{run}/history.csv: no epoch recorded yet" in result.output
    run = make_run(tmp_path / "w")
    (run / "plot.png").mkdir()
    result = cli("plot", run)
    assert result.exit_code == 2 and "plot.png: cannot write" in result.output


def test_plot_without_matplotlib(cli, tmp_path, monkeypatch):
    run = make_run(tmp_path / "r")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    result = cli("plot", run)
    assert result.exit_code == 2
    assert (
        "mtl plot needs matplotlib, which is not installed: pip install 'mtlcli[plot]' (or pip install matplotlib)"
        in " ".join(result.output.split())
    )
    assert not (run / "plot.png").exists()


def test_runs_and_plot_do_not_import_tensorflow(tmp_path):
    run = make_run(tmp_path / "runs" / "r")
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mtlcli.cli import app\n"
        f"res = CliRunner().invoke(app, ['runs', {str(tmp_path / 'runs')!r}, '--json'])\n"
        "assert res.exit_code == 0, res.output\n"
        f"res = CliRunner().invoke(app, ['plot', {str(run)!r}])\n"
        "assert res.exit_code == 0, res.output\n"
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


# ------------------------------------------------------------------------------------------------
# a real run


@pytest.mark.slow
def test_real_pcgrad_run_listed_and_plotted(cli, tiny_project, tmp_path):
    recipe = tiny_project.parent / "pcgrad.yaml"
    recipe.write_text(tiny_project.read_text().replace("weighting: static", "weighting: pcgrad"))
    out = tmp_path / "runs" / "pcgrad"
    result = cli("train", recipe, "--epochs", 2, "--output", out)
    assert result.exit_code == 0, result.output
    h = plots.read_history(out)
    assert h.tasks == {"kind": "accuracy", "flag": "accuracy", "value": "mae"}
    assert all(h.cosines(t) is not None and len(h.cosines(t)) == 2 for t in h.tasks)
    assert all(h.get(f"{t}_weight") is not None for t in h.tasks)
    result = cli("plot", out)
    assert result.exit_code == 0, result.output
    img = read_png(out / "plot.png")
    assert img.shape[:2] == (1200, 1100) and img[..., :3].var() > 0.001
    # env.json is rewritten after metrics.json: a run that just finished is not running
    row = json.loads(cli("runs", tmp_path / "runs", "--json").stdout)[0]
    assert (row["status"], row["epochs"], row["planned"], row["strategy"]) == ("finished", 2, 2, "pcgrad")
    assert row["monitor"] == "val_loss" and row["best_epoch"] in (1, 2)


def test_strategy_names_in_listings_show_a_wrapper_with_its_base():
    from mtlcli.runlist import strategy_name

    assert strategy_name("static") == "static"
    assert strategy_name({"pcgrad": None}) == "pcgrad"
    assert strategy_name({"upgrad": {"every": 4}}) == "upgrad"
    assert (
        strategy_name({"cr_mogm": {"base": {"mgda": {"normalization": "l2"}}, "alpha": 0.5}})
        == "cr_mogm(mgda)"
    )
    assert strategy_name(None) is None
