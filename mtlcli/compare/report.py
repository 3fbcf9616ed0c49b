"""The comparison itself: runs grouped by configuration, per-task summaries over seeds, the best group
and the ones statistically indistinguishable from it, Δm% against the baselines, the Pareto front and
its hypervolume (:func:`compare`, :class:`Comparison`; ``to_dict`` is what ``mtl compare --json``
prints).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.compare import stats
from mtlcli.compare.runs import Run, configuration, find_runs
from mtlcli.errors import UsageError, did_you_mean
from mtlcli.recipe.spec import primary_first

SPLITS = ("test", "validation")

#: the words of the output, also in --json
DELTA_M_RULE = (
    "Δm% = 100 · mean over tasks of (mean over the task's metrics of s · (M − M_base) / |M_base|), "
    "s = +1 when higher is better, −1 when lower is better (Maninis et al. 2019; LibMTL's "
    "count_improvement): Δm > 0 is better than the baseline"
)
SIGNIFICANCE_RULE = (
    f"Welch's t-test (two-sided, unequal variances) of each group against the best one, per task and "
    f"metric, over seeds: p ≥ {stats.ALPHA} is indistinguishable from the best"
)
HYPERVOLUME_RULE = (
    "hypervolume of the per-task headline means of the groups that have every task; reference point: "
    "per task, the worst mean minus 10% of the range of means (minus 10% of |worst| when all are equal)"
)


@dataclass
class Group:
    """Runs that differ only by seed."""

    index: int  # 1-based, in the order of the first run
    runs: list[Run]
    config: dict[str, Any]
    single_task: str | None
    name: str = ""
    columns: dict[str, Any] = field(default_factory=dict)  # the differing keys -> this group's values
    results: dict[str, dict[str, stats.Summary]] = field(default_factory=dict)
    delta_m: float | None = None
    pareto: bool | None = None
    hv_contribution: float | None = None

    def means(self) -> dict[str, dict[str, float]]:
        return {t: {m: s.mean for m, s in ms.items()} for t, ms in self.results.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "single_task": self.single_task,
            "keys": self.columns,
            "runs": [str(r.path) for r in self.runs],
            "seeds": [r.seed for r in self.runs],
            "tasks": {t: {m: s.to_dict() for m, s in ms.items()} for t, ms in self.results.items()},
            "delta_m": self.delta_m,
            "pareto_optimal": self.pareto,
            "hypervolume_contribution": self.hv_contribution,
        }


@dataclass
class Verdict:
    """One group on one task and metric, against the best group there."""

    group: str
    verdict: str  # best | indistinguishable | worse | untested
    p: float | None


@dataclass
class TaskTable:
    """One task: its metrics (headline first, loss last), and per metric the best group and the tests."""

    task: str
    metrics: list[str]
    groups: list[Group]
    verdicts: dict[str, list[Verdict]] = field(default_factory=dict)

    @property
    def headline(self) -> str:
        return self.metrics[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "headline": self.headline,
            "metrics": self.metrics,
            "groups": [g.name for g in self.groups],
            "tests": {m: [vars(v) for v in vs] for m, vs in self.verdicts.items()},
        }


@dataclass
class Front:
    """The Pareto front over the groups with every task, on one headline metric per task."""

    objectives: dict[str, str]  # task -> metric
    optimal: list[str]
    hypervolume: float | None = None
    reference: dict[str, float] | None = None


@dataclass
class Comparison:
    """Everything ``mtl compare`` shows."""

    split: str
    keys: list[str]
    groups: list[Group]
    tasks: dict[str, TaskTable]
    baselines: dict[str, str]  # task -> the name of its baseline group
    front: Front | None
    notes: list[str]

    def directions(self) -> dict[str, str]:
        names = dict.fromkeys(m for t in self.tasks.values() for m in t.metrics)
        out = {}
        for m in names:
            h = stats.higher_is_better(m)
            out[m] = "unknown" if h is None else ("higher is better" if h else "lower is better")
        return out

    def to_dict(self) -> dict[str, Any]:
        front = None
        if self.front is not None:
            front = {**vars(self.front), "rule": HYPERVOLUME_RULE}
        return {
            "split": self.split,
            "keys": self.keys,
            "directions": self.directions(),
            "delta_m": {"rule": DELTA_M_RULE, "baselines": self.baselines},
            "significance": SIGNIFICANCE_RULE,
            "groups": [g.to_dict() for g in self.groups],
            "tasks": {t: v.to_dict() for t, v in self.tasks.items()},
            "pareto": front,
            "notes": self.notes,
        }


# ------------------------------------------------------------------------------------------------
# Grouping


def _hashable(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs with the same configuration (all but seed and name) and the same single-task marker."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        config = configuration(run)
        key = (run.single_task, _hashable(config))
        if key not in groups:
            groups[key] = Group(len(groups) + 1, [], config, run.single_task)
        groups[key].runs.append(run)
    return list(groups.values())


def differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """The flattened keys whose values are not the same in every config (absent and null are alike)."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Each key's shortest dotted suffix that no other key ends with (``train.weighting`` -> ``weighting``)."""
    out = {}
    for k in keys:
        parts = k.split(".")
        for i in range(len(parts) - 1, -1, -1):
            suffix = ".".join(parts[i:])
            if not any(o != k and (o == suffix or o.endswith("." + suffix)) for o in keys):
                out[k] = suffix
                break
        else:
            out[k] = k
    return out


def _value_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, float):  # tuned values: 0.0011920879 reads 0.001192 (a clash gets #index)
        return format(value, ".4g")
    return json.dumps(value, default=str)


def name_groups(groups: list[Group]) -> list[str]:
    """Set each group's ``columns`` (the keys that differ between the multi-task groups, or between
    all groups when there is none) and ``name`` (``weighting=pcgrad,architecture=mmoe``;
    ``single-task species`` for a baseline). Returns the differing keys."""
    multi = [g for g in groups if g.single_task is None] or groups
    keys = differing_keys([g.config for g in multi])
    short = _short_keys(keys)
    for g in groups:
        g.columns = {k: g.config.get(k) for k in keys}
    for g in multi:
        g.name = ",".join(f"{short[k]}={_value_text(g.config.get(k))}" for k in keys)
        if not g.name:
            g.name = str(g.runs[0].resolved.get("name") or "multi-task")
    for task in dict.fromkeys(g.single_task for g in groups if g.single_task and g not in multi):
        same = [g for g in groups if g.single_task == task]
        own = differing_keys([g.config for g in same]) if len(same) > 1 else []
        own_short = _short_keys(own)
        for g in same:
            extra = ",".join(f"{own_short[k]}={_value_text(g.config.get(k))}" for k in own)
            g.name = f"single-task {task}" + (f" ({extra})" if extra else "")
    taken: dict[str, int] = {}
    for g in groups:  # two groups can only share a name through values that print alike
        taken[g.name] = taken.get(g.name, 0) + 1
        if taken[g.name] > 1:
            g.name = f"{g.name}#{g.index}"
    return keys


# ------------------------------------------------------------------------------------------------
# Summaries and tests


def choose_split(runs: list[Run], split: str | None) -> str:
    """``split`` when given (test or validation), else test when every run has it, else validation."""
    if split is not None:
        if split not in SPLITS:
            raise UsageError(
                f"--split: expected test or validation, received {split!r}{did_you_mean(split, SPLITS)}"
            )
        return split
    return "test" if all("test" in r.splits() and r.tasks("test") for r in runs) else "validation"


def _recipe_tasks(run: Run) -> dict[str, Any]:
    tasks = (run.resolved.get("model") or {}).get("tasks")
    return tasks if isinstance(tasks, dict) else {}


def _metric_order(groups: list[Group], task: str, split: str) -> list[str]:
    """The task's metrics: the recipe's ``metrics`` in their order (the first is the headline), then
    any other metric ``metrics.json`` has, the loss last (``metrics.json`` may sort its keys)."""
    seen: list[str] = []
    for g in groups:
        for run in g.runs:
            listed = (_recipe_tasks(run).get(task) or {}).get("metrics")
            if isinstance(listed, list):
                seen.extend(m for m in listed if isinstance(m, str) and m not in seen)
    found = [k for g in groups for r in g.runs for k in r.tasks(split).get(task, {}) if k != "n"]
    seen = [m for m in seen if m in found]
    seen.extend(k for k in dict.fromkeys(found) if k not in seen)
    others = [m for m in seen if m != "loss"]
    return others + (["loss"] if "loss" in seen else [])


def _task_order(groups: list[Group], split: str) -> list[str]:
    """Tasks in the recipe's order, multi-task groups first (``metrics.json`` may sort them); the first
    multi-task run's ``train.primary`` task, when it names one, first of all."""
    order = [g for g in groups if g.single_task is None] + [g for g in groups if g.single_task]
    listed = [t for g in order for r in g.runs for t in _recipe_tasks(r)]
    found = list(dict.fromkeys(t for g in order for r in g.runs for t in r.tasks(split)))
    tasks = [t for t in dict.fromkeys(listed) if t in found] + [t for t in found if t not in listed]
    return primary_first(tasks, _primary(order))


def _primary(groups: list[Group]) -> str | None:
    """The ``train.primary`` of the first multi-task run that names one (None: no primary task)."""
    for g in groups:
        for run in g.runs if g.single_task is None else []:
            primary = (run.resolved.get("train") or {}).get("primary")
            if isinstance(primary, str):
                return primary
    return None


def summarize_groups(groups: list[Group], split: str) -> dict[str, TaskTable]:
    """Fill every group's ``results`` and return one :class:`TaskTable` per task, tasks in the
    order of the first multi-task run."""
    tables = {}
    for task in _task_order(groups, split):
        metrics = _metric_order(groups, task, split)
        having = []
        for g in groups:
            values = {
                m: [r.tasks(split)[task][m] for r in g.runs if _number(r.tasks(split).get(task, {}).get(m))]
                for m in metrics
            }
            values = {m: v for m, v in values.items() if v}
            if values:
                g.results[task] = {m: stats.summarize(v) for m, v in values.items()}
                having.append(g)
        table = TaskTable(task, metrics, having)
        for m in metrics:
            table.verdicts[m] = verdicts(having, task, m)
        tables[task] = table
    return tables


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def verdicts(groups: list[Group], task: str, metric: str) -> list[Verdict]:
    """Each group with ``metric`` on ``task``: the best by mean, or how it compares to the best (Welch)."""
    higher = stats.higher_is_better(metric)
    having = [g for g in groups if metric in g.results.get(task, {})]
    if not having or higher is None:
        return [Verdict(g.name, "untested", None) for g in having]
    best = having[stats.best_index([g.results[task][metric].mean for g in having], higher)]
    out = []
    for g in having:
        if g is best:
            out.append(Verdict(g.name, "best", None))
            continue
        p = stats.welch_p(g.results[task][metric].values, best.results[task][metric].values)
        word = "untested" if p is None else ("indistinguishable" if p >= stats.ALPHA else "worse")
        out.append(Verdict(g.name, word, p))
    return out


# ------------------------------------------------------------------------------------------------
# Δm and the Pareto front


def find_group(groups: list[Group], wanted: str) -> Group:
    """The group named ``wanted``, numbered ``wanted`` (1-based), or holding the run at path ``wanted``."""
    for g in groups:
        if g.name == wanted:
            return g
    if wanted.lstrip("#").isdigit() and 1 <= int(wanted.lstrip("#")) <= len(groups):
        return groups[int(wanted.lstrip("#")) - 1]
    path = Path(wanted).resolve()
    for g in groups:
        if any(r.path.resolve() == path for r in g.runs):
            return g
    names = [g.name for g in groups]
    raise UsageError(
        f"--baseline: no group {wanted!r}{did_you_mean(wanted, names)}; the groups are: "
        + "; ".join(f"{g.index}: {g.name}" for g in groups)
    )


def _mean_metrics(group: Group, task: str) -> dict[str, float]:
    """The metrics Δm uses for a task: all but the loss (the loss when it is the only one)."""
    means = {m: s.mean for m, s in group.results.get(task, {}).items()}
    metrics = {m: v for m, v in means.items() if m != "loss"}
    return metrics or means


def baselines(groups: list[Group], tables: dict[str, TaskTable], baseline: str | None, notes: list[str]):
    """``{task: baseline group}``: ``--baseline`` for every task, else the single-task groups (the best
    one by headline mean when a task has several)."""
    if baseline is not None:
        g = find_group(groups, baseline)
        return {t: g for t in g.results}
    out = {}
    for task, table in tables.items():
        cands = [g for g in groups if g.single_task == task and task in g.results]
        if not cands:
            continue
        metric = table.headline
        scored = [g for g in cands if metric in g.results[task]]
        if not scored:
            continue
        higher = stats.higher_is_better(metric) is not False
        best = scored[stats.best_index([g.results[task][metric].mean for g in scored], higher)]
        if len(cands) > 1:
            notes.append(
                f"{task}: {len(cands)} single-task groups; the baseline is the best by {metric}: {best.name}"
            )
        out[task] = best
    return out


def add_delta_m(groups: list[Group], base: dict[str, Group], notes: list[str]) -> None:
    """Set ``delta_m`` on every group that is not a baseline itself."""
    if not base:
        notes.append(
            "Δm: no single-task runs (a recipe with one task, or single_task in env.json / sweep.json); "
            "pass --baseline GROUP to compare against a group"
        )
        return
    baseline_groups = {id(g) for g in base.values()}
    higher = {}
    for g in groups:
        for ms in g.results.values():
            for m in ms:
                h = stats.higher_is_better(m)
                if h is not None:
                    higher[m] = h
    all_tasks = list(dict.fromkeys(t for g in groups for t in g.results))
    missing = [t for t in all_tasks if t not in base]
    if missing:
        notes.append(f"Δm covers {', '.join(base)} only: no baseline for {', '.join(missing)}")
    for g in groups:
        if id(g) in baseline_groups:
            continue
        values = {t: _mean_metrics(g, t) for t in g.results if t in base}
        ref = {t: _mean_metrics(base[t], t) for t in values}
        g.delta_m, why = stats.delta_m(values, ref, higher)
        notes.extend(w for w in why if w not in notes)


def add_front(groups: list[Group], tables: dict[str, TaskTable], notes: list[str]) -> Front | None:
    """The Pareto front over the groups that have every task's headline, and for 2–3 tasks the
    hypervolume and each optimal group's contribution."""
    objectives = {t: tab.headline for t, tab in tables.items()}
    directions = [stats.higher_is_better(m) for m in objectives.values()]
    if len(objectives) < 2 or None in directions:
        return None
    cands = [g for g in groups if all(m in g.results.get(t, {}) for t, m in objectives.items())]
    if not cands:
        notes.append("Pareto front: no group has every task's headline metric")
        return None
    points = stats.oriented(
        [[g.results[t][m].mean for t, m in objectives.items()] for g in cands], [bool(d) for d in directions]
    )
    mask = stats.pareto_mask(points)
    for g, optimal in zip(cands, mask, strict=True):
        g.pareto = optimal
    front = Front(objectives, [g.name for g, o in zip(cands, mask, strict=True) if o])
    if len(objectives) <= 3:
        ref = stats.reference_point(points)
        front.hypervolume = stats.hypervolume(points, ref)
        signs = np.array([1.0 if d else -1.0 for d in directions])
        front.reference = {t: float(v) for t, v in zip(objectives, ref * signs, strict=True)}
        for g, c in zip(cands, stats.contributions(points, ref), strict=True):
            g.hv_contribution = c
    else:
        notes.append(f"hypervolume: computed for 2–3 tasks only ({len(objectives)} here)")
    return front


def compare(paths: list[Path], split: str | None = None, baseline: str | None = None) -> Comparison:
    """Compare the finished runs at or under ``paths`` (see :mod:`mtlcli.compare.runs` for the layout)."""
    if split is not None and split not in SPLITS:
        choose_split([], split)
    runs, notes = find_runs(paths)
    chosen = choose_split(runs, split)
    kept = []
    for run in runs:
        if run.tasks(chosen):
            kept.append(run)
        else:
            notes.append(f"{run.path}: skipped, no {chosen} results in metrics.json")
    if not kept:
        raise UsageError(
            f"no run has {chosen} results; try --split {'validation' if chosen == 'test' else 'test'}"
        )
    groups = group_runs(kept)
    keys = name_groups(groups)
    tables = summarize_groups(groups, chosen)
    base = baselines(groups, tables, baseline, notes)
    add_delta_m(groups, base, notes)
    front = add_front(groups, tables, notes)
    return Comparison(chosen, keys, groups, tables, {t: g.name for t, g in base.items()}, front, notes)
