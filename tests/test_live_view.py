"""The live training view in a terminal: progress bar plus per-task table across epochs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
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


def _started(tasks, run_dir="runs/a-rather-long-project-name/with-a-deep/run-directory/17"):
    return events.Started(
        Path(run_dir),
        tasks,
        {"train": 223, "validation": 52, "test": 69},
        {"train": {t: 200 for t in tasks}},
        {"shared": 2_688, **{t: 600 for t in tasks}},
        150,
        7,
        "cagrad(c=0.4)",
        7,
    )


TASKS = {
    "species": {"type": "classification", "metrics": ["accuracy"], "main": "species_accuracy"},
    "body_mass": {"type": "regression", "metrics": ["mae"], "main": "body_mass_mae"},
}
LOGS = {
    "loss": 0.51234,
    "val_loss": 0.61234,
    "species_loss": 0.0253,
    "val_species_loss": 0.0312,
    "species_accuracy": 0.98551,
    "val_species_accuracy": 0.97,
    "body_mass_loss": 0.0846,
    "val_body_mass_loss": 0.0911,
    "body_mass_mae": 250.82031,
    "val_body_mass_mae": 262.1234,
    "species_weight": 0.6667,
    "body_mass_weight": 0.3333,
}


@pytest.mark.parametrize("width", [70, 80, 100])
def test_narrow_terminals_shorten_numbers_and_wrap_at_words(width):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=width, color_system=None)
    view = TrainView(console)
    view.handle(_started(TASKS))
    view.handle(events.EpochEnd(1, 150, LOGS, 0.1))
    view.close()
    text = out.getvalue()
    assert "…" not in text
    header = "weighting: cagrad(c=0.4)"
    # every word of the header survives whole (wrapping happens between words)
    words = " ".join(text.split())
    assert header in words and "runs/a-rather-long-project-name/with-a-deep/run-directory/17" in words
    assert "250.8" in text  # the number is shortened, not cut


def test_plain_epoch_lines_stay_short_with_many_tasks():
    many = {
        f"task_{i:02d}": {"type": "binary", "metrics": ["auc"], "main": f"task_{i:02d}_auc"}
        for i in range(12)
    }
    logs = {"loss": 0.5, "val_loss": 0.6}
    for t in many:
        logs.update({f"{t}_loss": 0.123456, f"val_{t}_loss": 0.2, f"{t}_auc": 0.91, f"val_{t}_auc": 0.9})
        logs[f"{t}_weight"] = 1 / 12
    out = io.StringIO()
    view = TrainView(Console(file=out, force_terminal=False, width=80))
    assert not view.live_mode
    view.handle(_started(many))
    view.handle(events.EpochEnd(1, 150, logs, 0.1))
    lines = out.getvalue().splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 1
    epoch_part = lines[lines.index(epoch_lines[0]) :]
    assert all(len(line) < 160 for line in epoch_part), max(epoch_part, key=len)
    assert sum(line.startswith("  task_") for line in lines) == 12
