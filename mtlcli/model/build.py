"""Recipe -> compiled Keras model: the model spec, the build under the recipe's dtype policy, Adam.

:func:`build_model` is what ``mtl train`` and ``mtl plan`` call; :func:`spec_from_recipe` is the
JSON-able spec the saved model carries (its whole config). Importing this module imports TensorFlow and
registers every custom Keras object of :mod:`mtlcli.model`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import keras

from mtlcli.errors import RecipeError
from mtlcli.model import backbones, freezing, size, warmstart
from mtlcli.model.encoders import encoder_specs
from mtlcli.model.network import dtype_policy
from mtlcli.model.train_step import MultiTaskModel

if TYPE_CHECKING:
    from mtlcli.data.preprocess import Prepared
    from mtlcli.recipe import LoadedRecipe


def build_model(
    loaded: LoadedRecipe, prepared: Prepared, seed: int, warm_start: bool = True
) -> MultiTaskModel:
    """Build and compile the Keras model for a recipe (imports TensorFlow). A model whose weights
    cannot fit in memory is refused before any variable exists (:func:`mtlcli.model.size.check`).

    ``model.init_from``: its layers are frozen before the build (``freeze: true``; ``freeze_epochs``
    freezes them after the build and the optimizer's, :mod:`mtlcli.model.freezing`) and, with
    ``warm_start`` (False for a resume or a fork: the checkpoint holds the weights), start from the
    source run's weights; the source's record goes into ``prepared.info["init_from"]`` (data.json)."""
    recipe = loaded.recipe
    size.check(loaded, prepared.prep)
    init = recipe.model.init_from
    if init is not None and warm_start:
        warmstart.source_model_path(loaded)  # a missing run or model: refused before the build
    _check_token_ids(loaded, prepared.prep)
    spec = backbones.resolve_weights(spec_from_recipe(recipe, prepared.prep, seed), loaded.resolve_path)
    spec["name"] = loaded.name
    # Layers take the dtype policy in force when they are created (and save it in their config), so
    # the mixed policy is set only while the model is built. Outputs and losses stay float32.
    try:
        with dtype_policy(recipe.train.mixed_precision):
            model = MultiTaskModel(spec, name="mtl_model")
            if init is not None and init.freeze:
                warmstart.freeze(model, init.layers)
            model.build()
            if warm_start:  # a resume or a fork: the checkpoint holds the backbones' weights too
                backbones.load_weights(model)
    except (ValueError, TypeError) as exc:
        raise _layer_error(loaded, exc) from None
    if init is not None and warm_start:
        prepared.info["init_from"] = warmstart.initialise(model, loaded)
    adam = recipe.train.optimizer.adam
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=adam.learning_rate,
            beta_1=adam.beta_1,
            beta_2=adam.beta_2,
            epsilon=adam.epsilon,
            amsgrad=adam.amsgrad,
            weight_decay=adam.weight_decay,
            clipnorm=adam.clipnorm,
        ),
        jit_compile=recipe.train.jit_compile,
    )
    if model.freeze_schedule is not None:  # the optimizer knows every variable, then the layers freeze
        model.optimizer.build(model.trainable_variables)
        model.freeze_schedule.start(model)
    return model


def _layer_error(loaded: LoadedRecipe, exc: Exception) -> RecipeError:
    """A Keras error while building layers is a recipe mistake (bad argument value or shapes)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RecipeError(problems=[loaded.problem(f"the model cannot be built: {msg}", ("model",))])


def _check_token_ids(loaded: LoadedRecipe, prep) -> None:
    """An ``embedding`` that reads a text input's ids needs a row for every id (the recipe check has
    already put it first in ``model.shared``)."""
    rows = [st.token_ids for st in prep.inputs.values() if st.token_ids is not None]
    shared = list(loaded.recipe.model.shared)
    if not rows or not shared or not isinstance(shared[0], dict):
        return
    given = (shared[0].get("embedding") or {}).get("input_dim")
    if isinstance(given, int) and given < rows[0]:
        raise RecipeError(
            problems=[
                loaded.problem(
                    f"the embedding reads the text input's {rows[0]} token ids (the vocabulary, padding "
                    f"and unknown), received input_dim: {given}; leave input_dim out to use the vocabulary "
                    f"size",
                    ("model", "shared", 0, "embedding", "input_dim"),
                )
            ]
        )


def shared_layers(recipe, prep) -> list:
    """``model.shared``, with the ``input_dim`` of an embedding that reads a text input's token ids
    filled in from the vocabulary when the recipe leaves it out."""
    shared = list(recipe.model.shared)
    rows = [st.token_ids for st in prep.inputs.values() if st.token_ids is not None]
    if rows and shared:
        first = {shared[0]: {}} if isinstance(shared[0], str) else shared[0]
        if "embedding" in first:
            kwargs = dict(first["embedding"] or {})
            kwargs.setdefault("input_dim", rows[0])
            shared[0] = {"embedding": kwargs}
    return shared


def spec_from_recipe(recipe, prep, seed: int) -> dict[str, Any]:
    """The JSON-able model spec: everything needed to rebuild and evaluate the model."""
    tasks = {}
    for task, t in recipe.model.tasks.items():
        target = prep.targets[task]
        tasks[task] = {
            "type": t.type,
            "head": list(t.head),
            "output": t.output,
            "units": target.units,
            "loss": recipe.loss(task),
            "metrics": recipe.metrics(task),
            "weight": float(t.weight),
            "inputs_from": list(t.inputs_from),
        }
        if t.product_of:
            tasks[task]["product_of"] = list(t.product_of)
    prep_dict = prep.to_dict()
    shapes = {k: list(v) for k, v in prep.input_shapes().items()}
    return {
        "format": 1,
        "name": recipe.name,
        "seed": int(seed),
        "inputs": {k: st.kind for k, st in prep.inputs.items()},
        "input_shapes": shapes,
        "shared": shared_layers(recipe, prep),
        "encoders": encoder_specs(recipe, prep),
        "fusion": recipe.model.fusion,
        "architecture": recipe.model.architecture_spec(),
        "tasks": tasks,
        "weighting": recipe.model_weighting(),
        "mixed_precision": recipe.train.mixed_precision,
        "primary": recipe.train.primary,
        "preprocessing": prep_dict,
        **(
            {freezing.SPEC_KEY: schedule} if (schedule := freezing.spec_entry(recipe.model.init_from)) else {}
        ),
    }


def count_params(variables) -> int:
    """The number of values in ``variables``."""
    return int(sum(math.prod(v.shape) for v in variables))
