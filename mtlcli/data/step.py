"""The data step of a run, in memory or streamed, and reloading the split a finished run evaluates.

:func:`prepare` reads, splits, fits (on the training split only) and transforms a recipe's data, or
hands it to :mod:`mtlcli.data.stream` when the data streams (``data.stream``, or a large tabular
training source). It raises :class:`mtlcli.errors.DataError` with every problem found and imports no
TensorFlow, so ``mtl validate`` runs it in full.

:func:`reload_split` is the other end: the rows of a run's validation or test split, read again from
the files ``data.json`` recorded (with their CSV dialect), after one sha256 check that they are unchanged.

Run directories are relocatable. A run records each data file's absolute path and, once its directory
exists (:func:`recorded`), the same path relative to the run directory (``from_run``) and the recipe
directory relative to it (``recipe_from_run``). A run is read again relative first -- so a project moved
or copied as a whole, or a run directory moved with its data beside it, finds its own files -- then at
the absolute path (all that runs of mtl 0.1 recorded); whichever is found must still have its sha256.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlcli.data import csvfiles, sources, split
from mtlcli.data import stream as streaming
from mtlcli.data.columns import check_columns, read_recipe_source
from mtlcli.data.preprocess import Prepared, Preprocessing, fit_checked, transform
from mtlcli.data.sources import Table
from mtlcli.data.values import capped, is_fraction, structural
from mtlcli.errors import CheckpointError, DataError, Problem, UsageError
from mtlcli.recipe import LoadedRecipe


def prepare(loaded: LoadedRecipe, seed: int | None = None) -> Prepared:
    """Read, split, fit and transform the recipe's data. Raises DataError with every problem found."""
    seed = loaded.recipe.seed if seed is None else seed
    opts = streaming.settings(loaded)
    if opts is not None:
        return streaming.prepare(loaded, seed, opts)
    tables, indices, source_rows = _split_tables(loaded, seed)
    problems: list[Problem] = []
    prep = fit_checked(loaded.recipe, tables["train"], loaded, problems)
    if structural(problems):
        raise DataError(problems=capped(problems))
    splits = {}
    for key, table in tables.items():  # bad cells of every split, in one run
        if table.n_rows == 0:
            problems.append(Problem(f"the {key} split is empty", "", table.file))
            continue
        try:
            splits[key] = transform(prep, table, weights=key == "train")
        except DataError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DataError(problems=capped(problems))
    return Prepared(prep, splits, _info(loaded, seed, tables, splits, indices, source_rows))


def _fractions(loaded: LoadedRecipe) -> dict[str, float]:
    data = loaded.recipe.data
    return {k: getattr(data, k) for k in ("test", "validation") if is_fraction(getattr(data, k))}


def _own_file(loaded: LoadedRecipe, key: str) -> bool:
    """Whether ``data.<key>`` names a source of its own (not a fraction, not a split column)."""
    value = getattr(loaded.recipe.data, key)
    return value is not None and not is_fraction(value) and not loaded.recipe.data.split


def _split_tables(loaded: LoadedRecipe, seed: int) -> tuple[dict[str, Table], dict[str, np.ndarray], int]:
    """The table of every split, the row indices of those cut from the training source, and its rows."""
    data = loaded.recipe.data
    train_table = read_recipe_source(loaded, "train")
    problems = check_columns(loaded, train_table, split_too=True)
    tables = {"train": train_table}
    for key in ("validation", "test"):
        if _own_file(loaded, key):
            tables[key] = read_recipe_source(loaded, key)
            problems.extend(check_columns(loaded, tables[key]))
    if problems:
        raise DataError(problems=problems)
    if data.split:
        indices = split.by_column_in_memory(dict(data.split), train_table)
    else:
        indices = split.by_fraction(_fractions(loaded), train_table, seed, data.group_by)
    for key, idx in indices.items():
        tables[key] = train_table.take(idx)
    if data.group_by and (data.split or len(tables) > len(indices)):
        problems = split.straddling(data.group_by, tables)
        if problems:
            raise DataError(problems=problems)
    return tables, indices, train_table.n_rows


def _info(loaded: LoadedRecipe, seed: int, tables, splits, indices, source_rows: int) -> dict[str, Any]:
    """What data.json records: files (absolute path, sha256, rows), split sizes, indices, coverage."""
    data = loaded.recipe.data
    files = {}
    for key in ("train", "validation", "test"):
        if key in tables and (key == "train" or _own_file(loaded, key)):
            value = getattr(data, key)
            resolved = sources.path_of(sources.resolve(value, loaded.base_dir))
            files[key] = {
                "path": resolved if isinstance(resolved, str) else tables[key].file,
                "source": resolved,
                "sha256": sources.digest(value, loaded.base_dir),
                "rows": source_rows if key == "train" else tables[key].n_rows,
            }
            dialect = csvfiles.dialect_of(value, data.csv)
            if dialect:
                files[key]["csv"] = dialect
    info = {
        "files": files,
        "seed": seed,
        "split_rows": {k: int(v.n) for k, v in splits.items()},
        "fraction_indices": {k: v.tolist() for k, v in indices.items() if k != "train"},
        "coverage": {k: v.support() for k, v in splits.items()},
    }
    if data.split:
        info["split_by"] = dict(data.split)
    if data.group_by:
        info["group_by"] = data.group_by
    return info


# ------------------------------------------------------------------------------------------------
# A finished run's split


def choose_split(run_dir, info: dict, split: str | None) -> str:
    """The split of a run to evaluate: the one asked for, else test, else validation."""
    rows = info.get("split_rows", {})
    if split is None:
        available = [s for s in ("test", "validation") if s in rows]
        if not available:
            raise UsageError(f"{run_dir} has no validation or test split; pass --data FILE")
        return available[0]
    if split not in rows:
        raise UsageError(f"{run_dir} has no {split!r} split (it has: {', '.join(rows)})")
    return split


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """A run's data.json."""
    info_path = run_dir / "data.json"
    if not info_path.exists():
        raise CheckpointError(f"{run_dir}: data.json is missing; pass --data FILE")
    try:
        return json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{info_path}: not valid JSON ({exc})") from None


def run_dialect(run_dir: Path | None) -> dict[str, str] | None:
    """The CSV dialect of a run's training data, which ``mtl evaluate RUN_DIR --data FILE`` reads FILE
    with (None without a run directory, or for the default dialect)."""
    if run_dir is None or not (run_dir / "data.json").is_file():
        return None
    entry = (read_run_info(run_dir).get("files") or {}).get("train") or {}
    return entry.get("csv") or None


@dataclass
class RunSplit:
    """A run's split, read again. ``table`` holds its rows for an in-memory run; a streamed run's split
    is read in chunks when evaluated (:meth:`streamed`), so ``table`` is None."""

    name: str
    info: dict[str, Any]
    table: Table | None

    def streamed(self, prep: Preprocessing) -> streaming.StreamSplit:
        """The streamed split, transformed with the model's preprocessing."""
        return streaming.run_split(self.info, self.name, prep)


def recorded(info: dict[str, Any], run_dir: Path, base_dir: Path) -> dict[str, Any]:
    """``data.json`` as run directory ``run_dir`` keeps it: ``info`` plus each file's source relative to
    the run directory and the recipe directory ``base_dir`` relative to it (see the module docstring)."""
    out = copy.deepcopy(info)
    for entry in out.get("files", {}).values():
        rel = _rebased(
            entry.get("source", entry.get("path")), lambda p: os.path.relpath(p, run_dir.absolute())
        )
        if rel is not None:
            entry["from_run"] = rel
    with contextlib.suppress(ValueError):  # another drive (Windows): no relative path
        out["recipe_from_run"] = os.path.relpath(base_dir.absolute(), run_dir.absolute())
    return out


def _rebased(source: Any, move) -> Any:
    """``source`` (a path, a glob or a source mapping) with each of its paths passed through ``move``;
    None when a path cannot be moved (``pkg://`` sources, another drive)."""
    if isinstance(source, dict):
        out = dict(source)
        for key in ("idx", "labels", "multifashion", "cache", "path"):
            if isinstance(out.get(key), str):
                out[key] = _rebased(out[key], move)
                if out[key] is None:
                    return None
        return out
    if not isinstance(source, str) or source.startswith("pkg://"):
        return None
    try:
        return move(source)
    except ValueError:
        return None


def recipe_dir(run_dir: Path, info: dict[str, Any], recorded_dir: Path) -> Path:
    """The directory the recipe of run ``run_dir`` resolves its data paths from: where it is now relative
    to the run directory (a moved project), else ``recorded_dir`` (env.json's, as when it was trained)."""
    rel = info.get("recipe_from_run")
    if isinstance(rel, str) and (run_dir / rel).is_dir():
        return Path(os.path.normpath(run_dir.absolute() / rel))
    return recorded_dir


def locate(run_dir: Path, entry: dict[str, Any]) -> Any:
    """The source of a data.json file entry where it is now: relative to the run directory (a moved
    project) when its files are there, else the recorded absolute one; None when neither exists."""
    candidates = []
    if entry.get("from_run") is not None:
        base = run_dir.absolute()
        candidates.append(_rebased(entry["from_run"], lambda p: os.path.normpath(base / p)))
    candidates.append(entry.get("source", entry["path"]))
    for source in candidates:
        try:
            found = sources.source_files(source)
        except DataError:
            continue
        if found and all(f.exists() for f in found):
            return source
    return None


def reload_split(run_dir: Path, split: str | None) -> RunSplit:
    """The split of run ``run_dir`` to evaluate (:func:`choose_split`), after finding the data files that
    data.json recorded (:func:`locate`) and checking that they are unchanged (sha256)."""
    info = read_run_info(run_dir)
    name = choose_split(run_dir, info, split)
    files = info["files"]
    entry = files.get(name) or files["train"]
    source = locate(run_dir, entry)  # a path, a glob or a source mapping (absolute paths)
    try:
        digest = sources.digest(source) if source is not None else None
    except DataError:
        digest = None
    if digest is None:
        raise DataError(
            problems=[
                Problem(f"the {name} data of this run is gone; pass --data FILE", "", str(entry["path"]))
            ]
        )
    if digest != entry["sha256"]:
        raise DataError(
            problems=[
                Problem(
                    f"the file changed since training (sha256 differs), so the {name} "
                    f"split cannot be rebuilt; pass --data FILE to evaluate it anyway",
                    "",
                    str(source if isinstance(source, str) else entry["path"]),
                )
            ]
        )
    info = copy.deepcopy(info)
    info["files"][name if name in files else "train"]["source"] = source  # where the files are now
    if streaming.is_streamed(info):
        return RunSplit(name, info, None)
    table = sources.read_source(source, dialect=entry.get("csv"))
    if name not in files:
        table = table.take(np.array(info["fraction_indices"][name], dtype=np.int64))
    return RunSplit(name, info, table)
