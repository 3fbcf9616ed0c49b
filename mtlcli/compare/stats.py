"""The statistics ``mtl compare`` reports: summaries over seeds, Welch's t-test, Δm%, Pareto fronts and
hypervolumes. Pure numpy / scipy, no TensorFlow; every function takes plain numbers.

Directions: :func:`higher_is_better` knows every metric a recipe can name (``mtlcli.recipe.spec.METRICS``)
and ``loss`` (lower is better).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from mtlcli.recipe.spec import METRICS

#: the confidence level of the intervals and the significance level of the Welch tests
CONFIDENCE = 0.95
ALPHA = 0.05


def higher_is_better(metric: str) -> bool | None:
    """True for accuracy, auc, r2, ...; False for loss, mae, rmse, ...; None for a name mtl does not know."""
    if metric == "loss":
        return False
    spec = METRICS.get(metric)
    return None if spec is None else spec[1] == "max"


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1) and a Student-t confidence interval over ``n`` values."""

    values: tuple[float, ...]
    mean: float
    sd: float | None  # None for n == 1
    half_width: float | None  # of the CONFIDENCE interval; None for n == 1

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def ci(self) -> tuple[float, float] | None:
        if self.half_width is None:
            return None
        return (self.mean - self.half_width, self.mean + self.half_width)

    def to_dict(self) -> dict:
        ci = self.ci
        return {
            "mean": self.mean,
            "sd": self.sd,
            "ci95": list(ci) if ci else None,
            "n": self.n,
            "values": list(self.values),
        }


def summarize(values: Sequence[float]) -> Summary:
    """:class:`Summary` of ``values`` (at least one)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("summarize: no values")
    mean = float(x.mean())
    if x.size < 2:
        return Summary(tuple(float(v) for v in x), mean, None, None)
    sd = float(x.std(ddof=1))
    t = float(sps.t.ppf(0.5 + CONFIDENCE / 2, x.size - 1))
    return Summary(tuple(float(v) for v in x), mean, sd, t * sd / math.sqrt(x.size))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) of ``a`` against ``b``.

    None when either side has fewer than two values (no test possible). Two constant samples give 1.0
    when their values are equal and 0.0 when not (the t statistic is 0/0 or x/0 there).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return None
    if x.std(ddof=1) == 0 and y.std(ddof=1) == 0:
        return 1.0 if x.mean() == y.mean() else 0.0
    with warnings.catch_warnings():  # nearly constant samples: scipy warns of precision loss
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(sps.ttest_ind(x, y, equal_var=False).pvalue)


def best_index(means: Sequence[float], higher: bool) -> int:
    """The position of the best mean (the first one on ties)."""
    arr = np.asarray(means, dtype=float)
    return int(np.argmax(arr) if higher else np.argmin(arr))


# ------------------------------------------------------------------------------------------------
# Δm% (Maninis et al. 2019), as LibMTL's count_improvement computes it


def delta_m(
    values: dict[str, dict[str, float]],
    base: dict[str, dict[str, float]],
    higher: dict[str, bool],
) -> tuple[float | None, list[str]]:
    """Δm% of ``values`` against ``base``, both ``{task: {metric: mean}}``; ``higher`` per metric name.

    ``Δm = 100 · 1/T · Σ_t 1/M_t · Σ_m s_m · (M_tm − B_tm) / |B_tm|`` with ``s_m = +1`` when higher is
    better and ``−1`` when lower is better: the per-task mean over its metrics, then the mean over tasks
    (LibMTL's ``count_improvement``). **Δm > 0 is better than the baseline.** Only tasks and metrics that
    both sides have count; a metric whose baseline is 0 or whose direction is unknown is left out.
    Returns ``(Δm or None when nothing is comparable, notes)``.
    """
    per_task, notes = [], []
    for task, metrics in values.items():
        if task not in base:
            continue
        terms = []
        for metric, m in metrics.items():
            b = base[task].get(metric)
            if b is None:
                continue
            if metric not in higher:
                notes.append(f"{task}.{metric}: direction unknown, left out of Δm")
                continue
            if b == 0:
                notes.append(f"{task}.{metric}: baseline is 0, left out of Δm")
                continue
            sign = 1.0 if higher[metric] else -1.0
            terms.append(sign * (m - b) / abs(b))
        if terms:
            per_task.append(sum(terms) / len(terms))
    if not per_task:
        return None, notes
    return 100.0 * sum(per_task) / len(per_task), notes


# ------------------------------------------------------------------------------------------------
# Pareto front and hypervolume. Points are oriented so that every objective is maximised.


def oriented(points: Sequence[Sequence[float]], higher: Sequence[bool]) -> np.ndarray:
    """``points`` with the lower-is-better objectives negated: every objective is then maximised."""
    signs = np.array([1.0 if h else -1.0 for h in higher])
    return np.asarray(points, dtype=float).reshape(len(points), len(higher)) * signs


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere (maximisation)."""
    return bool(np.all(a >= b) and np.any(a > b))


def pareto_mask(points: np.ndarray) -> list[bool]:
    """For each (maximised) point: is no other point dominating it? Equal points are all optimal."""
    return [not any(dominates(q, p) for j, q in enumerate(points) if j != i) for i, p in enumerate(points)]


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """The volume dominated by ``points`` (maximised) and bounded below by ``ref``: the measure of
    the union of the boxes ``[ref, p]``. Exact, by slicing along the first objective (fine for the
    handful of points and the 2–3 objectives a comparison has)."""
    pts = [p for p in np.asarray(points, dtype=float) if np.all(p > ref)]
    if not pts:
        return 0.0
    arr = np.array(pts)
    if arr.shape[1] == 1:
        return float(arr[:, 0].max() - ref[0])
    levels = sorted(set(arr[:, 0].tolist()), reverse=True)
    total = 0.0
    for i, level in enumerate(levels):
        lower = levels[i + 1] if i + 1 < len(levels) else ref[0]
        inside = arr[arr[:, 0] >= level][:, 1:]
        total += (level - lower) * hypervolume(inside, ref[1:])
    return float(total)


def reference_point(points: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """The hypervolume's reference point (maximised objectives): per objective, the worst value over
    the points minus ``margin`` × its range (so the worst point still encloses a volume); an
    objective with no range moves ``margin`` × |value| (or ``margin`` when the value is 0)."""
    arr = np.asarray(points, dtype=float)
    worst, best = arr.min(axis=0), arr.max(axis=0)
    span = best - worst
    fallback = np.where(worst != 0, np.abs(worst), 1.0)
    return worst - margin * np.where(span > 0, span, fallback)


def contributions(points: np.ndarray, ref: np.ndarray) -> list[float]:
    """Each point's exclusive hypervolume: the total minus the total without it."""
    total = hypervolume(points, ref)
    out = []
    for i in range(len(points)):
        rest = np.delete(points, i, axis=0)
        c = total - (hypervolume(rest, ref) if len(rest) else 0.0)
        out.append(c if c > 1e-12 * max(total, 1e-300) else 0.0)  # rounding noise is no contribution
    return out
