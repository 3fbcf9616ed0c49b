"""Task-weighting strategies: math over per-task losses and gradients, independent of Keras models.

>>> import numpy as np
>>> from mtlcli.weighting import aggregate
>>> J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
>>> aggregate("mean", J)
array([1., 1., 1.])
"""

from __future__ import annotations

# Importing the strategy modules registers them. They import TensorFlow lazily (inside methods).
from mtlcli.weighting import (  # noqa: F401
    aligned,
    auto_lambda,
    cagrad,
    constant,
    cr_mogm,
    db_mtl,
    excess_mtl,
    fairgrad,
    graddrop,
    gradnorm,
    imtl,
    loss_based,
    mgda,
    moco,
    modo,
    nash_mtl,
    pcd,
    pcgrad,
    robust,
    sdmgrad,
    stch,
    upgrad,
)
from mtlcli.weighting.base import Context, Result, Strategy, combine_rows
from mtlcli.weighting.eager import aggregate
from mtlcli.weighting.registry import REGISTRY, SpecProblem, available, check, get, register, spec_name

__all__ = [
    "REGISTRY",
    "Context",
    "Result",
    "SpecProblem",
    "Strategy",
    "aggregate",
    "available",
    "check",
    "combine_rows",
    "get",
    "register",
    "spec_name",
]
