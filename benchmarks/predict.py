"""``mtl predict``: peak memory on a large CSV, and throughput against ``model.predict``.

    python benchmarks/predict.py --quick   # a ~200 MB CSV, 3 rounds (about two minutes)
    python benchmarks/predict.py           # a >= 1 GB CSV, 5 rounds (needs ~1.5 GB free under /tmp)

First a small penguins-like model is trained (``mtl train``, 20,000 rows, 1 epoch) in a temporary
directory; then:

1. **Memory.** Writes a penguins-like CSV of at least ``--size-mb`` (the generator of
   ``benchmarks/data.py``) and runs ``mtl predict RUN big.csv -o preds.csv`` on it in a child process,
   polling its peak RSS (``VmHWM``; ``getrusage(RUSAGE_CHILDREN)`` as a check). Reports rows, seconds,
   rows/s end to end (reading, checking, the model, writing the CSV) and the peak RSS. Files are
   deleted at the end, even on failure.
2. **Throughput.** In this process, on ``--rows`` rows already read: ``model.predict`` on the prepared
   model inputs (the baseline: the network alone, Keras's own loop) against mtl's predict graph
   (:class:`mtlcli.model.serving.Predictor`: raw features -> transform -> network -> decoded outputs,
   the graph ``mtl predict`` runs per batch), same batch size; rounds alternate, medians and the ratio
   mtl / baseline are printed. The end-to-end figure of part 1 adds the CSV parsing and writing; its
   time per row against the baseline's is printed last.

Prints JSON lines, then a short table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import HEADER, block, vmhwm_kb, write_csv  # noqa: E402 - benchmarks/data.py, the same generator

RECIPE = """\
name: small
seed: 0
data:
  train: small.csv
  validation: 0.1
  inputs:
    bill_length_mm: numeric
    bill_depth_mm: numeric
    flipper_length_mm: numeric
    island: categorical
model:
  shared: [{dense: {units: 64, activation: relu}}, {dense: {units: 32, activation: relu}}]
  tasks:
    species: {type: classification}
    sex: {type: binary}
    body_mass: {type: regression, target: body_mass_g}
train: {epochs: 1, batch_size: 256}
"""

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="true")


def train_small(work: Path) -> Path:
    """A trained run directory of the small recipe."""
    (work / "small.csv").write_text(HEADER + block(20_000, 7))
    (work / "recipe.yaml").write_text(RECIPE)
    out = work / "run"
    cmd = [sys.executable, "-m", "mtlcli", "train", str(work / "recipe.yaml"), "--output", str(out)]
    subprocess.run(cmd, check=True, env=ENV, capture_output=True, cwd=work)
    return out


def memory_run(run: Path, work: Path, size_mb: int, batch: int) -> dict:
    """``mtl predict`` on a CSV of ``size_mb`` in a child process: its peak RSS and speed."""
    free = shutil.disk_usage(work).free
    if free < size_mb * 1_000_000 * 1.6:
        return {"skipped": f"only {free / 1e9:.1f} GB free for a {size_mb} MB file and its predictions"}
    size = write_csv(work / "big.csv", size_mb)
    with open(work / "big.csv") as fh:
        rows = sum(1 for _ in fh) - 1
    out = work / "preds.csv"
    cmd = [sys.executable, "-m", "mtlcli", "predict", str(run), str(work / "big.csv"), "-o", str(out)]
    cmd += ["--batch-size", str(batch)]
    t0 = time.time()
    child = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=work)
    peak_kb = 0
    while child.poll() is None:
        peak_kb = max(peak_kb, vmhwm_kb(child.pid) or 0)
        time.sleep(0.05)
    seconds = time.time() - t0
    tail = child.stdout.read().decode(errors="replace")[-2000:]
    if child.returncode != 0:
        return {"failed": child.returncode, "output": tail}
    rusage_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(out) as fh:
        written = sum(1 for _ in fh) - 1
    return {
        "file_mb": round(size / 1e6),
        "rows": rows,
        "rows_written": written,
        "seconds": round(seconds, 1),
        "rows_per_s": round(rows / seconds),
        "peak_rss_mb": round(max(peak_kb, rusage_kb) / 1024),
        "under_1_gb": max(peak_kb, rusage_kb) < 1024 * 1024,
    }


def throughput(run: Path, rows: int, batch: int, rounds: int) -> dict:
    """Medians of ``model.predict`` on prepared inputs and of mtl's predict graph on raw features."""
    from mtlcli import data
    from mtlcli.data.preprocess import encode_inputs
    from mtlcli.model.serving import Predictor
    from mtlcli.run.evaluate import load_model
    from mtlcli.tfutil import import_tf

    tf = import_tf(False)
    path = Path(tempfile.mkdtemp(prefix="mtl-bench-predict-")) / "rows.csv"
    path.write_text(HEADER + block(rows, 11))
    table = data.read_source(str(path))
    model = load_model(run / "model.keras")
    prep = data.Preprocessing.from_dict(model.spec["preprocessing"])
    x = data.transform(prep, table).x  # the prepared model inputs
    problems: list = []
    raw = encode_inputs(prep, table, problems)
    assert not problems, problems
    tensors = {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in raw.items()}
    predictor = Predictor(model)

    def baseline() -> None:
        model.predict(x, batch_size=batch, verbose=0)

    def ours() -> None:
        for start in range(0, rows, batch):
            out = predictor.function({k: v[start : start + batch] for k, v in tensors.items()})
            {k: v.numpy() for k, v in out.items()}

    baseline(), ours()  # trace both once
    times: dict[str, list[float]] = {"baseline": [], "mtl": []}
    for _ in range(rounds):
        for name, fn in (("baseline", baseline), ("mtl", ours)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    shutil.rmtree(path.parent, ignore_errors=True)
    base, mine = statistics.median(times["baseline"]), statistics.median(times["mtl"])
    return {
        "rows": rows,
        "batch_size": batch,
        "rounds": rounds,
        "baseline_rows_per_s": round(rows / base),
        "mtl_rows_per_s": round(rows / mine),
        "ratio": round(mine / base, 3),
        "within_1_2": mine / base <= 1.2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~200 MB file and 3 rounds")
    parser.add_argument("--size-mb", type=int, default=None, help="CSV size (default 1000, quick 200)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the throughput rounds")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds (default 5, quick 3)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    size = args.size_mb or (200 if args.quick else 1000)
    rounds = args.rounds or (3 if args.quick else 5)
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    print(json.dumps({"env": env}), flush=True)
    work = Path(tempfile.mkdtemp(prefix="mtl-bench-predict-", dir="/tmp"))
    mem = tp = None
    try:
        run = train_small(work)
        if not args.skip_memory:
            mem = memory_run(run, work, size, args.batch_size)
            print(json.dumps({"memory": mem}), flush=True)
        if not args.skip_throughput:
            tp = throughput(run, args.rows, args.batch_size, rounds)
            print(json.dumps({"throughput": tp}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    if mem and "rows" in mem:
        print("| CSV | rows | mtl predict (end to end) | rows/s | peak RSS | < 1 GB |")
        print("|---|---|---|---|---|---|")
        print(
            f"| {mem['file_mb'] / 1000:.2f} GB | {mem['rows']:,} | {mem['seconds']} s | {mem['rows_per_s']:,} | "
            f"{mem['peak_rss_mb']} MB | {mem['under_1_gb']} |"
        )
    elif mem:
        print("memory run:", mem)
    if tp:
        print()
        print("| rows | batch | model.predict rows/s | mtl predict graph rows/s | ratio | <= 1.2 |")
        print("|---|---|---|---|---|---|")
        print(
            f"| {tp['rows']:,} | {tp['batch_size']} | {tp['baseline_rows_per_s']:,} | {tp['mtl_rows_per_s']:,} | "
            f"{tp['ratio']} | {tp['within_1_2']} |"
        )
    if mem and "rows" in mem and tp:
        ratio = tp["baseline_rows_per_s"] / mem["rows_per_s"]
        print()
        print(f"end to end (CSV in, CSV out) per row / model.predict on prepared inputs: {ratio:.2f}x")


if __name__ == "__main__":
    main()
