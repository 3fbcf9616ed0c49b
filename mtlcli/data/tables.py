"""The table every reader returns, and the small readers the MultiFashion overlay shares with
:mod:`mtlcli.data.sources` (IDX files, file digests, the cache directory). numpy only.

Kept apart from :mod:`mtlcli.data.sources` so that sources can dispatch to
:mod:`mtlcli.data.multifashion` while multifashion reads through these, without an import cycle.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.errors import DataError, Problem
from mtlcli.fsio import sha256


@dataclass
class Table:
    """Columns of one data source. ``first_row`` is the file line of row 0 (2 for a CSV with a header);
    ``is_npz`` marks sources without line numbers (NPZ, IDX, image folders). ``files`` / ``origin`` hold
    the file of each row when a glob joined several files."""

    columns: dict[str, np.ndarray]
    n_rows: int
    file: str
    first_row: int = 2
    is_npz: bool = False
    row_ids: np.ndarray | None = None  # row number inside its file (None: 0..n-1)
    files: list[str] | None = None
    origin: np.ndarray | None = None  # index into ``files`` per row
    decimal: str = "."  # the decimal mark of numbers the reader left as text (a CSV dialect)

    def where(self, row: int | None = None) -> tuple[str, int | None]:
        file = self.file
        if row is not None and self.files is not None and self.origin is not None:
            file = self.files[int(self.origin[row])]
        if row is None or self.is_npz:
            return file, None
        original = int(self.row_ids[row]) if self.row_ids is not None else int(row)
        return file, original + self.first_row

    def file_of(self, row: int) -> str:
        return self.where(row)[0]

    def take(self, index: np.ndarray) -> Table:
        index = np.asarray(index, dtype=np.int64)
        ids = self.row_ids[index] if self.row_ids is not None else index
        origin = self.origin[index] if self.origin is not None else None
        return Table(
            {k: v[index] for k, v in self.columns.items()},
            len(index),
            self.file,
            self.first_row,
            self.is_npz,
            ids,
            self.files,
            origin,
            self.decimal,
        )


def fail(message: str, file: str, line: int | None = None, path: str = "") -> DataError:
    return DataError(problems=[Problem(message, path, file, line)])


def missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def file_digest(path: Path) -> str:
    """The hex sha256 of a data file (recorded in data.json, checked when a run's split is rebuilt)."""
    return sha256(path)


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (optionally .gz): 2 zero bytes, a type byte, the number of dimensions, one
    big-endian uint32 per dimension, then the data."""
    if not path.exists():
        raise fail("file not found", str(path))
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise fail(f"cannot read as IDX: {exc}", str(path)) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise fail("not an IDX file (expected the bytes 0 0 <type> <dimensions> at the start)", str(path))
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 0
    if len(raw) - header != count * dtype.itemsize:
        raise fail(
            f"IDX header announces shape {dims} ({count * dtype.itemsize} bytes) but the file holds "
            f"{len(raw) - header} bytes of data",
            str(path),
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx_pair(images: Path, labels: Path | None) -> Table:
    """IDX images (N, H, W) -> column ``image`` (N, H, W, 1); IDX labels (N,) -> column ``label``."""
    x = read_idx(images)
    if x.ndim == 3:
        x = x[..., None]
    columns = {"image": x}
    if labels is not None:
        y = read_idx(labels)
        if len(y) != len(x):
            raise fail(
                f"{len(y)} labels for {len(x)} images in {images}; expected one label per image", str(labels)
            )
        columns["label"] = y.astype(np.int64)
    return Table(columns, len(x), str(images), is_npz=True)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mtl"
