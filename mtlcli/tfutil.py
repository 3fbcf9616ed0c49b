"""Quiet, lazy TensorFlow import (the CLI imports TF only in commands that need it).

TF 2.21 prints absl/oneDNN notices from C++ during ``import tensorflow`` even with
``TF_CPP_MIN_LOG_LEVEL=3``: they are written to file descriptor 2 before absl is initialised. We capture
fd 2 during the import only and replay the capture when the import fails or ``verbose`` is set.

The library uses it too (:func:`mtlcli.weighting.aggregate`), so that a notebook calling mtl's math
gets no C++ start-up logs either; it imports TensorFlow only when called.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings


@contextlib.contextmanager
def capture_fd2(replay: bool = False):
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): nothing to capture
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if replay or not ok:
                tmp.seek(0)
                sys.stderr.write(tmp.read().decode(errors="replace"))


def import_tf(verbose: bool = False, keras: bool = True):
    """Import TensorFlow (and Keras, unless ``keras=False``) without log noise; returns the
    ``tensorflow`` module. ``keras=False`` is for code that needs only tensors (the weighting math):
    importing Keras costs about a second more."""
    if "tensorflow" in sys.modules and (not keras or "keras" in sys.modules):
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    with capture_fd2(replay=verbose):
        if keras:
            import keras as _keras  # noqa: F401
        import tensorflow as tf

        # Device discovery logs from C++ too (e.g. "failed call to cuInit" on machines without a GPU).
        tf.config.list_physical_devices()
    if not verbose:
        tf.get_logger().setLevel("ERROR")
        logging.getLogger("absl").setLevel(logging.ERROR)
        with contextlib.suppress(ImportError):
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        if keras:
            warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(\..*)?")
    return tf
