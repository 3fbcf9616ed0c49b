"""Compare the multi-task architectures (hard sharing, MMoE, CGC, PLE, cross-stitch) on two datasets.

    python benchmarks/architectures.py --quick       # 1 seed, short trainings (~4 min on 2 CPU cores)
    python benchmarks/architectures.py               # 3 seeds, full trainings
    python benchmarks/architectures.py --datasets yeast --architectures mmoe,ple --seeds 0,1

Datasets:

* ``penguins``: the bundled demo (species 3 classes, sex binary, body mass regression), the demo's
  split (test 0.2, validation 0.15 of the rest) and tasks.
* ``yeast``: Yeast (Elisseeff & Weston, NIPS 2001; the MULAN multi-label benchmark): 2,417 genes x 103
  features, 14 binary gene-function labels, each label one task. Read from ``yeast.csv.gz`` inside the
  PyPI package ``river`` (``pip install river`` or ``pip install -e ".[bench]"``); skipped with a
  message when ``river`` is not installed. Seeded split: test 0.38 (918 rows; MULAN's test set has
  917, and other rows), validation 0.15 of the rest.

Architectures (one expert = a copy of the hard-sharing trunk, ``dense 64 relu -> dense 32 relu``):
``hard_sharing`` the trunk; ``mmoe`` 3 experts; ``cgc`` 2 shared + 1 per task; ``ple`` 2 levels of
2 shared + 1 per task; ``cross_stitch`` the trunk replicated per task. Heads as in the demo (penguins)
or just the output layer (yeast). Weighting ``static``, Adam, early stopping on ``val_loss`` with the
best weights restored. Everything goes through ``mtlcli.run.runner.train`` (the same code as ``mtl train``).

Reported per run (one JSON line each): per-task test metrics, parameters (shared, per task, total),
epochs run and the median epoch time (first epoch excluded: it includes tracing). Then a markdown table
with the mean over seeds. Timings on a shared machine are noisy (up to 2x between processes).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRUNK = "[{dense: {units: 64, activation: relu}}, {dense: {units: 32, activation: relu}}]"
ARCHITECTURES = {
    "hard_sharing": f"  shared: {TRUNK}\n",
    "mmoe": f"  architecture: mmoe\n  experts: {{count: 3, layers: {TRUNK}}}\n",
    "cgc": f"  architecture: cgc\n  experts: {{count: 2, layers: {TRUNK}}}\n  task_experts: 1\n",
    "ple": f"  architecture: ple\n  levels: 2\n  experts: {{count: 2, layers: {TRUNK}}}\n  task_experts: 1\n",
    "cross_stitch": f"  architecture: cross_stitch\n  shared: {TRUNK}\n",
}

PENGUINS = """\
name: bench_penguins
data:
  train: {root}/mtlcli/data/penguins.csv
  validation: 0.15
  test: 0.2
  inputs: {{bill_length_mm: numeric, bill_depth_mm: numeric, flipper_length_mm: numeric, island: categorical}}
model:
{model}  tasks:
    species: {{type: classification, head: [{{dense: {{units: 16, activation: relu}}}}]}}
    sex: {{type: binary, head: [{{dense: {{units: 16, activation: relu}}}}]}}
    body_mass: {{type: regression, target: body_mass_g, loss: huber, metrics: [mae, rmse], weight: 0.5}}
train:
  epochs: {epochs}
  batch_size: 32
  optimizer: {{adam: {{learning_rate: 0.003}}}}
  early_stopping: {{monitor: val_loss, patience: {patience}, restore_best: true}}
"""

YEAST = """\
name: bench_yeast
data:
  train: {path}
  validation: 0.15
  test: 0.38
  inputs: {{{inputs}}}
model:
{model}  tasks:
{tasks}
train:
  epochs: {epochs}
  batch_size: 64
  optimizer: {{adam: {{learning_rate: 0.001}}}}
  early_stopping: {{monitor: val_loss, patience: {patience}, restore_best: true}}
"""


def yeast_file() -> Path | None:
    """``yeast.csv.gz`` inside the installed ``river`` package (found without importing river)."""
    spec = importlib.util.find_spec("river")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "datasets" / "yeast.csv.gz"
    return path if path.exists() else None


def recipe_text(dataset: str, arch: str, quick: bool) -> str | None:
    model = ARCHITECTURES[arch]
    if dataset == "penguins":
        epochs, patience = (60, 15) if quick else (150, 25)
        return PENGUINS.format(root=ROOT, model=model, epochs=epochs, patience=patience)
    path = yeast_file()
    if path is None:
        return None
    epochs, patience = (40, 8) if quick else (200, 20)
    inputs = ", ".join(f"Att{i}: numeric" for i in range(1, 104))
    tasks = "\n".join(f"    Class{i}: {{type: binary}}" for i in range(1, 15))
    return YEAST.format(path=path, inputs=inputs, model=model, tasks=tasks, epochs=epochs, patience=patience)


def run_one(dataset: str, arch: str, seed: int, quick: bool, workdir: Path) -> dict | None:
    from mtlcli import events
    from mtlcli import recipe as R
    from mtlcli.run import runner

    text = recipe_text(dataset, arch, quick)
    if text is None:
        return None
    loaded = R.loads(text, file=f"{dataset}-{arch}.yaml", base_dir=ROOT)
    seen: dict = {"epochs": []}

    def on_event(event) -> None:
        if isinstance(event, events.Started):
            seen["params"] = dict(event.params)
        elif isinstance(event, events.EpochEnd):
            seen["epochs"].append(event.seconds)

    result = runner.train(loaded, output=workdir / f"{dataset}-{arch}-{seed}", seed=seed, on_event=on_event)
    test = result.results["splits"]["test"]["tasks"]
    params = seen["params"]
    times = seen["epochs"][1:] or seen["epochs"]
    return {
        "dataset": dataset,
        "architecture": arch,
        "seed": seed,
        "epochs_run": len(seen["epochs"]),
        "median_epoch_s": round(statistics.median(times), 4),
        "params": params,
        "params_total": sum(params.values()),
        "test": {t: {k: v for k, v in row.items()} for t, row in test.items()},
        "summary": summary(dataset, test),
    }


def summary(dataset: str, test: dict) -> dict[str, float]:
    if dataset == "penguins":
        return {
            "species_accuracy": test["species"]["accuracy"],
            "sex_accuracy": test["sex"]["accuracy"],
            "body_mass_mae_g": test["body_mass"]["mae"],
        }
    accs = [row["accuracy"] for row in test.values()]
    aucs = [row["auc"] for row in test.values()]
    return {"hamming_loss": 1.0 - statistics.fmean(accs), "macro_auc": statistics.fmean(aucs)}


COLUMNS = {
    "penguins": [
        ("species_accuracy", "species acc", 3),
        ("sex_accuracy", "sex acc", 3),
        ("body_mass_mae_g", "body mass MAE (g)", 0),
    ],
    "yeast": [("hamming_loss", "Hamming loss", 3), ("macro_auc", "macro AUC", 3)],
}


def table(rows: list[dict]) -> str:
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        cols = COLUMNS[dataset]
        lines.append(f"\n**{dataset}** (test split; mean over seeds {sorted({r['seed'] for r in rows})})\n")
        head = ["architecture", "params shared", "params total", *(c[1] for c in cols), "s / epoch", "epochs"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for arch in ARCHITECTURES:
            group = [r for r in rows if r["dataset"] == dataset and r["architecture"] == arch]
            if not group:
                continue
            cells = [arch, f"{group[0]['params']['shared']:,}", f"{group[0]['params_total']:,}"]
            for key, _, digits in cols:
                cells.append(f"{statistics.fmean(r['summary'][key] for r in group):.{digits}f}")
            cells.append(f"{statistics.median(r['median_epoch_s'] for r in group):.2f}")
            cells.append(f"{statistics.fmean(r['epochs_run'] for r in group):.0f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed and short trainings")
    parser.add_argument("--datasets", default="penguins,yeast")
    parser.add_argument("--architectures", default=",".join(ARCHITECTURES))
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0, or 0,1,2)")
    args = parser.parse_args()
    datasets = [d for d in args.datasets.split(",") if d]
    archs = [a for a in args.architectures.split(",") if a]
    unknown = [d for d in datasets if d not in COLUMNS] + [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        parser.error(f"unknown dataset or architecture: {', '.join(unknown)}")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else ([0] if args.quick else [0, 1, 2])

    from mtlcli.tfutil import import_tf

    tf = import_tf(False)
    import keras

    print(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": len(__import__("os").sched_getaffinity(0)),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "quick": args.quick,
            }
        ),
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            if dataset == "yeast" and yeast_file() is None:
                print(
                    "yeast: skipped: the PyPI package 'river' (which ships yeast.csv.gz) is not installed; "
                    "pip install river",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            for arch in archs:
                for seed in seeds:
                    row = run_one(dataset, arch, seed, args.quick, Path(tmp))
                    if row is not None:
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    if rows:
        print(table(rows))


if __name__ == "__main__":
    main()
