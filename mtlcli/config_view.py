"""What ``mtl config`` shows: the resolved recipe as key path | value | source (no TensorFlow).

On a terminal a rich table; off one (a pipe, a file) one plain line per value, ``KEY = VALUE  # SOURCE``,
so that grep and diff work on it; ``--json`` is :func:`mtlcli.recipe.overrides.table`.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtlcli.recipe.overrides import flow


def render_config(out: Console, rows: list[dict], title: str, tty: bool) -> None:
    """Print ``rows`` (``{key, value, source}``) as a table on a terminal, else as plain lines."""
    if not tty:
        width = max((len(r["key"]) for r in rows), default=0)
        for r in rows:
            out.print(
                f"{r['key']:<{width}} = {flow(r['value'])}  # {r['source']}",
                soft_wrap=True,
                markup=False,
                highlight=False,
            )
        return
    table = Table(title=escape(title), header_style="bold", show_lines=False)
    table.add_column("key")
    table.add_column("value")
    table.add_column("source")
    for r in rows:
        source = r["source"]
        style = "dim" if source == "default" else ("bold cyan" if source.startswith("--") else "")
        table.add_row(
            escape(r["key"]),
            escape(flow(r["value"])),
            f"[{style}]{escape(source)}[/]" if style else escape(source),
        )
    out.print(table)
