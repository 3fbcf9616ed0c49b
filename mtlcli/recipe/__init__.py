"""The recipe stage: YAML with line numbers, the pydantic schema and every check made before data is read.

This package's ``__init__`` is its public face: other stages import ``from mtlcli.recipe import ...``
(or ``from mtlcli import recipe``). Modules inside the package import their siblings directly. Nothing
here imports TensorFlow or the data stage.
"""

from mtlcli.errors import RecipeError
from mtlcli.recipe.checks import dependencies, monitor_mode, monitor_names
from mtlcli.recipe.loader import LoadedRecipe, from_located, load, loads
from mtlcli.recipe.overrides import Override, Resolved, annotated_yaml, format_set, parse_set
from mtlcli.recipe.spec import Recipe, json_schema

__all__ = [
    "LoadedRecipe",
    "Override",
    "Recipe",
    "RecipeError",
    "Resolved",
    "annotated_yaml",
    "dependencies",
    "format_set",
    "from_located",
    "json_schema",
    "load",
    "loads",
    "monitor_mode",
    "monitor_names",
    "parse_set",
]
