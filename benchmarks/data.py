"""Larger-than-memory training and input-pipeline throughput.

    python benchmarks/data.py --quick     # a ~300 MB CSV, short rounds (under two minutes)
    python benchmarks/data.py             # a >= 2 GB CSV (needs ~2.5 GB free under /tmp)

1. **Memory.** Writes a penguins-like CSV (numeric columns; island, species and sex as integer codes, some
   sex labels missing) of at least ``--size-mb`` under /tmp, then runs ``mtl train`` on it in a child
   process (``data.stream`` on, validation from a small separate file). The statistics pass reads the
   whole file; training then runs for ``--train-seconds`` and is stopped with SIGTERM (the run writes
   its checkpoint and exits 143): a bounded number of steps, counted from the checkpoint. Reports the
   file size, the child's peak RSS (``VmHWM`` polled from /proc and ``getrusage(RUSAGE_CHILDREN)``),
   the statistics-pass time and the steps done. The file is deleted at the end, even on failure.
2. **Throughput.** For the demo model (recipes/penguins.yaml), steps/s through the real input pipelines
   (the in-memory one ``mtl train`` uses, and the streamed one reading the demo CSV in chunks) against
   the same batches held as tensors in the dataset graph; each pipeline runs in its own child process,
   rounds alternate there and the median of each is reported, with the ratio real / cached.

Prints JSON lines, then a short table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = """\
name: big
seed: 0
data:
  train: big.csv
  validation: val.csv
  stream: {{chunk_rows: 65536, shuffle_buffer: 65536}}
  inputs:
    bill_length_mm: numeric
    bill_depth_mm: numeric
    flipper_length_mm: numeric
    island: categorical
model:
  shared: [{{dense: {{units: 64, activation: relu}}}}, {{dense: {{units: 32, activation: relu}}}}]
  tasks:
    species: {{type: classification}}
    sex: {{type: binary}}
    body_mass: {{type: regression, target: body_mass_g}}
train: {{epochs: 1, batch_size: {batch}}}
"""


def block(rows: int, seed: int) -> str:
    import numpy as np

    rng = np.random.default_rng(seed)
    species = rng.integers(0, 3, rows)
    island = (species + rng.integers(0, 2, rows)) % 3
    bl = 39 + 6 * species + rng.normal(0, 2.5, rows)
    bd = 18.5 - 2.5 * (species == 2) + rng.normal(0, 1, rows)
    fl = 190 + 12 * species + rng.normal(0, 6, rows)
    sex = rng.integers(0, 2, rows)
    mass = 3700 + 600 * (species == 2) + 400 * sex + rng.normal(0, 300, rows)
    sex_s = np.where(rng.random(rows) < 0.03, "", sex.astype(str))
    lines = [
        f"{a:.1f},{b:.1f},{c:.1f},{i},{s},{x},{int(m)}"
        for a, b, c, i, s, x, m in zip(bl, bd, fl, island, species, sex_s, mass, strict=True)
    ]
    return "\n".join(lines) + "\n"


HEADER = "bill_length_mm,bill_depth_mm,flipper_length_mm,island,species,sex,body_mass_g\n"


def write_csv(path: Path, size_mb: int) -> int:
    parts = [block(200_000, s) for s in range(4)]
    target = size_mb * 1_000_000
    with open(path, "w") as fh:
        fh.write(HEADER)
        n = 0
        while fh.tell() < target:
            fh.write(parts[n % len(parts)])
            n += 1
    return path.stat().st_size


def vmhwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_run(size_mb: int, train_seconds: float, batch: int) -> dict:
    free = shutil.disk_usage("/tmp").free
    if free < size_mb * 1_000_000 * 1.3:
        return {"skipped": f"only {free / 1e9:.1f} GB free under /tmp for a {size_mb} MB file"}
    work = Path(tempfile.mkdtemp(prefix="mtl-bench-data-", dir="/tmp"))
    try:
        t0 = time.time()
        size = write_csv(work / "big.csv", size_mb)
        (work / "val.csv").write_text(HEADER + block(5_000, 99))
        gen_s = time.time() - t0
        (work / "recipe.yaml").write_text(RECIPE.format(batch=batch))
        out = work / "run"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        cmd = [sys.executable, "-m", "mtlcli", "train", str(work / "recipe.yaml"), "--output", str(out)]
        t0 = time.time()
        child = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        peak, stats_s, stopped_at = 0, None, None
        while child.poll() is None:
            peak = max(peak, vmhwm_kb(child.pid) or 0)
            if stats_s is None and (out / "env.json").exists():
                stats_s = time.time() - t0  # the run directory appears after the statistics pass
            if stats_s is not None and stopped_at is None and time.time() - t0 > stats_s + train_seconds:
                child.send_signal(signal.SIGTERM)
                stopped_at = time.time()
            time.sleep(0.1)
        output = child.stdout.read().decode(errors="replace")
        rusage_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        state_path = out / "checkpoints" / "last" / "state.json"
        steps = json.loads(state_path.read_text())["step_in_epoch"] if state_path.exists() else None
        if child.returncode not in (0, 143):
            return {"error": f"mtl train exited {child.returncode}", "output": output[-2000:]}
        data_json = json.loads((out / "data.json").read_text())
        return {
            "file_mb": round(size / 1e6, 1),
            "rows": data_json["split_rows"]["train"],
            "generate_s": round(gen_s, 1),
            "stats_pass_s": round(stats_s or 0.0, 1),
            "train_s": round((stopped_at or time.time()) - t0 - (stats_s or 0.0), 1),
            "steps": steps,
            "batch_size": batch,
            "peak_rss_mb": round(max(peak, rusage_kb) / 1024, 1),
            "peak_rss_vmhwm_mb": round(peak / 1024, 1),
            "peak_rss_rusage_mb": round(rusage_kb / 1024, 1),
            "exit_code": child.returncode,
            "under_1_5_gb": max(peak, rusage_kb) / 1024 < 1536,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def throughput(rounds: int, steps: int) -> list[dict]:
    """Each pipeline in a fresh child process: in one process the second measurement's cached rounds ran
    ~40% faster than the first's (whichever pipeline went first), which skewed the ratios."""
    out = []
    for label in ("in-memory", "streamed"):
        cmd = [
            sys.executable,
            __file__,
            "--one-pipeline",
            label,
            "--rounds",
            str(rounds),
            "--steps",
            str(steps),
        ]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not rows:
            raise SystemExit(f"throughput child for {label} failed:\n{done.stderr[-3000:]}")
        out.extend(rows)
    return out


def throughput_one(only: str, rounds: int, steps: int) -> list[dict]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mtlcli import data
    from mtlcli import recipe as R
    from mtlcli.data import pipeline
    from mtlcli.data import stream as streaming
    from mtlcli.model.build import build_model
    from mtlcli.tfutil import import_tf

    tf = import_tf(False)
    import keras

    work = Path(tempfile.mkdtemp(prefix="mtl-bench-tp-", dir="/tmp"))
    try:
        loaded = R.load(ROOT / "recipes" / "penguins.yaml")
        recipe_text = (ROOT / "recipes" / "penguins.yaml").read_text()
        shutil.copy(ROOT / "mtlcli" / "data" / "penguins.csv", work / "penguins.csv")
        (work / "stream.yaml").write_text(
            recipe_text.replace("../mtlcli/data/penguins.csv", "penguins.csv").replace(
                "  inputs:", "  stream: true\n  inputs:", 1
            )
        )
        streamed = R.load(work / "stream.yaml")
        out = []
        for label, rec in (("in-memory", loaded), ("streamed", streamed)):
            if label != only:
                continue
            prepared = data.prepare(rec, seed=0)
            train = prepared.splits["train"]
            assert isinstance(train, streaming.StreamSplit) == (label == "streamed")
            batch = rec.recipe.train.batch_size
            per_epoch = -(-train.n // batch)
            epochs = -(-steps * (rounds + 1) // per_epoch) + 1
            keras.utils.set_random_seed(0)
            model = build_model(rec, prepared, 0)
            real = pipeline.train_stream(tf, train, batch, 0, 0, 0, epochs).repeat()
            cached = [
                b
                for _, b in zip(
                    range(per_epoch), pipeline.train_stream(tf, train, batch, 0, 0, 0, 1), strict=False
                )
            ]
            # one epoch of batches held as tensors in the dataset graph, repeated: no Python, no reading.
            # (A from_generator(...).cache() baseline ran at ~330 or ~500 steps/s from one process to
            # the next, whichever the pipeline.)
            cached_ds = tf.data.Dataset.from_tensors(cached[0])
            for b in cached[1:]:
                cached_ds = cached_ds.concatenate(tf.data.Dataset.from_tensors(b))
            cached_ds = cached_ds.repeat()
            # warm-up (traces the step)
            model.fit(cached_ds, steps_per_epoch=per_epoch, epochs=1, verbose=0)
            model.fit(real, steps_per_epoch=5, epochs=1, verbose=0)
            times = {"real": [], "cached": []}
            for _ in range(rounds):
                for kind, it in (("real", real), ("cached", cached_ds)):
                    t0 = time.perf_counter()
                    model.fit(it, steps_per_epoch=steps, epochs=1, verbose=0)
                    times[kind].append(steps / (time.perf_counter() - t0))
            real_sps, cached_sps = statistics.median(times["real"]), statistics.median(times["cached"])
            out.append(
                {
                    "pipeline": label,
                    "model": "penguins demo",
                    "batch_size": batch,
                    "steps_per_round": steps,
                    "rounds": rounds,
                    "real_steps_per_s": round(real_sps, 1),
                    "cached_steps_per_s": round(cached_sps, 1),
                    "ratio": round(real_sps / cached_sps, 3),
                }
            )
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~300 MB file and short rounds")
    parser.add_argument("--size-mb", type=int, default=None, help="CSV size (default 2100, quick 300)")
    parser.add_argument("--train-seconds", type=float, default=None, help="training time before SIGTERM")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--one-pipeline", choices=("in-memory", "streamed"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds (default 7, quick 5)")
    parser.add_argument("--steps", type=int, default=None, help="steps per round (default 300, quick 100)")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 7)
    steps = args.steps or (100 if args.quick else 300)
    if args.one_pipeline:  # the child process of throughput()
        for row in throughput_one(args.one_pipeline, rounds, steps):
            print(json.dumps(row), flush=True)
        return
    size = args.size_mb or (300 if args.quick else 2100)
    train_s = args.train_seconds or (15 if args.quick else 60)
    rows = []
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    print(json.dumps({"env": env}), flush=True)
    if not args.skip_memory:
        mem = memory_run(size, train_s, batch=256)
        print(json.dumps({"memory": mem}), flush=True)
        rows.append(mem)
    tp = []
    if not args.skip_throughput:
        tp = throughput(rounds, steps)
        for row in tp:
            print(json.dumps({"throughput": row}), flush=True)
    print()
    for mem in rows:
        if "file_mb" in mem:
            print("| CSV | rows | statistics pass | training (steps of 256) | peak RSS | < 1.5 GB |")
            print("|---|---|---|---|---|---|")
            print(
                f"| {mem['file_mb'] / 1000:.2f} GB | {mem['rows']:,} | {mem['stats_pass_s']} s | "
                f"{mem['train_s']} s ({mem['steps']}) | {mem['peak_rss_mb']:.0f} MB | {mem['under_1_5_gb']} |"
            )
        else:
            print("memory run:", mem)
    if tp:
        print()
        print("| pipeline | real steps/s | cached steps/s | ratio |")
        print("|---|---|---|---|")
        for row in tp:
            print(
                f"| {row['pipeline']} | {row['real_steps_per_s']} | {row['cached_steps_per_s']} | {row['ratio']} |"
            )


if __name__ == "__main__":
    main()
