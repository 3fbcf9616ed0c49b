"""Typer option types shared by several ``mtl`` commands (no TensorFlow)."""

from __future__ import annotations

from typing import Annotated

import typer

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a recipe value, VALUE read as YAML (repeatable): --set train.weighting=pcgrad "
        "--set model.tasks.sex.weight=0.5 --set model.shared.0.dense.units=16",
    ),
]
