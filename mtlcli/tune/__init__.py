"""``mtl tune``: a multi-objective hyper-parameter search on Optuna, each trial an ordinary run
directory trained by a child ``mtl train``. The public face: :class:`TuneSpec` (the request),
:func:`prepare` (search space and objectives checked, study opened), :func:`run` (train trials until
the study holds ``--trials``) and :func:`summary` (trials and the Pareto set). Optuna is imported
lazily, TensorFlow never (the children import it). docs/tune.md describes the command.
"""

from mtlcli.tune.results import save, summary
from mtlcli.tune.study import INSTALL, Outcome, Prepared, TrialJob, TuneSpec, prepare, run

__all__ = ["INSTALL", "Outcome", "Prepared", "TrialJob", "TuneSpec", "prepare", "run", "save", "summary"]
