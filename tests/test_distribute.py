"""train.distribute: recipe keys, TF_CONFIG, and the same results on 2 logical CPU devices and 2 workers.

Logical devices and collective ops are process-global and TensorFlow is already running in the pytest
process, so every distributed run happens in a subprocess (``tests/distribute_job.py`` or ``mtl train``),
with a timeout, on the loopback interface only.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtlcli import distribute
from mtlcli import recipe as R
from mtlcli.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def _with_train(recipe: Path, extra: str, name: str | None = None) -> Path:
    text = recipe.read_text() + extra
    if name:
        text = text.replace("name: tiny", f"name: {name}")
    out = recipe.parent / f"{name or 'variant'}.yaml"
    out.write_text(text)
    return out


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), **extra)
    return env


def _history(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "history.csv") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


# ------------------------------------------------------------------------------------------------
# Recipe and TF_CONFIG (no TensorFlow devices involved)


def test_devices_without_distribute_is_a_recipe_error(cli, tiny_project):
    recipe = _with_train(tiny_project, "  devices: 2\n")
    result = cli("validate", recipe)
    assert result.exit_code == 2
    assert (
        "train.devices: devices applies to distributed training only: expected train.distribute mirrored "
        "or multi_worker, received none" in result.output
    )


def test_skip_batch_is_refused_under_distribution(cli, tiny_project):
    recipe = _with_train(tiny_project, "  distribute: mirrored\n  on_nan: skip_batch\n")
    result = cli("validate", recipe)
    assert result.exit_code == 2
    assert (
        "train.on_nan: skip_batch is not available with train.distribute mirrored (the replicas' update "
        "cannot be skipped conditionally): expected stop" in result.output
    )


def test_distribute_keys_are_checked_and_resolved(tiny_project):
    loaded = R.loads(
        tiny_project.read_text() + "  distribute: mirrored\n  devices: 2\n",
        file="r.yaml",
        base_dir=tiny_project.parent,
    )
    assert loaded.recipe.resolved()["train"]["distribute"] == "mirrored"
    assert loaded.recipe.resolved()["train"]["devices"] == 2
    assert R.loads(tiny_project.read_text(), file="r.yaml").recipe.train.distribute == "none"


def test_multi_worker_without_tf_config_is_refused_before_any_run_directory(cli, tiny_project, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.chdir(tiny_project.parent)
    recipe = _with_train(tiny_project, "  distribute: multi_worker\n")
    result = cli("train", recipe)
    assert result.exit_code == 2
    assert (
        "train.distribute: multi_worker needs the TF_CONFIG environment variable on every worker, e.g. "
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
        '"index": 0}}\''
    ) in " ".join(result.output.split())
    assert not (tiny_project.parent / "runs").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{nope",
            "TF_CONFIG: expected JSON, received '{nope' (Expecting property name enclosed in double quotes)",
        ),
        (
            '{"cluster": {}, "task": {"type": "worker", "index": 0}}',
            'TF_CONFIG: cluster: expected {"worker": ["host:port", ...]} (and optionally "chief"); '
            "task: worker 0 is not in the cluster (0 worker address(es))",
        ),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
            "TF_CONFIG: task: worker 2 is not in the cluster (2 worker address(es))",
        ),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}',
            "TF_CONFIG: task.index: expected an integer, received '0'",
        ),
    ],
)
def test_bad_tf_config_is_a_usage_error(text, message):
    with pytest.raises(UsageError) as err:
        distribute.parse_tf_config(text)
    assert str(err.value) == message


def test_the_chief_is_worker_0_or_the_chief_task():
    workers = {"worker": ["a:1", "b:2"]}
    assert distribute.is_chief({"cluster": workers, "task": {"type": "worker", "index": 0}})
    assert not distribute.is_chief({"cluster": workers, "task": {"type": "worker", "index": 1}})
    with_chief = {**workers, "chief": ["c:3"]}
    assert distribute.is_chief({"cluster": with_chief, "task": {"type": "chief", "index": 0}})
    assert not distribute.is_chief({"cluster": with_chief, "task": {"type": "worker", "index": 0}})


def test_multi_worker_refuses_an_untested_keras(tiny_project, monkeypatch):
    import keras
    import tensorflow as tf

    monkeypatch.setattr(keras, "__version__", "3.99.0")
    spec = R.loads(tiny_project.read_text() + "  distribute: multi_worker\n", file="r.yaml").recipe.train
    cfg = '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}'
    with pytest.raises(UsageError) as err:
        distribute.setup(spec, tf, environ={"TF_CONFIG": cfg})
    assert str(err.value) == (
        "train.distribute: multi_worker works around Keras bugs (keras-team/keras#20585, "
        "tensorflow/tensorflow#72388) with code tested on Keras 3.15.x; this is Keras 3.99.0: install "
        "keras~=3.15.0 or use distribute: mirrored"
    )


def test_devices_after_tensorflow_started_is_a_usage_error(tiny_project):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("the logical CPU split applies to machines without a GPU")
    tf.constant(1.0)  # TensorFlow's devices are initialised in this process now
    have = len(tf.config.list_logical_devices("CPU"))
    spec = R.loads(
        tiny_project.read_text() + "  distribute: mirrored\n  devices: 7\n", file="r.yaml"
    ).recipe.train
    with pytest.raises(UsageError) as err:
        distribute.setup(spec, tf)
    assert str(err.value) == (
        f"train.devices: cannot split the CPU into 7 devices: TensorFlow has already initialised {have} in "
        "this process (split it before creating any tensor, e.g. in a fresh process)"
    )


def test_gram_factor_reproduces_a_singular_gramian():
    import tensorflow as tf

    J = np.array([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 0.0, 0.0], [2.0, -1.0, 0.0, 3.0]], np.float32)
    G = J @ J.T
    F = distribute.gram_factor(tf.constant(G)).numpy()
    assert F.shape == (3, 3)
    np.testing.assert_allclose(F @ F.T, G, rtol=1e-5, atol=1e-5)


def test_train_step_helpers_are_the_identity_on_one_replica():
    # the train step calls them unconditionally: without a strategy they must change nothing
    import tensorflow as tf

    losses, counts = tf.constant([0.5, 2.0]), tf.constant([3.0, 4.0])
    assert distribute.global_losses(losses, counts) == (losses, counts)
    assert distribute.global_sum(losses) is losses
    assert distribute.share(counts) is counts


# ------------------------------------------------------------------------------------------------
# Same results on 2 logical CPU devices (subprocesses)


@pytest.mark.slow
def test_one_mirrored_step_equals_the_single_device_step(tiny_project):
    """One SGD step from the same weights on the same (odd-sized) global batch: the update under
    ``mirrored`` over 2 logical CPU devices equals the single-device update, state and metrics included."""
    weightings = [
        "static",
        "uncertainty",
        "pcgrad",
        "mgda",
        "nash_mtl",
        "{mgda: {on: representation}}",
        "famo",
        "db_mtl",  # (T, P) state created at build, under the strategy's scope
        "moco",
        "{cr_mogm: {base: excess_mtl}}",  # a wrapper: its base's (T, P) state, under base_
        "{cr_mogm: {base: {mgda: {on: representation}}}}",  # the base's on: a (T, T) factor of the Gramian
        "{fairgrad: {on: representation}}",  # an iterative solve on that factor's Gramian
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.distribute_job", "step", str(tiny_project), *weightings],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["weighting"] for r in rows] == weightings
    for r in rows:
        assert r["replicas"] == 2, r
        assert r["update_norm"] > 1e-3, r  # the step moved the weights
        assert r["update_rel"] <= 1e-5, r
        assert r["state_diff"] <= 1e-5, r
        assert r["logs_diff"] <= 1e-5, r


@pytest.mark.slow
def test_mirrored_training_reaches_the_single_device_results(tiny_project, cli):
    single = tiny_project.parent / "single"
    assert cli("train", tiny_project, "--output", single, "--epochs", "2").exit_code == 0
    recipe = _with_train(tiny_project, "  distribute: mirrored\n  devices: 2\n", name="mirrored")
    out = tiny_project.parent / "mirrored-run"
    proc = subprocess.run(
        [sys.executable, "-m", "mtlcli", "train", str(recipe), "--output", str(out), "--epochs", "2"],
        cwd=tiny_project.parent,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    env = json.loads((out / "env.json").read_text())
    assert env["distribute"] == {"kind": "mirrored", "replicas": 2, "workers": 1}
    for a, b in zip(_history(single), _history(out), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.mark.slow
def test_two_workers_on_loopback_match_a_single_process_run(tiny_project, cli, tmp_path):
    single = tmp_path / "single"
    assert cli("train", tiny_project, "--output", single, "--epochs", "2").exit_code == 0
    recipe = _with_train(tiny_project, "  distribute: multi_worker\n", name="cluster")
    out = tmp_path / "cluster-run"
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        worker_tmp = tmp_path / f"tmp{index}"
        worker_tmp.mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "mtlcli", "train", str(recipe), "--output", str(out), "--epochs", "2"],
                cwd=tiny_project.parent,
                env=_env(TF_CONFIG=tf_config, TMPDIR=str(worker_tmp)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=180)
            results.append((p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for code, stdout, stderr in results:
        assert code == 0, stderr[-3000:] + stdout[-2000:]
    chief_out, worker_out = results[0][1], results[1][1]
    assert chief_out.strip().splitlines()[-1] == str(out)
    assert worker_out.strip().splitlines() == ["worker 1: done (the chief writes the run directory)"]
    for name in (
        "model.keras",
        "recipe.yaml",
        "resolved.yaml",
        "history.csv",
        "metrics.json",
        "data.json",
        "env.json",
    ):
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "last" / "state.json").is_file()
    assert (out / "checkpoints" / "best" / "state.json").is_file()
    assert list((tmp_path / "tmp1").iterdir()) == []  # the other worker's scratch copy is gone
    env = json.loads((out / "env.json").read_text())
    assert env["distribute"] == {"kind": "multi_worker", "replicas": 2, "workers": 2}
    for a, b in zip(_history(single), _history(out), strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    m_single = json.loads((single / "metrics.json").read_text())["splits"]["validation"]["tasks"]
    m_cluster = json.loads((out / "metrics.json").read_text())["splits"]["validation"]["tasks"]
    for task, row in m_single.items():
        for key, value in row.items():
            assert m_cluster[task][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (task, key)
