"""mtl sweep: grid parsing, points and their names, the sweep id, pareto weights, single-task recipes,
--plan, the checks made before any run, sweep.json's states; slow: real sweeps, interrupted and re-run."""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mtlcli import sweep
from mtlcli.errors import RecipeError, UsageError
from mtlcli.recipe import load
from mtlcli.sweep import jobs, points, state
from mtlcli.sweep.spec import split_values
from tests.conftest import TINY_RECIPE, write_tiny_csv

# ------------------------------------------------------------------------------------------------
# grid parsing


def test_split_values_at_top_level_commas_only():
    assert split_values("static,pcgrad,upgrad") == ["static", "pcgrad", "upgrad"]
    assert split_values("static,{cagrad: {c: 0.4}}") == ["static", "{cagrad: {c: 0.4}}"]
    assert split_values("[1, 2],[3],'a,b'") == ["[1, 2]", "[3]", "'a,b'"]
    assert split_values(' "x,y" , z') == ['"x,y"', "z"]


def test_parse_grid_reads_yaml_values():
    axis = sweep.parse_grid("model.tasks.sex.weight=0.5,1,2,3e-4")
    assert axis.key == "model.tasks.sex.weight"
    assert axis.values == (0.5, 1, 2, 3e-4)
    assert axis.labels[0] == "--grid model.tasks.sex.weight=0.5"
    axis = sweep.parse_grid("train.weighting=static,{cagrad: {c: 0.4}}")
    assert axis.values == ("static", {"cagrad": {"c": 0.4}})
    assert axis.sets() == ["train.weighting=static", "train.weighting={cagrad: {c: 0.4}}"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train.weighting", "expected KEY=V1,V2"),
        ("train.weighting=static,,pcgrad", "an empty value"),
        ("train.weighting=static,static", "the value static appears twice"),
        ("train.weighting=[a", "not valid YAML"),
    ],
)
def test_parse_grid_errors_name_the_grid(text, message):
    with pytest.raises(RecipeError) as info:
        sweep.parse_grid(text)
    p = info.value.problems[0]
    assert p.file == f"--grid {text}"
    assert message in p.message


# ------------------------------------------------------------------------------------------------
# points, names, id


@pytest.fixture
def project(tmp_path, monkeypatch):
    write_tiny_csv(tmp_path / "tiny.csv")
    (tmp_path / "recipe.yaml").write_text(TINY_RECIPE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _prepared(grid=(), **options):
    return sweep.prepare(sweep.request(Path("recipe.yaml"), {"grid": list(grid), **options}))


def test_points_are_the_product_of_the_grid_first_axis_outermost(project):
    p = _prepared(["train.weighting=static,pcgrad", "model.architecture=hard_sharing,cross_stitch"], seeds=2)
    names = [pt.name for pt in p.points]
    assert names == [
        "train.weighting=static,model.architecture=hard_sharing",
        "train.weighting=static,model.architecture=cross_stitch",
        "train.weighting=pcgrad,model.architecture=hard_sharing",
        "train.weighting=pcgrad,model.architecture=cross_stitch",
    ]
    assert [j.entry.dir for j in p.jobs][:2] == [f"{names[0]}/seed-0", f"{names[0]}/seed-1"]
    assert [j.entry.seed for j in p.jobs][:2] == [3, 4]  # the recipe's seed + k
    assert p.points[3].sets() == ["train.weighting=pcgrad", "model.architecture=cross_stitch"]
    assert p.root == Path("runs/tiny/sweeps") / p.doc.id


def test_slugs_are_filesystem_safe_and_distinct():
    assert points.slug([("train.weighting", "pcgrad")]) == "train.weighting=pcgrad"
    odd = points.slug([("train.weighting", {"cagrad": {"c": 0.4}})])
    assert odd.startswith("train.weighting=_cagrad_c_0.4") and len(odd.rsplit("-", 1)[1]) == 8
    assert "/" not in points.slug([("data.train", "a/b.csv")])
    assert points.slug([("x", "a b")]) != points.slug([("x", "a_b")])
    assert len(points.slug([("model.shared", "u" * 400)])) <= points.MAX_SLUG + 9
    assert points.slug([]) == "base"


def test_the_sweep_id_is_deterministic_and_ignores_seeds(project):
    a = _prepared(["train.weighting=static,pcgrad"], seeds=2).doc.id
    assert a == _prepared(["train.weighting=static,pcgrad"], seeds=5).doc.id
    assert a != _prepared(["train.weighting=static,upgrad"]).doc.id
    assert a != _prepared(["train.weighting=static,pcgrad"], sets=["train.epochs=1"]).doc.id
    (project / "recipe.yaml").write_text(TINY_RECIPE.replace("epochs: 3", "epochs: 4"))
    assert a != _prepared(["train.weighting=static,pcgrad"]).doc.id
    assert len(a) == 8


def test_pareto_weights_on_the_simplex():
    assert points.pareto_weights(3, 2) == [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)]
    assert points.pareto_weights(5, 2) == [(1.0, 0.0), (0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.0, 1.0)]
    three = points.pareto_weights(6, 3)
    assert three == [(1.0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 1.0, 0), (0, 0.5, 0.5), (0, 0, 1.0)]
    assert all(abs(sum(w) - 1) < 1e-9 for w in three)
    with pytest.raises(UsageError, match="use --pareto 3 or 6"):
        points.pareto_weights(5, 3)
    with pytest.raises(UsageError, match="2 or 3 tasks; the recipe has 4"):
        points.pareto_weights(3, 4)


def test_pareto_points_use_static_weighting_and_task_weights(project):
    p = _prepared(pareto=3)
    pareto = [pt for pt in p.points if pt.kind == "pareto"]
    assert [pt.name for pt in pareto] == [
        "pareto,kind=1.0,flag=0.0,value=0.0",
        "pareto,kind=0.0,flag=1.0,value=0.0",
        "pareto,kind=0.0,flag=0.0,value=1.0",
    ]
    assert pareto[1].sets() == [
        "train.weighting=static",
        "model.tasks.kind.weight=0.0",
        "model.tasks.flag.weight=1.0",
        "model.tasks.value.weight=0.0",
    ]


def test_single_task_points_keep_one_task_and_skip_a_task_that_reads_another(tmp_path, monkeypatch):
    write_tiny_csv(tmp_path / "tiny.csv")
    text = TINY_RECIPE.replace(
        "value: {type: regression, metrics: [mae]}",
        "value: {type: regression, metrics: [mae], inputs_from: [kind]}",
    ).replace(
        "weighting: static", "weighting: pcgrad\n  early_stopping: {monitor: val_value_mae, patience: 2}"
    )
    (tmp_path / "recipe.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    p = _prepared(single_task=True)
    single = [pt for pt in p.points if pt.kind == "single_task"]
    assert [pt.name for pt in single] == ["single_task=kind", "single_task=flag"]
    assert single[0].sets() == [
        "model.tasks={kind: {type: classification}}",
        "train.weighting=static",
        "train.early_stopping.monitor=val_loss",
    ]
    assert any("value is skipped: its head reads kind (inputs_from)" in n for n in p.notes)
    loaded = load("recipe.yaml", overrides=single[1].sets())
    assert list(loaded.recipe.model.tasks) == ["flag"]
    assert loaded.recipe.model.tasks["flag"].head == [{"dense": {"units": 8, "activation": "relu"}}]
    entries = {e.dir: e.to_dict() for e in p.doc.runs}
    assert entries["single_task=flag/seed-0"]["single_task"] == "flag"
    assert "single_task" not in entries["base/seed-0"]


# ------------------------------------------------------------------------------------------------
# the command: --plan, checks before any run


def test_plan_prints_one_train_command_per_run(project, cli):
    res = cli(
        "sweep",
        "recipe.yaml",
        "--grid",
        "train.weighting=static,{cagrad: {c: 0.4}}",
        "--seeds",
        "2",
        "--plan",
    )
    assert res.exit_code == 0, res.output
    root = _prepared(["train.weighting=static,{cagrad: {c: 0.4}}"]).root
    cagrad = points.slug([("train.weighting", {"cagrad": {"c": 0.4}})])
    assert res.output.splitlines() == [
        f"mtl train recipe.yaml --set train.weighting=static --seed 3 --output {root}/train.weighting=static/seed-0",
        f"mtl train recipe.yaml --set train.weighting=static --seed 4 --output {root}/train.weighting=static/seed-1",
        f"mtl train recipe.yaml --set 'train.weighting={{cagrad: {{c: 0.4}}}}' --seed 3 --output {root}/{cagrad}/seed-0",
        f"mtl train recipe.yaml --set 'train.weighting={{cagrad: {{c: 0.4}}}}' --seed 4 --output {root}/{cagrad}/seed-1",
        f"# then: mtl compare {root}",
    ]
    assert not Path("runs").exists()  # --plan writes nothing


def test_every_problem_of_every_point_before_any_run(project, cli):
    res = cli(
        "sweep", "recipe.yaml",
        "--grid", "train.weighting=statc,pcgrad",
        "--grid", "model.tasks.kind.weight=-1,1",
        "--grid", "model.architecture=hard_sharing,mmoe",
    )  # fmt: skip
    assert res.exit_code == 2
    assert "3 problems in the sweep's points; no run was started" in res.output
    assert "--grid train.weighting=statc: unknown strategy 'statc'; did you mean 'static'?" in res.output
    assert "--grid model.tasks.kind.weight=-1: expected a value >= 0.0, received -1" in res.output
    assert "--grid model.architecture=mmoe: the mmoe architecture needs model.experts" in res.output
    assert "Traceback" not in res.output and not Path("runs").exists()


def test_a_typo_in_a_grid_key_says_did_you_mean(project, cli):
    res = cli("sweep", "recipe.yaml", "--grid", "train.weightin=static,pcgrad", "--plan")
    assert res.exit_code == 2
    assert "--grid train.weightin=static" in res.output and "did you mean 'weighting'" in res.output


def test_option_errors(project, cli):
    res = cli("sweep", "recipe.yaml", "--grid", "train.weighting=static", "--grid", "train.weighting=pcgrad")
    assert res.exit_code == 2 and "--grid train.weighting is given twice" in res.output
    res = cli("sweep", "recipe.yaml", "--pareto", "4")
    assert res.exit_code == 2 and "use --pareto 3 or 6" in res.output
    res = cli("sweep", "missing.yaml")
    assert res.exit_code == 2 and "missing.yaml: no such recipe file" in res.output


def test_a_sweep_file(project, cli):
    (project / "sweep.yaml").write_text(
        textwrap.dedent(
            """\
            recipe: recipe.yaml
            grid:
              train.weighting: [static, pcgrad]
            seeds: 2
            single_task: true
            set: {train.epochs: 1}
            """
        )
    )
    res = cli("sweep", "sweep.yaml", "--plan")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == (2 + 3) * 2 + 1
    assert lines[0].startswith(
        "mtl train recipe.yaml --set train.epochs=1 --set train.weighting=static --seed 3"
    )
    # the command line wins over the file
    res = cli("sweep", "sweep.yaml", "--seeds", "1", "--grid", "train.weighting=upgrad", "--plan")
    assert "--set train.weighting=upgrad --seed 3" in res.output.splitlines()[0]
    assert len(res.output.splitlines()) == 1 + 3 + 1


def test_sweep_file_errors_have_lines(project, cli):
    (project / "sweep.yaml").write_text(
        "recipe: recipe.yaml\nseeds: 0\ngrid:\n  train.weighting: [statc]\njbos: 2\n"
    )
    res = cli("sweep", "sweep.yaml", "--plan")
    assert res.exit_code == 2
    assert "sweep.yaml:2 seeds: expected greater than or equal to 1, received a number (0)" in res.output
    assert "sweep.yaml:5 jbos: unknown key 'jbos'" in res.output
    (project / "sweep.yaml").write_text(
        "recipe: recipe.yaml\ngrid:\n  train.weighting:\n    - static\n    - statc\n"
    )
    res = cli("sweep", "sweep.yaml", "--plan")
    assert res.exit_code == 2
    assert "sweep.yaml:5 grid.train.weighting[1]: unknown strategy 'statc'" in res.output


def test_the_parent_does_not_import_tensorflow(project):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mtlcli.cli import app\n"
        "r = CliRunner().invoke(app, ['sweep', 'recipe.yaml', '--grid', 'train.weighting=static,pcgrad', '--plan'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['sweep', 'recipe.yaml', '--grid', 'train.weighting=statc'])\n"
        "assert r.exit_code == 2, r.output\n"
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=project)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


# ------------------------------------------------------------------------------------------------
# sweep.json states (pure)


def _entry(state_="pending"):
    e = state.Entry("p/seed-0", "p", 3, 0)
    e.state = state_
    return e


def test_state_moves():
    e = _entry()
    state.transition(e, "running", pid=42)
    assert (e.state, e.pid, e.attempts) == ("running", 42, 1)
    state.transition(e, "failed", error="exit 1: boom")
    assert (e.state, e.pid, e.error) == ("failed", None, "exit 1: boom")
    state.transition(e, "running", pid=43)
    assert e.error is None and e.attempts == 2
    state.transition(e, "done")
    with pytest.raises(ValueError, match="cannot go from done to running"):
        state.transition(e, "running", pid=1)
    state.transition(e, "pending")  # its run directory was removed
    assert (e.state, e.started, e.finished) == ("pending", None, None)
    with pytest.raises(ValueError, match="cannot go from pending to failed"):
        state.transition(_entry(), "failed")


def test_action_from_the_run_directory():
    f = state.Facts
    assert state.action(f(False, False, False, True)) == "start"
    assert state.action(f(True, False, False, True)) == "start"
    assert state.action(f(True, False, False, False)) == "restart"
    assert state.action(f(True, False, True, False)) == "resume"
    assert state.action(f(True, True, True, False)) == "skip"


def test_facts_read_the_directory(tmp_path):
    run = tmp_path / "r"
    assert state.facts(run) == state.Facts(False, False, False, True)
    (run / "checkpoints" / ".last.old").mkdir(parents=True)
    (run / "checkpoints" / ".last.old" / "state.json").write_text("{}")
    assert state.action(state.facts(run)) == "resume"
    (run / "metrics.json").write_text("{}")
    (run / "model.keras").write_text("")
    assert state.action(state.facts(run)) == "skip"


def test_outcome_of_a_child():
    done, unfinished = state.Facts(True, True, True, False), state.Facts(True, False, True, False)
    assert state.outcome(0, done, False) == "done"
    assert state.outcome(130, unfinished, True) == "interrupted"
    assert state.outcome(143, unfinished, False) == "interrupted"
    assert state.outcome(-9, unfinished, False) == "interrupted"
    assert state.outcome(1, unfinished, False) == "failed"
    assert state.outcome(2, unfinished, True) == "interrupted"


def test_reconcile_and_merge(tmp_path):
    a, b = _entry("running"), state.Entry("q/seed-0", "q", 3, 0, state="running", pid=7)
    a.pid = 5
    state.reconcile([a, b], alive=lambda pid: pid == 7)
    assert (a.state, b.state) == ("interrupted", "running")
    doc = state.Document("id", "r.yaml", [], [], 1, False, None, [], runs=[a, b])
    state.save(tmp_path / "sweep.json", doc)
    raw = json.loads((tmp_path / "sweep.json").read_text())
    assert raw["counts"] == {"pending": 0, "running": 1, "done": 0, "failed": 0, "interrupted": 1}
    old = state.read_entries(tmp_path / "sweep.json")
    fresh = state.merge([_entry(), state.Entry("new/seed-0", "new", 3, 0)], old)
    assert [(e.dir, e.state) for e in fresh] == [("p/seed-0", "interrupted"), ("new/seed-0", "pending")]
    (tmp_path / "sweep.json").write_text("{not json")
    assert state.read_entries(tmp_path / "sweep.json") == {}


def test_thread_plan_never_oversubscribes():
    assert jobs.thread_plan(16, 4, None) == (4, 4, None)
    assert jobs.thread_plan(2, 2, None) == (2, 1, None)
    n, per, note = jobs.thread_plan(2, 3, None)
    assert (n, per) == (2, 1) and "--jobs 3 on 2 core(s)" in note
    assert jobs.thread_plan(2, 3, 2) == (3, 2, None)
    env = jobs.child_env(3, {})
    assert (env["TF_NUM_INTRAOP_THREADS"], env["TF_NUM_INTEROP_THREADS"], env["OMP_NUM_THREADS"]) == (
        "3",
        "1",
        "3",
    )


def test_last_error_reads_the_log(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("$ mtl train\nepoch 1/2\nerror: task 'v' produced a non-finite loss\n  at epoch 2\n")
    assert jobs.last_error(log) == "task 'v' produced a non-finite loss at epoch 2"
    assert jobs.last_error(tmp_path / "missing.log") == "no output"


FAKE_TRAIN = """
import sys, time
from pathlib import Path
run = Path(sys.argv[1])
time.sleep(0.2)
if "name=bad" in str(run):
    print("error: boom: the data has no column 'x'")
    sys.exit(2)
run.mkdir(parents=True, exist_ok=True)
(run / "history.csv").write_text("epoch,val_kind_accuracy\\n1,0.5\\n")
(run / "model.keras").write_text("")
(run / "metrics.json").write_text("{}")
"""


def test_a_failed_run_is_reported_and_the_others_finish(project, cli, monkeypatch):
    original = jobs.Job.command

    def fake(self, python=sys.executable):
        original(self, python)
        return [sys.executable, "-c", FAKE_TRAIN, str(self.run_dir)]

    monkeypatch.setattr(jobs.Job, "command", fake)
    res = cli("sweep", "recipe.yaml", "--grid", "name=good,bad,other", "--jobs", "2")
    assert res.exit_code == 1, res.output
    doc = json.loads(next(Path("runs/tiny/sweeps").glob("*/sweep.json")).read_text())
    states = {r["dir"]: (r["state"], r.get("error")) for r in doc["runs"]}
    assert states == {
        "name=good/seed-0": ("done", None),
        "name=bad/seed-0": ("failed", "exit 2: boom: the data has no column 'x'"),
        "name=other/seed-0": ("done", None),
    }
    assert "name=good/seed-0: done after" in res.output
    assert "failed: name=bad/seed-0: exit 2: boom" in res.output
    assert "1 run(s) failed; run the same command again to retry them" in res.output
    log = Path("runs/tiny/sweeps") / doc["id"] / "logs" / "name=bad" / "seed-0.log"
    assert log.read_text().startswith("$ ")
    # the same command again retries the failed run only
    res = cli("sweep", "recipe.yaml", "--grid", "name=good,bad,other")
    assert res.exit_code == 1
    assert "(2 already done before, not trained again)" in res.output
    doc = json.loads(next(Path("runs/tiny/sweeps").glob("*/sweep.json")).read_text())
    assert [r["attempts"] for r in doc["runs"]] == [1, 2, 1]


# ------------------------------------------------------------------------------------------------
# slow: real sweeps (child processes training the tiny recipe)

TWO_TASKS = TINY_RECIPE.replace("    value: {type: regression, metrics: [mae]}\n", "").replace(
    "epochs: 3", "epochs: 1"
)


def _two_task_project(tmp_path: Path, epochs: int = 1) -> Path:
    write_tiny_csv(tmp_path / "tiny.csv")
    (tmp_path / "recipe.yaml").write_text(TWO_TASKS.replace("epochs: 1", f"epochs: {epochs}"))
    return tmp_path


def _mtl(cwd: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mtlcli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def _files(run: Path) -> dict[str, tuple[int, str]]:
    """Every file of a run directory: (mtime_ns, sha256)."""
    from mtlcli.fsio import sha256

    return {
        str(p.relative_to(run)): (p.stat().st_mtime_ns, sha256(p))
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def _sweep_json(root: Path) -> dict:
    (path,) = root.glob("runs/tiny/sweeps/*/sweep.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_a_sweep_with_single_task_runs_two_jobs_and_compares(tmp_path):
    project = _two_task_project(tmp_path)
    args = [
        "sweep",
        "recipe.yaml",
        "--grid",
        "train.weighting=static,pcgrad",
        "--seeds",
        "2",
        "--single-task",
        "-j",
        "2",
    ]
    out = _mtl(project, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = _sweep_json(project)
    root = project / "runs" / "tiny" / "sweeps" / doc["id"]
    assert [r["state"] for r in doc["runs"]] == ["done"] * 8
    assert f"compare with: mtl compare runs/tiny/sweeps/{doc['id']}" in out.stdout
    singles = {r["dir"]: r["single_task"] for r in doc["runs"] if "single_task" in r}
    assert singles == {f"single_task={t}/seed-{k}": t for t in ("kind", "flag") for k in (0, 1)}
    run = root / "train.weighting=pcgrad" / "seed-1"
    env = json.loads((run / "env.json").read_text())
    assert env["seed"] == 4 and env["overrides"] == ["train.weighting=pcgrad"]

    res = _mtl(project, "compare", f"runs/tiny/sweeps/{doc['id']}", "--json")
    assert res.returncode == 0, res.stderr
    groups = {g["name"]: g for g in json.loads(res.stdout)["groups"]}
    assert {"single-task kind", "single-task flag"} <= set(groups)
    static = next(g for g in groups.values() if not g["single_task"] and "static" in g["name"])
    values = [
        json.loads((root / "train.weighting=static" / f"seed-{k}" / "metrics.json").read_text())["splits"][
            "validation"
        ]["tasks"]["kind"]["accuracy"]
        for k in (0, 1)
    ]
    assert static["tasks"]["kind"]["accuracy"]["mean"] == pytest.approx(statistics.mean(values))
    assert static["tasks"]["kind"]["accuracy"]["sd"] == pytest.approx(statistics.stdev(values))
    assert static["tasks"]["kind"]["accuracy"]["n"] == 2
    assert static["delta_m"] is not None

    before = {r: _files(root / r) for r in (r["dir"] for r in doc["runs"])}
    again = _mtl(project, *args)
    assert again.returncode == 0, again.stderr
    assert "8 already done before, not trained again" in again.stdout
    assert {r: _files(root / r) for r in before} == before


def _wait_for(predicate, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
def test_sigint_and_sigkill_then_the_same_command_finishes(tmp_path):
    project = _two_task_project(tmp_path, epochs=25)
    cmd = [sys.executable, "-m", "mtlcli", "sweep", "recipe.yaml", "--seeds", "2"]

    def root() -> Path:
        found = list(project.glob("runs/tiny/sweeps/*"))
        return found[0] if found else project / "none"

    def started(k: int) -> bool:
        return (root() / "base" / f"seed-{k}" / "checkpoints" / "last" / "state.json").is_file()

    parent = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: started(1))
    parent.send_signal(signal.SIGINT)
    out, err = parent.communicate(timeout=120)
    assert parent.returncode == 130, out + err
    assert "continue with: mtl sweep recipe.yaml --seeds 2" in err
    doc = _sweep_json(project)
    assert [r["state"] for r in doc["runs"]] == ["done", "interrupted"]
    done = _files(root() / "base" / "seed-0")

    # SIGKILL the sweep while it trains a third seed: its child saves a checkpoint and stops too
    parent = subprocess.Popen([*cmd[:-1], "3"], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: started(2) and _sweep_json(project)["runs"][2]["state"] == "running")
    child = _sweep_json(project)["runs"][2]["pid"]
    parent.kill()
    parent.communicate(timeout=30)
    _wait_for(lambda: not jobs.pid_alive(child), timeout=60)
    assert [r["state"] for r in _sweep_json(project)["runs"]][2] == "running"

    final = _mtl(project, "sweep", "recipe.yaml", "--seeds", "3")
    assert final.returncode == 0, final.stdout + final.stderr
    assert [r["state"] for r in _sweep_json(project)["runs"]] == ["done"] * 3
    assert _files(root() / "base" / "seed-0") == done
    for k in (1, 2):
        env = json.loads((root() / "base" / f"seed-{k}" / "env.json").read_text())
        assert env.get("resumes"), f"seed-{k} was not resumed"
        assert env["epochs_run"] == 25


def test_the_view_lines_table_and_continue_command(project):
    from rich.console import Console

    from mtlcli import sweep_view

    p = _prepared(["train.weighting=static,pcgrad"])
    job = p.jobs[1]
    job.mode = "resume"
    assert sweep_view.SweepView(Console(), p.jobs).line("start", job) == (
        "train.weighting=pcgrad/seed-0: resumed (seed 3, 3 epochs)"
    )
    state.transition(job.entry, "running", pid=1)
    job.epoch, job.value, job.epoch_times = 2, 0.61234, [10.0, 14.0, 18.0]
    assert job.eta() == pytest.approx(4.0)  # 4 s per epoch, 1 epoch left
    view = sweep_view.SweepView(Console(), p.jobs)
    assert view.line("epoch", job) == "train.weighting=pcgrad/seed-0: epoch 2/3, val_kind_accuracy 0.6123"
    console = Console(record=True, width=160)
    console.print(view.table())
    rows = console.export_text().splitlines()
    assert any("train.weighting=static/seed-0" in r and "pending" in r for r in rows)
    assert any(
        "train.weighting=pcgrad/seed-0" in r and "running" in r and "2/3" in r and "4s" in r for r in rows
    )
    options = {
        "grid": ["train.weighting=static,{cagrad: {c: 0.4}}"],
        "seeds": 2,
        "single_task": True,
        "sets": ["a=1"],
    }
    assert sweep_view.continue_command(Path("recipe.yaml"), options) == (
        "mtl sweep recipe.yaml --grid 'train.weighting=static,{cagrad: {c: 0.4}}' --seeds 2 --single-task --set a=1"
    )
