"""Writes recipes/data/esmm.csv: synthetic impressions whose click and conversion probabilities are
known logistic models of the features, so a model's pCTR, pCVR and pCTCVR can be checked against the
truth (``python recipes/data/make_esmm.py``; tests import :func:`generate`).

    pCTR  = sigmoid(CTR_W . x + CTR_B)        click ~ Bernoulli(pCTR)
    pCVR  = sigmoid(CVR_W . x + CVR_B)        buy   ~ click * Bernoulli(pCVR)
    pCTCVR = pCTR * pCVR                      (P(buy) on every impression)
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CTR_W, CTR_B = np.array([1.5, -1.0, 0.5, 0.0]), -0.5
CVR_W, CVR_B = np.array([0.0, 1.0, -1.5, 1.0]), 0.0
FEATURES = ("x1", "x2", "x3", "x4")


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def generate(n: int = 4000, seed: int = 0) -> dict[str, np.ndarray]:
    """Columns x1..x4, click, buy and the true probabilities p_ctr, p_cvr, p_ctcvr."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    p_ctr, p_cvr = sigmoid(x @ CTR_W + CTR_B), sigmoid(x @ CVR_W + CVR_B)
    click = (rng.random(n) < p_ctr).astype(int)
    buy = click * (rng.random(n) < p_cvr).astype(int)
    out = {f: np.round(x[:, i], 4) for i, f in enumerate(FEATURES)}
    return {**out, "click": click, "buy": buy, "p_ctr": p_ctr, "p_cvr": p_cvr, "p_ctcvr": p_ctr * p_cvr}


def write(path: Path, n: int = 4000, seed: int = 0) -> None:
    """The CSV of :func:`generate` without the true probabilities."""
    cols = generate(n, seed)
    names = [*FEATURES, "click", "buy"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        w.writerows(zip(*(cols[k] for k in names), strict=True))


if __name__ == "__main__":
    write(Path(__file__).with_name("esmm.csv"))
