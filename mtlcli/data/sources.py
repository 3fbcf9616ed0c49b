"""Data sources -> :class:`Table`: CSV / CSV.gz, Parquet, NPZ, IDX, image folders, globs, ``pkg://``,
and the MultiFashion overlay. numpy + pandas only (no TensorFlow): ``mtl validate`` reads through here.

A source in a recipe is a path (relative to the recipe), a glob (``data/part-*.csv``), ``pkg://river/
datasets/yeast.csv.gz`` (a file shipped inside an installed Python package, found without importing it),
a directory laid out one folder per class, or a mapping: ``{idx: IMAGES, labels: LABELS}``,
``{multifashion: DIR, split: train}`` or ``{path: FILE, sep: ';', encoding: latin-1, decimal: ','}`` (a
path with its CSV dialect, :mod:`mtlcli.data.csvfiles`; ``dialect=`` gives ``data.csv`` to every reader).
Every CSV file is scanned before pandas reads it (:func:`mtlcli.data.csvfiles.check`): empty files,
header-only files and rows with the wrong number of fields are errors naming their line.

Streaming reads tabular sources in chunks (:func:`iter_chunks`: pandas ``read_csv(chunksize=...)``,
pyarrow ``iter_batches``), each chunk a :class:`Table` whose rows keep their file and line.
"""

from __future__ import annotations

import glob as globmod
import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.data import csvfiles, multifashion
from mtlcli.data.tables import Table, fail, file_digest, missing, read_idx_pair
from mtlcli.errors import DataError

SUPPORTED = (".csv", ".csv.gz", ".parquet", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
NA_VALUES = ["", "NA", "NaN", "nan", "null", "None"]


# ------------------------------------------------------------------------------------------------
# The table


# ------------------------------------------------------------------------------------------------
# Entry points


def resolve(value: Any, base_dir: Path) -> Any:
    """A source with its paths made absolute (what data.json records)."""
    if isinstance(value, dict):
        out = dict(value)
        for key in ("idx", "labels", "multifashion", "cache", "path"):
            if isinstance(out.get(key), str) and not out[key].startswith("pkg://"):
                out[key] = str(_abs(out[key], base_dir))
        return out
    if isinstance(value, str) and value.startswith("pkg://"):
        return value
    return str(_abs(value, base_dir))


def path_of(value: Any) -> Any:
    """A source without its CSV dialect: ``{path: FILE, sep: ...}`` -> ``FILE``; others unchanged."""
    return value["path"] if isinstance(value, dict) and "path" in value else value


def _abs(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base_dir / p).absolute()


def read_source(value: Any, base_dir: Path | None = None, dialect: dict | None = None) -> Table:
    """Read any source (see the module docstring) into a Table; ``dialect``: ``data.csv``."""
    base_dir = base_dir or Path.cwd()
    value = resolve(value, base_dir)
    dialect = csvfiles.dialect_of(value, dialect)
    value = path_of(value)
    if isinstance(value, dict):
        if "idx" in value:
            return read_idx_pair(Path(value["idx"]), Path(value["labels"]) if value.get("labels") else None)
        return multifashion.load(
            Path(value["multifashion"]),
            value.get("split", "train"),
            int(value.get("seed", 0)),
            Path(value["cache"]) if value.get("cache") else None,
        )
    if value.startswith("pkg://"):
        return read_table(package_file(value), dialect=dialect)
    if any(c in Path(value).name for c in "*?[") or any(c in value for c in "*?"):
        return read_glob(value, dialect)
    return read_table(Path(value), dialect=dialect)


def source_files(value: Any, base_dir: Path | None = None) -> list[Path]:
    """The files a source reads (for digests)."""
    base_dir = base_dir or Path.cwd()
    value = path_of(resolve(value, base_dir))
    if isinstance(value, dict):
        if "idx" in value:
            return [Path(value["idx"])] + ([Path(value["labels"])] if value.get("labels") else [])
        from mtlcli.data.multifashion import source_files as mf_files

        return mf_files(Path(value["multifashion"]), value.get("split", "train"))
    if value.startswith("pkg://"):
        return [package_file(value)]
    if any(c in value for c in "*?["):
        return [Path(p) for p in sorted(globmod.glob(value))]
    path = Path(value)
    if path.is_dir():
        return [p for _, p in _image_folder_files(path)]
    return [path]


def digest(value: Any, base_dir: Path | None = None) -> str:
    """sha256 of a source: the file's own sha256 for one file, else a hash of every file's hash."""
    files = source_files(value, base_dir)
    if len(files) == 1 and not isinstance(path_of(value), dict):
        return file_digest(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + file_digest(f).encode())
    return h.hexdigest()


def package_file(value: str) -> Path:
    """``pkg://river/datasets/yeast.csv.gz`` -> the file inside the installed package (not imported)."""
    import importlib.util

    rest = value[len("pkg://") :]
    package, _, inner = rest.partition("/")
    try:
        spec = importlib.util.find_spec(package) if package else None
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise fail(
            f"Python package {package!r} is not installed; install it (pip install {package}) or point "
            f"the recipe at a copy of the file",
            value,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.is_file():
        raise fail(f"package {package!r} has no file {inner!r}", value)
    return path


# ------------------------------------------------------------------------------------------------
# Readers


def suffix(path: Path) -> str:
    """A file's type as this module names it: ``.csv.gz`` or its lower-case suffix."""
    name = path.name.lower()
    return ".csv.gz" if name.endswith(".csv.gz") else path.suffix.lower()


def read_table(path: Path, label: str = "", dialect: dict | None = None, allow_empty: bool = False) -> Table:
    """Read a CSV (optionally gzip-compressed; in ``dialect``), Parquet or NPZ file, or a folder of
    images per class. A CSV file with a header only is an error unless ``allow_empty`` (a glob's part)."""
    shown = str(path)
    if not path.exists():
        raise fail(f"file not found{label}", shown)
    if path.is_dir():
        return read_image_folder(path)
    kind = suffix(path)
    if kind not in SUPPORTED:
        raise fail(f"unsupported file type {kind!r}; expected {', '.join(SUPPORTED)}", shown)
    if kind == ".npz":
        return _read_npz(path)
    if kind == ".parquet":
        return _read_parquet(path)
    import pandas as pd

    rows = csvfiles.check(path, dialect, allow_empty)
    try:
        frame = pd.read_csv(
            path,
            keep_default_na=True,
            na_values=NA_VALUES,
            skipinitialspace=True,
            **csvfiles.pandas_options(dialect),
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise fail(f"cannot read as CSV: {str(exc).strip().splitlines()[0]}", shown) from None
    table = _from_frame(frame, shown, first_row=2)
    table.decimal = csvfiles.options(dialect)["decimal"]
    if len(rows.breaks) and rows.count == table.n_rows:  # physical lines (blank lines, multi-line cells)
        table.row_ids = rows.lines(0, table.n_rows) - 2
    return table


def _from_frame(frame, shown: str, first_row: int) -> Table:
    columns = {}
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype.kind in "OUST" or str(frame[name].dtype) in ("string", "str"):
            values = np.array([None if missing(v) else str(v) for v in values], dtype=object)
        elif values.dtype.kind == "b":
            values = values.astype(np.int64)
        columns[str(name)] = values
    return Table(columns, len(frame), shown, first_row=first_row)


def _read_parquet(path: Path) -> Table:
    pq = _pyarrow(path)
    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as exc:  # noqa: BLE001 - any pyarrow failure means an unreadable file
        raise fail(f"cannot read as Parquet: {str(exc).strip().splitlines()[0]}", str(path)) from None
    return _from_frame(frame, str(path), first_row=1)


def _read_npz(path: Path) -> Table:
    shown = str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            columns = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # corrupt archive
        raise fail(f"cannot read as NPZ: {exc}", shown) from None
    if not columns:
        raise fail("the NPZ file holds no arrays", shown)
    lengths = {k: len(v) if v.ndim else 0 for k, v in columns.items()}
    if len(set(lengths.values())) != 1:
        detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise fail(
            f"arrays have different lengths ({detail}); expected one row per sample in every array", shown
        )
    return Table(columns, next(iter(lengths.values())), shown, is_npz=True)


def columns_differ(first: list[str], other: list[str], first_file, other_file):
    """The error for two files of one glob whose columns do not agree."""
    extra = [c for c in other if c not in first]
    lacking = [c for c in first if c not in other]
    detail = "; ".join(
        x
        for x in (
            f"extra: {', '.join(map(repr, extra))}" if extra else "",
            f"missing: {', '.join(map(repr, lacking))}" if lacking else "",
            "same columns in another order" if not extra and not lacking else "",
        )
        if x
    )
    return fail(f"columns differ from {first_file} ({detail})", str(other_file))


def read_glob(pattern: str, dialect: dict | None = None) -> Table:
    """Every file matching ``pattern`` (sorted), joined row-wise; the columns must agree."""
    paths = sorted(globmod.glob(pattern))
    if not paths:
        raise fail("no file matches this pattern", pattern)
    tables = [read_table(Path(p), dialect=dialect, allow_empty=True) for p in paths]
    first = tables[0]
    for t in tables[1:]:
        if list(t.columns) != list(first.columns):
            raise columns_differ(list(first.columns), list(t.columns), first.file, t.file)
    columns = {}
    for name in first.columns:
        parts = [t.columns[name] for t in tables]
        if any(p.dtype == object for p in parts):
            parts = [np.array([None if missing(v) else str(v) for v in p], dtype=object) for p in parts]
        columns[name] = np.concatenate(parts)
    return Table(
        columns,
        sum(t.n_rows for t in tables),
        pattern,
        first.first_row,
        first.is_npz,
        np.concatenate([t.row_ids if t.row_ids is not None else np.arange(t.n_rows) for t in tables]),
        [t.file for t in tables],
        np.concatenate([np.full(t.n_rows, i) for i, t in enumerate(tables)]),
        first.decimal,
    )


# -- images --------------------------------------------------------------------------------------


def image_format(path: Path) -> str | None:
    """``png``/``jpeg``/``gif``/``bmp`` from the file's first bytes, or None (not an image / unreadable)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    return None


def _image_folder_files(root: Path) -> list[tuple[str, Path]]:
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(sub.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                out.append((sub.name, f))
    return out


def read_image_folder(root: Path) -> Table:
    """A directory with one folder per class (the Keras convention): columns ``image`` (file paths)
    and ``label`` (the folder name)."""
    files = _image_folder_files(root)
    if not files:
        raise fail(
            f"is a directory without class folders of images ({', '.join(IMAGE_SUFFIXES)}); expected "
            f"DIR/<class>/<image> or a {' or '.join(SUPPORTED)} file",
            str(root),
        )
    labels = np.array([c for c, _ in files], dtype=object)
    paths = np.array([str(p) for _, p in files], dtype=object)
    return Table({"image": paths, "label": labels}, len(files), str(root), is_npz=True)


# -- IDX (MNIST format) --------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------
# Reading in chunks (streaming)


TABULAR = (".csv", ".csv.gz", ".parquet")  # what streaming reads


@dataclass
class Chunk:
    table: Table  # row_ids: line numbers of the rows (first_row 0), file: the chunk's file
    start: int  # row number (0-based, over all files of the source) of the chunk's first row


def chunk_files(value: Any, base_dir: Path | None) -> list[Path]:
    resolved = path_of(resolve(value, base_dir or Path.cwd()))
    if resolved.startswith("pkg://"):
        return [package_file(resolved)]
    if any(c in resolved for c in "*?["):
        files = source_files(resolved)
        if not files:
            raise fail("no file matches this pattern", resolved)
        return files
    path = Path(resolved)
    if not path.exists():
        raise fail("file not found", str(path))
    return [path]


def _header(path: Path, dialect: dict | None) -> list[str]:
    if suffix(path) not in TABULAR:
        raise fail(f"streaming reads {', '.join(TABULAR)} files; received {suffix(path)!r}", str(path))
    if suffix(path) == ".parquet":
        pq = _pyarrow(path)
        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except Exception as exc:  # noqa: BLE001 - any pyarrow failure means an unreadable file
            raise fail(f"cannot read as Parquet: {str(exc).strip().splitlines()[0]}", str(path)) from None
    import pandas as pd

    csvfiles.check_header(path, dialect)
    try:
        options = csvfiles.pandas_options(dialect)
        return [str(c) for c in pd.read_csv(path, nrows=0, skipinitialspace=True, **options).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise fail(f"cannot read as CSV: {str(exc).strip().splitlines()[0]}", str(path)) from None


def _pyarrow(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise fail(
            "reading Parquet needs pyarrow, from the optional extra 'parquet': pip install 'mtlcli[parquet]'",
            str(path),
        ) from None
    return pq


def columns_of(
    value: Any, base_dir: Path | None, dialect: dict | None = None
) -> tuple[list[Path], list[str]]:
    """A source's files and their (agreeing) columns, from the headers only."""
    files = chunk_files(value, base_dir)
    first = _header(files[0], dialect)
    for f in files[1:]:
        cols = _header(f, dialect)
        if cols != first:
            raise columns_differ(list(first), list(cols), files[0], f)
    return files, first


def iter_chunks(
    files: list[Path], columns: list[str], chunk_rows: int, dialect: dict | None = None, check: bool = False
) -> Iterator[Chunk]:
    """The rows of ``files`` (in order), ``chunk_rows`` at a time, reading only ``columns``. ``check``
    scans each CSV file first (:func:`mtlcli.data.csvfiles.check`, bounded memory): the statistics pass
    does, the epochs that read the same files again do not."""
    import pandas as pd

    start = 0
    decimal = csvfiles.options(dialect)["decimal"]
    for path in files:
        parquet = suffix(path) == ".parquet"
        first_row = 1 if parquet else 2
        local = 0
        rows = csvfiles.check(path, dialect, allow_empty=len(files) > 1) if check and not parquet else None
        try:
            if parquet:
                pf = _pyarrow(path).ParquetFile(path)
                frames = (b.to_pandas() for b in pf.iter_batches(batch_size=chunk_rows, columns=columns))
            else:
                frames = pd.read_csv(
                    path,
                    chunksize=chunk_rows,
                    usecols=columns,
                    keep_default_na=True,
                    na_values=NA_VALUES,
                    skipinitialspace=True,
                    **csvfiles.pandas_options(dialect),
                )
            for frame in frames:
                table = chunk_table(frame, [c for c in columns if c in frame.columns], str(path))
                table.decimal = decimal
                n = table.n_rows
                table.row_ids = (
                    rows.lines(local, n)  # physical lines, as the scan found them
                    if rows is not None and len(rows.breaks)
                    else np.arange(local + first_row, local + first_row + n)
                )
                yield Chunk(table, start)
                local += n
                start += n
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - pandas / pyarrow failures mid-file
            what = "Parquet" if parquet else "CSV"
            raise fail(f"cannot read as {what}: {str(exc).strip().splitlines()[0]}", str(path)) from None


def chunk_table(frame, columns: list[str], shown: str) -> Table:
    """``_from_frame`` of a chunk (the same values: missing and blank strings become None), with
    string columns converted by pandas' vectorised string methods instead of a Python call per value."""
    import pandas as pd

    wanted, out = set(columns), {}
    for name, col in frame.items():
        if name not in wanted:
            continue
        if isinstance(col.dtype, pd.StringDtype):
            values = col.to_numpy(dtype=object, na_value=None)
            rows = np.flatnonzero(np.not_equal(values, None))
            strings = values[rows].astype(str)
            blank = np.strings.isspace(strings) | (np.strings.str_len(strings) == 0)
            if blank.any():
                values[rows[blank]] = None
        else:
            values = col.to_numpy()
            if values.dtype.kind in "OUST":
                values = np.array([None if missing(v) else str(v) for v in values], dtype=object)
            elif values.dtype.kind == "b":
                values = values.astype(np.int64)
        out[str(name)] = values
    out = {c: out[c] for c in columns if c in out}
    return Table(out, len(frame), shown, first_row=0)
