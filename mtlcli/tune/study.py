"""A tune from request to Pareto front: :func:`prepare` checks the search space and the objectives
and opens (or creates) the Optuna study, :func:`run` asks Optuna for trials, trains each as an ordinary
``mtl train`` child (``--jobs`` at once, with :mod:`mtlcli.sweep.jobs`), reports per-epoch values for
pruning and tells Optuna how each ended. Optuna is imported here only (``mtl tune``'s lazy import).

Layout: ``runs/<recipe name>/studies/<study>/`` holds ``study.db`` (the default storage),
``study.json`` (a summary, written atomically after every trial), ``trial-NNNN/`` (run directories)
and ``logs/trial-NNNN.log``. The search space, recipe, overrides and objectives are the study's user
attributes, so ``--join STUDY --storage URL`` needs nothing else.

Counting: ``--trials N`` is the study's total. A trial counts when it is complete, pruned, running or
failed with an error recorded; trials stopped by Ctrl-C (or found running with their process gone)
end FAIL with ``interrupted`` and do not count, so the next invocation replaces them.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlcli.errors import RecipeError, UsageError
from mtlcli.recipe import load
from mtlcli.sweep import jobs as jobs_mod
from mtlcli.sweep.state import Entry
from mtlcli.tune import objectives as obj_mod
from mtlcli.tune import space as space_mod

SAMPLERS = ("tpe", "nsga2", "random")
INSTALL = 'mtl tune needs Optuna: pip install "mtlcli[tune]"'


def optuna():
    """The optuna module, quiet; a UsageError saying what to install when it is missing."""
    try:
        import optuna as o
    except ImportError:
        raise UsageError(INSTALL) from None
    o.logging.set_verbosity(o.logging.WARNING)
    return o


@dataclass
class TuneSpec:
    """A whole tune request (the command line)."""

    recipe: Path | None
    search: list[str] = field(default_factory=list)
    trials: int = 20
    objectives: str | None = None
    jobs: int = 1
    threads: int | None = None
    name: str | None = None
    storage: str | None = None
    join: str | None = None
    sampler: str = "tpe"
    seed: int | None = None
    prune: bool | None = None
    sets: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    """A checked tune: its study, directory, search space, objectives and notes."""

    spec: TuneSpec
    study: Any
    root: Path
    recipe: Path
    params: list[space_mod.Param]
    objectives: list[obj_mod.Objective]
    sets: list[str]
    epochs: int
    prune: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class TrialJob:
    """One trial being trained: its Optuna trial, sampled values and child run (a sweep Job)."""

    trial: Any
    params: dict[str, Any]
    job: jobs_mod.Job
    state: str = "running"  # running, complete, pruned, failed, interrupted
    values: list[float] | None = None
    error: str | None = None
    prune_asked: bool = False

    @property
    def number(self) -> int:
        return self.trial.number


def storage_url(root: Path) -> str:
    return f"sqlite:///{(root / 'study.db').resolve()}"


def _storage(o, url: str):
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return o.storages.RDBStorage(url, engine_kwargs=kwargs)


def _sampler(o, name: str, seed: int, multi: bool):
    if name not in SAMPLERS:
        from mtlcli.errors import did_you_mean

        raise UsageError(
            f"--sampler {name}: expected one of {', '.join(SAMPLERS)}{did_you_mean(name, SAMPLERS)}"
        )
    if name == "random":
        return o.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return o.samplers.NSGAIISampler(seed=seed)
    # TPE handles several objectives (MOTPE) and learns from a handful of trials; NSGA-II's first
    # generation (50 trials by default) is random, more than most tunes run
    return o.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=5)


def _joined(spec: TuneSpec, o) -> tuple[TuneSpec, dict[str, Any]]:
    """``spec`` completed from the user attributes of the study it joins."""
    if spec.storage is None and spec.recipe is None:
        raise UsageError(f"--join {spec.join}: give --storage URL (or the recipe, for the default study.db)")
    url = spec.storage
    if url is None:
        name = load(spec.recipe, overrides=spec.sets).name
        url = storage_url(Path("runs") / name / "studies" / spec.join)
    try:
        attrs = o.load_study(study_name=spec.join, storage=_storage(o, url)).user_attrs
    except KeyError:
        raise UsageError(f"--join {spec.join}: no such study in {url}") from None
    spec.storage, spec.name = url, spec.join
    spec.recipe = Path(attrs["recipe"])
    spec.search, spec.sets, spec.objectives = attrs["search"], attrs["sets"], attrs["objectives"]
    return spec, attrs


def prepare(spec: TuneSpec) -> Prepared:
    """Check the search space and objectives (every problem at once, exit 2) before any trial, then
    open or create the study (a different search space for an existing study is refused)."""
    o = optuna()
    attrs: dict[str, Any] = {}
    if spec.join:
        spec, attrs = _joined(spec, o)
    if spec.recipe is None or not spec.recipe.is_file():
        raise UsageError(f"{spec.recipe}: no such recipe file")
    if not spec.search:
        raise UsageError("nothing to search: give --search KEY=SPEC (docs/tune.md)")
    params = space_mod.parse_all(spec.search)
    base = load(spec.recipe, overrides=spec.sets)
    objectives, problems = [], []
    try:
        objectives = obj_mod.resolve(spec.objectives, base)
    except RecipeError as exc:
        problems += exc.problems
    try:
        space_mod.check(spec.recipe, params, spec.sets)
    except RecipeError as exc:
        problems += exc.problems
    if problems:
        raise RecipeError(problems=problems)
    name = spec.name or base.name
    root = Path(attrs["root"]) if attrs.get("root") else Path("runs") / base.name / "studies" / name
    root.mkdir(parents=True, exist_ok=True)
    url = spec.storage or storage_url(root)
    seed = spec.seed if spec.seed is not None else base.recipe.seed
    if spec.join:
        seed += os.getpid()  # joined workers must not sample the same points
    multi = len(objectives) > 1
    notes = []
    prune = bool(spec.prune) if spec.prune is not None else not multi
    if prune and multi:
        notes.append("--prune: Optuna prunes single-objective studies only; trials run to the end")
        prune = False
    pruner = o.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if prune else o.pruners.NopPruner()
    study = o.create_study(
        study_name=name,
        storage=_storage(o, url),
        directions=[x.direction for x in objectives],
        sampler=_sampler(o, spec.sampler, seed, multi),
        pruner=pruner,
        load_if_exists=True,
    )
    _check_attrs(study, spec, root, objectives)
    epochs = base.recipe.train.epochs
    return Prepared(spec, study, root, spec.recipe, params, objectives, list(spec.sets), epochs, prune, notes)


def _check_attrs(study, spec: TuneSpec, root: Path, objectives: list[obj_mod.Objective]) -> None:
    want = {
        "recipe": str(spec.recipe.resolve()),
        "search": list(spec.search),
        "sets": list(spec.sets),
        "objectives": ",".join(x.name for x in objectives),
        "root": str(root.resolve()),
    }
    have = study.user_attrs
    if not have:
        for k, v in want.items():
            study.set_user_attr(k, v)
        return
    for key in ("search", "sets", "objectives"):
        if have.get(key) != want[key]:
            raise UsageError(
                f"study {study.study_name} was created with {key} {have.get(key)}, not {want[key]}: "
                "run the same command to continue it, or --name NEW for a new study"
            )


def counted(trial) -> bool:
    """Whether a trial counts toward ``--trials`` (see the module docstring)."""
    name = trial.state.name
    return name in ("COMPLETE", "PRUNED", "RUNNING", "WAITING") or (
        name == "FAIL" and "error" in trial.user_attrs
    )


def _reap_stale(p: Prepared) -> list[int]:
    """Trials this host left RUNNING whose process is gone: told FAIL (they do not count)."""
    host, out = socket.gethostname(), []
    for t in p.study.get_trials(deepcopy=False):
        a = t.user_attrs
        if t.state.name == "RUNNING" and a.get("host") == host and not _alive(a.get("pid")):
            p.study.tell(t.number, state=optuna().trial.TrialState.FAIL)
            out.append(t.number)
    return out


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ask(p: Prepared, target: int) -> TrialJob | None:
    """A new trial and its child job, or None when the study holds ``target`` counted trials (a trial
    another worker asked for at the same moment beyond the target is told FAIL, not trained)."""
    o = optuna()
    if sum(counted(t) for t in p.study.get_trials(deepcopy=False)) >= target:
        return None
    trial = p.study.ask(space_mod.distributions(p.params))
    before = [t for t in p.study.get_trials(deepcopy=False) if t.number < trial.number and counted(t)]
    if len(before) >= target:
        trial.set_user_attr("surplus", True)
        p.study.tell(trial, state=o.trial.TrialState.FAIL)
        return None
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    name = f"trial-{trial.number:04d}"
    run_dir = p.root / name
    trial.set_user_attr("dir", name)
    sets = [*p.sets, *(x.to_set(trial.params[x.key]) for x in p.params)]
    seed = load(p.recipe, overrides=p.sets).recipe.seed
    column = p.objectives[0].column  # the live table's value and the pruned one
    job = jobs_mod.Job(
        Entry(name, name, seed, 0),
        run_dir,
        str(p.recipe),
        sets,
        p.epochs,
        column,
        p.root / "logs" / f"{name}.log",
    )
    return TrialJob(trial, dict(trial.params), job)


def _epoch(p: Prepared, tj: TrialJob) -> None:
    """A new epoch of ``tj``: report its objective and stop the child when Optuna prunes it."""
    if not p.prune or tj.job.value is None or tj.prune_asked:
        return
    tj.trial.report(tj.job.value, tj.job.epoch)
    if tj.trial.should_prune() and tj.job.proc is not None:
        tj.prune_asked = True
        os.kill(tj.job.proc.pid, signal.SIGINT)


def _end(p: Prepared, tj: TrialJob, stopping: bool) -> None:
    """Tell Optuna how ``tj``'s child ended."""
    o = optuna()
    state = jobs_mod.finish(tj.job, stopping=stopping)
    t = tj.trial
    if state == "done" and (values := obj_mod.read_values(tj.job.run_dir, p.objectives)) is not None:
        tj.state, tj.values = "complete", values
        p.study.tell(t, values if len(values) > 1 else values[0])
    elif tj.prune_asked and not stopping:
        tj.state = "pruned"
        t.set_user_attr("pruned_at_epoch", tj.job.epoch)
        p.study.tell(t, state=o.trial.TrialState.PRUNED)
    elif state == "interrupted" or stopping:
        tj.state = "interrupted"
        t.set_user_attr("interrupted", True)
        p.study.tell(t, state=o.trial.TrialState.FAIL)
    else:
        tj.state = "failed"
        tj.error = tj.job.entry.error or "no metrics.json"
        t.set_user_attr("error", tj.error)
        p.study.tell(t, state=o.trial.TrialState.FAIL)


@dataclass
class Outcome:
    """How this invocation ended: the signal that stopped it (or None) and the trials it trained."""

    signum: int | None
    trained: list[TrialJob]

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trained)


def run(p: Prepared, on_change, jobs: int = 1, threads: int | None = None, poll: float = 0.5) -> Outcome:
    """Train trials until the study holds ``--trials`` of them, ``jobs`` at once. ``on_change(kind,
    item)``: ``note`` (a text), then ``start``, ``epoch``, ``end``, ``tick`` with a :class:`TrialJob`."""
    from mtlcli.tune.results import save

    for note in p.notes:
        on_change("note", note)
    stale = _reap_stale(p)
    if stale:
        on_change(
            "note", f"trial(s) {', '.join(map(str, stale))} were left running by a killed mtl tune: told FAIL"
        )
    n, per, note = jobs_mod.thread_plan(jobs_mod.cores(), jobs, threads)
    if note:
        on_change("note", note)
    running: list[TrialJob] = []
    trained: list[TrialJob] = []
    done_asking = False
    with jobs_mod.Stopper() as stop:
        forwarded = 0
        while running or not (done_asking or stop.count):
            if stop.count > forwarded:
                forwarded = stop.count
                jobs_mod.forward([t.job for t in running], forwarded)
            while not done_asking and not stop.count and len(running) < n:
                tj = _ask(p, p.spec.trials)
                if tj is None:
                    done_asking = True
                    break
                jobs_mod.start(tj.job, per)
                running.append(tj)
                trained.append(tj)
                on_change("start", tj)
            for tj in list(running):
                if tj.job.proc is not None and tj.job.proc.poll() is not None:
                    running.remove(tj)
                    _end(p, tj, stopping=bool(stop.count))
                    save(p)
                    on_change("end", tj)
                elif jobs_mod.read_progress(tj.job):
                    _epoch(p, tj)
                    on_change("epoch", tj)
            if running:
                on_change("tick", running[0])
                time.sleep(poll)
    save(p)
    return Outcome(stop.signum if stop.count else None, trained)
