"""Fitted preprocessing: statistics over the training split (:func:`fit`), and raw tables -> model arrays
(:func:`transform`). numpy + pandas; TensorFlow only when model inputs are first asked for.

Both go through the per-kind accumulators of :mod:`mtlcli.data.inputs` and :mod:`mtlcli.data.targets`:
in memory the table is one chunk; :mod:`mtlcli.data.stream` feeds the same classes chunk by chunk. The
result, :class:`Preprocessing`, is plain JSON-able data saved inside the model, so a saved run evaluates
new raw data without the recipe.

:class:`Arrays` holds a split's checked *raw* features; its model inputs ``x`` are computed on first use
by the TensorFlow transform (:mod:`mtlcli.data.layers`), once for the whole table. So ``mtl validate``
checks every value without importing TensorFlow, and the arithmetic exists once, in TensorFlow, where a
saved model can reuse it for serving.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mtlcli.data import inputs as input_kinds
from mtlcli.data import targets as task_types
from mtlcli.data.inputs import InputStats, missing_error
from mtlcli.data.sources import Table
from mtlcli.data.targets import NoKeeper, TargetStats
from mtlcli.data.values import capped, structural, when_mask
from mtlcli.errors import DataError, Problem, did_you_mean
from mtlcli.recipe import LoadedRecipe, Recipe


def weight_key(task: str) -> str:
    """The key of a task's per-row loss weights in the mask dict fed to the model."""
    return f"{task}.weight"


@dataclass
class Preprocessing:
    """Everything needed to turn raw columns into model arrays (saved inside the model)."""

    inputs: dict[str, InputStats]
    targets: dict[str, TargetStats]

    def to_dict(self) -> dict:
        return {
            "inputs": {k: asdict(v) for k, v in self.inputs.items()},
            "targets": {k: asdict(v) for k, v in self.targets.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            {k: InputStats(**v) for k, v in data["inputs"].items()},
            {k: TargetStats(**v) for k, v in data["targets"].items()},
        )

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of one row of every model input."""
        return {k: s.model_shape for k, s in self.inputs.items()}

    def embeddings(self) -> dict[str, tuple[int, int]]:
        """(rows, dim) of every categorical input the model embeds (``encoding: embedding``)."""
        return {k: s.embedding for k, s in self.inputs.items() if s.embedding is not None}


def fit(recipe: Recipe, train: Table, loaded: LoadedRecipe | None = None) -> Preprocessing:
    """Fit input statistics and target encodings on the training split (one chunk)."""
    problems: list[Problem] = []
    prep = fit_checked(recipe, train, loaded, problems)
    if problems:
        raise DataError(problems=capped(problems))
    return prep


def fit_checked(
    recipe: Recipe, train: Table, loaded: LoadedRecipe | None, problems: list[Problem]
) -> Preprocessing:
    """:func:`fit` that adds its problems to ``problems``: bad cells do not stop it (the statistics leave
    them out), so the caller can go on checking the other splits and report every bad cell at once."""
    inputs: dict[str, InputStats] = {}
    for name, spec in recipe.data.inputs.items():
        values = train.columns[spec.column or name]
        acc = input_kinds.fitter(name, spec, values)
        acc.fit(values, train, problems)
        st = acc.stats()
        if st is not None:
            inputs[name] = st
    targets: dict[str, TargetStats] = {}
    for task, spec in recipe.model.tasks.items():
        acc = task_types.target(task, spec, loaded)
        before = len(problems)
        active = when_mask(acc.when, train, task, problems)
        if not structural(problems[before:]):
            acc.add(train, active, problems, True, NoKeeper())
        if not structural(problems[before:]):
            st = acc.fit(train, active, problems)
            if st is not None:
                targets[task] = st
    return Preprocessing(inputs, targets)


@dataclass
class Arrays:
    """Model-ready data for one split: raw (checked) features, targets, masks, class weights."""

    raw: dict[str, np.ndarray]  # per input, as :mod:`mtlcli.data.inputs` encodes it
    y: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]  # 1.0 where the task's label is present (and its when: holds)
    n: int
    weight: dict[str, np.ndarray] = field(default_factory=dict)  # per-row loss weights (class_weight)
    inputs: dict[str, InputStats] = field(default_factory=dict)
    cached: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)  # x, once computed

    @property
    def images(self) -> dict[str, dict]:
        """Inputs holding image file paths (decoded in the pipeline): their shape and scale."""
        return {k: {"shape": list(s.shape), "scale": s.scale} for k, s in self.inputs.items() if s.files}

    @property
    def x(self) -> dict[str, np.ndarray]:
        """The model inputs (imports TensorFlow on first use): the TensorFlow transform of the whole
        table at once; image files stay paths."""
        if self.cached is None:
            from mtlcli.data import layers

            self.cached = layers.transform_features(self.inputs, self.raw) if self.raw else {}
        return self.cached

    def support(self) -> dict[str, int]:
        return {t: int(m.sum()) for t, m in self.mask.items()}

    def feed(self) -> tuple[dict, dict, dict]:
        """The ``(x, y, mask)`` dicts the model consumes; class weights ride in the mask dict."""
        return self.x, self.y, self.masks()

    def masks(self) -> dict[str, np.ndarray]:
        mask = dict(self.mask)
        mask.update({weight_key(t): w for t, w in self.weight.items()})
        return mask


def encode_inputs(
    prep: Preprocessing, table: Table, problems: list[Problem], tally: dict | None = None
) -> dict:
    """The checked raw features of a table (see :mod:`mtlcli.data.inputs`). Missing values of
    ``missing: error`` inputs add up in ``tally`` over a split's chunks (streamed: the caller reports
    them once); without one, each is reported with the input's other problems."""
    raw: dict[str, np.ndarray] = {}
    for name, st in prep.inputs.items():
        if st.column not in table.columns:
            problems.append(
                Problem(
                    f"input column {st.column!r} not found{did_you_mean(st.column, table.columns)}",
                    "",
                    table.file,
                )
            )
            continue
        own = {} if tally is None else tally
        raw[name] = input_kinds.encoder(st)(st, table.columns[st.column], table, problems, own)
        if tally is None:
            problems.extend(missing_error(column, *entry) for column, entry in own.items())
    return raw


def encode_targets(prep: Preprocessing, table: Table, tasks, weights: bool, problems: list[Problem]):
    """``(y, mask, weight)`` dicts of a table's labels."""
    y: dict[str, np.ndarray] = {}
    mask: dict[str, np.ndarray] = {}
    sample_weight: dict[str, np.ndarray] = {}
    for task, st in prep.targets.items():
        if tasks is not None and task not in tasks:
            continue
        lacking = [c for c in st.columns if c not in table.columns]
        if lacking:
            problems.append(
                Problem(
                    f"target column {lacking[0]!r} of task {task!r} not found"
                    f"{did_you_mean(lacking[0], table.columns)}",
                    "",
                    table.file,
                )
            )
            continue
        before = len(problems)
        active = when_mask(st.when, table, task, problems)
        if len(problems) > before:
            continue
        y[task], mask[task], w = task_types.encoder(st)(st, table, active, problems)
        if weights and w is not None:
            sample_weight[task] = w
    return y, mask, sample_weight


def transform(
    prep: Preprocessing, table: Table, tasks: list[str] | None = None, weights: bool = False
) -> Arrays:
    """Apply fitted preprocessing to a table (one chunk). Labels unseen in training are errors.
    ``weights`` adds the class weights of tasks that have them (the training split)."""
    problems: list[Problem] = []
    raw = encode_inputs(prep, table, problems)
    y, mask, sample_weight = encode_targets(prep, table, tasks, weights, problems)
    if problems:
        raise DataError(problems=capped(problems))
    return Arrays(raw, y, mask, table.n_rows, sample_weight, dict(prep.inputs))


@dataclass
class Prepared:
    """A recipe's prepared data: the fitted preprocessing, every split, and what data.json records."""

    prep: Preprocessing
    splits: dict[str, Any]  # Arrays in memory, mtlcli.data.stream.StreamSplit when streamed
    info: dict[str, Any]  # what data.json records: files, digests, sizes, split indices, coverage
