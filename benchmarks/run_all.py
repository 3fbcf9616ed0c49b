"""Run the whole benchmark suite in one command.

    python benchmarks/run_all.py            # everything (~30 min on 2 cores)
    python benchmarks/run_all.py --quick    # a sanity pass of every benchmark (a few minutes)

Each benchmark prints JSON lines (machine-readable) and a short table; this script runs them one
after another in separate processes so that one's memory and threads do not disturb the next.
Figures of the latest full run are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = ["startup.py", "overhead.py", "strategies.py", "data.py", "predict.py", "architectures.py"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="subset, e.g. overhead strategies")
    args = parser.parse_args()
    failed = []
    for script in SUITE:
        if args.only and script.removesuffix(".py") not in args.only:
            continue
        if not (HERE / script).exists():
            continue
        print(f"\n=== {script} ===", flush=True)
        cmd = [sys.executable, str(HERE / script), *(["--quick"] if args.quick else [])]
        if subprocess.run(cmd).returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
