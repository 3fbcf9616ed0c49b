"""``mtl tune``: a multi-objective hyper-parameter search on Optuna, each trial an ordinary run
directory trained by a child ``mtl train``. The public face: :func:`request` (a recipe or tune file
plus the options as a :class:`TuneSpec`), :func:`prepare` (search space and objectives checked, study
opened), :func:`run` (train trials until the study holds ``--trials``) and :func:`summary` (trials and
the Pareto set). Optuna is imported lazily, TensorFlow never (the children import it). docs/tune.md
describes the command.
"""

from pathlib import Path
from typing import Any

from mtlcli.tune.file import is_tune_file, load_tune_file
from mtlcli.tune.results import save, summary
from mtlcli.tune.study import INSTALL, Outcome, Prepared, TrialJob, TuneSpec, prepare, run

DEFAULTS = {"trials": 20, "jobs": 1, "sampler": "tpe"}


def request(target: Path | None, options: dict[str, Any]) -> TuneSpec:
    """The tune ``target`` asks for (a tune file or a recipe, None with ``--join``) with the
    command-line ``options`` that were given (not None) winning over the file's; ``search`` of a key
    the file has replaces it, ``sets`` are appended."""
    base: dict[str, Any] = {"recipe": target, "search": [], "sets": []}
    if is_tune_file(target):
        base = load_tune_file(target)
    given = list(options.get("search") or [])
    keys = {t.partition("=")[0].strip() for t in given}
    fields = {
        **{k: v for k, v in base.items() if v is not None},
        "recipe": base["recipe"],
        "search": [t for t in base["search"] if t.partition("=")[0].strip() not in keys] + given,
        "sets": [*base["sets"], *(options.get("sets") or [])],
    }
    for name, value in options.items():
        if name not in ("search", "sets") and value is not None:
            fields[name] = value
    for name, value in DEFAULTS.items():
        fields.setdefault(name, value)
    return TuneSpec(**fields)


__all__ = [
    "INSTALL",
    "Outcome",
    "Prepared",
    "TrialJob",
    "TuneSpec",
    "prepare",
    "request",
    "run",
    "save",
    "summary",
]
