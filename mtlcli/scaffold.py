"""``mtl init``: write a working project from a template (no TensorFlow)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mtlcli.errors import UsageError

TEMPLATES = {
    # template -> files to write: target name -> (package resource directory, file name)
    "penguins": {
        "recipe.yaml": ("templates", "penguins.yaml"),
        "penguins.csv": ("data", "penguins.csv"),
        "README.md": ("templates", "README.md"),
    },
}
GITIGNORE = "runs/\n"


def init(directory: Path, template: str = "penguins") -> list[Path]:
    """Create ``directory`` (if needed) and write the template's files; never overwrite anything."""
    if template not in TEMPLATES:
        from mtlcli.errors import did_you_mean

        raise UsageError(
            f"--template: unknown template {template!r}{did_you_mean(template, TEMPLATES)} "
            f"(available: {', '.join(TEMPLATES)})"
        )
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a directory")
    files = dict(TEMPLATES[template])
    targets = [directory / name for name in [*files, ".gitignore"]]
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
        (directory / name).write_bytes(content)
        written.append(directory / name)
    (directory / ".gitignore").write_text(GITIGNORE)
    written.append(directory / ".gitignore")
    return written
