"""The CLI, the recipe layer and the strategies registry must not import TensorFlow (fast start-up)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "mtlcli.cli",
        "mtlcli.recipe",
        "mtlcli.data.preprocess",
        "mtlcli.weighting",
        "mtlcli.scaffold",
        "mtlcli.compare",
        "mtlcli.compare_view",
        "mtlcli.config_view",
        "mtlcli.runlist",
        "mtlcli.runs_view",
        "mtlcli.plots",
        "mtlcli.sweep",
        "mtlcli.sweep_view",
    ],
)
def test_module_does_not_import_tensorflow(module):
    code = f"import sys, {module}; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_and_validate_do_not_import_tensorflow(tiny_project):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mtlcli.cli import app\n"
        "r = CliRunner()\n"
        "assert r.invoke(app, ['--help']).exit_code == 0\n"
        f"res = r.invoke(app, ['validate', {str(tiny_project)!r}])\n"
        "assert res.exit_code == 0, res.output\n"
        "assert r.invoke(app, ['strategies']).exit_code == 0\n"
        f"res = r.invoke(app, ['config', {str(tiny_project)!r}, '--set', 'train.weighting=pcgrad'])\n"
        "assert res.exit_code == 0, res.output\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_python_dash_m_works():
    out = subprocess.run(
        [sys.executable, "-m", "mtlcli", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("mtl ")
