"""Start-up cost of the commands that must not import TensorFlow, and peak memory of training.

    python benchmarks/startup.py            # 7 alternating rounds
    python benchmarks/startup.py --quick    # 3 rounds, memory of the demo only

Start-up: wall time of ``mtl --help``, ``mtl validate recipes/penguins.yaml`` and ``mtl init DIR``
as a ratio to ``python -c "import typer, rich, yaml"`` measured in the same rounds (median of the
per-round ratios). Target (issue 7): <= 1.5x.
Breakdown of ``mtl --help`` (in a fresh interpreter, median): the baseline's imports, ``mtlcli.cli`` on
top, Typer's ``rich_utils`` (imported to render help with rich) and the rendering itself.
Memory: peak RSS (ru_maxrss of the child) of ``mtl train`` on the demo and on a two-task CNN.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.5


def _run(cmd: list[str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=cwd)
    return time.perf_counter() - start


def startup(rounds: int) -> list[dict]:
    py = sys.executable
    recipe = str(ROOT / "recipes" / "penguins.yaml")
    baseline = [py, "-c", "import typer, rich, yaml"]
    commands = {
        "mtl --help": [py, "-m", "mtlcli", "--help"],
        "mtl validate": [py, "-m", "mtlcli", "validate", recipe],
        "mtl init": None,
    }
    times: dict[str, list[float]] = {k: [] for k in ["baseline", *commands]}
    ratios: dict[str, list[float]] = {k: [] for k in commands}
    for _r in range(rounds):
        base = _run(baseline)
        times["baseline"].append(base)
        for name, cmd in commands.items():
            if cmd is None:
                tmp = Path(tempfile.mkdtemp())
                t = _run([py, "-m", "mtlcli", "init", str(tmp / "p")])
                shutil.rmtree(tmp)
            else:
                t = _run(cmd)
            times[name].append(t)
            ratios[name].append(t / base)
    rows = []
    for name in commands:
        ratio = statistics.median(ratios[name])
        rows.append(
            {
                "bench": "startup",
                "command": name,
                "seconds": round(statistics.median(times[name]), 3),
                "baseline_s": round(statistics.median(times["baseline"]), 3),
                "ratio": round(ratio, 3),
                "target": TARGET,
                "ok": ratio <= TARGET,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


BREAKDOWN = """\
import contextlib, io, json, sys, time
t0 = time.perf_counter()
import typer, rich, yaml
t1 = time.perf_counter()
from mtlcli import cli
t2 = time.perf_counter()
import typer.rich_utils  # what Typer imports to render help with rich (rich.markdown, rich.traceback)
t3 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    cli.app(["--help"], standalone_mode=False)
t4 = time.perf_counter()
ours = [m for m in sys.modules if m == "mtlcli" or m.startswith("mtlcli.")]
print(json.dumps({"baseline_imports": t1 - t0, "mtlcli.cli": t2 - t1, "typer.rich_utils": t3 - t2,
                  "render": t4 - t3, "mtlcli_modules": len(ours)}))
"""


def breakdown(rounds: int) -> dict:
    """Where ``mtl --help``'s time goes, in a fresh interpreter each round (median seconds): the
    baseline's imports, importing ``mtlcli.cli`` on top (its own modules and the rich/typer parts
    they import), Typer's ``rich_utils`` (imported to render help), and rendering the help."""
    runs = []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", BREAKDOWN], check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    row = {"bench": "startup_breakdown"}
    for key in runs[0]:
        row[key] = round(statistics.median(r[key] for r in runs), 4)
    print(json.dumps(row), flush=True)
    return row


def peak_rss(cmd: list[str], cwd: Path) -> float:
    """Peak RSS in MiB of a child process (Linux ru_maxrss is in KiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(
        cmd, check=True, capture_output=True, cwd=cwd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024


def memory(quick: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        demo = [
            sys.executable,
            "-m",
            "mtlcli",
            "train",
            str(ROOT / "recipes" / "penguins.yaml"),
            "-o",
            str(tmp / "demo"),
        ]
        rows.append(
            {"bench": "memory", "workload": "penguins demo", "peak_rss_mib": round(peak_rss(demo, tmp), 1)}
        )
        print(json.dumps(rows[-1]), flush=True)
        if not quick:
            sys.path.insert(0, str(ROOT / "benchmarks"))
            from overhead import workloads

            recipe = workloads(tmp, quick=False)["cnn_2_tasks"]
            cnn = [sys.executable, "-m", "mtlcli", "train", str(recipe), "-o", str(tmp / "cnn")]
            rows.append(
                {
                    "bench": "memory",
                    "workload": "cnn 2 tasks (12,288 images)",
                    "peak_rss_mib": round(peak_rss(cnn, tmp), 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rows = startup(args.rounds or (3 if args.quick else 7))
    parts = breakdown(args.rounds or (3 if args.quick else 7))
    mem = memory(args.quick)
    print(f"\n{'command':14} {'seconds':>8} {'baseline':>9} {'ratio':>7}")
    for r in rows:
        print(f"{r['command']:14} {r['seconds']:>8.3f} {r['baseline_s']:>9.3f} {r['ratio']:>6.2f}x")
    print(f"target <= {TARGET}x")
    print(
        "mtl --help, in-process (s): "
        + ", ".join(f"{k} {v:.3f}" for k, v in parts.items() if k not in ("bench", "mtlcli_modules"))
        + "\n"
    )
    for r in mem:
        print(f"peak RSS {r['workload']}: {r['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
