"""``mtl init``: write a working project from a template (no TensorFlow).

The project gets the recipe, the data it reads, a few unlabelled rows to predict, a short README and ``recipe.schema.json`` (the recipe's
JSON Schema); the recipe's first line points editors at it (``# yaml-language-server: $schema=...``), so
VS Code, Neovim and others complete and check keys while typing.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from mtlcli import recipe
from mtlcli.errors import UsageError, did_you_mean

TEMPLATES = {
    # template -> files to write: target name -> (package resource directory, file name)
    "penguins": {
        "recipe.yaml": ("templates", "penguins.yaml"),
        "penguins.csv": ("data", "penguins.csv"),
        "new_penguins.csv": ("data", "new_penguins.csv"),
        "README.md": ("templates", "README.md"),
    },
    "esmm": {
        "recipe.yaml": ("templates", "esmm.yaml"),
        "esmm.csv": ("templates", "esmm.csv"),
        "README.md": ("templates", "esmm_README.md"),
    },
}
GITIGNORE = "runs/\n"
SCHEMA_FILE = "recipe.schema.json"
SCHEMA_HEADER = f"# yaml-language-server: $schema={SCHEMA_FILE}\n"


def init(directory: Path, template: str = "penguins") -> list[Path]:
    """Create ``directory`` (if needed) and write the template's files; never overwrite anything."""
    if template not in TEMPLATES:
        raise UsageError(
            f"--template: unknown template {template!r}{did_you_mean(template, TEMPLATES)} "
            f"(available: {', '.join(TEMPLATES)})"
        )
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a directory")
    files = dict(TEMPLATES[template])
    targets = [directory / name for name in [*files, SCHEMA_FILE, ".gitignore"]]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise UsageError(f"refusing to overwrite existing files: {', '.join(existing)}")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    root = resources.files("mtlcli")
    for name, (folder, resource) in files.items():
        content = root.joinpath(folder, resource).read_bytes()
        if name == "README.md":
            content = content.decode().replace("{name}", directory.resolve().name).encode()
        if name == "recipe.yaml":
            content = SCHEMA_HEADER.encode() + content
        (directory / name).write_bytes(content)
        written.append(directory / name)
    (directory / SCHEMA_FILE).write_text(json.dumps(recipe.json_schema(), indent=1) + "\n")
    written.append(directory / SCHEMA_FILE)
    (directory / ".gitignore").write_text(GITIGNORE)
    written.append(directory / ".gitignore")
    return written
