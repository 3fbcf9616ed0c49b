"""The recipe schema: pydantic models of every key, their defaults, and the tables of names.

What a recipe may contain, and nothing else: the models are strict (unknown keys are errors) and frozen.
Checks that need more than one key, or names from other tables (layers, strategies), are in
:mod:`mtlcli.recipe.checks`; turning pydantic's errors into mtl's messages is :mod:`mtlcli.recipe.loader`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from mtlcli.weighting.registry import available, with_primary

TASK_TYPES = ("classification", "binary", "regression", "multilabel")
INPUT_KINDS = ("numeric", "categorical", "image", "array", "text")

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
#: the largest count TensorFlow holds in a shape or a step counter (int32)
INT32_MAX = 2**31 - 1
#: seeds are unsigned 32-bit (numpy, TensorFlow and Python's random all accept that range)
SEED_MAX = 2**32 - 1


def _no_bool_int(value: Any) -> Any:
    """YAML ``true`` is not the integer 1 here: a boolean where a count is expected is a mistake."""
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def _no_bool_float(value: Any) -> Any:
    """YAML ``true`` is not the number 1.0 either."""
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


#: an integer that refuses booleans; every use also bounds it (``le=INT32_MAX`` at most)
Int = Annotated[int, BeforeValidator(_no_bool_int)]
#: a finite number that refuses booleans (``1e400`` parses as inf: refused)
Float = Annotated[float, BeforeValidator(_no_bool_float), Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    """Unknown keys are errors; a loaded recipe is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class InputSpec(_Strict):
    """One model input: a CSV column or an NPZ array."""

    kind: Literal["numeric", "categorical", "image", "array", "text"]
    shape: list[Annotated[Int, Field(ge=1, le=INT32_MAX)]] | None = Field(
        None, description="image/array only: e.g. [28, 28, 1]"
    )
    column: str | None = Field(None, description="source column or array; defaults to the input name")
    missing: Literal["mean", "zero", "error"] | None = Field(None, description="numeric only (mean)")
    flag: bool = Field(False, description="numeric only: add a 0/1 'was missing' feature")
    encoding: Literal["one_hot", "embedding"] | None = Field(
        None, description="categorical only: one_hot (default) or embedding (a learned vector per value)"
    )
    dim: Int | None = Field(
        None, ge=1, le=INT32_MAX, description="categorical with encoding: embedding: vector size"
    )
    max_tokens: Int | None = Field(
        None, ge=3, le=INT32_MAX, description="text only: vocabulary size, reserved tokens included (20000)"
    )
    sequence_length: Int | None = Field(
        None,
        ge=1,
        le=INT32_MAX,
        description="text with output: int only: tokens per row, padded or cut (128)",
    )
    standardize: Literal["lower_and_strip_punctuation", "lower", "strip_punctuation", "none"] | None = Field(
        None, description="text only: lower_and_strip_punctuation (default), lower, strip_punctuation or none"
    )
    split: Literal["whitespace", "character", "none"] | None = Field(
        None, description="text only: whitespace (default), character or none"
    )
    ngrams: Int | None = Field(None, ge=1, le=16, description="text only: also n-grams up to this length")
    output: Literal["int", "multi_hot", "tf_idf"] | None = Field(
        None, description="text only: int (token ids, default), multi_hot or tf_idf (one column per token)"
    )


class TaskSpec(_Strict):
    """One task: its type, target column(s), head layers, loss, metrics and weight."""

    type: Literal["classification", "binary", "regression", "multilabel"]
    target: str | list[str] | None = None
    separator: str | None = Field(None, description="multilabel: labels in one column split on this")
    when: Any = Field(None, description="rows where the task counts: {column: c, equals: v} or a list")
    class_weight: Any = Field(None, description="balanced or {label: weight}: per-row loss weights")
    head: list[dict[str, Any] | str] = Field(default_factory=list)
    output: dict[str, Any] | None = None
    loss: str | None = None
    metrics: list[str] | None = None
    weight: Float = Field(1.0, ge=0)
    classes: Int | None = Field(None, ge=2, le=INT32_MAX)
    inputs_from: list[str] = Field(
        default_factory=list,
        description="tasks this head reads: 'click' (its output) or 'click.hidden' (its last hidden layer)",
    )
    product_of: list[str] = Field(
        default_factory=list,
        description="ESMM: binary tasks whose probabilities multiply into this one's (no head of its own)",
    )


class AdamSpec(_Strict):
    """Adam's settings (Keras names and defaults, learning rate 0.001)."""

    learning_rate: Float = Field(0.001, gt=0)
    beta_1: Float = Field(0.9, ge=0, lt=1)
    beta_2: Float = Field(0.999, ge=0, lt=1)
    epsilon: Float = Field(1e-7, gt=0)
    amsgrad: bool = False
    weight_decay: Float | None = Field(None, ge=0)
    clipnorm: Float | None = Field(None, gt=0)


class OptimizerSpec(_Strict):
    """The optimizer: Adam (``optimizer: adam`` is short for its defaults)."""

    adam: AdamSpec = Field(default_factory=AdamSpec)


class EarlyStoppingSpec(_Strict):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; optionally restore the best weights."""

    monitor: str = "val_loss"
    patience: Int = Field(10, ge=0, le=INT32_MAX)
    min_delta: Float = Field(0.0, ge=0)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best: bool = True


class TrainSpec(_Strict):
    """How to train: epochs, batch size, optimizer, weighting strategy, stopping, distribution, speed."""

    epochs: Int = Field(20, ge=1, le=INT32_MAX)
    batch_size: Int = Field(32, ge=1, le=INT32_MAX)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    weighting: Any = "static"
    primary: str | None = Field(
        None,
        description="the primary task (a task name): pcd's primary objective, the other tasks its "
        "auxiliaries; mtl evaluate and mtl compare list it first",
    )
    early_stopping: EarlyStoppingSpec | None = None
    checkpoint_every: Int | None = Field(
        None,
        ge=1,
        le=INT32_MAX,
        description="also write checkpoints/last every N steps (always at each epoch end)",
    )
    on_nan: Literal["stop", "skip_batch"] = Field(
        "stop", description="a non-finite task loss: stop the run (exit 1) or skip that batch's update"
    )
    distribute: Literal["none", "mirrored", "multi_worker"] = Field(
        "none", description="tf.distribute: mirrored (local devices) or multi_worker (TF_CONFIG cluster)"
    )
    devices: Int | None = Field(
        None,
        ge=1,
        le=INT32_MAX,
        description="local devices per process: the first N GPUs, or N logical CPU devices",
    )
    jit_compile: bool | Literal["auto"] = Field(
        "auto", description="XLA-compile the train step; auto = Keras's choice (off on CPU-only machines)"
    )
    mixed_precision: Literal["bfloat16"] | None = Field(
        None, description="compute in bfloat16 with float32 variables, outputs and losses"
    )
    tensorboard: bool = Field(
        True,
        description="write TensorBoard event files of each epoch's values into the run's tb/ "
        "(tensorboard --logdir runs/)",
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
    """Where the rows come from, how they split, and which columns are inputs."""

    # A source is a path/glob or a mapping such as {idx: ..., labels: ...} (checked in recipe_data).
    train: str | dict[str, Any]
    validation: float | str | dict[str, Any] | None = 0.2
    test: float | str | dict[str, Any] | None = None
    split: dict[str, Any] | None = Field(None, description="{column: c, train: [..], validation: [..]}")
    group_by: str | None = Field(None, description="rows sharing this column's value stay in one split")
    csv: dict[str, Any] | None = Field(
        None, description="the dialect of every CSV source: {sep: ';', encoding: latin-1, decimal: ','}"
    )
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


ARCHITECTURES = ("hard_sharing", "mmoe", "cgc", "ple", "cross_stitch", "aitm")
#: Architectures built from experts and gates (they need ``model.experts``).
EXPERT_ARCHITECTURES = ("mmoe", "cgc", "ple")


class ExpertsSpec(_Strict):
    """The experts of mmoe, cgc and ple: shared experts per level and the layers of every expert."""

    count: Int = Field(4, ge=1, le=INT32_MAX)
    layers: list[dict[str, Any] | str]


class DSelectKSpec(_Strict):
    """DSelect-k gates (Hazimeh et al., 2021): ``k`` selectors over the experts, smooth-step width ``gamma``."""

    k: Int = Field(2, ge=1, le=INT32_MAX, description="selectors: at most k experts per gate once trained")
    gamma: Float = Field(1.0, gt=0, description="width of the smooth step (smaller saturates sooner)")


class GateSpec(_Strict):
    """The gates of mmoe, cgc and ple: softmax (the default, no ``gate`` key) or DSelect-k."""

    dselect_k: DSelectKSpec


class AitmSpec(_Strict):
    """AITM (Xi et al., KDD 2021): the sequence of binary tasks information flows along, and the
    calibrator's weight (``calibrator_weight * sum_t mean(max(p_t - p_{t-1}, 0))`` joins the objective)."""

    order: list[str] = Field(description="binary tasks in funnel order, e.g. [click, purchase]")
    calibrator_weight: Float = Field(0.6, ge=0, description="weight of the calibrator penalty (0: none)")


class InitFromSpec(_Strict):
    """A warm start: layers that start from another run's saved model instead of a random init."""

    run: str = Field(
        description="the run directory (or its model.keras) to start from; relative to the recipe file"
    )
    layers: Literal["shared"] | list[str] = Field(
        "shared",
        description="shared (every shared layer, encoders included) or a list of inputs whose encoders "
        "start from the run, and trunk (model.shared)",
    )
    freeze: bool = Field(False, description="keep those layers fixed for the whole run (trainable: false)")
    freeze_epochs: Int | None = Field(
        None,
        ge=1,
        le=INT32_MAX,
        description="keep those layers fixed for the first N epochs, then train them too (Adam restarts "
        "then); instead of freeze: true",
    )


class ModelSpec(_Strict):
    """The network: the architecture, its shared layers or experts, and one head per task."""

    architecture: Literal["hard_sharing", "mmoe", "cgc", "ple", "cross_stitch", "aitm"] = "hard_sharing"
    shared: list[dict[str, Any] | str] = Field(default_factory=list)
    encoders: dict[str, list[dict[str, Any] | str]] = Field(
        default_factory=dict,
        description="per-input layers before the inputs meet: {photo: [{conv2d: {...}}, "
        "global_average_pooling2d]}; shared by every task",
    )
    fusion: Literal["concat", "sum", "attention"] = Field(
        "concat",
        description="how several inputs meet: concat (flattened and joined), sum or attention (inputs of "
        "one width attend to each other, then are averaged)",
    )
    experts: ExpertsSpec | None = None
    task_experts: Int | None = Field(
        None, ge=1, le=INT32_MAX, description="cgc/ple: experts per task (default 1)"
    )
    levels: Int | None = Field(None, ge=1, le=INT32_MAX, description="ple: extraction levels (default 2)")
    gate: GateSpec | None = Field(None, description="mmoe/cgc/ple: {dselect_k: {k: 2, gamma: 1.0}}")
    aitm: AitmSpec | None = Field(
        None, description="aitm: {order: [click, purchase], calibrator_weight: 0.6}"
    )
    tasks: dict[str, TaskSpec]
    init_from: InitFromSpec | None = Field(
        None,
        description="start layers from another run's model: {run: ../other/runs/x/3, layers: shared, "
        "freeze: false} (or freeze_epochs: N)",
    )

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
        if self.architecture in EXPERT_ARCHITECTURES and self.gate is not None:
            out["gate"] = self.gate.model_dump(mode="json")
        if self.architecture == "aitm" and self.aitm is not None:
            out["aitm"] = self.aitm.model_dump(mode="json")
        return out


class Recipe(_Strict):
    """A whole recipe: data, model, train (plus a name and a seed)."""

    name: str | None = None
    seed: Int = Field(0, ge=0, le=SEED_MAX)
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

    def model_weighting(self) -> Any:
        """``train.weighting`` as the model spec holds it: with the index of ``train.primary`` in the
        task order filled in for a strategy that needs a primary task (PCD;
        :func:`mtlcli.weighting.registry.with_primary`)."""
        if self.train.primary is None:
            return self.train.weighting
        return with_primary(self.train.weighting, self.task_names().index(self.train.primary))

    def resolved(self) -> dict[str, Any]:
        """The recipe with every default filled in (what ``resolved.yaml`` holds)."""
        out = self.model_dump(mode="json")
        for task, spec in out["model"]["tasks"].items():
            spec["target"] = self.target(task)
            spec["loss"] = self.loss(task)
            spec["metrics"] = self.metrics(task)
        for key in (
            "experts",
            "task_experts",
            "levels",
            "gate",
            "aitm",
        ):  # only those the architecture uses, filled in
            out["model"].pop(key, None)
        out["model"].update({k: v for k, v in self.model.architecture_spec().items() if k != "name"})
        if out["model"].get("fusion") == "concat":  # the default, as runs before model.fusion resolved it
            del out["model"]["fusion"]
        if out["model"].get("init_from") is None:  # unset, as runs before model.init_from resolved it
            out["model"].pop("init_from", None)
        return out


def primary_first(names, primary: str | None) -> list[str]:
    """``names`` in their order with ``primary`` (``train.primary``) moved first: the order reports list
    tasks in (unchanged when ``primary`` is None or not among them)."""
    names = list(names)
    if primary is None or primary not in names:
        return names
    return [primary] + [n for n in names if n != primary]


def json_schema() -> dict[str, Any]:
    """The recipe as a JSON Schema (for editors: completion and checks while typing).

    Made from the same pydantic models that validate recipes, plus the shorthands their validators
    accept (``a: numeric`` for an input, ``optimizer: adam``, ``early_stopping: true``) and the
    strategy names. The schema checks shapes and names; ``mtl validate`` checks everything else.
    """
    schema = Recipe.model_json_schema()
    defs = schema["$defs"]
    defs["DataSpec"]["properties"]["inputs"]["additionalProperties"] = {
        "anyOf": [{"$ref": "#/$defs/InputSpec"}, {"enum": list(INPUT_KINDS)}]
    }
    train = defs["TrainSpec"]["properties"]
    train["optimizer"] = {"anyOf": [{"$ref": "#/$defs/OptimizerSpec"}, {"enum": ["adam"]}]}
    train["early_stopping"] = {
        "anyOf": [{"$ref": "#/$defs/EarlyStoppingSpec"}, {"type": ["boolean", "null"]}]
    }
    names = available()
    train["weighting"] = {
        "description": "a strategy name, or {name: {parameters}} (mtl strategies lists them)",
        "default": "static",
        "anyOf": [
            {"enum": names},
            {"type": "object", "minProperties": 1, "maxProperties": 1, "propertyNames": {"enum": names}},
        ],
    }
    schema["title"] = "mtl recipe"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
