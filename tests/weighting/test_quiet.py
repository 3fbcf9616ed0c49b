"""``mtlcli.weighting.aggregate`` as a library: no TensorFlow C++ start-up logs on stderr, and importing
:mod:`mtlcli.weighting` does not import TensorFlow (it is imported on the first call)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import numpy as np
from mtlcli.weighting import REGISTRY, aggregate, available
assert "tensorflow" not in sys.modules, "importing mtlcli.weighting imported TensorFlow"
J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
J3 = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0], [0.5, -2.0, 3.0]])
for name in available():  # two-batch strategies (MoDo, SDMGrad) read (2, T, P)
    if REGISTRY[name]().task_count_problem(2) is not None:  # krum, trimmed_mean: three tasks at least
        aggregate(name, J3, losses=[0.5, 2.0, 1.0])
        continue
    aggregate(name, J if REGISTRY[name].batches == 1 else np.stack([J, J + 0.5]), losses=[0.5, 2.0])
print(aggregate("upgrad", J).round(6).tolist())
"""


def test_aggregate_prints_no_tensorflow_logs() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.strip() == "[0.292902, 1.900352, 1.900352]"
