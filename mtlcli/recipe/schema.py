"""The recipe: schema, defaults and validation. Pure Python (pydantic + yaml), no TensorFlow.

Every problem is reported at once, each with the recipe path (``model.tasks.sex.loss``), the line in
the YAML file, what was expected and what was received, and "did you mean" for near misses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mtlcli.errors import Problem, RecipeError, did_you_mean
from mtlcli.recipe import layer_table
from mtlcli.recipe.yamlio import Located, dotted, load_file, load_text

TASK_TYPES = ("classification", "binary", "regression", "multilabel")
INPUT_KINDS = ("numeric", "categorical", "image", "array")

#: loss name -> task types it fits. The first listed per type is the default.
LOSSES: dict[str, tuple[str, ...]] = {
    "sparse_categorical_crossentropy": ("classification",),
    "binary_crossentropy": ("binary", "multilabel"),
    "binary_focal_crossentropy": ("binary", "multilabel"),
    "mse": ("regression",),
    "mae": ("regression",),
    "huber": ("regression",),
    "log_cosh": ("regression",),
}
DEFAULT_LOSS = {
    "classification": "sparse_categorical_crossentropy",
    "binary": "binary_crossentropy",
    "regression": "mse",
    "multilabel": "binary_crossentropy",
}

#: metric name -> (task types, direction). Regression metrics are reported in the target's units.
METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "accuracy": (("classification", "binary", "multilabel"), "max"),
    "crossentropy": (("classification", "binary", "multilabel"), "min"),
    "auc": (("binary", "multilabel"), "max"),
    "precision": (("binary", "multilabel"), "max"),
    "recall": (("binary", "multilabel"), "max"),
    "hamming": (("multilabel",), "min"),
    "exact_match": (("multilabel",), "max"),
    "mae": (("regression",), "min"),
    "mse": (("regression",), "min"),
    "rmse": (("regression",), "min"),
    "r2": (("regression",), "max"),
}
DEFAULT_METRICS = {
    "classification": ["accuracy"],
    "binary": ["accuracy", "auc"],
    "regression": ["mae", "rmse"],
    "multilabel": ["hamming", "auc"],
}

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class InputSpec(_Strict):
    """One model input: a CSV column or an NPZ array."""

    kind: Literal["numeric", "categorical", "image", "array"]
    shape: list[int] | None = Field(None, description="image/array only: e.g. [28, 28, 1]")
    column: str | None = Field(None, description="source column or array; defaults to the input name")
    missing: Literal["mean", "zero", "error"] | None = Field(None, description="numeric only (mean)")
    flag: bool = Field(False, description="numeric only: add a 0/1 'was missing' feature")
    encoding: Literal["one_hot", "embedding"] | None = Field(
        None, description="categorical only: one_hot (default) or embedding (a learned vector per value)"
    )
    dim: int | None = Field(None, ge=1, description="categorical with encoding: embedding: vector size")


class TaskSpec(_Strict):
    type: Literal["classification", "binary", "regression", "multilabel"]
    target: str | list[str] | None = None
    separator: str | None = Field(None, description="multilabel: labels in one column split on this")
    when: Any = Field(None, description="rows where the task counts: {column: c, equals: v} or a list")
    class_weight: Any = Field(None, description="balanced or {label: weight}: per-row loss weights")
    head: list[dict[str, Any] | str] = Field(default_factory=list)
    output: dict[str, Any] | None = None
    loss: str | None = None
    metrics: list[str] | None = None
    weight: float = Field(1.0, ge=0)
    classes: int | None = Field(None, ge=2)
    inputs_from: list[str] = Field(
        default_factory=list,
        description="tasks this head reads: 'click' (its output) or 'click.hidden' (its last hidden layer)",
    )


class AdamSpec(_Strict):
    learning_rate: float = Field(0.001, gt=0)
    beta_1: float = Field(0.9, ge=0, lt=1)
    beta_2: float = Field(0.999, ge=0, lt=1)
    epsilon: float = Field(1e-7, gt=0)
    amsgrad: bool = False
    weight_decay: float | None = Field(None, ge=0)
    clipnorm: float | None = Field(None, gt=0)


class OptimizerSpec(_Strict):
    adam: AdamSpec = Field(default_factory=AdamSpec)


class EarlyStoppingSpec(_Strict):
    monitor: str = "val_loss"
    patience: int = Field(10, ge=0)
    min_delta: float = Field(0.0, ge=0)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best: bool = True


class TrainSpec(_Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    weighting: Any = "static"
    early_stopping: EarlyStoppingSpec | None = None
    checkpoint_every: int | None = Field(
        None, ge=1, description="also write checkpoints/last every N steps (always at each epoch end)"
    )
    on_nan: Literal["stop", "skip_batch"] = Field(
        "stop", description="a non-finite task loss: stop the run (exit 1) or skip that batch's update"
    )
    distribute: Literal["none", "mirrored", "multi_worker"] = Field(
        "none", description="tf.distribute: mirrored (local devices) or multi_worker (TF_CONFIG cluster)"
    )
    devices: int | None = Field(
        None, ge=1, description="local devices per process: the first N GPUs, or N logical CPU devices"
    )
    jit_compile: bool | Literal["auto"] = Field(
        "auto", description="XLA-compile the train step; auto = Keras's choice (off on CPU-only machines)"
    )
    mixed_precision: Literal["bfloat16"] | None = Field(
        None, description="compute in bfloat16 with float32 variables, outputs and losses"
    )

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_name(cls, value):
        return {value: {}} if isinstance(value, str) else value

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _early_stopping_bool(cls, value):
        if value is True:
            return {}
        return None if value is False else value


class DataSpec(_Strict):
    # A source is a path/glob or a mapping such as {idx: ..., labels: ...} (checked in recipe_data).
    train: str | dict[str, Any]
    validation: float | str | dict[str, Any] | None = 0.2
    test: float | str | dict[str, Any] | None = None
    split: dict[str, Any] | None = Field(None, description="{column: c, train: [..], validation: [..]}")
    group_by: str | None = Field(None, description="rows sharing this column's value stay in one split")
    inputs: dict[str, InputSpec]
    stream: Any = Field(
        None,
        description="true | false | {chunk_rows, shuffle_buffer}; default: stream a train file over 1 GiB",
    )

    @field_validator("inputs", mode="before")
    @classmethod
    def _input_shorthand(cls, value):
        if isinstance(value, dict):
            return {k: {"kind": v} if isinstance(v, str) else v for k, v in value.items()}
        return value


ARCHITECTURES = ("hard_sharing", "mmoe", "cgc", "ple", "cross_stitch")
#: Architectures built from experts and gates (they need ``model.experts``).
EXPERT_ARCHITECTURES = ("mmoe", "cgc", "ple")


class ExpertsSpec(_Strict):
    """The experts of mmoe, cgc and ple: shared experts per level and the layers of every expert."""

    count: int = Field(4, ge=1)
    layers: list[dict[str, Any] | str]


class ModelSpec(_Strict):
    architecture: Literal["hard_sharing", "mmoe", "cgc", "ple", "cross_stitch"] = "hard_sharing"
    shared: list[dict[str, Any] | str] = Field(default_factory=list)
    experts: ExpertsSpec | None = None
    task_experts: int | None = Field(None, ge=1, description="cgc/ple: experts per task (default 1)")
    levels: int | None = Field(None, ge=1, description="ple: extraction levels (default 2)")
    tasks: dict[str, TaskSpec]

    def architecture_spec(self) -> dict[str, Any]:
        """``{"name": ..., "experts": ..., "task_experts": ..., "levels": ...}`` with defaults filled in,
        holding only the keys the architecture uses (the model spec's ``architecture`` entry)."""
        out: dict[str, Any] = {"name": self.architecture}
        if self.architecture in EXPERT_ARCHITECTURES and self.experts is not None:
            out["experts"] = {"count": self.experts.count, "layers": list(self.experts.layers)}
        if self.architecture in ("cgc", "ple"):
            out["task_experts"] = self.task_experts or 1
        if self.architecture == "ple":
            out["levels"] = self.levels or 2
        return out


class Recipe(_Strict):
    name: str | None = None
    seed: int = 0
    data: DataSpec
    model: ModelSpec
    train: TrainSpec = Field(default_factory=TrainSpec)

    # -- derived values (not part of the schema) ------------------------------------------------
    def task_names(self) -> list[str]:
        return list(self.model.tasks)

    def target(self, task: str) -> str:
        return self.model.tasks[task].target or task

    def loss(self, task: str) -> str:
        spec = self.model.tasks[task]
        return spec.loss or DEFAULT_LOSS[spec.type]

    def metrics(self, task: str) -> list[str]:
        spec = self.model.tasks[task]
        return list(spec.metrics if spec.metrics is not None else DEFAULT_METRICS[spec.type])

    def column(self, input_name: str) -> str:
        return self.data.inputs[input_name].column or input_name

    def resolved(self) -> dict[str, Any]:
        """The recipe with every default filled in (what ``resolved.yaml`` holds)."""
        out = self.model_dump(mode="json")
        for task, spec in out["model"]["tasks"].items():
            spec["target"] = self.target(task)
            spec["loss"] = self.loss(task)
            spec["metrics"] = self.metrics(task)
        for key in ("experts", "task_experts", "levels"):  # only those the architecture uses, filled in
            out["model"].pop(key, None)
        out["model"].update({k: v for k, v in self.model.architecture_spec().items() if k != "name"})
        return out


# ------------------------------------------------------------------------------------------------
# Loading


class LoadedRecipe:
    """A validated recipe plus where it came from (for data paths and error lines)."""

    def __init__(self, recipe: Recipe, source: Located, path: Path | None):
        self.recipe = recipe
        self.source = source
        self.path = path
        self.base_dir = path.parent if path else Path.cwd()
        self.name = recipe.name or (path.stem if path else "recipe")

    def problem(self, message: str, path: tuple) -> Problem:
        return Problem(message, dotted(path), self.source.file, self.source.line(path))

    def resolve_path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


def load(path: str | Path) -> LoadedRecipe:
    path = Path(path)
    return from_located(load_file(path), path)


def loads(text: str, file: str = "<recipe>", base_dir: Path | None = None) -> LoadedRecipe:
    located = load_text(text, file)
    loaded = from_located(located, None)
    if base_dir is not None:
        loaded.base_dir = base_dir
    return loaded


def from_located(src: Located, path: Path | None) -> LoadedRecipe:
    data = src.data
    if data is None:
        raise RecipeError(
            problems=[
                Problem("the recipe is empty; expected a mapping with data, model, train", "", src.file, 1)
            ]
        )
    if not isinstance(data, dict):
        raise RecipeError(
            problems=[
                Problem(f"expected a mapping at the top level, received {_kind(data)}", "", src.file, 1)
            ]
        )
    problems: list[Problem] = []
    recipe = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, src))
    problems.extend(_semantic_problems(data, src))
    # One message per location: keep the first for each path+message pair.
    seen, unique = set(), []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            unique.append(p)
    if unique:
        unique.sort(key=lambda p: (p.line or 0, p.path))
        raise RecipeError(problems=unique)
    assert recipe is not None
    return LoadedRecipe(recipe, src, path)


# ------------------------------------------------------------------------------------------------
# Error translation


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"text ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_EXPECT = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}

# Fields of each schema model, to suggest the right key for an unknown one.
_MODELS_BY_PATH: list[tuple[tuple, type[BaseModel]]] = [
    ((), Recipe),
    (("data",), DataSpec),
    (("data", "inputs", "*"), InputSpec),
    (("model",), ModelSpec),
    (("model", "experts"), ExpertsSpec),
    (("model", "tasks", "*"), TaskSpec),
    (("train",), TrainSpec),
    (("train", "optimizer"), OptimizerSpec),
    (("train", "optimizer", "adam"), AdamSpec),
    (("train", "early_stopping"), EarlyStoppingSpec),
]


def _fields_at(path: tuple) -> list[str]:
    for pattern, model in _MODELS_BY_PATH:
        if len(pattern) == len(path) and all(p == "*" or p == q for p, q in zip(pattern, path, strict=True)):
            return list(model.model_fields)
    return []


def _pydantic_problems(exc: ValidationError, src: Located) -> list[Problem]:
    out = []
    unions: dict[tuple, list] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # Union members report as an extra loc element such as 'float' or 'str': group them.
        clean = tuple(
            p
            for p in loc
            if not (
                isinstance(p, str)
                and (p in {"float", "str", "int", "bool"} or p.startswith(("function-", "dict[", "list[")))
            )
        )
        if clean != loc:
            unions.setdefault(clean, []).append(err)
            continue
        out.append(_one_problem(err, loc, src))
    for loc, errs in unions.items():
        value = errs[0].get("input")
        expected = " or ".join(dict.fromkeys(_EXPECT.get(e["type"], e["msg"].lower()) for e in errs))
        if any(e["type"] == "float_type" for e in errs) and any(e["type"] == "string_type" for e in errs):
            expected = "a number or a path"
        if any(e["type"] == "none_required" for e in errs):
            expected += " or null"
        out.append(
            Problem(f"expected {expected}, received {_kind(value)}", dotted(loc), src.file, src.line(loc))
        )
    return out


def _one_problem(err: dict, loc: tuple, src: Located) -> Problem:
    kind, value = err["type"], err.get("input")
    line = src.line(loc)
    if kind == "extra_forbidden":
        key = loc[-1]
        fields = _fields_at(loc[:-1])
        hint = did_you_mean(key, fields) or (f"; expected one of: {', '.join(fields)}" if fields else "")
        return Problem(f"unknown key {key!r}{hint}", dotted(loc), src.file, line)
    if kind == "missing":
        return Problem("required key is missing", dotted(loc), src.file, src.line(loc[:-1]))
    if kind in ("literal_error", "enum"):
        choices = err.get("ctx", {}).get("expected", "")
        options = re.findall(r"'([^']*)'", choices)
        return Problem(
            f"expected one of {', '.join(options)}; received {_kind(value)}{did_you_mean(value, options)}",
            dotted(loc),
            src.file,
            line,
        )
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        ctx = err.get("ctx", {})
        bound = {
            "greater_than": "> {gt}",
            "greater_than_equal": ">= {ge}",
            "less_than": "< {lt}",
            "less_than_equal": "<= {le}",
        }[kind].format(**ctx)
        return Problem(f"expected a value {bound}, received {value!r}", dotted(loc), src.file, line)
    expected = _EXPECT.get(kind)
    if expected:
        return Problem(f"expected {expected}, received {_kind(value)}", dotted(loc), src.file, line)
    return Problem(f"{err['msg']}, received {_kind(value)}", dotted(loc), src.file, line)


# ------------------------------------------------------------------------------------------------
# Checks the schema cannot express (names of layers, losses, metrics, strategies, monitors)


def _semantic_problems(data: dict, src: Located) -> list[Problem]:
    out: list[Problem] = []

    def add(message: str, path: tuple) -> None:
        out.append(Problem(message, dotted(path), src.file, src.line(path)))

    name = data.get("name")
    if isinstance(name, str) and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
        add(f"expected a run name of letters, digits, '_', '-' or '.', received {name!r}", ("name",))

    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    shared = model.get("shared")
    if isinstance(shared, list):
        out.extend(layer_problems(shared, ("model", "shared"), src))
    tasks = model.get("tasks")
    if isinstance(tasks, dict):
        if not tasks:
            add("expected at least one task", ("model", "tasks"))
        for task, spec in tasks.items():
            if not NAME_RE.match(str(task)):
                add(
                    f"task names must start with a letter and use letters, digits and '_', received {task!r}",
                    ("model", "tasks", task),
                )
            if isinstance(spec, dict):
                out.extend(_task_problems(str(task), spec, src))
    elif "tasks" in model and tasks is not None and not isinstance(tasks, dict):
        pass  # pydantic reports the type
    out.extend(architecture_problems(model, src))

    data_spec = data.get("data") if isinstance(data.get("data"), dict) else {}
    for key in ("validation", "test"):
        value = data_spec.get(key)
        if isinstance(value, bool):
            add(
                f"expected a fraction between 0 and 1 (exclusive) or a path, received a boolean "
                f"({str(value).lower()})",
                ("data", key),
            )
        elif isinstance(value, float | int) and not 0 < value < 1:
            add(
                f"expected a fraction between 0 and 1 (exclusive) or a path, received {value!r}",
                ("data", key),
            )
    from mtlcli.recipe.data_checks import data_problems  # data: sources, splits, inputs, when, class_weight

    out.extend(data_problems(data_spec, tasks if isinstance(tasks, dict) else {}, src))

    train = data.get("train") if isinstance(data.get("train"), dict) else {}
    if "weighting" in train:
        from mtlcli.weighting.registry import check

        for problem in check(train["weighting"]):
            add(problem.message, ("train", "weighting", *problem.path))
    if train.get("devices") is not None and train.get("distribute", "none") in ("none", None):
        add(
            "devices applies to distributed training only: expected train.distribute mirrored or "
            "multi_worker, received none",
            ("train", "devices"),
        )
    if train.get("on_nan") == "skip_batch" and train.get("distribute") in ("mirrored", "multi_worker"):
        add(
            f"skip_batch is not available with train.distribute {train['distribute']} (the replicas' "
            f"update cannot be skipped conditionally): expected stop",
            ("train", "on_nan"),
        )
    stopping = train.get("early_stopping")
    if isinstance(stopping, dict) and isinstance(stopping.get("monitor"), str) and isinstance(tasks, dict):
        names = monitor_names(tasks)
        if stopping["monitor"] not in names:
            add(
                f"unknown metric {stopping['monitor']!r}{did_you_mean(stopping['monitor'], names)} "
                f"(available: {', '.join(names)})",
                ("train", "early_stopping", "monitor"),
            )
    return out


#: what ``inputs_from`` reads of another task besides its output: ``click.hidden`` is click's last hidden
#: layer (the input of its output layer)
DEPENDENCY_LAYERS = ("hidden",)


def dependencies(inputs_from: list[str] | None) -> list[tuple[str, str]]:
    """``["click", "view.hidden"]`` -> ``[("click", "output"), ("view", "hidden")]`` (the recipe check
    has refused anything else)."""
    out = []
    for dep in inputs_from or []:
        task, _, layer = str(dep).partition(".")
        out.append((task, layer or "output"))
    return out


def architecture_problems(model: dict, src: Located) -> list[Problem]:
    """``model.architecture`` with the keys it uses (experts, task_experts, levels) and ``inputs_from``."""
    out: list[Problem] = []

    def add(message: str, path: tuple) -> None:
        out.append(Problem(message, dotted(path), src.file, src.line(path)))

    arch = model.get("architecture", "hard_sharing")
    arch = arch if isinstance(arch, str) and arch in ARCHITECTURES else None  # else pydantic reports it
    tasks = model.get("tasks") if isinstance(model.get("tasks"), dict) else {}
    experts = model.get("experts")
    if arch is not None:
        if arch in EXPERT_ARCHITECTURES and experts is None:
            add(
                f"the {arch} architecture needs model.experts, e.g. "
                f"experts: {{count: 4, layers: [{{dense: {{units: 64, activation: relu}}}}]}}",
                ("model", "architecture"),
            )
        if arch not in EXPERT_ARCHITECTURES and "experts" in model:
            add(
                f"experts apply to the mmoe, cgc and ple architectures only; the architecture is {arch!r}",
                ("model", "experts"),
            )
        if arch not in ("cgc", "ple") and "task_experts" in model:
            add(
                f"task_experts applies to the cgc and ple architectures only; the architecture is {arch!r}",
                ("model", "task_experts"),
            )
        if arch != "ple" and "levels" in model:
            add(
                f"levels applies to the ple architecture only; the architecture is {arch!r}",
                ("model", "levels"),
            )
        if arch == "cross_stitch":
            if not model.get("shared"):
                where = ("model", "shared") if "shared" in model else ("model", "architecture")
                out.append(
                    Problem(
                        "cross_stitch replicates model.shared once per task: expected at least one layer",
                        "model.shared",
                        src.file,
                        src.line(where),
                    )
                )
            if len(tasks) == 1:
                add(
                    "cross_stitch mixes one column per task: expected at least two tasks, received 1",
                    ("model", "tasks"),
                )
    if isinstance(experts, dict) and isinstance(experts.get("layers"), list):
        if not experts["layers"]:
            add("expected at least one layer in each expert", ("model", "experts", "layers"))
        out.extend(layer_problems(experts["layers"], ("model", "experts", "layers"), src))

    graph: dict[str, list[str]] = {}
    for task, spec in tasks.items():
        deps = spec.get("inputs_from") if isinstance(spec, dict) else None
        if not isinstance(deps, list):
            continue
        graph[task], listed = [], set()
        for i, dep in enumerate(deps):
            if not isinstance(dep, str):
                continue  # pydantic reports the type
            at = ("model", "tasks", task, "inputs_from", i)
            name, dot, layer = dep.partition(".")
            if name == task:
                add(f"task {task!r} cannot read its own {'hidden layer' if dot else 'output'}", at)
            elif name not in tasks:
                others = [t for t in tasks if t != task]
                add(
                    f"unknown task {name!r}{did_you_mean(name, others)} (tasks: {', '.join(map(str, tasks))})",
                    at,
                )
            elif dot and layer not in DEPENDENCY_LAYERS:
                add(
                    f"expected {name} (its output) or {name}.hidden (its last hidden layer), received "
                    f"{dep!r}{did_you_mean(dep, [f'{name}.{x}' for x in DEPENDENCY_LAYERS])}",
                    at,
                )
            elif (name, layer) in listed:
                add(f"task {name!r} is listed twice" if not dot else f"{dep!r} is listed twice", at)
            else:
                listed.add((name, layer))
                if name not in graph[task]:
                    graph[task].append(name)
    for cycle in _cycles(graph):
        add(
            f"tasks read each other's outputs in a cycle: {' -> '.join(cycle)}",
            ("model", "tasks", cycle[0], "inputs_from"),
        )
    return out


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each cycle of ``task -> tasks it reads`` once, as ``[a, b, a]`` starting at its first task."""
    found: list[list[str]] = []
    seen_sets: set[frozenset] = set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :]
                if frozenset(cycle) not in seen_sets:
                    seen_sets.add(frozenset(cycle))
                    found.append([*cycle, dep])
            elif state.get(dep) is None:
                visit(dep, path)
        path.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
    return found


def _task_problems(task: str, spec: dict, src: Located) -> list[Problem]:
    out: list[Problem] = []
    base = ("model", "tasks", task)

    def add(message: str, path: tuple) -> None:
        out.append(Problem(message, dotted(path), src.file, src.line(path)))

    ttype = spec.get("type")
    if isinstance(spec.get("head"), list):
        out.extend(layer_problems(spec["head"], (*base, "head"), src))
    if isinstance(spec.get("output"), dict):
        out.extend(layer_problems([spec["output"]], (*base, "output"), src, single=True))
    if ttype not in TASK_TYPES:
        return out
    loss = spec.get("loss")
    if isinstance(loss, str):
        fits = [name for name, types in LOSSES.items() if ttype in types]
        if loss not in LOSSES:
            add(
                f"unknown loss {loss!r}{did_you_mean(loss, LOSSES)} (for {ttype}: {', '.join(fits)})",
                (*base, "loss"),
            )
        elif ttype not in LOSSES[loss]:
            add(
                f"loss {loss!r} does not fit a {ttype} task; expected one of {', '.join(fits)}",
                (*base, "loss"),
            )
    metrics = spec.get("metrics")
    if isinstance(metrics, list):
        fits = [name for name, (types, _) in METRICS.items() if ttype in types]
        for i, metric in enumerate(metrics):
            if not isinstance(metric, str):
                continue
            if metric not in METRICS:
                add(
                    f"unknown metric {metric!r}{did_you_mean(metric, METRICS)} (for {ttype}: {', '.join(fits)})",
                    (*base, "metrics", i),
                )
            elif ttype not in METRICS[metric][0]:
                add(
                    f"metric {metric!r} does not fit a {ttype} task; expected one of {', '.join(fits)}",
                    (*base, "metrics", i),
                )
        if len(set(m for m in metrics if isinstance(m, str))) != len(metrics):
            add("a metric is listed twice", (*base, "metrics"))
    if ttype == "binary" and isinstance(spec.get("classes"), int) and spec["classes"] != 2:
        add(f"a binary task has 2 classes, received classes: {spec['classes']}", (*base, "classes"))
    return out


def layer_problems(layers: list, path: tuple, src: Located, single: bool = False) -> list[Problem]:
    """Check ``[{dense: {units: 8}}, ...]`` against the Keras layer table (no TensorFlow)."""
    out: list[Problem] = []
    known = layer_table.table()
    for i, item in enumerate(layers):
        at = path if single else (*path, i)

        def add(message: str, where: tuple = at) -> None:
            out.append(Problem(message, dotted(where), src.file, src.line(where)))

        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            add(
                f"expected one layer written as {{name: {{arguments}}}}, e.g. {{dense: {{units: 32}}}}; "
                f"received {_kind(item)}"
            )
            continue
        ((name, kwargs),) = item.items()
        if name not in known:
            hint = did_you_mean(name, known)
            if name == "lambda":
                hint = "; Lambda layers are not allowed (they would run code from a recipe)"
            add(f"unknown layer {name!r}{hint}", (*at, name))
            continue
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            add(f"expected the layer's arguments as a mapping, received {_kind(kwargs)}", (*at, name))
            continue
        params = known[name]["params"]
        for key in kwargs:
            if key not in params:
                add(
                    f"{known[name]['class']} has no argument {key!r}{did_you_mean(key, params)}",
                    (*at, name, key),
                )
        for key in known[name]["required"]:
            if key not in kwargs:
                add(f"{known[name]['class']} needs the argument {key!r}", (*at, name))
    return out


def monitor_names(tasks: dict) -> list[str]:
    """Every metric name training logs for ``tasks`` (usable as ``early_stopping.monitor``)."""
    names = ["loss"]
    for task, spec in tasks.items():
        names.append(f"{task}_loss")
        ttype = spec.get("type") if isinstance(spec, dict) else getattr(spec, "type", None)
        metrics = spec.get("metrics") if isinstance(spec, dict) else getattr(spec, "metrics", None)
        if metrics is None:
            metrics = DEFAULT_METRICS.get(ttype, [])
        names.extend(f"{task}_{m}" for m in metrics if isinstance(m, str) and m in METRICS)
    return names + [f"val_{n}" for n in names]


def monitor_mode(name: str) -> str:
    """``min`` or ``max`` for a logged metric name (Keras cannot infer it for per-task names)."""
    for metric, (_, direction) in METRICS.items():
        if name.endswith(f"_{metric}") and not name.endswith("_loss"):
            return direction
    return "min"
