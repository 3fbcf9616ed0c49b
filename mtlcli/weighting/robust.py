"""Byzantine-robust aggregators from federated learning, as packaged by TorchJD: Krum and TrimmedMean."""

from __future__ import annotations

from dataclasses import dataclass

from mtlcli.weighting import qp
from mtlcli.weighting.base import Result, Strategy, combine_rows
from mtlcli.weighting.graddrop import projection_coefficients
from mtlcli.weighting.registry import register


def _check_count(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, received {value!r}")


@register
@dataclass(frozen=True)
class Krum(Strategy):
    """(Multi-)Krum: the mean of the ``n_selected`` task gradients closest to their neighbours.

    Paper: Peva Blanchard, El Mahdi El Mhamdi, Rachid Guerraoui and Julien Stainer, "Machine Learning
    with Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017,
    https://proceedings.neurips.cc/paper/2017/hash/f4b9ec30ad9f68f89b29639786cb62ef-Abstract.html.

    Math: with distances ``D_ij = ||g_i - g_j||`` (from the Gramian: ``sqrt(max(G_ii + G_jj - 2 G_ij, 0))``)
    the score of task ``i`` is the sum of its ``T - n_byzantine - 2`` smallest distances to other rows;
    the ``n_selected`` rows of lowest score get weight ``1/n_selected``, the others 0, and ``d = wᵀJ``.
    Up to ``n_byzantine`` arbitrary (outlier) rows cannot be selected alone when the others agree.

    Parameters:
        n_byzantine: ``0``. How many rows may be adversarial; needs ``T >= n_byzantine + 3`` tasks.
        n_selected: ``1`` (Krum; more is Multi-Krum). Needs ``T >= n_selected``.

    Convention: TorchJD 0.18 ``Krum(n_byzantine, n_selected)`` exactly (same distances, scores, weights;
    both arguments have no default there).  Equal scores (e.g. duplicate rows) select the lower task
    index (``tf.math.top_k``); torch's ``topk`` may pick another of the tied rows (the same ``d`` when the
    tied rows are equal).  The task counts are checked against the recipe before training.
    """

    name = "krum"
    needs = "gradients"
    weighting = True
    paper = "Blanchard et al., NeurIPS 2017 (Krum)"
    summary = "mean of the task gradients closest to their neighbours (robust to outlier tasks)"

    n_byzantine: int = 0
    n_selected: int = 1

    def __post_init__(self) -> None:
        _check_count("n_byzantine", self.n_byzantine, 0)
        _check_count("n_selected", self.n_selected, 1)

    def task_count_problem(self, num_tasks: int) -> tuple[str, str] | None:
        if num_tasks < self.n_byzantine + 3:
            return (
                "n_byzantine",
                f"krum needs at least n_byzantine + 3 = {self.n_byzantine + 3} tasks "
                f"(n_byzantine = {self.n_byzantine}), received {num_tasks}",
            )
        if num_tasks < self.n_selected:
            return (
                "n_selected",
                f"krum selects n_selected = {self.n_selected} tasks: expected at least that many tasks, "
                f"received {num_tasks}",
            )
        return None

    def aggregate(self, J, losses, params: dict, state: dict, ctx) -> Result:
        import tensorflow as tf

        del losses, params, ctx
        m = J.shape[0]
        problem = self.task_count_problem(m)
        if problem is not None:
            raise ValueError(problem[1])
        G = qp.gramian(J)
        norms = tf.linalg.diag_part(G)
        distances = tf.sqrt(tf.maximum(norms[None, :] + norms[:, None] - 2 * G, 0))
        closest = -tf.math.top_k(-distances, k=m - self.n_byzantine - 1).values  # ascending, self first
        scores = tf.reduce_sum(closest[:, 1:], axis=1)
        chosen = tf.math.top_k(-scores, k=self.n_selected).indices
        w = tf.reduce_sum(tf.one_hot(chosen, m, dtype=J.dtype), axis=0) / self.n_selected
        return Result(weights=w, state=state, direction=combine_rows(w, J))


@register
@dataclass(frozen=True)
class TrimmedMean(Strategy):
    """Coordinate-wise trimmed mean: per parameter, drop the ``trim_number`` largest and smallest task
    gradients' entries and average the rest.

    Paper: Dong Yin, Yudong Chen, Kannan Ramchandran and Peter Bartlett, "Byzantine-Robust Distributed
    Learning: Towards Optimal Statistical Rates", ICML 2018, https://proceedings.mlr.press/v80/yin18a.html.

    Math: ``d_k = mean(sort(J[:, k])[trim_number : T - trim_number])`` for every column ``k``; with
    ``T = 2·trim_number + 1`` it is the coordinate-wise median.  Not a weighting (rows are trimmed per
    coordinate); ``weights`` reports ``(d · g_i) / ||g_i||²``.

    Parameters:
        trim_number: ``1``. Entries removed at each end of every column; needs ``T >= 2·trim_number + 1``.

    Convention: TorchJD 0.18 ``TrimmedMean(trim_number)`` exactly (no default there); ``trim_number: 0``
    is the mean of the rows.  The task count is checked against the recipe before training.
    """

    name = "trimmed_mean"
    needs = "gradients"
    weighting = False
    paper = "Yin et al., ICML 2018 (trimmed mean)"
    summary = "per coordinate, the mean of the task gradients without the trim_number extremes at each end"

    trim_number: int = 1

    def __post_init__(self) -> None:
        _check_count("trim_number", self.trim_number, 0)

    def task_count_problem(self, num_tasks: int) -> tuple[str, str] | None:
        needed = 2 * self.trim_number + 1
        if num_tasks < needed:
            return (
                "trim_number",
                f"trimmed_mean needs at least 2·trim_number + 1 = {needed} tasks "
                f"(trim_number = {self.trim_number}), received {num_tasks}",
            )
        return None

    def aggregate(self, J, losses, params: dict, state: dict, ctx) -> Result:
        import tensorflow as tf

        del losses, params, ctx
        m = J.shape[0]
        problem = self.task_count_problem(m)
        if problem is not None:
            raise ValueError(problem[1])
        ordered = tf.sort(J, axis=0)
        direction = tf.reduce_mean(ordered[self.trim_number : m - self.trim_number], axis=0)
        return Result(weights=projection_coefficients(direction, J), state=state, direction=direction)
