"""The public ``aggregate`` function: numpy in, numpy out, input validation, state, the package doctest."""

from __future__ import annotations

import doctest
import subprocess
import sys

import numpy as np
import pytest

import mtlcli.weighting
from mtlcli.weighting import aggregate, eager

from . import _inputs

MINE = [
    "static", "mean", "equal", "sum", "uncertainty", "dwa", "rlw", "gls", "famo",
    "gradnorm", "mgda", "pcgrad", "gradvac", "imtl_g", "aligned_mtl", "config", "graddrop",
]  # fmt: skip


@pytest.mark.parametrize("module", [mtlcli.weighting, eager], ids=["package", "eager"])
def test_doctests(module) -> None:
    failures, tried = doctest.testmod(module, verbose=False, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


def test_import_does_not_load_tensorflow() -> None:
    code = "import sys, mtlcli.weighting; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", MINE)
def test_numpy_float64_in_and_out(name: str) -> None:
    d = aggregate(name, _inputs.J_GOLDEN.tolist())  # any array-like
    assert isinstance(d, np.ndarray) and d.dtype == np.float64 and d.shape == (3,)
    d32 = aggregate(name, _inputs.J_GOLDEN.astype(np.float32))
    np.testing.assert_allclose(d32, d, rtol=1e-12)  # float32 input is computed in float64 as well


@pytest.mark.parametrize("name", MINE)
def test_class_docstring_and_attributes(name: str) -> None:
    cls = type(mtlcli.weighting.get(name))
    doc = cls.__doc__ or ""
    assert cls.name == name and cls.paper and cls.summary and cls.needs in ("losses", "gradients")
    assert "Convention" in doc, f"{name}: document the convention followed"
    assert cls(**cls().get_config()) == cls()  # rebuilds from its config


@pytest.mark.parametrize(
    ("J", "message"),
    [
        (np.ones(3), "`J` must be 2-D (tasks, params), received shape (3,)"),
        (np.ones((2, 2, 2)), "`J` must be 2-D (tasks, params), received shape (2, 2, 2)"),
        (np.ones((0, 3)), "`J` must have at least one row and one column, received shape (0, 3)"),
        (np.ones((2, 0)), "`J` must have at least one row and one column, received shape (2, 0)"),
        (np.array([[1.0, np.nan]]), "`J` must be finite, received NaN or infinite entries"),
        (np.array([[1.0, np.inf]]), "`J` must be finite, received NaN or infinite entries"),
        ([["a", "b"]], "`J` must be a 2-D array of numbers"),
    ],
)
def test_invalid_matrix(J, message: str) -> None:
    with pytest.raises(ValueError) as info:
        aggregate("mean", J)
    assert str(info.value).startswith(message)


def test_invalid_vectors_and_state() -> None:
    J = _inputs.J_GOLDEN
    with pytest.raises(
        ValueError, match=r"`losses` must have shape \(2,\) to match `J`, received shape \(3,\)"
    ):
        aggregate("gls", J, losses=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"`task_weights` must be finite"):
        aggregate("static", J, task_weights=[1.0, np.nan])
    with pytest.raises(ValueError, match=r"`state` has unknown key 'phy'; gradvac keeps \['phi'\]"):
        aggregate("gradvac", J, state={"phy": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"`params` has unknown key 'logit'"):
        aggregate("gradnorm", J, params={"logit": np.zeros(2)})
    with pytest.raises(ValueError, match=r"unknown strategy 'pcgard'; did you mean 'pcgrad'"):
        aggregate("pcgard", J)


def test_loss_strategies_default_losses_are_ones() -> None:
    # GLS with L = 1: weights 1 / T -> the mean row
    np.testing.assert_allclose(aggregate("gls", _inputs.J_GOLDEN), [1.0, 1.0, 1.0])
    # static uses the task weights (normalised): [1, 3] / 4 -> 0.25 g1 + 0.75 g2 = [3.5, 1, 1]
    np.testing.assert_allclose(aggregate("static", _inputs.J_GOLDEN, task_weights=[1, 3]), [3.5, 1.0, 1.0])


def test_params_and_state_are_used() -> None:
    J = np.eye(2)
    # uncertainty with log-variances [0, ln 4]: weights 0.5 exp(-s) = [0.5, 0.125]
    np.testing.assert_allclose(
        aggregate("uncertainty", J, params={"log_var": [0.0, np.log(4.0)]}), [0.5, 0.125]
    )
    d, state = aggregate("famo", J, state={"logits": [1.0, 0.0]}, return_state=True)
    assert set(state) == {"logits", "adam_m", "adam_v", "adam_t"}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert d[0] > d[1]  # larger logit, larger weight (equal losses)


def test_spec_forms() -> None:
    J = _inputs.TYPICAL[4][1]
    a = aggregate({"mgda": {"epsilon": 1e-5}}, J)
    b = aggregate(mtlcli.weighting.get({"mgda": {"epsilon": 1e-5}}), J)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"mgda\.epsilon: expected .*received 'small'"):
        aggregate({"mgda": {"epsilon": "small"}}, J)
