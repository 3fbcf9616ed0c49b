"""What a run that failed after TensorFlow started says: out of memory, and the last good checkpoint.

An out-of-memory error is not a bug to show as a traceback: TensorFlow raises
``tf.errors.ResourceExhaustedError`` (a tensor it cannot allocate, on a GPU or the CPU allocator) and
numpy or Python raise :class:`MemoryError`. :class:`Memory` turns either into one
:class:`~mtlcli.errors.RunError` line (exit 1) that says what the run was doing, the first line of
the allocator's message, what to change, and where the last checkpoint is when the run has one
(:func:`last_good`). The original exception stays chained (``--debug`` shows it).
"""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

from mtlcli.errors import RunError
from mtlcli.run import checkpoint

_DETAIL_CHARS = 200


def last_good(run_dir: Path) -> str:
    """The tail of a failed run's message: where the last good checkpoint is and how to retry."""
    last = checkpoint.find(run_dir, "last")
    if last is None:
        return "; no checkpoint had been written yet"
    st = checkpoint.read_state(last)
    where = f"epoch {st['epoch']}" + (f", step {st['step_in_epoch']}" if st["step_in_epoch"] else "")
    return (
        f"; the last good checkpoint ({where}) is {last}; to retry from it with other settings: "
        f"mtl train RECIPE --resume {shlex.quote(str(last))} --fork NEW_DIR"
    )


def _detail(exc: BaseException) -> str:
    """The allocator's own first line, without TensorFlow's device path and node dump."""
    text = getattr(exc, "message", None) or str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = re.sub(r"^\{\{[^}]*\}\}\s*", "", first)  # {{function_node __wrapped__Fill_device_/job:...}}
    first = first.split(" on /job:", 1)[0].strip()
    return first if len(first) <= _DETAIL_CHARS else first[: _DETAIL_CHARS - 3] + "..."


class Memory:
    """Out-of-memory errors of one run, reported as one line: ``with memory.guard("doing X"):``."""

    def __init__(self, tf, batch_size: int):
        self.errors: tuple[type[BaseException], ...] = (MemoryError, tf.errors.ResourceExhaustedError)
        self.batch_size = batch_size

    def error(self, exc: BaseException, doing: str, run_dir: Path | None = None) -> RunError:
        if doing == "building the model":
            hint = "the model's weights do not fit: use fewer units (or filters) in the model's layers"
        else:
            hint = (
                f"try a smaller train.batch_size (now {self.batch_size}) or fewer units (or filters) "
                "in the model's layers"
            )
        tail = last_good(run_dir) if run_dir is not None else ""
        return RunError(f"out of memory while {doing}: {_detail(exc)}; {hint}{tail}")

    @contextlib.contextmanager
    def guard(self, doing: str | Callable[[], str], run_dir: Path | None = None) -> Iterator[None]:
        """Turn an out-of-memory error inside the block into the run's one-line RunError
        (``doing`` may be a function: what the run was doing is known only when it fails)."""
        try:
            yield
        except self.errors as exc:
            what = doing() if callable(doing) else doing
            raise self.error(exc, what, run_dir) from exc
