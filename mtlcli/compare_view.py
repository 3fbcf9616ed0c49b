"""What ``mtl compare`` shows: a rich table per task, a summary table (Δm%, Pareto front, hypervolume)
with the rules that produced them, and the ``--plot`` figure (matplotlib, Agg, imported lazily).

Only the CLI layer imports this module; it reads a :class:`mtlcli.compare.Comparison` and never
computes statistics itself.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtlcli.compare import stats
from mtlcli.compare.report import (
    DELTA_M_RULE,
    HYPERVOLUME_RULE,
    SIGNIFICANCE_RULE,
    Comparison,
    Group,
    TaskTable,
)
from mtlcli.errors import UsageError
from mtlcli.views import fmt, interactive

#: the mark after a mean, by verdict
MARKS = {"best": "*", "indistinguishable": "=", "worse": "", "untested": "?"}
ARROWS = {True: "↑", False: "↓", None: "?"}


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def decimals(mean: float) -> int:
    """Decimals that give the mean 4 significant digits (0.9532, 250.8); sd and CI use the same."""
    if mean == 0 or not math.isfinite(mean):
        return 4
    return min(6, max(0, 3 - math.floor(math.log10(abs(mean)))))


def cell(s: stats.Summary, verdict: str) -> str:
    """``0.8971 ± 0.0123 [0.8665, 0.9277] *``; one seed: the value alone."""
    d = decimals(s.mean)
    text = f"{s.mean:.{d}f}"
    if s.sd is not None and s.ci is not None:
        lo, hi = s.ci
        text += f" ± {s.sd:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"
    return f"{text} {MARKS.get(verdict) or ' '}"  # a blank mark keeps the numbers aligned


def _table(fancy: bool) -> Table:
    return Table(
        header_style="bold" if fancy else "",
        box=box.HEAVY_HEAD if fancy else box.SIMPLE,
        show_edge=fancy,
    )


def _value(v: Any) -> str:
    if v is None:
        return "-"
    return v if isinstance(v, str) else fmt(v) if isinstance(v, float) else str(v)


def task_table(c: Comparison, table: TaskTable, fancy: bool) -> Table:
    """One row per group with the task: the differing keys, each metric's mean ± sd [95% CI], n."""
    out = _table(fancy)
    out.add_column("#", justify="right")
    kinds = any(g.single_task for g in table.groups)
    if kinds:
        out.add_column("runs")
    keys = c.keys or ["group"]
    for k in keys:
        out.add_column(escape(k))
    for m in table.metrics:
        out.add_column(f"{m} {ARROWS[stats.higher_is_better(m)]}", justify="right")
    out.add_column("n", justify="right")
    for g in table.groups:
        row = [str(g.index)]
        if kinds:
            row.append(f"single-task {g.single_task}" if g.single_task else "multi-task")
        row += [escape(_value(g.columns.get(k))) for k in keys] if c.keys else [escape(g.name)]
        for m in table.metrics:
            verdict = next((v.verdict for v in table.verdicts[m] if v.group == g.name), "untested")
            s = g.results[table.task].get(m)
            row.append("-" if s is None else cell(s, verdict))
        row.append(str(max((s.n for s in g.results[table.task].values()), default=0)))
        out.add_row(*row)
    return out


def summary_table(c: Comparison, fancy: bool) -> Table:
    """Group, Δm%, Pareto-optimal and hypervolume contribution."""
    out = _table(fancy)
    for col in ("#", "group", "Δm% (>0 better)", "Pareto-optimal", "HV contribution"):
        out.add_column(col, justify="right" if col not in ("group",) else "left")
    for g in c.groups:
        dm = "baseline" if g.name in c.baselines.values() else _signed(g.delta_m)
        pareto = "-" if g.pareto is None else ("yes" if g.pareto else "no")
        out.add_row(str(g.index), escape(g.name), dm, pareto, _num(g.hv_contribution))
    return out


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"


def legend(c: Comparison) -> list[str]:
    """The rules and reference values under the tables."""
    lines = [
        "mean ± sd [95% CI, Student t] over seeds; * best mean, = indistinguishable from the best, "
        "no mark: worse, ? untested (fewer than 2 seeds)",
        SIGNIFICANCE_RULE,
        "directions: " + ", ".join(f"{m} {ARROWS[stats.higher_is_better(m)]}" for m in c.directions()),
        DELTA_M_RULE,
    ]
    if c.baselines:
        lines.append("baselines: " + ", ".join(f"{t}: {g}" for t, g in c.baselines.items()))
    if c.front is not None:
        on = ", ".join(f"{t} {m} {ARROWS[stats.higher_is_better(m)]}" for t, m in c.front.objectives.items())
        lines.append(f"Pareto front on {on}: {', '.join(c.front.optimal)}")
        if c.front.hypervolume is not None and c.front.reference is not None:
            ref = ", ".join(f"{t} {_num(v)}" for t, v in c.front.reference.items())
            lines.append(f"hypervolume {_num(c.front.hypervolume)}, reference point ({ref})")
            lines.append(HYPERVOLUME_RULE)
    return lines


def _title(out: Console, text: str, fancy: bool) -> None:
    out.print(f"[bold]{escape(text)}[/]" if fancy else text, soft_wrap=True, markup=fancy, highlight=False)


def render(out: Console, c: Comparison) -> None:
    """Print the per-task tables, the summary, the rules and the notes."""
    fancy = interactive(out)
    runs = sum(len(g.runs) for g in c.groups)
    head = f"{runs} run(s) in {len(c.groups)} group(s), split {c.split}"
    if c.keys:
        head += "; groups differ in " + ", ".join(c.keys)
    out.print(head, soft_wrap=True, markup=False, highlight=False)
    # off a terminal: no wrapping, each table as wide as it needs
    wide = out if fancy else Console(file=out.file, width=400, no_color=True, highlight=False)
    for table in c.tasks.values():
        _title(out, f"{table.task} ({c.split}; headline {table.headline})", fancy)
        wide.print(task_table(c, table, fancy))
    _title(out, f"summary ({c.split})", fancy)
    wide.print(summary_table(c, fancy))
    for line in legend(c):
        out.print(line, soft_wrap=True, markup=False, highlight=False)
    for note in c.notes:
        out.print(f"note: {note}", soft_wrap=True, markup=False, highlight=False)


# ------------------------------------------------------------------------------------------------
# --plot


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib, which is not installed: pip install 'mtlcli[plot]' "
            "(or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _points(ax, c: Comparison, table: TaskTable) -> None:
    m = table.headline
    groups = table.groups
    for x, g in enumerate(groups):
        s = g.results[table.task][m]
        color = "tab:gray" if g.single_task else "tab:blue"
        ax.errorbar(x, s.mean, yerr=s.half_width or 0.0, fmt="o", capsize=4, color=color)
    ax.set_xticks(range(len(groups)), [str(g.index) for g in groups])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_xlabel("group (gray: single-task)")
    ax.set_title(f"{table.task}: {m} {ARROWS[stats.higher_is_better(m)]} (mean, 95% CI)")
    ax.grid(axis="y", alpha=0.3)


def _scatter(ax, c: Comparison) -> None:
    front = c.front
    assert front is not None
    (ta, ma), (tb, mb) = front.objectives.items()
    pts: list[tuple[Group, float, float]] = []
    for g in c.groups:
        if g.pareto is None:
            continue
        a, b = g.results[ta][ma], g.results[tb][mb]
        ax.errorbar(
            a.mean,
            b.mean,
            xerr=a.half_width or 0,
            yerr=b.half_width or 0,
            fmt="o",
            capsize=3,
            color="tab:red" if g.pareto else "tab:blue",
        )
        ax.annotate(str(g.index), (a.mean, b.mean), textcoords="offset points", xytext=(5, 5))
        pts.append((g, a.mean, b.mean))
    optimal = sorted((x, y) for g, x, y in pts if g.pareto)
    if len(optimal) > 1:
        ax.plot([p[0] for p in optimal], [p[1] for p in optimal], "--", color="tab:red", label="Pareto front")
    labelled = set()
    for task, metric in ((ta, ma), (tb, mb)):
        base = c.baselines.get(task)
        g = next((g for g in c.groups if g.name == base), None)
        if g is not None and metric in g.results.get(task, {}):
            line = ax.axvline if task == ta else ax.axhline
            label = None if g.name in labelled else f"baseline: {g.name}"
            labelled.add(g.name)
            line(g.results[task][metric].mean, color="tab:gray", linestyle=":", label=label)
    ax.set_xlabel(f"{ta} {ma} {ARROWS[stats.higher_is_better(ma)]}")
    ax.set_ylabel(f"{tb} {mb} {ARROWS[stats.higher_is_better(mb)]}")
    ax.set_title("per-task means (red: Pareto-optimal)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plot(c: Comparison, path: Path) -> Path:
    """Write the figure: per task, the headline mean with its 95% CI per group; for 2 tasks also the
    scatter of the groups with the Pareto front."""
    plt = _pyplot()
    tables = list(c.tasks.values())
    scatter = c.front is not None and len(c.front.objectives) == 2
    n = len(tables) + int(scatter)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 4), squeeze=False)
    for ax, table in zip(axes[0], tables, strict=False):
        _points(ax, c, table)
    if scatter:
        _scatter(axes[0][-1], c)
    names = "; ".join(f"{g.index}: {g.name}" for g in c.groups)
    fig.suptitle(f"mtl compare ({c.split}) — {names}", fontsize=8, wrap=True)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise UsageError(f"--plot {path}: cannot write ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return path
