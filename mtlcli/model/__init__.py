"""The model stage: recipe -> compiled multi-task Keras model, and its train step.

* ``build``          recipe -> model spec -> compiled ``MultiTaskModel`` (``build_model``)
* ``size``           parameters and bytes from the recipe and the data, before building (no TensorFlow)
* ``network``        the Keras network: inputs, shared trunk or architecture, heads (no weighting)
* ``architectures``  the MMoE / CGC / PLE / cross-stitch blocks;  ``embedding``  categorical embeddings
* ``train_step``     ``MultiTaskModel``: strategy, losses, metrics, train/test steps (the only importer of
  :mod:`mtlcli.weighting`)
* ``backward``       from per-task losses to gradients, one class per kind of strategy input
* ``losses``, ``metrics``  per-task masked losses; metrics in the targets' units
* ``registration``   the ``mtl`` Keras package every custom object registers under
"""
