"""What ``mtl export`` shows: the signature's inputs and outputs as two short tables, where the export
went, and the commands to try it next (``saved_model_cli``, TensorFlow Serving with ``curl``, or the
TFLite interpreter). Reads only the export's manifest (a dict), so it imports no TensorFlow."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table


def example_instance(manifest: dict[str, Any]) -> dict[str, Any]:
    """One request row for the signature: numbers at their training mean, the first known category, a text, image
    bytes as b64."""
    row: dict[str, Any] = {}
    for key, spec in manifest["inputs"].items():
        if spec["kind"] == "numeric":
            row[key] = round(float(spec.get("mean", 1.0)), 2)
        elif spec["kind"] == "categorical":
            row[key] = (spec.get("values") or ["?"])[0]
        elif spec["kind"] == "text":
            row[key] = "<the text>"
        elif spec["dtype"] == "string":
            row[key] = {"b64": "<base64 of the image file>"}
        else:
            row[key] = f"<{'x'.join(str(d) for d in spec['shape'][1:])} numbers>"
    return row


def render_export(console: Console, manifest: dict[str, Any], path: Path) -> None:
    """The tables and the next steps of one export (plain tables off a terminal)."""
    fancy = console.is_terminal
    style = {
        "header_style": "bold" if fancy else "",
        "title_justify": "left",
        "box": box.HEAVY_HEAD if fancy else box.SIMPLE,
        "show_edge": fancy,
    }
    inputs = Table(title="inputs", **style)
    for col in ("key", "column", "kind", "dtype", "shape"):
        inputs.add_column(col)
    for key, spec in manifest["inputs"].items():
        inputs.add_row(key, str(spec["column"]), spec["kind"], spec["dtype"], _shape(spec["shape"]))
    outputs = Table(title="outputs", **style)
    for col in ("key", "dtype", "shape"):
        outputs.add_column(col)
    for key, spec in manifest["outputs"].items():
        outputs.add_row(key, spec["dtype"], _shape(spec["shape"]))
    console.print(inputs)
    console.print(outputs)
    fmt = manifest["format"]
    plain = {"soft_wrap": True, "highlight": False, "markup": False}
    console.print(f"wrote {fmt} to {path} (with {path / 'export.json'})", **plain)
    console.print("next:", **plain)
    for line in next_steps(manifest, path):
        console.print(f"  {line}", **plain)


def next_steps(manifest: dict[str, Any], path: Path) -> list[str]:
    """Commands to inspect and call the export."""
    where = shlex.quote(str(path.resolve()))
    if manifest["format"] == "tflite":
        feed = ", ".join(f"{k}=..." for k in manifest["inputs"])
        return [
            'python -c "import tensorflow as tf; r = tf.lite.Interpreter('
            f"model_path='{path / manifest['model_file']}').get_signature_runner(); print(r({feed}))\""
        ]
    body = json.dumps({"instances": [example_instance(manifest)]})
    return [
        f"saved_model_cli show --dir {shlex.quote(str(path))} --all",
        f"docker run --rm -p 8501:8501 -v {where}:/models/mtl/1 -e MODEL_NAME=mtl tensorflow/serving",
        f"curl -s -d {shlex.quote(body)} http://localhost:8501/v1/models/mtl:predict",
    ]


def _shape(shape: list) -> str:
    return "(" + ", ".join("batch" if d is None and i == 0 else str(d) for i, d in enumerate(shape)) + ")"
