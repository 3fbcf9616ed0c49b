"""MultiFashion: two Fashion-MNIST items overlaid, classify the left and the right one.

Construction (Sener & Koltun 2018, as for MultiMNIST): every image of a split gets a partner drawn
uniformly at random from the same split (seeded); on a 36x36 zero canvas the image goes at [0:28, 0:28],
the partner at [6:34, 6:34], overlap is the pixel-wise max; the canvas is resized to 28x28 with
nearest-neighbour (index ``floor((arange(28) + 0.5) * 36 / 28)``). Labels: ``left`` (the image's
class), ``right`` (the partner's). One pair per source image: 60,000 train / 10,000 test.

Source: the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``; Zalando,
MIT licence). The built overlay is cached as NPZ under ``~/.cache/mtl`` (or ``cache:``), keyed by the
IDX files' sha256, the split and the seed, so a changed source is rebuilt, never served stale.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from mtlcli.data.tables import Table, cache_dir, fail, file_digest, read_idx

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def source_files(directory: Path, split: str) -> list[Path]:
    return [directory / name for name in FILES[split]]


def overlay(images: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """(N, 28, 28) uint8 images -> {'image': (N, 28, 28, 1) uint8, 'left': (N,), 'right': (N,)}."""
    n = len(images)
    partner = np.random.default_rng(seed).integers(0, n, size=n)
    canvas = np.zeros((n, 36, 36), np.uint8)
    canvas[:, 0:28, 0:28] = images
    canvas[:, 6:34, 6:34] = np.maximum(canvas[:, 6:34, 6:34], images[partner])
    idx = np.floor((np.arange(28) + 0.5) * 36 / 28).astype(np.int64)
    small = canvas[:, idx][:, :, idx]
    return {
        "image": small[..., None],
        "left": labels.astype(np.int64),
        "right": labels[partner].astype(np.int64),
    }


def load(directory: Path, split: str = "train", seed: int = 0, cache: Path | None = None) -> Table:
    """The overlay for ``split``, from the cache or built (and cached) from the IDX files."""
    files = source_files(directory, split)
    lacking = [f for f in files if not f.exists()]
    if lacking:
        hint = " (install it with: apt-get install dataset-fashion-mnist)" if directory == DEFAULT_DIR else ""
        raise fail(f"Fashion-MNIST file not found{hint}", str(lacking[0]))
    key = "-".join(file_digest(f)[:12] for f in files)
    target = (cache or cache_dir()) / f"multifashion-{split}-seed{seed}-{key}.npz"
    if target.exists():
        with contextlib.suppress(OSError, ValueError, EOFError, KeyError):
            with np.load(target, allow_pickle=False) as npz:
                columns = {k: npz[k] for k in ("image", "left", "right")}
            return Table(columns, len(columns["left"]), str(target), is_npz=True)
    images = read_idx(files[0])
    labels = read_idx(files[1])
    if len(images) != len(labels):
        raise fail(f"{len(labels)} labels for {len(images)} images in {files[0]}", str(files[1]))
    columns = overlay(images, labels, seed)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".multifashion-", suffix=".npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **columns)
        os.replace(tmp, target)
    except OSError:
        pass  # an unwritable cache only costs a rebuild next time
    return Table(columns, len(columns["left"]), str(target), is_npz=True)
