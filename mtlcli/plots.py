"""``mtl plot``: one PNG of a run's ``history.csv`` (per task its loss and headline metric, train and
validation; the task weights; the minimum gradient cosine per task; the best and early-stopping
epochs), or of the Pareto front of the runs under a directory (per-task validation headline means,
from :func:`mtlcli.compare.compare`). matplotlib (Agg backend) is imported only when a figure is drawn.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from mtlcli.compare import compare, find_runs, stats
from mtlcli.errors import UsageError
from mtlcli.fsio import atomic_write
from mtlcli.runlist import history_rows, read_json, read_resolved, run_dirs, strategy_name

INSTALL = "pip install 'mtlcli[plot]' (or pip install matplotlib)"
ARROWS = {True: "↑", False: "↓", None: ""}
#: the front is drawn for this many tasks (pairwise panels for 3)
FRONT_TASKS = (2, 3)


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a UsageError saying what to install."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError(f"mtl plot needs matplotlib, which is not installed: {INSTALL}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class History:
    """A run's ``history.csv`` as columns of floats (NaN where a row has no value), with its tasks."""

    run_dir: Path
    epochs: list[int]
    columns: dict[str, list[float]]
    tasks: dict[str, str | None]  # task -> headline metric (the recipe's first with a column)
    resolved: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> list[float] | None:
        values = self.columns.get(name)
        return values if values is not None and any(math.isfinite(v) for v in values) else None

    def cosines(self, task: str) -> list[float] | None:
        """Per epoch, the minimum cosine between ``task``'s gradient and another task's (``cos_<a>_<b>``
        columns, recorded by gradient-based strategies)."""
        pairs = [
            self.get(f"cos_{a}_{b}") or self.get(f"cos_{b}_{a}")
            for a, b in ((task, other) for other in self.tasks if other != task)
        ]
        pairs = [p for p in pairs if p is not None]
        if not pairs:
            return None
        return [
            min((p[i] for p in pairs if math.isfinite(p[i])), default=math.nan)
            for i in range(len(self.epochs))
        ]


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _headline(task: str, spec: Any, columns: dict[str, list[float]]) -> str | None:
    listed = spec.get("metrics") if isinstance(spec, dict) else None
    for metric in listed if isinstance(listed, list) else []:
        if isinstance(metric, str) and f"{task}_{metric}" in columns:
            return metric
    return None


def read_history(run_dir: Path) -> History:
    """The run's ``history.csv`` and its tasks; a UsageError when it has no epoch."""
    rows = history_rows(run_dir / "history.csv")
    if not rows:
        raise UsageError(f"{run_dir}/history.csv: no epoch recorded yet (missing or empty)")
    names = [n for n in rows[0] if n and n != "epoch"]
    columns = {n: [_float(r.get(n)) for r in rows] for n in names}
    epochs = [int(_float(r.get("epoch"))) if r.get("epoch") else i + 1 for i, r in enumerate(rows)]
    resolved = read_resolved(run_dir)
    specs = (resolved.get("model") or {}).get("tasks") or {}
    if not isinstance(specs, dict) or not specs:  # no readable recipe: the tasks with a loss column
        specs = {n[: -len("_loss")]: {} for n in names if n.endswith("_loss") and not n.startswith("val_")}
    tasks = {t: _headline(t, s, columns) for t, s in specs.items()}
    return History(run_dir, epochs, columns, tasks, resolved)


@dataclass
class Marks:
    """Epochs marked on every panel."""

    best: int | None = None
    monitor: str | None = None
    stopped: int | None = None  # the last epoch, when early stopping ended the run
    labelled: bool = False  # the legend of a panel names them already


def marks(run_dir: Path, history: History) -> Marks:
    """The best epoch (metrics.json's ``best``, else the last checkpoint's selection) and the
    early-stopping epoch (the last checkpoint says it stopped)."""
    best = read_json(run_dir / "metrics.json").get("best") or {}
    selection = read_json(run_dir / "checkpoints" / "last" / "state.json").get("selection") or {}
    out = Marks()
    epoch = best.get("epoch") if isinstance(best, dict) else None
    if not isinstance(epoch, int):
        epoch = selection.get("best_epoch")
    out.best = epoch if isinstance(epoch, int) and epoch > 0 else None
    out.monitor = (best.get("monitor") if isinstance(best, dict) else None) or selection.get("monitor")
    if selection.get("stopped"):
        out.stopped = history.epochs[-1]
    return out


def _mark(ax, m: Marks) -> None:
    """The vertical lines (named in the legend of the first panel only)."""
    first, m.labelled = not m.labelled, True
    if m.best is not None:
        label = f"best epoch {m.best}" if first else None
        ax.axvline(m.best, color="tab:green", linestyle="--", linewidth=1, label=label)
    if m.stopped is not None:
        label = f"early stop {m.stopped}" if first else None
        ax.axvline(m.stopped, color="tab:red", linestyle=":", linewidth=1, label=label)


#: line styles per task on the shared panels (tasks with equal weights or cosines stay visible)
STYLES = ("-", "--", ":", "-.")


def _axes(ax, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _line(ax, h: History, values: list[float], label: str, style: str = "-") -> None:
    ax.plot(h.epochs, values, style, marker="." if len(h.epochs) < 30 else None, label=label)


def _curves(
    ax, h: History, names: list[tuple[str, str]], title: str, m: Marks, styles: tuple[str, ...] = ("-",)
) -> None:
    drawn = 0
    for column, label in names:
        values = h.get(column)
        if values is not None:
            _line(ax, h, values, label, styles[drawn % len(styles)])
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
    _mark(ax, m)
    _axes(ax, title)
    if drawn:
        ax.legend(fontsize=7)


def _task_panels(axes, h: History, m: Marks) -> None:
    for row, (task, metric) in zip(axes, h.tasks.items(), strict=False):
        _curves(
            row[0], h, [(f"{task}_loss", "train"), (f"val_{task}_loss", "validation")], f"{task}: loss", m
        )
        if metric is None:
            _curves(row[1], h, [], f"{task}: no metric recorded", m)
            continue
        arrow = ARROWS[stats.higher_is_better(metric)]
        names = [(f"{task}_{metric}", "train"), (f"val_{task}_{metric}", "validation")]
        _curves(row[1], h, names, f"{task}: {metric} {arrow}", m)


def _weights_panel(ax, h: History, m: Marks) -> None:
    _curves(ax, h, [(f"{t}_weight", t) for t in h.tasks], "task weights (train)", m, STYLES)


def _cosine_panel(ax, h: History, m: Marks) -> None:
    drawn = 0
    for task in h.tasks:
        values = h.cosines(task)
        if values is not None:
            _line(ax, h, values, task, STYLES[drawn % len(STYLES)])
            drawn += 1
    if drawn:
        ax.axhline(0, color="black", linewidth=0.8)
        ax.legend(fontsize=7)
    else:
        strategy = strategy_name((h.resolved.get("train") or {}).get("weighting")) or "?"
        ax.text(
            0.5,
            0.5,
            f"no gradient cosines recorded\n(weighting: {strategy} is not gradient-based)",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="gray",
        )
    _mark(ax, m)
    _axes(ax, "minimum gradient cosine with another task")


def _save(plt, fig, path: Path) -> Path:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    try:
        atomic_write(path, buf.getvalue())
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def plot_run(run_dir: Path, path: Path) -> Path:
    """One run's figure: a row per task (loss, headline metric), then task weights and cosines."""
    h = read_history(run_dir)
    m = marks(run_dir, h)
    plt = pyplot()
    n = len(h.tasks) + 1
    fig, axes = plt.subplots(n, 2, figsize=(11, 3.0 * n), squeeze=False)
    _task_panels(axes[:-1], h, m)
    _weights_panel(axes[-1][0], h, m)
    _cosine_panel(axes[-1][1], h, m)
    train = h.resolved.get("train") or {}
    model = h.resolved.get("model") or {}
    title = (
        f"{h.resolved.get('name') or run_dir.name} — {run_dir} — weighting {strategy_name(train.get('weighting'))}, "
        f"{model.get('architecture') or '?'}, {len(h.epochs)} epoch(s)"
    )
    if m.best is not None:
        title += f"; best epoch {m.best} ({m.monitor or 'monitor'})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, path)


# ------------------------------------------------------------------------------------------------
# the Pareto front of a directory of runs


def _front_panel(ax, groups, a: tuple[str, str], b: tuple[str, str]) -> None:
    """The groups on tasks ``a`` and ``b`` (``(task, metric)``); groups at (nearly) the same point share
    one label."""
    labels: dict[tuple[float, float], list[str]] = {}
    for g in groups:
        x, y = g.results[a[0]][a[1]], g.results[b[0]][b[1]]
        color = "tab:red" if g.pareto else "lightgray"
        ax.errorbar(
            x.mean,
            y.mean,
            xerr=x.half_width or 0,
            yerr=y.half_width or 0,
            fmt="o",
            capsize=3,
            color=color,
            markeredgecolor="black" if g.pareto else "gray",
            zorder=3 if g.pareto else 2,
        )
        labels.setdefault((x.mean, y.mean), []).append(str(g.index))
    labels = _merge_close(labels, ax)
    for xy, names in labels.items():
        ax.annotate(", ".join(names), xy, textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(f"{a[0]} {a[1]} {ARROWS[stats.higher_is_better(a[1])]}")
    ax.set_ylabel(f"{b[0]} {b[1]} {ARROWS[stats.higher_is_better(b[1])]}")
    ax.grid(alpha=0.3)


def _merge_close(labels: dict[tuple[float, float], list[str]], ax) -> dict[tuple[float, float], list[str]]:
    """Points less than 2% of the axes' span apart as one (their labels would overlap)."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    out: dict[tuple[float, float], list[str]] = {}
    for (x, y), names in labels.items():
        near = next(
            (k for k in out if abs(k[0] - x) < 0.02 * (x1 - x0) and abs(k[1] - y) < 0.02 * (y1 - y0)), None
        )
        out.setdefault(near or (x, y), []).extend(names)
    return out


def _check_front(root: Path, c) -> None:
    """A UsageError unless the comparison has a front on 2 or 3 tasks."""
    n = len(c.front.objectives) if c.front is not None else len(c.tasks)
    if n not in FRONT_TASKS:
        raise UsageError(
            f"{root}: the front is drawn for 2 or 3 tasks, these runs have {n}; see mtl compare {root}"
        )
    if c.front is None:
        unknown = [t.headline for t in c.tasks.values() if stats.higher_is_better(t.headline) is None]
        why = (
            f"which way is better is unknown for {', '.join(unknown)}"
            if unknown
            else "no configuration has every task's validation headline metric"
        )
        raise UsageError(f"{root}: no Pareto front: {why}; see mtl compare {root}")


def plot_front(root: Path, path: Path) -> Path:
    """The groups of runs under ``root`` on their per-task validation headline means: Pareto-optimal
    red, dominated grey (2 tasks: one panel; 3 tasks: the three pairs, each point coloured by the
    3-task front)."""
    runs, _ = find_runs([root])
    if not any(r.tasks("validation") for r in runs):
        raise UsageError(f"{root}: no run has validation results in metrics.json (the front is on them)")
    c = compare([root], split="validation")
    _check_front(root, c)
    plt = pyplot()
    objectives = list(c.front.objectives.items())
    pairs = list(combinations(objectives, 2))
    groups = [g for g in c.groups if g.pareto is not None]
    fig, axes = plt.subplots(1, len(pairs), figsize=(max(5 * len(pairs), 7), 4.6), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs, strict=True):
        _front_panel(ax, groups, a, b)
    names = "\n".join(f"{g.index}: {g.name}{' (Pareto-optimal)' if g.pareto else ''}" for g in groups)
    left = [g.name for g in c.groups if g.pareto is None]
    if left:
        names += f"\nnot on the front (missing a task): {', '.join(left)}"
    fig.suptitle(
        f"Pareto front of {len(groups)} configuration(s): validation means ± 95% CI over seeds\n"
        f"red: Pareto-optimal, grey: dominated — {root}",
        fontsize=9,
    )
    fig.text(0.01, 0.01, names, fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.04 + 0.025 * names.count("\n"), 1, 0.93))
    return _save(plt, fig, path)


def plot(target: Path, output: Path | None = None) -> tuple[Path, str]:
    """``mtl plot``: a run's curves or, for a directory of several runs, their front; returns the
    PNG's path and which figure it is (``run`` or ``front``)."""
    if not target.exists():
        raise UsageError(f"{target}: no such directory")
    if not target.is_dir():
        raise UsageError(f"{target}: expected a run directory or a directory of runs, received a file")
    dirs = run_dirs(target)
    if not dirs:
        raise UsageError(f"{target}: no run directory (one with resolved.yaml) in it or below")
    if len(dirs) == 1:
        return plot_run(dirs[0], output or dirs[0] / "plot.png"), "run"
    return plot_front(target, output or target / "plot.png"), "front"
