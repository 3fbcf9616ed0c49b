"""Durable file writes: atomic replace, fsync of files and directories, sha256 of a file, disk errors.

The lowest layer of the package (no project imports but :mod:`mtlcli.errors`), so that the run stage,
the checkpoints and anything else that writes a file a later process trusts use the same rules:

* a file is written to a temporary name in the same directory, flushed and fsynced, given the mode a
  plain ``open()`` would have given it (``0o666`` minus the umask: ``mkstemp`` creates ``0o600``), and
  only then renamed over the target -- a reader sees the old file or the new one, never half of one;
* a rename is made durable by fsyncing the directory that holds it (:func:`fsync_dir`);
* an ``OSError`` while writing becomes one clear :class:`~mtlcli.errors.RunError` (:func:`disk_error`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from mtlcli.errors import RunError


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def write_synced(path: Path, raw: bytes) -> None:
    """Write ``raw`` to ``path`` (not atomically) and fsync it before returning."""
    with open(path, "wb") as fh:
        fh.write(raw)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Make the renames inside ``path`` durable (best effort: some filesystems refuse it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_atomically(path: Path, suffix: str, write: Callable[[str], None]) -> None:
    """Let ``write(tmp)`` fill a temporary file next to ``path``, then rename it into place
    (:func:`replacing`); on any failure the temporary file is removed."""
    with replacing(path, suffix) as tmp:
        write(str(tmp))


def atomic_write(path: Path, content: bytes | str) -> None:
    """Replace ``path`` with ``content`` (text is UTF-8) atomically and durably."""
    raw = content.encode() if isinstance(content, str) else content
    _replace_atomically(Path(path), ".tmp", lambda tmp: write_synced(Path(tmp), raw))


def save_model_atomic(model, path: Path) -> None:
    """``model.save`` to ``path`` atomically (Keras picks the format from the ``.keras`` suffix, so the
    temporary file keeps it)."""

    def write(tmp: str) -> None:
        model.save(tmp)
        fsync_file(tmp)

    _replace_atomically(Path(path), ".keras", write)


def sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB pieces (files may be larger than memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def disk_error(exc: OSError, what: str) -> RunError:
    """An OSError while writing becomes a clear RunError (disk full, read-only, permissions)."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    return RunError(f"cannot write {what}: {reason}")


@contextlib.contextmanager
def replacing(path: Path, suffix: str = ".tmp"):
    """A temporary path next to ``path`` for the block to write (it exists, empty); renamed over ``path``
    with the umask's mode once the block ends without an error, fsynced first. On any error or
    interruption (``KeyboardInterrupt`` included) the temporary file is removed and ``path`` is left as
    it was, so a reader never finds half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
