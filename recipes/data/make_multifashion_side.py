"""Writes recipes/data/multifashion_side/{train,test}.npz for recipes/multifashion_side.yaml: the
MultiFashion overlays (:mod:`mtlcli.data.multifashion`, same construction and seed, so the same pairs as
recipes/multifashion.yaml) plus four tabular side features per pair
(``python recipes/data/make_multifashion_side.py [FASHION_MNIST_DIR]``; about 5 s, 40 MB).

The side features are measurements of each item's own 28x28 Fashion-MNIST image, taken *before* the
two items are overlaid -- what a shop's catalogue could list next to a photo (how much of the frame the
item fills, how light it is); they are not labels and not functions of the labels:

    left_fill, right_fill   fraction of the item's own pixels that are not background (> 0)
    left_tone, right_tone   mean intensity (0..1) of those pixels

In the overlay the right item is partly hidden under the left one (pixel-wise max), so its own
measurements carry information the pixels lack; they do not name its class (a shirt and a coat fill
the frame alike).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mtlcli.data.multifashion import DEFAULT_DIR, overlay, source_files
from mtlcli.data.tables import read_idx

OUT = Path(__file__).resolve().parent / "multifashion_side"
SEED = 0  # the seed of {multifashion: ...} sources (recipes/multifashion.yaml's pairs)


def measurements(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 -> (fill, tone): the non-background fraction and its mean intensity in 0..1."""
    on = images > 0
    fill = on.mean(axis=(1, 2))
    tone = np.where(on, images, 0).sum(axis=(1, 2)) / np.maximum(on.sum(axis=(1, 2)), 1) / 255.0
    return fill.astype(np.float32), tone.astype(np.float32)


def build(directory: Path, split: str, seed: int = SEED) -> dict[str, np.ndarray]:
    """The overlay columns (image, left, right) of ``split`` and the four side features."""
    image_file, label_file = source_files(directory, split)
    images, labels = read_idx(image_file), read_idx(label_file)
    columns = overlay(images, labels, seed)
    partner = np.random.default_rng(seed).integers(0, len(images), size=len(images))  # as overlay draws it
    if not np.array_equal(columns["right"], labels[partner]):
        raise SystemExit("mtlcli.data.multifashion.overlay draws partners differently: update this script")
    fill, tone = measurements(images)
    side = {"left_fill": fill, "left_tone": tone, "right_fill": fill[partner], "right_tone": tone[partner]}
    return {**columns, **side}


def main(argv: list[str]) -> None:
    directory = Path(argv[0]) if argv else DEFAULT_DIR
    OUT.mkdir(exist_ok=True)
    for split in ("train", "test"):
        np.savez(OUT / f"{split}.npz", **build(directory, split))
        print(f"wrote {OUT / f'{split}.npz'}")


if __name__ == "__main__":
    main(sys.argv[1:])
