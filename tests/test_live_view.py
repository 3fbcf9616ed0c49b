"""The live training view in a terminal: progress bar plus per-task table across epochs."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from mtlcli import events
from mtlcli.cli import TrainView


def test_terminal_view_renders_rows_per_task_across_epochs():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    view = TrainView(console)
    assert view.live_mode
    tasks = {
        "a": {"type": "binary", "metrics": ["accuracy"], "main": "a_accuracy"},
        "b": {"type": "regression", "metrics": ["mae"], "main": "b_mae"},
    }
    view.handle(
        events.Started(
            Path("runs/x/1"),
            tasks,
            {"train": 10},
            {"train": {"a": 10, "b": 9}},
            {"shared": 100, "a": 5, "b": 5},
            3,
            2,
            "pcgrad",
            0,
        )
    )
    for epoch in (1, 2, 3):
        view.handle(events.BatchEnd(epoch, 1, 2, {"loss": 0.5}))
        logs = {
            "loss": 0.5,
            "a_loss": 0.3,
            "b_loss": 0.2,
            "a_accuracy": 0.9,
            "b_mae": 1.5,
            "a_weight": 1.0,
            "b_weight": 3.0,
            "val_a_loss": 0.4,
            "cos_a_b": -0.25,
        }
        view.handle(events.EpochEnd(epoch, 3, logs, 0.1))
    view.close()
    text = out.getvalue()
    assert "label coverage (train): a 10/10, b 9/10" in text
    assert "min cos" in text
    # a's weighted share: 1.0 * 0.3 / (0.3 + 3.0 * 0.2) = 33%
    assert "33%" in text and "67%" in text
    assert "-0.2500" in text
