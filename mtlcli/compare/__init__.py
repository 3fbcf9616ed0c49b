"""``mtl compare``: runs grouped by configuration (all but the seed), per-task means, standard
deviations and confidence intervals over seeds, Welch's t-tests against the best group, Δm% against
single-task baselines, the Pareto front and its hypervolume. No TensorFlow (numpy and scipy only).

:func:`compare` is the entry point; :func:`find_runs` lists the finished runs under some paths
(what ``mtl sweep`` writes is read the same way: ``.../<point>/seed-<k>/`` run directories).
"""

from __future__ import annotations

from mtlcli.compare.report import Comparison, Group, compare
from mtlcli.compare.runs import Run, find_runs

__all__ = ["Comparison", "Group", "Run", "compare", "find_runs"]
