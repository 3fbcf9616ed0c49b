"""Seeded input matrices for the strategy property tests (TorchJD ``_inputs.py`` style).

Every matrix is float64 numpy, shape ``(T, P)`` (tasks x parameters). Names are used as pytest ids.
"""

from __future__ import annotations

import numpy as np

#: TorchJD's golden-value Jacobian (algorithms.md §7).
J_GOLDEN = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


def _normal(seed: int, shape: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _low_rank(seed: int, shape: tuple[int, int], rank: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1]))


def _conflicting(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Rows with a common component plus strongly conflicting task-specific parts."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(shape[1])
    return 0.3 * common + 2.0 * rng.standard_normal(shape)


#: Full-rank and rank-deficient matrices of ordinary scale: ``(name, J)``.
TYPICAL: list[tuple[str, np.ndarray]] = [
    ("golden_2x3", J_GOLDEN),
    ("single_task_1x5", _normal(0, (1, 5))),
    ("normal_2x7", _normal(1, (2, 7))),
    ("normal_3x10", _normal(2, (3, 10))),
    ("normal_5x12", _normal(3, (5, 12))),
    ("conflicting_4x9", _conflicting(4, (4, 9))),
    ("rank2_4x8", _low_rank(5, (4, 8), 2)),
    ("tall_6x3", _normal(6, (6, 3))),
    ("duplicate_rows_3x4", np.array([[1.0, 2.0, 0.0, -1.0], [1.0, 2.0, 0.0, -1.0], [-3.0, 0.5, 1.0, 2.0]])),
    ("opposite_2x4", np.array([[1.0, -2.0, 0.5, 3.0], [-2.0, 4.0, -1.0, -6.0]])),
    ("mixed_norms_3x5", _normal(7, (3, 5)) * np.array([[1e-3], [1.0], [1e3]])),
]

#: All-zero matrices and matrices with a zero row.
ZEROS: list[tuple[str, np.ndarray]] = [
    ("zeros_1x3", np.zeros((1, 3))),
    ("zeros_2x3", np.zeros((2, 3))),
    ("zeros_4x6", np.zeros((4, 6))),
    ("zero_row_3x5", np.vstack([_normal(8, (2, 5)), np.zeros((1, 5))])),
]

#: Extreme scales of ordinary matrices (1e-8 .. 1e8).
SCALES = (1e-8, 1e-4, 1e4, 1e8)
SCALED: list[tuple[str, np.ndarray]] = [
    (f"{name}_x{scale:g}", J * scale)
    for name, J in [("normal_3x10", _normal(2, (3, 10))), ("golden_2x3", J_GOLDEN)]
    for scale in SCALES
]

ALL: list[tuple[str, np.ndarray]] = TYPICAL + ZEROS + SCALED


def ids(cases: list[tuple[str, np.ndarray]]) -> list[str]:
    return [name for name, _ in cases]


def matrices(cases: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
    return [J for _, J in cases]


def losses_for(J: np.ndarray, seed: int = 0) -> np.ndarray:
    """Positive per-task losses matching ``J``'s number of rows (seeded, in [0.5, 2.5))."""
    return 0.5 + 2.0 * np.random.default_rng(1000 + seed).random(J.shape[0])
