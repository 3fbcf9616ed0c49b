"""SIGINT/SIGTERM during training: :class:`SignalGuard` turns them into a flag, :class:`Interrupted` is
the error raised once the checkpoint is written (the CLI prints it and exits 130 or 143).

A signal never stops a step half way: the flag is read after each step by the run's callback
(:mod:`mtlcli.run.callbacks`), which saves ``checkpoints/last`` first and raises :class:`Interrupted`.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any

from mtlcli.errors import RunError


class Interrupted(RunError):
    """SIGINT/SIGTERM stopped the run after a checkpoint was written (exit 130 or 143)."""

    def __init__(self, signum: int, run_dir: Path, epoch: int, step: int, steps: int, command: str):
        self.signum, self.run_dir, self.command = signum, run_dir, command
        self.signame = signal.Signals(signum).name
        self.exit_code = 128 + int(signum)
        where = f"epoch {epoch + 1}, step {step}/{steps}" if step else f"the end of epoch {epoch}"
        super().__init__(
            f"{self.signame}: stopped at {where}; checkpoint saved in {run_dir / 'checkpoints' / 'last'}\n"
            f"resume with: {command}"
        )


class Handlers:
    """While entered, :meth:`handle` receives SIGINT and SIGTERM; the previous handlers come back on
    exit. Outside the main thread (where Python cannot install handlers) it does nothing. The training
    loop's :class:`SignalGuard` and the sweep's stopper are the two kinds."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def handle(self, signum, frame) -> None:
        raise NotImplementedError

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):  # not the main thread: no handlers
                self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)


class SignalGuard(Handlers):
    """Turns the first SIGINT/SIGTERM into a flag the training loop checks after each step (a second
    SIGINT interrupts at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: int | None = None

    def handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
