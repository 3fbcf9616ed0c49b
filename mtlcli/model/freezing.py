"""The ``freeze_epochs: N`` schedule of a warm start (``model.init_from``): the layers ``layers:`` names
stay fixed for the first N epochs, then train with everything else.

The variables the optimizer and a strategy's state sized by the shared parameters see are the same in
both phases, so a checkpoint taken in either loads into a model built the same way:

* The model is built with every layer trainable and the optimizer is built on all its trainable
  variables (:func:`mtlcli.model.build.build_model`); then :meth:`FreezeSchedule.start` freezes.
* Frozen (epochs ``< N``): the layers are ``trainable = False``, so their batch normalizations run in
  inference mode as with ``freeze: true``. The task Jacobian keeps their columns, as zeros (they are
  never differentiated: :attr:`mtlcli.model.backward.Backward.frozen`), so a strategy's state sized by
  ``P`` keeps its size. The optimizer is handed only the variables that train: the frozen ones get no
  update and no weight decay, and their Adam moments stay zero.
* At the start of epoch N (:meth:`FreezeSchedule.begin_epoch`) the layers train, and Adam restarts:
  every optimizer variable (moments and step count) is set to zero, as after the recompile in Keras's
  fine-tuning guide. Without the restart, Keras's bias correction, which counts steps from the start
  of the run, would make the unfrozen layers' first updates up to 6.5 times the learning rate
  (``(1 - β1^k) / sqrt(1 - β2^k)`` with the default betas, at k ≈ 10 steps after the unfreeze).
* The model variable ``state_unfrozen`` (so in every checkpoint) says whether that happened. A resume
  takes the phase from it (:meth:`FreezeSchedule.sync`), never from the epoch alone: a checkpoint at
  the end of epoch N-1 and one inside epoch N both continue "at epoch N". Its ``state_`` prefix makes a
  fork start it afresh, like the strategy's state (its optimizer is new anyway).

While every shared layer is frozen, a gradient-based strategy reads a Jacobian of zeros (each head
still trains on its own loss); every strategy returns finite weights for it (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: the model spec's key for the schedule (present only for recipes with ``freeze_epochs``)
SPEC_KEY = "freeze_schedule"


def spec_entry(init_from) -> dict[str, Any] | None:
    """The model spec's ``freeze_schedule`` entry for a recipe's ``model.init_from`` (None without
    ``freeze_epochs``)."""
    if init_from is None or init_from.freeze_epochs is None:
        return None
    layers = init_from.layers if isinstance(init_from.layers, str) else list(init_from.layers)
    return {"layers": layers, "epochs": int(init_from.freeze_epochs)}


def _leaves(layer) -> list:
    """The recipe layers inside a part: a :class:`mtlcli.model.architectures.LayerStack`'s ``stack``
    (so a layer the recipe made ``trainable: false`` stays so after the unfreeze), else the layer."""
    stack = getattr(layer, "stack", None)
    return [leaf for item in stack for leaf in _leaves(item)] if stack is not None else [layer]


class FreezeSchedule:
    """Which layers are held fixed for how many epochs, and the phase the model is in."""

    def __init__(self, layers: str | list[str], epochs: int):
        self.layers_spec, self.epochs = layers, int(epochs)
        self.layers: list = []  # the recipe layers it freezes (those that train otherwise)
        self.ids: frozenset = frozenset()  # their trainable variables
        self.shared: list = []  # every shared variable that trains once unfrozen, in Keras order
        self.frozen = False

    def start(self, model) -> None:
        """Record the layers and the shared variables, then freeze (after the model and its optimizer
        are built, on every variable)."""
        leaves = [leaf for part in model.named_parts(self.layers_spec) for leaf in _leaves(part)]
        self.layers = [layer for layer in leaves if layer.trainable]
        self.ids = frozenset(id(v) for layer in self.layers for v in layer.trainable_variables)
        self.shared = list(model.shared_variables)
        self.set(model, frozen=True)

    def set(self, model, frozen: bool) -> None:
        """Freeze or unfreeze the layers (a train function traced before no longer applies)."""
        for layer in self.layers:
            layer.trainable = not frozen
        self.frozen = frozen
        model.backward.frozen = self.ids if frozen else frozenset()

    def sync(self, model) -> None:
        """The phase ``state_unfrozen`` records (a fresh run or a resume), and a train function for it."""
        self.set(model, frozen=int(model.state_unfrozen.numpy()) == 0)
        model.make_train_function(force=True)

    def begin_epoch(self, model, epoch: int) -> bool:
        """At the start of epoch ``epoch``: unfreeze when it is the schedule's (restarting Adam);
        True when it did."""
        if not self.frozen or epoch < self.epochs:
            return False
        self.set(model, frozen=False)
        for v in model.optimizer.variables:  # the step count and the moments, not the learning rate
            if v.name != "learning_rate":
                v.assign(np.zeros_like(v.numpy()))
        model.state_unfrozen.assign(1)
        model.make_train_function(force=True)
        return True
