"""The Keras registration package of every custom object: saved files name classes ``mtl>ClassName``.

Keras resolves a registered class by this package and the class name, not by its module, so classes may
move between modules; ``PACKAGE`` and the class names must never change, or ``model.keras`` files written
by earlier versions stop loading (``tests/test_legacy_run.py``).
"""

from __future__ import annotations

import keras

PACKAGE = "mtl"


def serializable(cls):
    """Class decorator: register ``cls`` as ``mtl>{cls.__name__}`` (safe-mode loading needs it)."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
